// DepthwiseConv2D at inference: its record read into a stage (a BatchNormalization after it folded
// in, in float files), its integer arithmetic, and its lowering to oneDNN as a grouped convolution
// with one input channel per group (quant/runtime/stage_kind.h). Its training side is
// layers/depthwise_conv2d.cpp.
#include "io/record_keys.h"
#include "quant/runtime/byte_kernels.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace {

namespace key = qbin::key;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// Weights [KH][KW][1][C * M] (WeightedStage): output o = c * M + m filters input channel c.
class DepthwiseStage final : public WeightedStage {
 public:
  int C = 0, M = 1;
  Geometry g;

  // oneDNN's depthwise int8 kernels widen to 16 or 32 bits before they multiply: no sum saturates.
  int64_t widest_pair_sum() const override { return 0; }

  // acc = b_q[o] + sum over the taps inside the input of (x[c] - z_in) * w[tap][o] (eq. 11).
  void reference(RefActivation& x, const Stage& st) const override {
    if (island) return island_reference(x, st, g, M);
    RefActivation y = reference_output(st);
    const int outputs = C * M;
    for (int oh = 0; oh < st.H; ++oh)
      for (int ow = 0; ow < st.W; ++ow)
        for (int o = 0; o < outputs; ++o) {
          int32_t acc = qbias[o];
          for (int kh = 0; kh < g.KH; ++kh)
            for (int kw = 0; kw < g.KW; ++kw) {
              const int ih = oh * g.SH - g.pad_top + kh, iw = ow * g.SW - g.pad_left + kw;
              if (ih < 0 || ih >= x.H || iw < 0 || iw >= x.W) continue;
              acc += (int32_t{x.q[x.at(ih, iw, o / M)]} - input_zero_point) *
                     int32_t{qkernel[(static_cast<size_t>(kh) * g.KW + kw) * outputs + o]};
            }
          write_accumulator(y, y.at(oh, ow, o), acc, output_scale[o], st, relu, output_zero_point, qmax);
        }
    x = std::move(y);
  }

  // oneDNN's grouped convolution with one input and one output channel per group, whose weights
  // {C M, 1, 1, KH, KW} in hwigo layout are exactly the kernel [KH][KW][1][C * M]. A depth
  // multiplier M > 1 first repeats each input channel M times (u8::repeat_channels): oneDNN runs
  // M > 1 on a gemm whose u8 x s8 products saturate without VNNI, and on a slow reference
  // kernel on AVX2, where its depthwise kernels are exact and fast.
  int lower(PlanBuilder& b, int cur, const Stage& st, const Stage*, bool&) const override {
    if (island) return lower_island(b, cur, st, g, M, "depthwise conv");
    const int64_t N = b.batch(), outputs = int64_t{C} * M;
    Geometry pg = g;
    const bool padded = pg.pad_top || pg.pad_left || pg.pad_bottom || pg.pad_right;
    if (b.int8 && input_zero_point != 0 && padded) cur = b.framed_codes(cur, pg, input_zero_point);
    int64_t groups = C, per_group = M;
    if (b.int8 && M > 1) {
      cur = b.as_nhwc_u8(cur);
      const memory::dims in = b.desc(cur).dims();  // {N, C, H, W}
      const int src = cur, to = b.add(memory::desc({N, outputs, in[2], in[3]}, dt::u8, tag::nhwc));
      const int64_t pixels = N * in[2] * in[3], channels = C, times = M;
      b.kernel_step(fmt::format("repeat qnet:u8_channels_x{}", M), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, to}},
                    [=](const std::vector<memory>& mem) {
                      u8::repeat_channels(static_cast<const uint8_t*>(mem[src].get_data_handle()),
                                          static_cast<uint8_t*>(mem[to].get_data_handle()), pixels, channels, times);
                    });
      cur = to, groups = outputs, per_group = 1;
    }
    const void* w = b.int8 ? static_cast<const void*>(qkernel.data()) : kernel.data();
    return lower_convolution(b, cur, st, pg, {groups, per_group, 1, pg.KH, pg.KW}, tag::hwigo, w, "depthwise conv", true);
  }
};

size_t read(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  const StageReader::Fused f = rd.fused(records, 1, true);
  auto s = std::make_shared<DepthwiseStage>();
  s->C = StageReader::attr(r, key::kChannels, 1, 1 << 16);
  s->M = StageReader::attr(r, key::kDepthMultiplier, 1, 1 << 16);
  if (s->C != rd.C) StageReader::fail(r, fmt::format("channels {} but its input has {} channels", s->C, rd.C));
  if (int64_t{s->C} * s->M > (1 << 16)) StageReader::fail(r, fmt::format("{} channels x depth multiplier {} (expected at most 65536)", s->C, s->M));
  int OH = 0, OW = 0;
  s->g = rd.window(r, key::kKernelH, key::kKernelW, OH, OW);
  s->read_weights(rd, r, {s->g.KH, s->g.KW, 1, s->C * s->M}, f.activation, f.batch_norm);
  const int outputs = s->C * s->M;
  rd.push(r, std::move(s), OH, OW, outputs, f.activation);
  return f.taken;
}

}  // namespace

const StageKind& depthwise_conv2d_stage_kind() {
  static const StageKind kind{"DepthwiseConv2D", read};
  return kind;
}

}  // namespace qnet
