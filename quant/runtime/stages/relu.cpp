// A ReLU at inference that follows no Conv2D or Dense (a ReLU right after one is fused into its
// stage: StageReader::activation): max(x, 0) on floats, max(code, zero point) on u8 codes
// (quant/runtime/stage_kind.h). Its training side is layers/simple_layers.cpp.
#include <algorithm>

#include "io/record_keys.h"
#include "quant/runtime/byte_kernels.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace {

using dnnl::memory;
using dt = memory::data_type;

class ReluStage final : public StageOp {
 public:
  explicit ReluStage(int32_t z) : zero_point(z) {}
  int32_t zero_point = 0;  // the code of real 0 (u8 codes)

  void reference(RefActivation& x, const Stage&) const override {
    for (float& v : x.f) v = std::max(v, 0.f);
    for (uint8_t& v : x.q) v = std::max(v, static_cast<uint8_t>(zero_point));
  }

  // u8: qnet's byte kernel (a no-op when the zero point is 0: codes never stand for negative
  // values); floats: oneDNN's ReLU.
  int lower(PlanBuilder& b, int cur, const Stage&, const Stage*, bool&) const override {
    const memory::desc& md = b.desc(cur);
    if (md.data_type() == dt::u8) {
      if (zero_point == 0) return cur;
      const int64_t count = static_cast<int64_t>(md.get_size());
      const int src = cur, out = b.add(md);
      const uint8_t z = static_cast<uint8_t>(zero_point);
      b.kernel_step(fmt::format("relu qnet:u8_max_{}", z), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}}, [=](const std::vector<memory>& mem) {
        u8::relu(static_cast<const uint8_t*>(mem[src].get_data_handle()), static_cast<uint8_t*>(mem[out].get_data_handle()), count, z);
      });
      return out;
    }
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::eltwise_relu, md, 0.f, 0.f);
    dnnl::eltwise_forward::primitive_desc pd(d, PlanBuilder::plain_attributes(), b.eng);
    const int out = b.add(pd.dst_desc());
    b.step(pd, "relu", {{DNNL_ARG_SRC, cur}, {DNNL_ARG_DST, out}});
    return out;
  }
};

size_t read(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  // A quantized ReLU (output_bits) belongs to the Conv2D or Dense before it, which consumed it.
  if (rd.int8() && r.get_int(qbin::key::kOutputBits, 0) != 0) StageReader::fail(r, "a quantized activation that follows no Conv2D or Dense");
  const int32_t z = rd.f32 ? 0 : rd.zero;
  rd.push_same_grid(r, std::make_shared<ReluStage>(z), rd.H, rd.W, rd.C);
  return 1;
}

}  // namespace

const StageKind& relu_stage_kind() {
  static const StageKind kind{"ReLU", read};
  return kind;
}

}  // namespace qnet
