// Depthwise convolution kernels on NHWC: each channel c is convolved with its own KH x KW filter
// w[kh][kw][c] (a [KH, KW, 1, C] kernel; ops_conv.cpp repeats the channels first for a depth
// multiplier above 1). Vectorised over channels, one vector of kLanes channels at a time.
//
// Every output adds its terms in the same order on every path: the bias, then the taps in
// (kh, kw) order. Gradients of the weights sum fixed chunks of kReductionChunk images in chunk
// order (thread-count independent); the input gradient of each image is written by one thread.
#include "core/kernels.h"
#include "core/parallel_for.h"
#include "core/simd.h"

namespace qnet::QNET_ISA_NS {

namespace {

// The window of output (oh, ow): the taps [kh0, kh1) x [kw0, kw1) that fall inside the input.
struct TapRange {
  int64_t kh0, kh1, kw0, kw1, ih0, iw0;
};
inline TapRange tap_range(const PoolShape& s, int64_t oh, int64_t ow) {
  const int64_t ih0 = oh * s.SH - s.PT, iw0 = ow * s.SW - s.PL;
  return {ih0 < 0 ? -ih0 : 0, ih0 + s.KH > s.H ? s.H - ih0 : s.KH, iw0 < 0 ? -iw0 : 0, iw0 + s.KW > s.W ? s.W - iw0 : s.KW, ih0, iw0};
}

// kPixels interior outputs of one row side by side (independent FMA chains), one channel block.
constexpr int kPixels = 4;

}  // namespace

void depthwise_forward(const PoolShape& s, const float* x, const float* w, const float* bias, float* y) {
  const int64_t blocks = (s.C + kLanes - 1) / kLanes;
  parallel_for_dynamic(s.N * s.OH, true, [=](int64_t row) {
    const int64_t n = row / s.OH, oh = row % s.OH;
    const float* xn = x + n * s.H * s.W * s.C;
    float* yr = y + row * s.OW * s.C;
    for (int64_t b = 0; b < blocks; ++b) {
      const int lanes = lanes_in_block(s.C, b);
      const int64_t c = b * kLanes;
      const vf b0 = bias ? load(bias + c, lanes) : vf{};
      for (int64_t ow = 0; ow < s.OW;) {
        const TapRange t = tap_range(s, oh, ow);
        const bool tile = ow + kPixels <= s.OW && t.kw0 == 0 && t.kw1 == s.KW && tap_range(s, oh, ow + kPixels - 1).kw1 == s.KW;
        if (tile) {  // kPixels outputs whose windows lie inside the row's width
          vf acc[kPixels];
          for (int p = 0; p < kPixels; ++p) acc[p] = b0;
          for (int64_t kh = t.kh0; kh < t.kh1; ++kh)
            for (int64_t kw = 0; kw < s.KW; ++kw) {
              const vf wv = load(w + (kh * s.KW + kw) * s.C + c, lanes);
              const float* in = xn + ((t.ih0 + kh) * s.W + t.iw0 + kw) * s.C + c;
              for (int p = 0; p < kPixels; ++p) acc[p] += load(in + p * s.SW * s.C, lanes) * wv;
            }
          for (int p = 0; p < kPixels; ++p) store(yr + (ow + p) * s.C + c, acc[p], lanes);
          ow += kPixels;
          continue;
        }
        vf acc = b0;
        for (int64_t kh = t.kh0; kh < t.kh1; ++kh)
          for (int64_t kw = t.kw0; kw < t.kw1; ++kw)
            acc += load(xn + ((t.ih0 + kh) * s.W + t.iw0 + kw) * s.C + c, lanes) * load(w + (kh * s.KW + kw) * s.C + c, lanes);
        store(yr + ow * s.C + c, acc, lanes);
        ++ow;
      }
    }
  });
}

// dx[n, ih, iw, c] = the sum over the outputs whose window holds (ih, iw) of dy * w[tap][c],
// added output by output in row-major order.
void depthwise_backward_input(const PoolShape& s, const float* w, const float* dy, float* dx) {
  const int64_t blocks = (s.C + kLanes - 1) / kLanes;
  parallel_for_dynamic(s.N, true, [=](int64_t n) {
    float* dxn = dx + n * s.H * s.W * s.C;
    for (int64_t i = 0; i < s.H * s.W * s.C; ++i) dxn[i] = 0.f;
    for (int64_t oh = 0; oh < s.OH; ++oh)
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        const TapRange t = tap_range(s, oh, ow);
        const float* g = dy + ((n * s.OH + oh) * s.OW + ow) * s.C;
        for (int64_t b = 0; b < blocks; ++b) {
          const int lanes = lanes_in_block(s.C, b);
          const int64_t c = b * kLanes;
          const vf gv = load(g + c, lanes);
          for (int64_t kh = t.kh0; kh < t.kh1; ++kh)
            for (int64_t kw = t.kw0; kw < t.kw1; ++kw) {
              float* d = dxn + ((t.ih0 + kh) * s.W + t.iw0 + kw) * s.C + c;
              store(d, load(d, lanes) + gv * load(w + (kh * s.KW + kw) * s.C + c, lanes), lanes);
            }
        }
      }
  });
}

// dw[kh][kw][c] = sum over outputs of x[tap pixel][c] * dy[c]; db[c] = sum of dy[c]: per chunk of
// images, outputs in row-major order, chunks added in order.
void depthwise_backward_weights(const PoolShape& s, const float* x, const float* dy, float* dw, float* db) {
  const int64_t blocks = (s.C + kLanes - 1) / kLanes, taps = s.KH * s.KW, width = (taps + 1) * blocks;
  const int64_t chunks = (s.N + kReductionChunk - 1) / kReductionChunk;
  VecBuffer partial(chunks * width);  // per chunk: [taps + 1 (bias)][blocks]
  vf* const parts = partial.data();
  parallel_for_dynamic(chunks, true, [=](int64_t chunk) {
    vf* part = parts + chunk * width;
    for (int64_t n = chunk * kReductionChunk; n < min_i(s.N, (chunk + 1) * kReductionChunk); ++n)
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          const TapRange t = tap_range(s, oh, ow);
          const float* g = dy + ((n * s.OH + oh) * s.OW + ow) * s.C;
          const float* xn = x + n * s.H * s.W * s.C;
          for (int64_t b = 0; b < blocks; ++b) {
            const int lanes = lanes_in_block(s.C, b);
            const int64_t c = b * kLanes;
            const vf gv = load(g + c, lanes);
            part[taps * blocks + b] += gv;
            for (int64_t kh = t.kh0; kh < t.kh1; ++kh)
              for (int64_t kw = t.kw0; kw < t.kw1; ++kw)
                part[(kh * s.KW + kw) * blocks + b] += load(xn + ((t.ih0 + kh) * s.W + t.iw0 + kw) * s.C + c, lanes) * gv;
          }
        }
  });
  for (int64_t chunk = 1; chunk < chunks; ++chunk)
    for (int64_t i = 0; i < width; ++i) partial[i] += partial[chunk * width + i];
  for (int64_t k = 0; k < taps; ++k)
    for (int64_t b = 0; b < blocks; ++b) store(dw + k * s.C + b * kLanes, partial[k * blocks + b], lanes_in_block(s.C, b));
  if (db)
    for (int64_t b = 0; b < blocks; ++b) store(db + b * kLanes, partial[taps * blocks + b], lanes_in_block(s.C, b));
}

}  // namespace qnet::QNET_ISA_NS
