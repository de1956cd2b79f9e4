// What the Conv2D and Dense stages share (WeightedStage, quant/runtime/stage_kind.h): reading weights
// and the activation after them, and the output side of their primitives.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "io/record_keys.h"
#include "quant/runtime/byte_kernels.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

int64_t WeightedStage::widest_pair_sum() const {
  int widest = 0;
  for (int8_t v : qkernel) widest = std::max(widest, std::abs(int{v}));
  return 2 * int64_t{input_code_max} * widest;
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
  island = rd.int8() && r.get_int(qbin::key::kKeepFloat, 0) == 1;
  if (island) {  // export folded any BatchNormalization in; its input and output grids are the neighbours'
    input_scale = rd.scale, input_zero_point = rd.zero, input_code_max = rd.code_max;
    island_output_scale = a.scale, output_zero_point = a.zero_point, qmax = (1 << a.bits) - 1;
  }
  if (!rd.int8() || island) {
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
  const std::vector<float> weight_scales = rd.weight_scales(r, k, axis, n);
  rd.check_kernel_codes(r, k, qkernel);
  qbias = b ? StageReader::values<int32_t>(r, *b, qbin::DType::kS32, {n}) : std::vector<int32_t>(n, 0);
  input_zero_point = rd.zero;
  input_code_max = rd.code_max;
  rd.check_accumulator(r, qkernel, qbias);
  qmax = (1 << a.bits) - 1;
  output_scale = rd.output_scales(weight_scales, a);
  output_zero_point = a.zero_point;
}

namespace {
u8::FloatIsland island_params(const WeightedStage& s, const Stage& st, int64_t H, int64_t W, int64_t IC, const Geometry& g, int M) {
  return {H, W, IC, st.H, st.W, st.C, g.KH, g.KW, g.SH, g.SW, g.pad_top, g.pad_left, M, s.kernel.data(), s.bias.data(),
          s.input_scale, s.input_zero_point, s.relu, !st.f32_output, s.island_output_scale, s.output_zero_point, s.qmax};
}
}  // namespace

void WeightedStage::island_reference(RefActivation& x, const Stage& st, const Geometry& g, int depth_multiplier) const {
  RefActivation y = reference_output(st);
  u8::reference::float_island(x.q.data(), st.f32_output ? static_cast<void*>(y.f.data()) : y.q.data(), 1,
                              island_params(*this, st, x.H, x.W, x.C, g, depth_multiplier));
  x = std::move(y);
}

int WeightedStage::lower_island(PlanBuilder& b, int cur, const Stage& st, const Geometry& g, int depth_multiplier, const char* what) const {
  using dnnl::memory;
  const int64_t N = b.batch();
  const bool rows = b.desc(cur).dims().size() == 2;  // a Dense after Flatten: [N, features]
  cur = rows ? b.as(cur, memory::desc({N, int64_t{b.C}}, memory::data_type::u8, memory::format_tag::nc)) : b.as_nhwc_u8(cur);
  const memory::data_type type = st.f32_output ? memory::data_type::f32 : memory::data_type::u8;
  const int out = rows ? b.add(memory::desc({N, int64_t{st.C}}, type, memory::format_tag::nc))
                       : b.add(memory::desc({N, int64_t{st.C}, st.H, st.W}, type, memory::format_tag::nhwc));
  const u8::FloatIsland p = island_params(*this, st, b.H, b.W, b.C, g, depth_multiplier);
  const int src = cur;
  b.kernel_step(fmt::format("{} qnet:f32_island", what), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}}, [=](const std::vector<memory>& mem) {
    u8::float_island(static_cast<const uint8_t*>(mem[src].get_data_handle()), mem[out].get_data_handle(), N, p);
  });
  return out;
}

dnnl::primitive_attr WeightedStage::output_attributes(const PlanBuilder& b, const Stage& st) const {
  return b.attributes(output_scale, st.f32_output ? 0 : qmax, relu, output_zero_point);
}

const void* WeightedStage::bias_for(const PlanBuilder& b, std::vector<int32_t>& folded) const {
  if (!b.int8) return bias.data();
  folded = PlanBuilder::folded_bias(qbias, qkernel, input_zero_point);
  return folded.data();
}

int WeightedStage::lower_convolution(PlanBuilder& b, int cur, const Stage& st, const Geometry& g, const dnnl::memory::dims& wdims,
                                     dnnl::memory::format_tag weights_tag, const void* weights, const char* what, bool src_any) const {
  using dnnl::memory;
  const int64_t N = b.batch(), outputs = static_cast<int64_t>(output_scale.empty() ? bias.size() : output_scale.size());
  const memory::data_type out_type = st.f32_output ? memory::data_type::f32 : memory::data_type::u8;
  const memory::desc src = src_any ? memory::desc(b.desc(cur).dims(), b.desc(cur).data_type(), memory::format_tag::any) : b.desc(cur);
  dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
                                    memory::desc(wdims, b.wei, memory::format_tag::any), memory::desc({outputs}, b.bias, memory::format_tag::x),
                                    memory::desc({N, outputs, st.H, st.W}, out_type, memory::format_tag::any), {g.SH, g.SW},
                                    {g.pad_top, g.pad_left}, {g.pad_bottom, g.pad_right});
  dnnl::convolution_forward::primitive_desc pd(d, output_attributes(b, st), b.eng);
  cur = b.as(cur, pd.src_desc());
  std::vector<int32_t> folded;
  const void* bias_data = bias_for(b, folded);
  const int out = b.add(pd.dst_desc());
  b.step(pd, what, {{DNNL_ARG_SRC, cur}, {DNNL_ARG_DST, out}},
         {{DNNL_ARG_WEIGHTS, b.constant(memory::desc(wdims, b.wei, weights_tag), weights, pd.weights_desc())},
          {DNNL_ARG_BIAS, b.constant(memory::desc({outputs}, b.bias, memory::format_tag::x), bias_data, pd.bias_desc())}});
  return out;
}

}  // namespace qnet
