// What the Conv2D and Dense stages share (WeightedStage, quant/runtime/stage_kind.h): reading weights
// and the activation after them, and the output side of their primitives.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "io/record_keys.h"

#include "quant/runtime/stage_kind.h"

namespace qnet {

int WeightedStage::widest_weight_code() const {
  int widest = 0;
  for (int8_t v : qkernel) widest = std::max(widest, std::abs(int{v}));
  return widest;
}

namespace {

// A BatchNormalization record's per-channel factor f = gamma / sqrt(var + eps) and its shift
// beta - mean f, checked (eq. 13-14).
std::pair<std::vector<float>, std::vector<float>> batch_norm_factors(const qbin::LayerRecord& bn, int channels) {
  const Shape shape{channels};
  const auto gamma = StageReader::values<float>(bn, bn.tensor("gamma"), qbin::DType::kF32, shape);
  const auto beta = StageReader::values<float>(bn, bn.tensor("beta"), qbin::DType::kF32, shape);
  const auto mean = StageReader::values<float>(bn, bn.tensor("moving_mean"), qbin::DType::kF32, shape);
  const auto var = StageReader::values<float>(bn, bn.tensor("moving_var"), qbin::DType::kF32, shape);
  const float eps = bn.get_float(qbin::key::kEpsilon);
  if (!(eps >= 1e-12f && eps <= 1.f)) StageReader::fail(bn, fmt::format("epsilon {} (expected 1e-12..1)", eps));
  std::vector<float> f(channels), shift(channels);
  for (int c = 0; c < channels; ++c) {
    if (!(var[c] >= 0.f)) StageReader::fail(bn, fmt::format("moving_var[{}] = {} (expected >= 0)", c, var[c]));
    f[c] = gamma[c] / std::sqrt(var[c] + eps);
    shift[c] = beta[c] - mean[c] * f[c];
  }
  return {f, shift};
}

}  // namespace

void WeightedStage::read_weights(const StageReader& rd, const qbin::LayerRecord& r, const Shape& kernel_shape, const FusedActivation& a,
                                 const qbin::LayerRecord* bn) {
  const int n = static_cast<int>(kernel_shape.back()), axis = static_cast<int>(kernel_shape.size()) - 1;
  const qbin::TensorRecord& k = r.tensor("kernel");
  const qbin::TensorRecord* b = r.find_tensor("bias");
  relu = a.relu;
  if (!rd.int8()) {
    kernel = StageReader::values<float>(r, k, qbin::DType::kF32, kernel_shape);
    bias = b ? StageReader::values<float>(r, *b, qbin::DType::kF32, {n}) : std::vector<float>(n, 0.f);
    if (bn) {  // y = f (conv + b - mean) + beta: kernel w f, bias b f + beta - mean f
      const auto [f, shift] = batch_norm_factors(*bn, n);
      for (size_t i = 0; i < kernel.size(); ++i) kernel[i] *= f[i % n];
      for (int o = 0; o < n; ++o) bias[o] = bias[o] * f[o] + shift[o];
    }
    return;
  }
  qkernel = StageReader::values<int8_t>(r, k, qbin::DType::kS8, kernel_shape);
  rd.check_kernel_codes(r, qkernel);
  const std::vector<float> weight_scales = rd.weight_scales(r, k, axis, n);
  qbias = b ? StageReader::values<int32_t>(r, *b, qbin::DType::kS32, {n}) : std::vector<int32_t>(n, 0);
  input_zero_point = rd.zero;
  rd.check_accumulator(r, shape_numel(kernel_shape) / n, qbias);
  qmax = (1 << rd.m.bits) - 1;
  output_scale = rd.output_scales(weight_scales, a);
  output_zero_point = a.zero_point;
}

dnnl::primitive_attr WeightedStage::output_attributes(const PlanBuilder& b, const Stage& st) const {
  return b.attributes(output_scale, st.f32_output ? 0 : qmax, relu, output_zero_point);
}

const void* WeightedStage::bias_for(const PlanBuilder& b, std::vector<int32_t>& folded) const {
  if (!b.int8) return bias.data();
  folded = PlanBuilder::folded_bias(qbias, qkernel, input_zero_point);
  return folded.data();
}

}  // namespace qnet
