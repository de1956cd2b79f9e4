// ZeroPadding2D at inference: its record read into a stage, its arithmetic and its lowering
// (quant/runtime/stage_kind.h). Its training side is layers/zero_padding2d.cpp.
//
// The frame holds real 0: the code z of the activation's grid (its zero point; 0 for pixels and
// after ReLU) on u8 codes, 0.f on floats. It keeps the grid, so the stage's output has its
// input's scale and zero point.
#include <algorithm>
#include <cstring>

#include "io/record_keys.h"
#include "quant/runtime/byte_kernels.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace {

namespace key = qbin::key;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

class ZeroPaddingStage final : public StageOp {
 public:
  int top = 0, bottom = 0, left = 0, right = 0;

  void reference(RefActivation& x, const Stage& st) const override {
    RefActivation y = reference_output(st);
    std::fill(y.q.begin(), y.q.end(), static_cast<uint8_t>(st.zero_point));  // floats are 0 already
    for (int h = 0; h < x.H; ++h)
      for (int w = 0; w < x.W; ++w)
        for (int c = 0; c < x.C; ++c) {
          if (x.real) y.f[y.at(h + top, w + left, c)] = x.f[x.at(h, w, c)];
          else y.q[y.at(h + top, w + left, c)] = x.q[x.at(h, w, c)];
        }
    x = std::move(y);
  }

  // Codes: qnet's byte kernel u8::pad with z. Floats (oneDNN has no padding primitive): the same
  // frame, written by a kernel step on nhwc f32 buffers.
  int lower(PlanBuilder& b, int cur, const Stage& st, const Stage*, bool&) const override {
    const int64_t N = b.batch(), H = b.H, W = b.W, C = b.C, PH = st.H, PW = st.W;
    const int t = top, l = left, bt = bottom, r = right;
    if (b.desc(cur).data_type() == dt::u8) {
      cur = b.as_nhwc_u8(cur);
      const int src = cur, out = b.add(memory::desc({N, C, PH, PW}, dt::u8, tag::nhwc));
      const uint8_t z = static_cast<uint8_t>(st.zero_point);
      b.kernel_step(fmt::format("pad qnet:u8_with_{}", z), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}}, [=](const std::vector<memory>& mem) {
        u8::pad(static_cast<const uint8_t*>(mem[src].get_data_handle()), static_cast<uint8_t*>(mem[out].get_data_handle()), N, H, W, C, t, l,
                bt, r, z);
      });
      return out;
    }
    cur = b.as(cur, memory::desc({N, C, H, W}, dt::f32, tag::nhwc));
    const int src = cur, out = b.add(memory::desc({N, C, PH, PW}, dt::f32, tag::nhwc));
    b.kernel_step("pad qnet:f32_with_0", {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}}, [=](const std::vector<memory>& mem) {
      const auto* in = static_cast<const float*>(mem[src].get_data_handle());
      auto* o = static_cast<float*>(mem[out].get_data_handle());
      std::fill(o, o + N * PH * PW * C, 0.f);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t h = 0; h < H; ++h)
          std::memcpy(o + ((n * PH + t + h) * PW + l) * C, in + (n * H + h) * W * C, static_cast<size_t>(W * C) * sizeof(float));
    });
    return out;
  }
};

size_t read(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  auto s = std::make_shared<ZeroPaddingStage>();
  s->top = StageReader::attr(r, key::kPadTop, 0, 64);
  s->bottom = StageReader::attr(r, key::kPadBottom, 0, 64);
  s->left = StageReader::attr(r, key::kPadLeft, 0, 64);
  s->right = StageReader::attr(r, key::kPadRight, 0, 64);
  if (rd.H + s->top + s->bottom > 16384 || rd.W + s->left + s->right > 16384)
    StageReader::fail(r, fmt::format("pads a {}x{} input beyond 16384 pixels a side", rd.H, rd.W));
  const int OH = rd.H + s->top + s->bottom, OW = rd.W + s->left + s->right;
  rd.push_same_grid(r, std::move(s), OH, OW, rd.C);
  return 1;
}

}  // namespace

const StageKind& zero_padding2d_stage_kind() {
  static const StageKind kind{"ZeroPadding2D", read};
  return kind;
}

}  // namespace qnet
