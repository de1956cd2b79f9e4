// Dense at inference: its record read into a stage, its integer arithmetic and its lowering to
// oneDNN (quant/runtime/stage_kind.h). Its training side is layers/dense.cpp.
#include <algorithm>

#include "io/record_keys.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace {

namespace key = qbin::key;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// Weights [IN][OUT] (WeightedStage).
class DenseStage final : public WeightedStage {
 public:
  int IN = 0, OUT = 0;

  // acc = b_q[o] + sum (x[i] - z_in) * w[i][o] (eq. 11 or 12).
  void reference(RefActivation& x, const Stage& st) const override {
    if (island) return island_reference(x, st, Geometry{}, 0);
    RefActivation y = reference_output(st);
    for (int o = 0; o < OUT; ++o) {
      int32_t acc = qbias[o];
      for (int i = 0; i < IN; ++i) acc += (int32_t{x.q[i]} - input_zero_point) * int32_t{qkernel[static_cast<size_t>(i) * OUT + o]};
      write_accumulator(y, o, acc, output_scale[o], st, relu, output_zero_point, qmax);
    }
    x = std::move(y);
  }

  int lower(PlanBuilder& b, int cur, const Stage& st, const Stage*, bool&) const override {
    if (island) return lower_island(b, cur, st, Geometry{}, 0, "dense");
    const bool split_weights = b.needs_split(widest_pair_sum());
    std::vector<int32_t> folded;
    const void* bias_data = bias_for(b, folded);
    const dt out_type = st.f32_output ? dt::f32 : dt::u8;
    const dnnl::primitive_attr attr = output_attributes(b, st);
    const int64_t N = b.batch();
    if (b.int8 && b.no_vnni) {
      // Without VNNI, the rows as 1x1 images of IN channels and a 1x1 conv to OUT channels: the
      // same sums, scales and bias as the inner product, and oneDNN's int8 1x1 conv kernel beat
      // its gemm-based inner product there (AVX2, batch 1: 1.0 against 2.7 us; batch 256: 92
      // against 114 us, split). With VNNI the inner product (brgemm) is faster at batch 256 (22
      // against 88 us) and stays. On the split-weights path a 2-D [N, IN] source, each row twice,
      // meets the weights' halves stacked.
      if (b.desc(cur).dims().size() == 4) cur = b.flatten(cur, 1, 1, IN);
      std::vector<int8_t> stacked;
      if (split_weights) {
        cur = b.duplicated(cur, N, IN, memory::desc({N, 2 * int64_t{IN}}, dt::u8, tag::nc));
        stacked = PlanBuilder::stacked_halves(qkernel, 1);
      }
      const int64_t in = split_weights ? 2 * int64_t{IN} : IN;
      return b.conv1x1(cur, 1, 1, in, OUT, out_type, split_weights ? stacked.data() : qkernel.data(), static_cast<const int32_t*>(bias_data),
                       attr, split_weights ? "dense split-weights (as a 1x1 conv)" : "dense (as a 1x1 conv)");
    }
    if (b.desc(cur).dims().size() == 4 && !b.blocked) cur = b.flatten(cur, 1, 1, IN);  // a 1x1 image of IN channels
    const memory::dims sd = b.desc(cur).dims();
    // A 4-D source (blocked layout) is flattened by the primitive: weights {OUT, C, H, W} whose
    // user layout hwio is exactly the kernel's [H*W*C][OUT] (Keras' H, W, C flatten order).
    const void* w = b.int8 ? static_cast<const void*>(qkernel.data()) : kernel.data();
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

};

size_t read(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  const StageReader::Fused f = rd.fused(records, 1, true);
  const FusedActivation& a = f.activation;
  auto s = std::make_shared<DenseStage>();
  s->IN = StageReader::attr(r, key::kInFeatures, 1, 1 << 24);
  s->OUT = StageReader::attr(r, key::kUnits, 1, 1 << 16);
  if (rd.H != 1 || rd.W != 1 || s->IN != rd.C)
    StageReader::fail(r, fmt::format("in_features {} but its input is {}x{}x{} (expected a Flatten of {} features before it)", s->IN, rd.H,
                                     rd.W, rd.C, s->IN));
  s->read_weights(rd, r, {s->IN, s->OUT}, a, f.batch_norm);
  const int OUT = s->OUT;
  rd.push(r, std::move(s), 1, 1, OUT, a);
  return f.taken;
}

}  // namespace

const StageKind& dense_stage_kind() {
  static const StageKind kind{"Dense", read};
  return kind;
}

}  // namespace qnet
