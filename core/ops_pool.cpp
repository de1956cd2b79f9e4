// max_pool2d on NHWC, 16 channels per vector. The backward recomputes which input was the
// first maximum of each window (row-major window order) and routes the gradient there,
// so the forward stores no indices.
#include <algorithm>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "core/ops.h"
#include "core/simd.h"

namespace qnet {

namespace {
using i32x16 = int32_t __attribute__((vector_size(64)));

struct PoolShape {
  int64_t N, H, W, C, OH, OW, KH, KW, SH, SW, PT, PL;
};

// Calls f(offset of the tap's pixel in image n) for the in-range taps of window (oh, ow).
template <typename F>
inline void for_each_window_tap(const PoolShape& s, int64_t n, int64_t oh, int64_t ow, F&& f) {
  for (int64_t kh = 0; kh < s.KH; ++kh) {
    const int64_t ih = oh * s.SH - s.PT + kh;
    if (ih < 0 || ih >= s.H) continue;
    for (int64_t kw = 0; kw < s.KW; ++kw) {
      const int64_t iw = ow * s.SW - s.PL + kw;
      if (iw >= 0 && iw < s.W) f(((n * s.H + ih) * s.W + iw) * s.C);
    }
  }
}
// Calls f(n, oh, ow, c, lanes) for every output pixel and 16-channel block, images split
// over threads (windows never cross images, so the backward's adds never race).
template <typename F>
inline void for_each_output_block(const PoolShape& s, F&& f) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t oh = 0; oh < s.OH; ++oh)
      for (int64_t ow = 0; ow < s.OW; ++ow)
        for (int64_t c = 0; c < s.C; c += 16) f(n, oh, ow, c, static_cast<int>(std::min<int64_t>(16, s.C - c)));
}
}  // namespace

Variable max_pool2d(const Variable& x, const Pool2dOptions& o) {
  const Tensor& in = x.value();
  const int SH = o.stride_h ? o.stride_h : o.window_h, SW = o.stride_w ? o.stride_w : o.window_w;
  if (in.rank() != 4 || o.window_h < 1 || o.window_w < 1 || SH < 1 || SW < 1)
    throw std::invalid_argument(fmt::format("max_pool2d: input {}, window {}x{}, stride {}x{} (expected [N, H, W, C], "
                                            "window and stride >= 1)",
                                            shape_str(in.shape()), o.window_h, o.window_w, SH, SW));
  const AxisGeometry gh = axis_geometry(in.dim(1), o.window_h, SH, o.padding);
  const AxisGeometry gw = axis_geometry(in.dim(2), o.window_w, SW, o.padding);
  const PoolShape s{in.dim(0), in.dim(1), in.dim(2), in.dim(3), gh.out, gw.out, o.window_h, o.window_w,
                    SH, SW, gh.pad_before, gw.pad_before};
  if (s.OH <= 0 || s.OW <= 0)
    throw std::invalid_argument(fmt::format("max_pool2d: window {}x{} does not fit input {}", o.window_h, o.window_w,
                                            shape_str(in.shape())));
  Tensor out({s.N, s.OH, s.OW, s.C});
  const float* src = in.data();
  float* dst = out.data();
  const f32x16 lowest = splat16(-std::numeric_limits<float>::infinity());
  for_each_output_block(s, [&](int64_t n, int64_t oh, int64_t ow, int64_t c, int lanes) {
    f32x16 m = lowest;
    for_each_window_tap(s, n, oh, ow, [&](int64_t at) {
      const f32x16 v = load16(src + at + c, lanes);
      m = v > m ? v : m;
    });
    store16(dst + ((n * s.OH + oh) * s.OW + ow) * s.C + c, m, lanes);
  });
  return make_result(out, {x}, [x, out, s](Node& self) {
    // Non-overlapping windows that tile the input: each input gets exactly one store.
    const bool tiles = s.SH == s.KH && s.SW == s.KW && s.PT == 0 && s.PL == 0 && s.OH * s.SH == s.H && s.OW * s.SW == s.W;
    Tensor g = tiles ? Tensor(x.shape()) : Tensor::zeros(x.shape());
    const float* xv = x.value().data();
    const float* yv = out.data();
    const float* gy = self.grad.data();
    float* gx = g.data();
    for_each_output_block(s, [&](int64_t n, int64_t oh, int64_t ow, int64_t c, int lanes) {
      const int64_t o_at = ((n * s.OH + oh) * s.OW + ow) * s.C + c;
      const f32x16 m = load16(yv + o_at, lanes), go = load16(gy + o_at, lanes);
      i32x16 taken = {};
      for_each_window_tap(s, n, oh, ow, [&](int64_t at) {
        const i32x16 hit = (load16(xv + at + c, lanes) == m) & ~taken;  // first maximum only
        taken |= hit;
        const f32x16 contribution = hit ? go : f32x16{};
        store16(gx + at + c, tiles ? contribution : load16(gx + at + c, lanes) + contribution, lanes);
      });
    });
    x.add_grad(std::move(g));
  });
}

}  // namespace qnet
