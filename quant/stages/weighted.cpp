// What the Conv2D and Dense stages share (WeightedStage, quant/stage_kind.h): reading weights
// and the activation after them, and the output side of their primitives.
#include <algorithm>
#include <cstdlib>

#include "quant/stage_kind.h"

namespace qnet {

int WeightedStage::widest_weight_code() const {
  int widest = 0;
  for (int8_t v : qkernel) widest = std::max(widest, std::abs(int{v}));
  return widest;
}

void WeightedStage::read_weights(const StageReader& rd, const qbin::LayerRecord& r, const Shape& kernel_shape, const FusedActivation& a) {
  const int n = static_cast<int>(kernel_shape.back()), axis = static_cast<int>(kernel_shape.size()) - 1;
  const qbin::TensorRecord& k = r.tensor("kernel");
  const qbin::TensorRecord* b = r.find_tensor("bias");
  relu = a.relu;
  if (!rd.int8()) {
    kernel = StageReader::values<float>(r, k, qbin::DType::kF32, kernel_shape);
    bias = b ? StageReader::values<float>(r, *b, qbin::DType::kF32, {n}) : std::vector<float>(n, 0.f);
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
