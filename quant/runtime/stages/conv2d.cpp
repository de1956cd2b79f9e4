// Conv2D at inference: its record read into a stage, its integer arithmetic and its lowering to
// oneDNN (quant/runtime/stage_kind.h). Its training side is layers/conv2d.cpp.
#include <algorithm>

#include "io/record_keys.h"
#include "quant/runtime/byte_kernels.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace {

namespace key = qbin::key;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// Weights [KH][KW][IC][OC] (WeightedStage).
class ConvStage final : public WeightedStage {
 public:
  int IC = 0, OC = 0;
  Geometry g;

  // acc = b_q[oc] + sum (x - z_in) * w over the taps inside the input (eq. 11): a padding tap
  // stands for real 0 and contributes nothing.
  void reference(RefActivation& x, const Stage& st) const override {
    if (island) return island_reference(x, st, g, 0);
    RefActivation y = reference_output(st);
    for (int oh = 0; oh < st.H; ++oh)
      for (int ow = 0; ow < st.W; ++ow)
        for (int oc = 0; oc < OC; ++oc) {
          int32_t acc = qbias[oc];
          for (int kh = 0; kh < g.KH; ++kh)
            for (int kw = 0; kw < g.KW; ++kw) {
              const int ih = oh * g.SH - g.pad_top + kh, iw = ow * g.SW - g.pad_left + kw;
              if (ih < 0 || ih >= x.H || iw < 0 || iw >= x.W) continue;
              for (int ic = 0; ic < IC; ++ic)
                acc += (int32_t{x.q[x.at(ih, iw, ic)]} - input_zero_point) *
                       int32_t{qkernel[((static_cast<size_t>(kh) * g.KW + kw) * IC + ic) * OC + oc]};
            }
          write_accumulator(y, y.at(oh, ow, oc), acc, output_scale[oc], st, relu, output_zero_point, qmax);
        }
    x = std::move(y);
  }

  int lower(PlanBuilder& b, int cur, const Stage& st, const Stage* next, bool& took_next) const override {
    if (island) return lower_island(b, cur, st, g, 0, "conv");
    const Geometry* pool = next ? next->op->max_pool_window() : nullptr;
    if (pool && b.int8 && !st.f32_output && fits_window_matmul(*pool)) {
      took_next = true;
      return lower_with_pool(b, cur, *next, *pool);
    }
    return lower_conv(b, cur, st);
  }

 private:
  int lower_conv(PlanBuilder& b, int cur, const Stage& st) const {
    const int64_t N = b.batch();
    Geometry pg = g;
    const bool split_weights = b.needs_split(widest_pair_sum());
    const bool padded = pg.pad_top || pg.pad_left || pg.pad_bottom || pg.pad_right;
    if (b.int8 && input_zero_point != 0 && padded) cur = b.framed_codes(cur, pg, input_zero_point);
    const void* w = b.int8 ? static_cast<const void*>(qkernel.data()) : kernel.data();
    int64_t in_channels = IC;
    std::vector<int8_t> stacked;
    if (split_weights) {  // each pixel's channels twice; per tap, the hi halves then the lo halves
      cur = b.as_nhwc_u8(cur);
      const memory::dims in = b.desc(cur).dims();  // {N, IC, H, W}
      cur = b.duplicated(cur, N * in[2] * in[3], IC, memory::desc({N, 2 * in_channels, in[2], in[3]}, dt::u8, tag::nhwc));
      stacked = PlanBuilder::stacked_halves(qkernel, static_cast<size_t>(pg.KH) * pg.KW);
      w = stacked.data(), in_channels *= 2;
    }
    return lower_convolution(b, cur, st, pg, {OC, in_channels, pg.KH, pg.KW}, tag::hwio, w, split_weights ? "conv split-weights" : "conv", false);
  }

  // int8 conv on one input channel, stride 1, no padding, followed by a pool whose a x b windows
  // tile its output, as one oneDNN matmul: a row per pooled pixel holding the input block its
  // window reads ((a + KH - 1) x (b + KW - 1) pixels, u8::window_blocks), and a x b groups of OC
  // columns, one per window position, whose weights are the kernel shifted to that position
  // (zeros elsewhere). Same integer sums, scales and rounding as the conv: bit-exact. The pool
  // is then the max over the groups (u8::max_of_phases). oneDNN's conv pads one input channel
  // to four for VNNI and wastes 3/4 of its multiplies; this took a third of its time
  // (docs/runtime.md). This is a choice of kernel for two stages that stay two stages in the
  // model; the reference runs them one by one.
  bool fits_window_matmul(const Geometry& q) const {
    return IC == 1 && g.SH == 1 && g.SW == 1 && g.pad_top == 0 && g.pad_left == 0 && g.pad_bottom == 0 && g.pad_right == 0 &&
           q.SH == q.KH && q.SW == q.KW && q.pad_top == 0 && q.pad_left == 0 && q.pad_bottom == 0 && q.pad_right == 0 && q.KH * q.KW > 1;
  }

  int lower_with_pool(PlanBuilder& b, int cur, const Stage& pool_st, const Geometry& pl) const {
    cur = b.as_nhwc_u8(cur);
    const memory::dims in = b.desc(cur).dims();  // {N, 1, H, W}
    const int a = pl.KH, bw = pl.KW, phase_count = a * bw, columns = phase_count * OC;
    const int KH = g.KH, KW = g.KW, BH = a + KH - 1, BW = bw + KW - 1, K = BH * BW;
    const int64_t N = b.batch(), H = in[2], W = in[3], PH = pool_st.H, PW = pool_st.W, M = N * PH * PW;
    const bool split_weights = b.needs_split(widest_pair_sum());
    const int copies = split_weights ? 2 : 1, rows_k = copies * K;  // split-weights: each block twice (needs_split)

    const int blocks = b.add(memory::desc({M, rows_k}, dt::u8, tag::ab)), src = cur;
    b.kernel_step(fmt::format("im2col qnet:u8_{}x{}_blocks{}", BH, BW, split_weights ? "_x2" : ""), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, blocks}},
                  [=](const std::vector<memory>& mem) {
                    u8::window_blocks(static_cast<const uint8_t*>(mem[src].get_data_handle()),
                                      static_cast<uint8_t*>(mem[blocks].get_data_handle()), N, H, W, PH, PW, a, bw, BH, BW, copies);
                  });

    // weights[i BW + j][(dy b + dx) OC + oc] = w[i - dy][j - dx][0][oc] inside the kernel, else 0.
    std::vector<int8_t> shifted(static_cast<size_t>(K) * columns, 0);
    for (int i = 0; i < BH; ++i)
      for (int j = 0; j < BW; ++j)
        for (int dy = 0; dy < a; ++dy)
          for (int dx = 0; dx < bw; ++dx) {
            const int kh = i - dy, kw = j - dx;
            if (kh < 0 || kh >= KH || kw < 0 || kw >= KW) continue;
            for (int oc = 0; oc < OC; ++oc)
              shifted[static_cast<size_t>(i * BW + j) * columns + (dy * bw + dx) * OC + oc] = qkernel[(static_cast<size_t>(kh) * KW + kw) * OC + oc];
          }
    if (split_weights) shifted = PlanBuilder::stacked_halves(shifted, 1);  // [K hi rows][K lo rows]
    std::vector<int32_t> phase_bias;
    std::vector<float> phase_scale;
    const std::vector<int32_t> folded = PlanBuilder::folded_bias(qbias, qkernel, input_zero_point);  // no padding taps here
    for (int ph = 0; ph < phase_count; ++ph) {
      phase_bias.insert(phase_bias.end(), folded.begin(), folded.end());
      phase_scale.insert(phase_scale.end(), output_scale.begin(), output_scale.end());
    }
    int phases = -1;
    if (b.no_vnni) {
      // The blocks as an nhwc image {N, rows_k, PH, PW} and a 1x1 conv to `columns` channels: the
      // same sums as the matmul, but without VNNI oneDNN's int8 1x1 conv kernel beat its int8
      // gemm here (AVX2, batch 256, split: 305k against 262k images/s; one pass on Zen 3: see
      // docs/runtime.md). With VNNI the matmul (brgemm) is the faster of the two.
      phases = b.conv1x1(blocks, PH, PW, rows_k, columns, dt::u8, shifted.data(), phase_bias.data(),
                         b.attributes(phase_scale, qmax, relu, output_zero_point), split_weights ? "conv1x1 split-weights" : "conv1x1");
    } else {
      const memory::desc bias_md({1, columns}, dt::s32, tag::ab);
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(b.desc(blocks), memory::desc({rows_k, columns}, dt::s8, tag::any), bias_md,
                                                         memory::desc({M, columns}, dt::u8, tag::ab)),
                                      b.attributes(phase_scale, qmax, relu, output_zero_point), b.eng);
      phases = b.add(pd.dst_desc());
      b.step(pd, "matmul", {{DNNL_ARG_SRC, blocks}, {DNNL_ARG_DST, phases}},
             {{DNNL_ARG_WEIGHTS, b.constant(memory::desc({rows_k, columns}, dt::s8, tag::ab), shifted.data(), pd.weights_desc())},
              {DNNL_ARG_BIAS, b.constant(bias_md, phase_bias.data(), pd.bias_desc())}});
    }

    const int out = b.add(memory::desc({N, OC, PH, PW}, dt::u8, tag::nhwc));
    const int oc = OC;
    b.kernel_step(fmt::format("pool qnet:u8_max_of_{}_phases", phase_count), {{DNNL_ARG_SRC, phases}, {DNNL_ARG_DST, out}},
                  [=](const std::vector<memory>& mem) {
                    u8::max_of_phases(static_cast<const uint8_t*>(mem[phases].get_data_handle()),
                                      static_cast<uint8_t*>(mem[out].get_data_handle()), N * PH, PW, oc, phase_count);
                  });
    return out;
  }
};

size_t read(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  const StageReader::Fused f = rd.fused(records, 1, true);
  const FusedActivation& a = f.activation;
  auto s = std::make_shared<ConvStage>();
  s->IC = StageReader::attr(r, key::kInChannels, 1, 1 << 16);
  s->OC = StageReader::attr(r, key::kFilters, 1, 1 << 16);
  if (s->IC != rd.C) StageReader::fail(r, fmt::format("in_channels {} but its input has {} channels", s->IC, rd.C));
  int OH = 0, OW = 0;
  s->g = rd.window(r, key::kKernelH, key::kKernelW, OH, OW);
  s->read_weights(rd, r, {s->g.KH, s->g.KW, s->IC, s->OC}, a, f.batch_norm);
  const int OC = s->OC;
  rd.push(r, std::move(s), OH, OW, OC, a);
  return f.taken;
}

}  // namespace

const StageKind& conv2d_stage_kind() {
  static const StageKind kind{"Conv2D", read};
  return kind;
}

}  // namespace qnet
