// AveragePooling2D and GlobalAveragePooling2D at inference: their records read into a stage, their
// arithmetic and their lowering (quant/runtime/stage_kind.h). Their training side is
// layers/average_pooling2d.cpp.
//
// On u8 codes the mean is requantized onto the grid of the Quantize or ReLU record after it
// (eq. 17, u8::avg_pool_code defines every rounding) by qnet's byte kernel u8::avg_pool; on floats
// (an f32 model, or after an int8 model's logits) it is the mean of the taps inside the input.
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

class AvgPoolStage final : public StageOp {
 public:
  Geometry g;            // the window; for a global pool, the whole input
  u8::Requantize q{};    // u8 codes in and out

  u8::AvgPoolWindow window(const Stage& st) const { return {g.KH, g.KW, g.SH, g.SW, g.pad_top, g.pad_left, st.H, st.W}; }

  void reference(RefActivation& x, const Stage& st) const override {
    RefActivation y = reference_output(st);
    for (int oh = 0; oh < st.H; ++oh)
      for (int ow = 0; ow < st.W; ++ow)
        for (int c = 0; c < x.C; ++c) {
          int32_t acc = 0, count = 0;
          float sum = 0.f;
          for (int kh = 0; kh < g.KH; ++kh)
            for (int kw = 0; kw < g.KW; ++kw) {
              const int ih = oh * g.SH - g.pad_top + kh, iw = ow * g.SW - g.pad_left + kw;
              if (ih < 0 || ih >= x.H || iw < 0 || iw >= x.W) continue;
              if (x.real) sum += x.f[x.at(ih, iw, c)];
              else acc += int32_t{x.q[x.at(ih, iw, c)]} - q.z_in;
              ++count;
            }
          if (x.real) y.f[y.at(oh, ow, c)] = sum / static_cast<float>(count);
          else y.q[y.at(oh, ow, c)] = u8::avg_pool_code(acc, count, q);
        }
    x = std::move(y);
  }

  int lower(PlanBuilder& b, int cur, const Stage& st, const Stage*, bool&) const override {
    const int64_t N = b.batch(), H = b.H, W = b.W, C = b.C;
    const u8::AvgPoolWindow w = window(st);
    if (b.desc(cur).data_type() == dt::u8) {
      cur = b.as_nhwc_u8(cur);
      const int src = cur, out = b.add(memory::desc({N, C, st.H, st.W}, dt::u8, tag::nhwc));
      const u8::Requantize rq = q;
      b.kernel_step(fmt::format("avg pool qnet:u8_{}x{}", g.KH, g.KW), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}},
                    [=](const std::vector<memory>& mem) {
                      u8::avg_pool(static_cast<const uint8_t*>(mem[src].get_data_handle()), static_cast<uint8_t*>(mem[out].get_data_handle()),
                                   N, H, W, C, w, rq);
                    });
      return out;
    }
    if (b.int8) {  // floats after an int8 model's logits: the reference's sums, in its order
      cur = b.as(cur, memory::desc({N, C, H, W}, dt::f32, tag::nhwc));
      const int src = cur, out = b.add(memory::desc({N, C, st.H, st.W}, dt::f32, tag::nhwc));
      b.kernel_step("avg pool qnet:f32", {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}}, [=](const std::vector<memory>& mem) {
        const auto* in = static_cast<const float*>(mem[src].get_data_handle());
        auto* o = static_cast<float*>(mem[out].get_data_handle());
        for (int64_t n = 0; n < N; ++n)
          for (int64_t oh = 0; oh < w.OH; ++oh)
            for (int64_t ow = 0; ow < w.OW; ++ow)
              for (int64_t c = 0; c < C; ++c) {
                float sum = 0.f;
                int count = 0;
                for (int kh = 0; kh < w.KH; ++kh)
                  for (int kw = 0; kw < w.KW; ++kw) {
                    const int64_t ih = oh * w.SH - w.pad_top + kh, iw = ow * w.SW - w.pad_left + kw;
                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                    sum += in[((n * H + ih) * W + iw) * C + c];
                    ++count;
                  }
                o[((n * w.OH + oh) * w.OW + ow) * C + c] = sum / static_cast<float>(count);
              }
      });
      return out;
    }
    dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_avg_exclude_padding, b.desc(cur),
                                  memory::desc({N, C, st.H, st.W}, dt::f32, tag::any), {g.SH, g.SW}, {g.KH, g.KW}, {g.pad_top, g.pad_left},
                                  {g.pad_bottom, g.pad_right});
    dnnl::pooling_forward::primitive_desc pd(d, PlanBuilder::plain_attributes(), b.eng);
    const int out = b.add(pd.dst_desc());
    b.step(pd, "avg pool", {{DNNL_ARG_SRC, cur}, {DNNL_ARG_DST, out}});
    return out;
  }
};

// Codes in: the record after it gives the output's grid (a ReLU on it clamps at its zero point 0).
size_t read_pool(StageReader& rd, std::span<const qbin::LayerRecord> records, std::shared_ptr<AvgPoolStage> s, int OH, int OW) {
  const qbin::LayerRecord& r = records[0];
  if (!rd.int8() || rd.f32) {
    rd.push_same_grid(r, std::move(s), OH, OW, rd.C);
    return 1;
  }
  const StageReader::Fused f = rd.fused(records, 1, false);
  if (f.activation.f32)
    StageReader::fail(r, "average pooling of u8 codes with no Quantize or ReLU record of its output's grid after it");
  s->q = {rd.zero, rd.scale / f.activation.scale, f.activation.zero_point, (1 << f.activation.bits) - 1};
  if (!std::isfinite(s->q.multiplier) || !sane_scale(s->q.multiplier))
    StageReader::fail(r, fmt::format("requantization multiplier {} (expected {})", s->q.multiplier, kScaleRange));
  rd.push(r, std::move(s), OH, OW, rd.C, f.activation);
  return f.taken;
}

size_t read_average(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  auto s = std::make_shared<AvgPoolStage>();
  int OH = 0, OW = 0;
  s->g = rd.window(r, key::kWindowH, key::kWindowW, OH, OW);
  return read_pool(rd, records, std::move(s), OH, OW);
}

size_t read_global(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  if (int64_t{rd.H} * rd.W > (1 << 23)) StageReader::fail(r, fmt::format("a {}x{} input (expected at most 2^23 pixels to average)", rd.H, rd.W));
  auto s = std::make_shared<AvgPoolStage>();
  int OH = 0, OW = 0;
  s->g = rd.window(r, rd.H, rd.W, 1, 1, false, OH, OW);
  return read_pool(rd, records, std::move(s), 1, 1);
}

}  // namespace

const StageKind& average_pooling2d_stage_kind() {
  static const StageKind kind{"AveragePooling2D", read_average};
  return kind;
}

const StageKind& global_average_pooling2d_stage_kind() {
  static const StageKind kind{"GlobalAveragePooling2D", read_global};
  return kind;
}

}  // namespace qnet
