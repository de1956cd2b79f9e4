// Dense at inference: its record read into a stage, its integer arithmetic and its lowering to
// oneDNN (quant/stage_kind.h). Its training side is layers/dense.cpp.
#include <algorithm>

#include "io/record_keys.h"
#include "quant/stage_kind.h"

namespace qnet {

namespace {

namespace key = qbin::key;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

class DenseStage final : public StageOp {
 public:
  int IN = 0, OUT = 0;
  bool relu = false;               // a fused ReLU
  std::vector<float> kernel;       // f32: [IN][OUT]
  std::vector<float> bias;         // f32: [OUT]
  std::vector<int8_t> qkernel;     // int8: [IN][OUT]
  std::vector<int32_t> qbias;      // int8: [OUT], accumulator units
  std::vector<float> output_scale; // int8: [OUT] = s_in * s_w[o] (eq. 12, float output), or / s_out (u8 output)
  int32_t qmax = 255;
  int32_t input_zero_point = 0;
  int32_t output_zero_point = 0;

  // acc = b_q[o] + sum (x[i] - z_in) * w[i][o] (eq. 11 or 12).
  void reference(RefActivation& x, const Stage& st) const override {
    RefActivation y = reference_output(st);
    for (int o = 0; o < OUT; ++o) {
      int32_t acc = qbias[o];
      for (int i = 0; i < IN; ++i) acc += (int32_t{x.q[i]} - input_zero_point) * int32_t{qkernel[static_cast<size_t>(i) * OUT + o]};
      write_accumulator(y, o, acc, output_scale[o], st, relu, output_zero_point, qmax);
    }
    x = std::move(y);
  }

  int lower(PlanBuilder& b, int cur, const Stage& st, const Stage*, bool&) const override {
    const bool split_weights = b.needs_split(qkernel);
    const void* w = b.int8 ? static_cast<const void*>(qkernel.data()) : kernel.data();
    const std::vector<int32_t> folded = b.int8 ? PlanBuilder::folded_bias(qbias, qkernel, input_zero_point) : std::vector<int32_t>{};
    const void* bias_data = b.int8 ? static_cast<const void*>(folded.data()) : bias.data();
    const dt out_type = st.f32_output ? dt::f32 : dt::u8;
    const dnnl::primitive_attr attr = b.attributes(output_scale, st.f32_output ? 0 : qmax, relu, output_zero_point);
    const int64_t N = b.batch();
    if (split_weights) {  // int8: a 2-D [N, IN] source, each row twice; the weights' halves stacked
      cur = b.duplicated(cur, N, IN, memory::desc({N, 2 * int64_t{IN}}, dt::u8, tag::nc));
      const std::vector<int8_t> stacked = PlanBuilder::stacked_halves(qkernel, 1);
      // The doubled rows as 1x1 images of 2 IN channels and a 1x1 conv to OUT channels: the
      // same sums, scales and bias as the inner product. Without VNNI oneDNN's int8 1x1 conv
      // kernel beat its gemm-based inner product (AVX2, batch 1: 1.0 against 2.7 us; batch 256:
      // 92 against 114 us). With VNNI the inner product (brgemm) is faster at batch 256 (22
      // against 88 us), so the one-pass path keeps it.
      const int64_t IN2 = 2 * int64_t{IN};
      const int img = b.add(memory::desc({N, IN2, 1, 1}, dt::u8, tag::nhwc), cur);
      const memory::dims wd{OUT, IN2, 1, 1};
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, b.desc(img),
                                        memory::desc(wd, dt::s8, tag::any), memory::desc({OUT}, dt::s32, tag::x),
                                        memory::desc({N, OUT, 1, 1}, out_type, tag::nhwc), {1, 1}, {0, 0}, {0, 0});
      dnnl::convolution_forward::primitive_desc pd(d, attr, b.eng);
      const int out = b.add(pd.dst_desc());
      b.step(pd, "dense split-weights (as a 1x1 conv)", {{DNNL_ARG_SRC, img}, {DNNL_ARG_DST, out}},
             {{DNNL_ARG_WEIGHTS, b.constant(memory::desc(wd, dt::s8, tag::hwio), stacked.data(), pd.weights_desc())},
              {DNNL_ARG_BIAS, b.constant(memory::desc({OUT}, dt::s32, tag::x), bias_data, pd.bias_desc())}});
      return out;
    }
    if (b.desc(cur).dims().size() == 4 && !b.blocked) cur = b.flatten(cur, 1, 1, IN);  // a 1x1 image of IN channels
    const memory::dims sd = b.desc(cur).dims();
    // A 4-D source (blocked layout) is flattened by the primitive: weights {OUT, C, H, W} whose
    // user layout hwio is exactly the kernel's [H*W*C][OUT] (Keras' H, W, C flatten order).
    const memory::dims wdims = sd.size() == 4 ? memory::dims{OUT, sd[1], sd[2], sd[3]} : memory::dims{OUT, sd[1]};
    const tag user_tag = sd.size() == 4 ? tag::hwio : tag::io;
    dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, b.desc(cur), memory::desc(wdims, b.wei, tag::any),
                                        memory::desc({OUT}, b.bias, tag::x), memory::desc({N, OUT}, out_type, tag::nc));
    dnnl::inner_product_forward::primitive_desc pd(d, attr, b.eng);
    cur = b.as(cur, pd.src_desc());
    const int out = b.add(pd.dst_desc());
    b.step(pd, "inner_product", {{DNNL_ARG_SRC, cur}, {DNNL_ARG_DST, out}},
           {{DNNL_ARG_WEIGHTS, b.constant(memory::desc(wdims, b.wei, user_tag), w, pd.weights_desc())},  // [IN][OUT]
            {DNNL_ARG_BIAS, b.constant(memory::desc({OUT}, b.bias, tag::x), bias_data, pd.bias_desc())}});
    return out;
  }

  int widest_weight_code() const override {
    int w = 0;
    for (int8_t v : qkernel) w = std::max(w, std::abs(int{v}));
    return w;
  }
};

bool read(StageReader& rd, const qbin::LayerRecord& r, const qbin::LayerRecord* next) {
  const FusedActivation a = rd.activation(r, next);
  auto s = std::make_shared<DenseStage>();
  s->IN = StageReader::attr(r, key::kInFeatures, 1, 1 << 24);
  s->OUT = StageReader::attr(r, key::kUnits, 1, 1 << 16);
  if (rd.H != 1 || rd.W != 1 || s->IN != rd.C)
    StageReader::fail(r, fmt::format("in_features {} but its input is {}x{}x{} (expected a Flatten of {} features before it)", s->IN, rd.H,
                                     rd.W, rd.C, s->IN));
  const qbin::TensorRecord& k = r.tensor("kernel");
  const qbin::TensorRecord* bias = r.find_tensor("bias");
  s->relu = a.relu;
  if (!rd.int8()) {
    s->kernel = StageReader::values<float>(r, k, qbin::DType::kF32, {s->IN, s->OUT});
    s->bias = bias ? StageReader::values<float>(r, *bias, qbin::DType::kF32, {s->OUT}) : std::vector<float>(s->OUT, 0.f);
  } else {
    s->qkernel = StageReader::values<int8_t>(r, k, qbin::DType::kS8, {s->IN, s->OUT});
    rd.check_kernel_codes(r, s->qkernel);
    const std::vector<float> sw = rd.weight_scales(r, k, 1, s->OUT);
    s->qbias = bias ? StageReader::values<int32_t>(r, *bias, qbin::DType::kS32, {s->OUT}) : std::vector<int32_t>(s->OUT, 0);
    s->input_zero_point = rd.zero;
    rd.check_accumulator(r, s->IN, s->qbias);
    s->qmax = (1 << rd.m.bits) - 1;
    s->output_scale = rd.output_scales(sw, a);
    s->output_zero_point = a.zero_point;
  }
  const int OUT = s->OUT;
  rd.push(r, std::move(s), 1, 1, OUT, a);
  return a.took_next;
}

}  // namespace

const StageKind& dense_stage_kind() {
  static const StageKind kind{"Dense", read};
  return kind;
}

}  // namespace qnet
