// A BatchNormalization at inference that follows no Conv2D, DepthwiseConv2D or Dense (one right
// after such a layer is folded into its stage: StageReader::fused): in float models the
// per-channel map y = gamma (x - mean) / sqrt(var + eps) + beta on oneDNN's batch normalization.
// int8 models hold none: prepare_qat refuses it before training (quant/qat.h). Its training side
// is layers/batch_norm.cpp.
#include <cmath>

#include "io/record_keys.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

class BatchNormStage final : public StageOp {
 public:
  std::vector<float> mean, var, gamma, beta;
  float epsilon = 1e-3f;

  void reference(RefActivation& x, const Stage&) const override {  // floats only (int8 models hold none)
    for (size_t i = 0; i < x.f.size(); ++i) {
      const size_t c = i % mean.size();
      x.f[i] = gamma[c] * (x.f[i] - mean[c]) / std::sqrt(var[c] + epsilon) + beta[c];
    }
  }

  int lower(PlanBuilder& b, int cur, const Stage&, const Stage*, bool&) const override {
    const int64_t C = static_cast<int64_t>(mean.size());
    const memory::desc& md = b.desc(cur);
    using flags = dnnl::normalization_flags;
    dnnl::batch_normalization_forward::desc d(dnnl::prop_kind::forward_inference, md, epsilon,
                                              flags::use_global_stats | flags::use_scale | flags::use_shift);
    dnnl::batch_normalization_forward::primitive_desc pd(d, PlanBuilder::plain_attributes(), b.eng);
    const memory::desc vec({C}, dt::f32, tag::x);
    const int out = b.add(pd.dst_desc());
    b.step(pd, "batch norm", {{DNNL_ARG_SRC, cur}, {DNNL_ARG_DST, out}},
           {{DNNL_ARG_MEAN, b.constant(vec, mean.data(), pd.mean_desc())}, {DNNL_ARG_VARIANCE, b.constant(vec, var.data(), pd.variance_desc())},
            {DNNL_ARG_SCALE, b.constant(vec, gamma.data(), vec)}, {DNNL_ARG_SHIFT, b.constant(vec, beta.data(), vec)}});
    return out;
  }
};

size_t read(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  if (rd.int8()) StageReader::fail(r, "a BatchNormalization in an int8 model (export folds it into the layer before it)");
  auto s = std::make_shared<BatchNormStage>();
  const Shape shape{rd.C};
  s->gamma = StageReader::values<float>(r, r.tensor("gamma"), qbin::DType::kF32, shape);
  s->beta = StageReader::values<float>(r, r.tensor("beta"), qbin::DType::kF32, shape);
  s->mean = StageReader::values<float>(r, r.tensor("moving_mean"), qbin::DType::kF32, shape);
  s->var = StageReader::values<float>(r, r.tensor("moving_var"), qbin::DType::kF32, shape);
  s->epsilon = r.get_float(qbin::key::kEpsilon);
  if (!(s->epsilon >= 1e-12f && s->epsilon <= 1.f)) StageReader::fail(r, fmt::format("epsilon {} (expected 1e-12..1)", s->epsilon));
  for (float v : s->var)
    if (!(v >= 0.f)) StageReader::fail(r, fmt::format("moving variance {} (expected >= 0)", v));
  rd.push_same_grid(r, std::move(s), rd.H, rd.W, rd.C);
  return 1;
}

}  // namespace

const StageKind& batch_norm_stage_kind() {
  static const StageKind kind{"BatchNormalization", read};
  return kind;
}

}  // namespace qnet
