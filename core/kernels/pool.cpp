// max_pool2d and avg_pool2d kernels on NHWC, one vector of channels (core/simd.h) at a time. The
// max-pool backward recomputes which input was the first maximum of each window (row-major window
// order) and routes the gradient there, so the forward stores no indices. Average pooling divides
// by the number of window taps inside the input (TensorFlow's "same" padding leaves the padding
// out of the count).
#include "core/kernels.h"
#include "core/parallel_for.h"
#include "core/simd.h"

namespace qnet::QNET_ISA_NS {

namespace {

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

// Calls f(n, oh, ow, c, lanes) for every output pixel and block of kLanes channels, images split over
// threads (windows never cross images, so the backward's adds never race).
template <typename F>
inline void for_each_output_block(const PoolShape& s, F&& f) {
  parallel_for_dynamic(s.N, true, [&](int64_t n) {
    for (int64_t oh = 0; oh < s.OH; ++oh)
      for (int64_t ow = 0; ow < s.OW; ++ow)
        for (int64_t c = 0; c < s.C; c += kLanes) f(n, oh, ow, c, static_cast<int>(min_i(kLanes, s.C - c)));
  });
}

}  // namespace

void max_pool_forward(const PoolShape& s, const float* x, float* y) {
  const vf lowest = splat(-__builtin_inff());
  for_each_output_block(s, [&](int64_t n, int64_t oh, int64_t ow, int64_t c, int lanes) {
    vf m = lowest;
    for_each_window_tap(s, n, oh, ow, [&](int64_t at) {
      const vf v = load(x + at + c, lanes);
      m = v > m ? v : m;
    });
    store(y + ((n * s.OH + oh) * s.OW + ow) * s.C + c, m, lanes);
  });
}

void max_pool_backward(const PoolShape& s, const float* x, const float* y, const float* gy, float* gx) {
  // Non-overlapping windows that tile the input: each input gets exactly one store. Otherwise
  // windows overlap or leave inputs out, so gx starts at zero and gradients add up.
  const bool tiles = s.SH == s.KH && s.SW == s.KW && s.PT == 0 && s.PL == 0 && s.OH * s.SH == s.H && s.OW * s.SW == s.W;
  if (!tiles)
    for (int64_t i = 0; i < s.N * s.H * s.W * s.C; ++i) gx[i] = 0.f;
  for_each_output_block(s, [&](int64_t n, int64_t oh, int64_t ow, int64_t c, int lanes) {
    const int64_t o_at = ((n * s.OH + oh) * s.OW + ow) * s.C + c;
    const vf m = load(y + o_at, lanes), go = load(gy + o_at, lanes);
    vi taken = {};
    for_each_window_tap(s, n, oh, ow, [&](int64_t at) {
      const vi hit = (load(x + at + c, lanes) == m) & ~taken;  // first maximum only
      taken |= hit;
      const vf contribution = hit ? go : vf{};
      store(gx + at + c, tiles ? contribution : load(gx + at + c, lanes) + contribution, lanes);
    });
  });
}

namespace {
int64_t taps_inside(const PoolShape& s, int64_t oh, int64_t ow) {
  int64_t rows = 0, cols = 0;
  for (int64_t kh = 0; kh < s.KH; ++kh) rows += oh * s.SH - s.PT + kh >= 0 && oh * s.SH - s.PT + kh < s.H;
  for (int64_t kw = 0; kw < s.KW; ++kw) cols += ow * s.SW - s.PL + kw >= 0 && ow * s.SW - s.PL + kw < s.W;
  return rows * cols;
}
}  // namespace

// y = (the sum of the window's taps, in row-major order) / their count.
void avg_pool_forward(const PoolShape& s, const float* x, float* y) {
  for_each_output_block(s, [&](int64_t n, int64_t oh, int64_t ow, int64_t c, int lanes) {
    vf sum = {};
    for_each_window_tap(s, n, oh, ow, [&](int64_t at) { sum += load(x + at + c, lanes); });
    store(y + ((n * s.OH + oh) * s.OW + ow) * s.C + c, sum / static_cast<float>(taps_inside(s, oh, ow)), lanes);
  });
}

// gx = the sum over the windows holding an input of gy / count, windows in row-major order.
void avg_pool_backward(const PoolShape& s, const float* gy, float* gx) {
  for (int64_t i = 0; i < s.N * s.H * s.W * s.C; ++i) gx[i] = 0.f;
  for_each_output_block(s, [&](int64_t n, int64_t oh, int64_t ow, int64_t c, int lanes) {
    const vf g = load(gy + ((n * s.OH + oh) * s.OW + ow) * s.C + c, lanes) / static_cast<float>(taps_inside(s, oh, ow));
    for_each_window_tap(s, n, oh, ow, [&](int64_t at) { store(gx + at + c, load(gx + at + c, lanes) + g, lanes); });
  });
}

}  // namespace qnet::QNET_ISA_NS
