// conv2d kernels: direct NHWC convolution with HWIO kernels, and the fused 3x3 conv + 2x2 max-pool.
//
// The innermost loop runs over output channels, contiguous in both the kernel and the output,
// one vector (core/simd.h) at a time; images are spread over threads. Direct convolution beat im2col + GEMM on the
// reference model (docs/performance.md): with IC = 1 the GEMM's inner dimension is 9 and the
// im2col copy costs more than the multiply.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/kernels.h"
#include "core/parallel.h"
#include "core/parallel_for.h"
#include "core/simd.h"

namespace qnet::QNET_ISA_NS {

namespace {

// Kernels are instantiated for common kernel sizes (KH_, KW_, IC_ known at compile time, so the
// tap loops unroll) and once generically (all 0: taken from the ConvShape).
template <int KH_, int KW_, int IC_>
struct Taps {
  static int64_t kh(const ConvShape& s) { return KH_ ? KH_ : s.KH; }
  static int64_t kw(const ConvShape& s) { return KW_ ? KW_ : s.KW; }
  static int64_t ic(const ConvShape& s) { return IC_ ? IC_ : s.IC; }
  static constexpr int64_t fixed_k = int64_t{KH_} * KW_ * IC_;  // 0 when generic
};

// Runs f.template operator()<Taps<...>>() with the kernel dimensions fixed where a
// specialisation exists (3x3 and 5x5 on 1 or 3 channels), else the generic version.
template <typename F>
void conv_dispatch(const ConvShape& s, F&& f) {
  if (s.KH == 3 && s.KW == 3 && s.IC == 1) return f.template operator()<Taps<3, 3, 1>>();
  if (s.KH == 3 && s.KW == 3 && s.IC == 3) return f.template operator()<Taps<3, 3, 3>>();
  if (s.KH == 5 && s.KW == 5 && s.IC == 1) return f.template operator()<Taps<5, 5, 1>>();
  return f.template operator()<Taps<0, 0, 0>>();
}

// The kernel [K = KH*KW*IC, OC] in blocks of kLanes channels, zero-padded: wb[k * blocks + b].
void block_kernel(const ConvShape& s, const float* w, vf* wb) {
  const int64_t K = s.KH * s.KW * s.IC, blocks = (s.OC + kLanes - 1) / kLanes;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t b = 0; b < blocks; ++b) wb[k * blocks + b] = load(w + k * s.OC + b * kLanes, static_cast<int>(s.OC - b * kLanes));
}

// Calls tap(k, v) for the K = KH*KW*IC receptive-field values of output pixel (oh, ow) of image
// n, in (kh, kw, ic) order. Interior pixels read the input directly (with T's sizes fixed, the
// loops unroll into broadcast FMAs); border pixels skip the padding taps.
template <typename T, typename F>
inline void for_each_tap_value(const ConvShape& s, const float* x, int64_t n, int64_t oh, int64_t ow, F&& tap) {
  const int64_t KH = T::kh(s), KW = T::kw(s), IC = T::ic(s);
  const int64_t ih0 = oh * s.SH - s.PT, iw0 = ow * s.SW - s.PL;
  const float* base = x + ((n * s.H + ih0) * s.W + iw0) * IC;
  if (ih0 >= 0 && ih0 + KH <= s.H && iw0 >= 0 && iw0 + KW <= s.W) {
    for (int64_t kh = 0; kh < KH; ++kh)
      for (int64_t kw = 0; kw < KW; ++kw)
        for (int64_t ic = 0; ic < IC; ++ic) tap((kh * KW + kw) * IC + ic, base[(kh * s.W + kw) * IC + ic]);
    return;
  }
  for (int64_t kh = 0; kh < KH; ++kh) {
    if (ih0 + kh < 0 || ih0 + kh >= s.H) continue;
    for (int64_t kw = 0; kw < KW; ++kw) {
      if (iw0 + kw < 0 || iw0 + kw >= s.W) continue;
      for (int64_t ic = 0; ic < IC; ++ic) tap((kh * KW + kw) * IC + ic, base[(kh * s.W + kw) * IC + ic]);
    }
  }
}

// Register tiles (several input channels, e.g. Keras' 32 -> 64 conv): kTilePixels output pixels
// x up to kTileBlocks channel blocks of accumulators in the forward, kTileTaps taps x up to
// kTileBlocks blocks in the kernel gradient, so each loaded value feeds several independent FMA
// chains (one accumulator per output made the forward wait on FMA latency: 288 taps in a row).
// Each accumulator adds its terms in the one-output loops' order. AVX-512 has 32 vector
// registers, AVX2 and SSE 16.
constexpr int kTilePixels = kLanes >= 16 ? 6 : 4;
constexpr int kTileTaps = kLanes >= 16 ? 6 : 4;
constexpr int kTileBlocks = kLanes >= 16 ? 4 : 3;

// The input with its padding written out as zeros, so that every tap of every output pixel
// reads memory (no border cases in the tiles; a zero tap adds 0 * w). `shape` becomes the framed
// input's, with no padding. Returns x itself when the conv has no padding.
const float* framed_input(ConvShape& s, const float* x, std::vector<float>& frame) {
  const int64_t FH = (s.OH - 1) * s.SH + s.KH, FW = (s.OW - 1) * s.SW + s.KW;
  if (s.PT == 0 && s.PL == 0 && FH <= s.H && FW <= s.W) return x;
  frame.assign(static_cast<size_t>(s.N * FH * FW * s.IC), 0.f);
  const int64_t rows = std::min(s.H, FH - s.PT), cols = std::min(s.W, FW - s.PL);
  float* const framed = frame.data();
  parallel_for_dynamic(s.N * rows, true, [=](int64_t r) {
    const int64_t n = r / rows, h = r % rows;
    const float* src = x + (n * s.H + h) * s.W * s.IC;
    std::copy(src, src + cols * s.IC, framed + ((n * FH + h + s.PT) * FW + s.PL) * s.IC);
  });
  s.H = FH, s.W = FW, s.PT = s.PL = 0;
  return frame.data();
}

// Channel blocks [b0, b0 + B) of P output pixels whose receptive fields start at in[p] and whose
// outputs start at out[p]: bias, then the taps in (kh, kw, ic) order.
template <typename T, int P, int B>
inline void conv_tile(const ConvShape& s, const float* const* in, float* const* out, const vf* wb, int64_t blocks, const float* bias,
                      int64_t b0) {
  const int64_t KH = T::kh(s), KW = T::kw(s), IC = T::ic(s);
  vf acc[P][B];
  for (int t = 0; t < B; ++t) {
    const vf b = bias ? load(bias + (b0 + t) * kLanes, lanes_in_block(s.OC, b0 + t)) : vf{};
    for (int p = 0; p < P; ++p) acc[p][t] = b;
  }
  const float* px[P];
  for (int p = 0; p < P; ++p) px[p] = in[p];
  for (int64_t kh = 0; kh < KH; ++kh)
    for (int64_t kw = 0; kw < KW; ++kw) {
      const int64_t at = (kh * s.W + kw) * IC;
      const vf* wk = wb + (kh * KW + kw) * IC * blocks + b0;
      for (int64_t ic = 0; ic < IC; ++ic) {
        vf w[B];
        for (int t = 0; t < B; ++t) w[t] = wk[ic * blocks + t];
        for (int p = 0; p < P; ++p) {
          const float v = px[p][at + ic];
          for (int t = 0; t < B; ++t) acc[p][t] += v * w[t];
        }
      }
    }
  for (int p = 0; p < P; ++p)
    for (int t = 0; t < B; ++t) store(out[p] + (b0 + t) * kLanes, acc[p][t], lanes_in_block(s.OC, b0 + t));
}

// conv_tile over all channel blocks, kTileBlocks at a time (fewer for the last ones).
template <typename T, int P>
inline void conv_tile_blocks(const ConvShape& s, const float* const* in, float* const* out, const vf* wb, int64_t blocks,
                             const float* bias) {
  for (int64_t b0 = 0; b0 < blocks;) {
    const int64_t left = blocks - b0;
    if (left >= kTileBlocks) conv_tile<T, P, kTileBlocks>(s, in, out, wb, blocks, bias, b0), b0 += kTileBlocks;
    else if (kTileBlocks > 3 && left == 3) conv_tile<T, P, 3>(s, in, out, wb, blocks, bias, b0), b0 += 3;
    else if (left >= 2) conv_tile<T, P, 2>(s, in, out, wb, blocks, bias, b0), b0 += 2;
    else conv_tile<T, P, 1>(s, in, out, wb, blocks, bias, b0), b0 += 1;
  }
}

// conv_tile_blocks for P = 1..kTilePixels chosen at run time (the last pixels of an image).
template <typename T, int P = kTilePixels>
inline void conv_tile_pixels(int count, const ConvShape& s, const float* const* in, float* const* out, const vf* wb, int64_t blocks,
                             const float* bias) {
  if constexpr (P >= 1) {
    if (count == P) return conv_tile_blocks<T, P>(s, in, out, wb, blocks, bias);
    conv_tile_pixels<T, P - 1>(count, s, in, out, wb, blocks, bias);
  }
}

// y[p, oc] = bias[oc] + sum_k patch_p[k] * w[k, oc], kLanes output channels per vector; each
// image's output pixels go kTilePixels at a time, across row ends.
template <typename T>
void conv_forward_t(const ConvShape& shape, const float* input, const float* w, const float* bias, float* y) {
  ConvShape s = shape;
  std::vector<float> frame;
  const float* x = framed_input(s, input, frame);
  const int64_t blocks = (s.OC + kLanes - 1) / kLanes, pixels = s.OH * s.OW;
  VecBuffer wb(s.KH * s.KW * s.IC * blocks);
  block_kernel(s, w, wb.data());
  const vf* wbp = wb.data();
  parallel_for_dynamic(s.N, true, [=](int64_t n) {
    for (int64_t p0 = 0; p0 < pixels; p0 += kTilePixels) {
      const int count = static_cast<int>(min_i(kTilePixels, pixels - p0));
      const float* in[kTilePixels];
      float* out[kTilePixels];
      for (int p = 0; p < count; ++p) {
        const int64_t oh = (p0 + p) / s.OW, ow = (p0 + p) % s.OW;
        in[p] = x + ((n * s.H + oh * s.SH) * s.W + ow * s.SW) * s.IC;
        out[p] = y + (n * pixels + p0 + p) * s.OC;
      }
      conv_tile_pixels<T>(count, s, in, out, wbp, blocks, bias);
    }
  });
}

// The number of values of x[0, n) that are not zero.
int64_t count_nonzeros(const float* x, int64_t n) {
  int64_t nonzero = 0;
  for (int64_t i = 0; i < n; i += kLanes) nonzero += __builtin_popcount(nonzero_lanes(load(x + i, static_cast<int>(min_i(kLanes, n - i)))));
  return nonzero;
}

// f(c, v[c]) for each c in [0, C) where v[c] is not zero, in order: a vector of channels at a time,
// by their nonzero bits (the two walks of dy below find a pixel's nonzeros so).
template <typename F>
inline void for_each_nonzero(const float* v, int64_t C, F&& f) {
  for (int64_t c0 = 0; c0 < C; c0 += kLanes)
    for (uint32_t m = nonzero_lanes(load(v + c0, lanes_in_block(C, c0 / kLanes))); m != 0; m &= m - 1) {
      const int64_t c = c0 + __builtin_ctz(m);
      f(c, v[c]);
    }
}

// The stride-1 input gradient as the conv above (shape t: dy the input, dx the output, wb the
// turned kernel blocked) when most of dy is zero, as a max-pool's gradient is (3 of 4 positions,
// and where the ReLU after the pool gave 0). Output pixel p sums its taps (kh, kw) in order, and
// tap (kh, kw) reads input pixel p + (kh - PT, kw - PL): the input pixels in raster order, each
// one's channels in order. So the input pixels can instead be walked in raster order, each one's
// nonzero values added to the (up to) KH x KW outputs it reaches, held in registers meanwhile:
// every output receives the dense kernel's terms in the dense kernel's order, less the exact zeros,
// and adding +-0 to a sum that started at +0 never changes it (a sum of nonzero terms is never
// -0; the weights are finite). The same bits at a fraction of the multiply-adds.
struct NonZero {
  int32_t channel;
  float v;
};
constexpr int kScatterTaps = 9, kScatterBlocks = kLanes >= 16 ? 2 : 1;  // 18 (AVX-512) or 9 accumulators

// Input pixel terms nz[0, count) added to T outputs (target[i]: output pixel of tap tap[i], or a
// scratch vector when off the image), channel blocks [b0, b0 + B).
template <int T, int B>
inline void scatter_taps(const NonZero* nz, int32_t count, const vf* wb, int64_t IC, int64_t blocks, int64_t b0, const int64_t* tap,
                         float* const* target, int64_t OC) {
  vf acc[T][B];
  const vf* wtap[T];
  for (int i = 0; i < T; ++i) {
    wtap[i] = wb + tap[i] * IC * blocks + b0;
    for (int b = 0; b < B; ++b) acc[i][b] = load(target[i] + (b0 + b) * kLanes, lanes_in_block(OC, b0 + b));
  }
  for (int32_t j = 0; j < count; ++j) {
    const float v = nz[j].v;
    const int64_t at = nz[j].channel * blocks;
    for (int i = 0; i < T; ++i)
      for (int b = 0; b < B; ++b) acc[i][b] += v * wtap[i][at + b];
  }
  for (int i = 0; i < T; ++i)
    for (int b = 0; b < B; ++b) store(target[i] + (b0 + b) * kLanes, acc[i][b], lanes_in_block(OC, b0 + b));
}

// scatter_taps with T = 1 .. kScatterTaps chosen at run time (a kernel's last taps).
template <int B, int T = kScatterTaps>
inline void scatter_some_taps(int taps, const NonZero* nz, int32_t count, const vf* wb, int64_t IC, int64_t blocks, int64_t b0,
                              const int64_t* tap, float* const* target, int64_t OC) {
  if constexpr (T >= 1) {
    if (taps == T) return scatter_taps<T, B>(nz, count, wb, IC, blocks, b0, tap, target, OC);
    scatter_some_taps<B, T - 1>(taps, nz, count, wb, IC, blocks, b0, tap, target, OC);
  }
}

// dx of one image (y, zeroed here) from its dy (x) by scatter_taps.
void scatter_image(const ConvShape& t, const float* x, const vf* wb, float* y) {
  const int64_t blocks = (t.OC + kLanes - 1) / kLanes, taps = t.KH * t.KW;
  for (int64_t i = 0; i < t.OH * t.OW * t.OC; ++i) y[i] = 0.f;
  NonZero* const nz = scratch<NonZero>(t.IC);
  float* const off_image = scratch_floats(blocks * kLanes);  // the targets of taps that leave the image
  for (int64_t i = 0; i < blocks * kLanes; ++i) off_image[i] = 0.f;
  for (int64_t h = 0; h < t.H; ++h)
    for (int64_t w = 0; w < t.W; ++w) {
      const float* v = x + (h * t.W + w) * t.IC;
      int32_t count = 0;
      for_each_nonzero(v, t.IC, [&](int64_t c, float value) { nz[count++] = {static_cast<int32_t>(c), value}; });
      if (count == 0) continue;
      for (int64_t k0 = 0; k0 < taps; k0 += kScatterTaps) {
        const int n = static_cast<int>(min_i(kScatterTaps, taps - k0));
        int64_t tap[kScatterTaps];
        float* target[kScatterTaps];
        for (int i = 0; i < n; ++i) {
          const int64_t k = k0 + i, oh = h + t.PT - k / t.KW, ow = w + t.PL - k % t.KW;
          tap[i] = k;
          target[i] = oh >= 0 && oh < t.OH && ow >= 0 && ow < t.OW ? y + (oh * t.OW + ow) * t.OC : off_image;
        }
        for (int64_t b0 = 0; b0 < blocks;) {
          if (blocks - b0 >= kScatterBlocks) {
            scatter_some_taps<kScatterBlocks>(n, nz, count, wb, t.IC, blocks, b0, tap, target, t.OC);
            b0 += kScatterBlocks;
          } else {
            scatter_some_taps<1>(n, nz, count, wb, t.IC, blocks, b0, tap, target, t.OC);
            b0 += 1;
          }
        }
      }
    }
}

// Whether the conv of shape t (stride 1, no bias) scatters x's nonzeros: always (walk kNonZeros),
// never (kAll), or (kEither) when estimated faster than the dense tiles. The estimate, in
// nanoseconds, fitted to `bench_ops` on Zen 5 (docs/performance.md): dense 0.2 a vector
// multiply-add; scatter 10 + 2.5 x taps x blocks an input pixel (its channels' scan, the outputs'
// loads and stores) and 0.65 a multiply-add of a nonzero input. Keras' second conv's gradient (a
// max-pool's: <= 25 of 121 positions) takes the scatter, a dense 3x3 16-channel one not.
bool scatter_nonzeros(const ConvShape& t, const float* x, GradientWalk walk) {
  if (walk != GradientWalk::kEither) return walk == GradientWalk::kNonZeros;
  const int64_t blocks = (t.OC + kLanes - 1) / kLanes, taps = t.KH * t.KW;
  const double in_pixels = static_cast<double>(t.N * t.H * t.W), out_pixels = static_cast<double>(t.N * t.OH * t.OW);
  const double dense = 0.2 * out_pixels * static_cast<double>(taps * t.IC * blocks);
  double scatter = in_pixels * (10 + 2.5 * static_cast<double>(taps * blocks));
  if (scatter >= dense) return false;  // not even with no nonzeros: no need to count them
  scatter += 0.65 * static_cast<double>(count_nonzeros(x, t.N * t.H * t.W * t.IC) * taps * blocks);
  return scatter < dense;
}

// The conv of shape t by scatter_image where scatter_nonzeros says so, else returns false having
// done nothing.
bool sparse_conv_forward(const ConvShape& t, const float* x, const float* w, float* y, GradientWalk walk) {
  if (!scatter_nonzeros(t, x, walk)) return false;
  const int64_t blocks = (t.OC + kLanes - 1) / kLanes;
  VecBuffer wb(t.KH * t.KW * t.IC * blocks);
  block_kernel(t, w, wb.data());
  const vf* wbp = wb.data();
  parallel_for_dynamic(t.N, true, [=](int64_t n) {
    scatter_image(t, x + n * t.H * t.W * t.IC, wbp, y + n * t.OH * t.OW * t.OC);
  });
  return true;
}

// partial[c * width + i] for chunks c = 0..chunks-1 summed into partial[i], in chunk order.
void add_chunks_in_order(vf* partial, int64_t chunks, int64_t width) {
  for (int64_t c = 1; c < chunks; ++c)
    for (int64_t i = 0; i < width; ++i) partial[i] += partial[c * width + i];
}

// The kernel gradient of images [n_begin, n_end) (framed: no padding) for taps [k0, k0 + KT)
// and channel blocks [b0, b0 + B): acc[t][b] += patch_p[k0 + t] * dy[p, block b] over the
// pixels in order, written to partial[b * (K + 1) + k].
// Full: every block holds kLanes channels (plain loads; with masked ones in the loop GCC kept
// the accumulators in memory).
template <int KT, int B, bool Full>
inline void weight_gradient_tile(const ConvShape& s, const float* x, const float* dy, int64_t n_begin, int64_t n_end, int64_t k0,
                                 int64_t b0, const int64_t* tap_offset, vf* partial) {
  const int64_t K = s.KH * s.KW * s.IC, step = s.SW * s.IC;
  int64_t off[KT];
  for (int t = 0; t < KT; ++t) off[t] = tap_offset[k0 + t];
  const int last_lanes = lanes_in_block(s.OC, b0 + B - 1);
  vf acc[KT][B] = {};
  const float* g = dy + n_begin * s.OH * s.OW * s.OC + b0 * kLanes;
  for (int64_t n = n_begin; n < n_end; ++n)
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      const float* base = x + (n * s.H + oh * s.SH) * s.W * s.IC;
      for (int64_t ow = 0; ow < s.OW; ++ow, base += step, g += s.OC) {
        vf gv[B];
#pragma GCC unroll 8
        for (int b = 0; b < B; ++b) gv[b] = Full || b + 1 < B ? *reinterpret_cast<const vfu*>(g + b * kLanes) : load(g + b * kLanes, last_lanes);
#pragma GCC unroll 16
        for (int t = 0; t < KT; ++t) {
          const float v = base[off[t]];
#pragma GCC unroll 8
          for (int b = 0; b < B; ++b) acc[t][b] += v * gv[b];
        }
      }
    }
  for (int t = 0; t < KT; ++t)
    for (int b = 0; b < B; ++b) partial[(b0 + b) * (K + 1) + k0 + t] = acc[t][b];
}

template <int KT, int B>
inline void weight_gradient_tile(const ConvShape& s, const float* x, const float* dy, int64_t n_begin, int64_t n_end, int64_t k0,
                                 int64_t b0, const int64_t* tap_offset, vf* partial) {
  if ((b0 + B) * kLanes <= s.OC) weight_gradient_tile<KT, B, true>(s, x, dy, n_begin, n_end, k0, b0, tap_offset, partial);
  else weight_gradient_tile<KT, B, false>(s, x, dy, n_begin, n_end, k0, b0, tap_offset, partial);
}

template <int KT>
inline void weight_gradient_tiles(const ConvShape& s, const float* x, const float* dy, int64_t n_begin, int64_t n_end, int64_t k0,
                                  int64_t blocks, const int64_t* off, vf* partial) {
  for (int64_t b0 = 0; b0 < blocks;) {
    const int64_t left = blocks - b0;
    if (left >= kTileBlocks) weight_gradient_tile<KT, kTileBlocks>(s, x, dy, n_begin, n_end, k0, b0, off, partial), b0 += kTileBlocks;
    else if (kTileBlocks > 3 && left == 3) weight_gradient_tile<KT, 3>(s, x, dy, n_begin, n_end, k0, b0, off, partial), b0 += 3;
    else if (left >= 2) weight_gradient_tile<KT, 2>(s, x, dy, n_begin, n_end, k0, b0, off, partial), b0 += 2;
    else weight_gradient_tile<KT, 1>(s, x, dy, n_begin, n_end, k0, b0, off, partial), b0 += 1;
  }
}

// dW[k, oc] = sum over pixels p of patch_p[k] * dy[p, oc]; db[oc] = sum of dy[p, oc]. Each chunk
// of kReductionChunk images has its own partial sums, added in chunk order: the result does not
// depend on how many threads ran the chunks.
// The kernel gradient of images [n_begin, n_end) by dy's nonzero values, when the input's channels
// fill whole vectors: per output channel, the pixels where its dy is not zero, in order, each
// adding dy x its patch (K values: K / kLanes vectors, each within one tap) to accumulators over k.
// Element (k, oc) gets the tiles' terms (patch value x dy) in the tiles' order (pixels in order)
// less exact zeros, from +0: the same bits (as the input gradient's walk above; the product is
// the same either way round). Writes part[block][k] as the tiles do, the bias (k = K) included.
struct ChannelTerm {
  int32_t pixel;  // in the chunk
  float v;
};
constexpr int kPatchVectors = kLanes >= 16 ? 9 : 6;  // accumulators a pass over a channel's terms

template <int G>
inline void patch_pass(const ChannelTerm* terms, int32_t count, const float* const* pixel_x, const int64_t* vec_offset, vf* acc_out) {
  vf acc[G] = {};
  for (int32_t j = 0; j < count; ++j) {
    const float v = terms[j].v;
    const float* px = pixel_x[terms[j].pixel];
    for (int g = 0; g < G; ++g) acc[g] += v * *reinterpret_cast<const vfu*>(px + vec_offset[g]);
  }
  for (int g = 0; g < G; ++g) acc_out[g] = acc[g];
}

template <int G = kPatchVectors>
inline void patch_pass_some(int n, const ChannelTerm* terms, int32_t count, const float* const* pixel_x, const int64_t* vec_offset,
                            vf* acc_out) {
  if constexpr (G >= 1) {
    if (n == G) return patch_pass<G>(terms, count, pixel_x, vec_offset, acc_out);
    patch_pass_some<G - 1>(n, terms, count, pixel_x, vec_offset, acc_out);
  }
}

void sparse_weight_gradient_chunk(const ConvShape& s, const float* x, const float* dy, int64_t n_begin, int64_t n_end,
                                  const int64_t* tap_offset, vf* part) {
  const int64_t K = s.KH * s.KW * s.IC, vectors = K / kLanes, blocks = (s.OC + kLanes - 1) / kLanes;
  const int64_t image = s.OH * s.OW, pixels = (n_end - n_begin) * image;
  ChannelTerm* const terms = scratch<ChannelTerm>(s.OC * pixels);  // channel c's at terms[c * pixels ...]
  int32_t* const count = scratch<int32_t>(s.OC);
  const float** const pixel_x = scratch<const float*>(pixels);  // each pixel's patch in x
  int64_t* const vec_offset = scratch<int64_t>(vectors);
  for (int64_t j = 0; j < vectors; ++j) vec_offset[j] = tap_offset[j * kLanes];
  for (int64_t c = 0; c < s.OC; ++c) count[c] = 0;
  const float* g = dy + n_begin * image * s.OC;
  for (int64_t p = 0; p < pixels; ++p, g += s.OC) {
    const int64_t n = n_begin + p / image, oh = p % image / s.OW, ow = p % s.OW;
    pixel_x[p] = x + ((n * s.H + oh * s.SH) * s.W + ow * s.SW) * s.IC;
    for_each_nonzero(g, s.OC, [&](int64_t c, float value) { terms[c * pixels + count[c]++] = {static_cast<int32_t>(p), value}; });
  }
  vf acc[kPatchVectors];
  for (int64_t c = 0; c < s.OC; ++c)
    for (int64_t j0 = 0; j0 < vectors; j0 += kPatchVectors) {
      const int n = static_cast<int>(min_i(kPatchVectors, vectors - j0));
      patch_pass_some(n, terms + c * pixels, count[c], pixel_x, vec_offset + j0, acc);
      for (int i = 0; i < n; ++i)
        for (int l = 0; l < kLanes; ++l) part[(c / kLanes) * (K + 1) + (j0 + i) * kLanes + l][c % kLanes] = acc[i][l];
    }
  for (int64_t b = 0; b < blocks; ++b) {  // the bias: the sum of dy, as the tiles
    vf sum = {};
    for (int64_t p = n_begin * image; p < n_end * image; ++p) sum += load(dy + p * s.OC + b * kLanes, lanes_in_block(s.OC, b));
    part[b * (K + 1) + K] = sum;
  }
}

// Whether the kernel gradient walks dy's nonzeros: always (kNonZeros), never (kAll), or (kEither)
// when estimated faster. The estimate, in nanoseconds, fitted to `bench_ops` on Zen 5
// (docs/performance.md): the tiles 0.15 a vector multiply-add; the walk 5 + 4 x dy's channel
// blocks a pixel (finding its nonzeros) and 1 + 0.4 x K / lanes a nonzero (one FMA per vector of
// its patch). Keras' second conv's gradient (a max-pool's) takes the walk.
bool walk_nonzeros(const ConvShape& s, const float* dy, GradientWalk walk) {
  if (walk != GradientWalk::kEither) return walk == GradientWalk::kNonZeros;
  const int64_t K = s.KH * s.KW * s.IC, blocks = (s.OC + kLanes - 1) / kLanes, pixels = s.N * s.OH * s.OW;
  const double tiles = 0.15 * static_cast<double>(pixels * K * blocks);
  double by_nonzeros = static_cast<double>(pixels) * (5 + 4 * static_cast<double>(blocks));
  if (by_nonzeros >= tiles) return false;  // not even with no nonzeros: no need to count them
  by_nonzeros += static_cast<double>(count_nonzeros(dy, pixels * s.OC)) * (1 + 0.4 * static_cast<double>(K / kLanes));
  return by_nonzeros < tiles;
}

template <typename T>
void conv_backward_weights_t(const ConvShape& shape, const float* input, const float* dy, float* dw, float* db, GradientWalk walk) {
  const int64_t K = T::kh(shape) * T::kw(shape) * T::ic(shape), blocks = (shape.OC + kLanes - 1) / kLanes, width = (K + 1) * blocks;
  const bool by_nonzeros = T::fixed_k == 0 && shape.IC % kLanes == 0 && walk_nonzeros(shape, dy, walk);
  const int64_t chunks = (shape.N + kReductionChunk - 1) / kReductionChunk;
  VecBuffer partial(chunks * width);  // per chunk: [blocks][K + 1 (bias)]
  constexpr int64_t kFixedK = T::fixed_k;  // registers when K is known, else register tiles of taps
  ConvShape s = shape;
  std::vector<float> frame;
  const float* x = kFixedK == 0 ? framed_input(s, input, frame) : input;
  std::vector<int64_t> tap_offset(K);  // tap k = (kh, kw, ic): its offset in the (framed) input
  for (int64_t k = 0; k < K; ++k) tap_offset[k] = (k / (s.KW * s.IC) * s.W + k / s.IC % s.KW) * s.IC + k % s.IC;
  vf* const parts = partial.data();
  const int64_t* const taps = tap_offset.data();
  parallel_for_dynamic(chunks, true, [=](int64_t chunk) {
    const int64_t n_begin = chunk * kReductionChunk, n_end = min_i(s.N, (chunk + 1) * kReductionChunk);
    vf* part = parts + chunk * width;
    if constexpr (kFixedK == 0) {
      if (by_nonzeros) return sparse_weight_gradient_chunk(s, x, dy, n_begin, n_end, taps, part);
      int64_t k0 = 0;
      for (; k0 + kTileTaps <= K; k0 += kTileTaps) weight_gradient_tiles<kTileTaps>(s, x, dy, n_begin, n_end, k0, blocks, taps, part);
      for (; k0 < K; ++k0) weight_gradient_tiles<1>(s, x, dy, n_begin, n_end, k0, blocks, taps, part);
      for (int64_t b = 0; b < blocks; ++b) {  // the bias: the sum of dy
        vf sum = {};
        for (int64_t p = n_begin * s.OH * s.OW; p < n_end * s.OH * s.OW; ++p) sum += load(dy + p * s.OC + b * kLanes, lanes_in_block(s.OC, b));
        part[b * (K + 1) + K] = sum;
      }
    } else {
      for (int64_t b = 0; b < blocks; ++b) {
        const int lanes = lanes_in_block(s.OC, b);
        vf a[kFixedK + 1] = {};
        for (int64_t n = n_begin; n < n_end; ++n)
          for (int64_t oh = 0; oh < s.OH; ++oh)
            for (int64_t ow = 0; ow < s.OW; ++ow) {
              const vf g = load(dy + ((n * s.OH + oh) * s.OW + ow) * s.OC + b * kLanes, lanes);
              a[K] += g;
              for_each_tap_value<T>(s, x, n, oh, ow, [&](int64_t k, float v) { a[k] += v * g; });
            }
        for (int64_t k = 0; k <= K; ++k) part[b * (K + 1) + k] = a[k];
      }
    }
  });
  add_chunks_in_order(partial.data(), chunks, width);
  for (int64_t b = 0; b < blocks; ++b) {
    const int lanes = lanes_in_block(s.OC, b);
    for (int64_t k = 0; k < K; ++k) store(dw + k * s.OC + b * kLanes, partial[b * (K + 1) + k], lanes);
    if (db) store(db + b * kLanes, partial[b * (K + 1) + K], lanes);
  }
}

}  // namespace

void conv_forward(const ConvShape& s, const float* x, const float* w, const float* bias, float* y) {
  conv_dispatch(s, [&]<typename T>() { conv_forward_t<T>(s, x, w, bias, y); });
}

void conv_backward_weights_walk(const ConvShape& s, const float* x, const float* dy, float* dw, float* db, GradientWalk walk) {
  conv_dispatch(s, [&]<typename T>() { conv_backward_weights_t<T>(s, x, dy, dw, db, walk); });
}

void conv_backward_weights(const ConvShape& s, const float* x, const float* dy, float* dw, float* db) {
  conv_backward_weights_walk(s, x, dy, dw, db, GradientWalk::kEither);
}

namespace {

// The taps of one axis that reach input positions a + S i (phase a of stride S): kh with
// (a + P - kh) divisible by S, in descending order, so that the dy row each reads,
// (a + P - kh) / S + i, ascends one by one. Returns how many (at most 64).
int phase_taps(int64_t a, int64_t P, int64_t K, int64_t S, int64_t* taps) {
  int count = 0;
  for (int64_t k = K - 1; k >= 0; --k)
    if (((a + P - k) % S + S) % S == 0) taps[count++] = k;
  return count;
}

// A strided conv's input gradient, one phase (a, b) of the stride at a time: the inputs at rows
// a + SH i and columns b + SW j receive dy only through the taps phase_taps gives, and on them
// the gradient is a stride-1 conv of dy (the tiled kernel above) by the sub-kernel of those taps
// with its channel axes swapped. Every input belongs to one phase: no zeros multiplied, no
// horizontal sums (the plain loop below needs one per tap, and took a quarter of ResNet-8's
// training step for its stride-2 convs).
void strided_backward_input(const ConvShape& s, const float* w, const float* dy, float* dx) {
  int64_t th[64], tw[64];
  for (int64_t a = 0; a < s.SH; ++a)
    for (int64_t b = 0; b < s.SW; ++b) {
      const int64_t HP = a < s.H ? (s.H - a + s.SH - 1) / s.SH : 0, WP = b < s.W ? (s.W - b + s.SW - 1) / s.SW : 0;
      if (HP == 0 || WP == 0) continue;
      const int KH = phase_taps(a, s.PT, s.KH, s.SH, th), KW = phase_taps(b, s.PL, s.KW, s.SW, tw);
      std::vector<float> out(static_cast<size_t>(s.N * HP * WP * s.IC), 0.f);
      if (KH > 0 && KW > 0) {
        // dy framed so that output (i, j) reads rows i .. i + KH - 1 and columns j .. j + KW - 1.
        const int64_t top = (a + s.PT - th[0]) / s.SH, left = (b + s.PL - tw[0]) / s.SW, FH = HP + KH - 1, FW = WP + KW - 1;
        std::vector<float> frame(static_cast<size_t>(s.N * FH * FW * s.OC), 0.f);
        float* const framed = frame.data();
        parallel_for_dynamic(s.N * FH, true, [=](int64_t r) {
          const int64_t n = r / FH, oh = top + r % FH;
          if (oh < 0 || oh >= s.OH) return;
          for (int64_t j = 0; j < FW; ++j) {
            const int64_t ow = left + j;
            if (ow < 0 || ow >= s.OW) continue;
            const float* src = dy + ((n * s.OH + oh) * s.OW + ow) * s.OC;
            float* dst = framed + (r * FW + j) * s.OC;
            for (int64_t c = 0; c < s.OC; ++c) dst[c] = src[c];
          }
        });
        std::vector<float> wt(static_cast<size_t>(KH * KW * s.OC * s.IC));
        for (int t = 0; t < KH; ++t)
          for (int u = 0; u < KW; ++u)
            for (int64_t ic = 0; ic < s.IC; ++ic)
              for (int64_t oc = 0; oc < s.OC; ++oc) wt[((t * KW + u) * s.OC + oc) * s.IC + ic] = w[((th[t] * s.KW + tw[u]) * s.IC + ic) * s.OC + oc];
        const ConvShape t{s.N, FH, FW, s.OC, KH, KW, s.IC, HP, WP, 1, 1, 0, 0};
        conv_forward_t<Taps<0, 0, 0>>(t, frame.data(), wt.data(), nullptr, out.data());
      }
      const float* const phase = out.data();
      parallel_for_dynamic(s.N * HP, true, [=](int64_t r) {
        const int64_t n = r / HP, ih = a + s.SH * (r % HP);
        for (int64_t j = 0; j < WP; ++j) {
          const float* src = phase + (r * WP + j) * s.IC;
          float* dst = dx + ((n * s.H + ih) * s.W + b + s.SW * j) * s.IC;
          for (int64_t c = 0; c < s.IC; ++c) dst[c] = src[c];
        }
      });
    }
}

}  // namespace

// dx[n, ih, iw, ic] = sum over taps of dy[n, oh, ow, :] . w[kh, kw, ic, :]
//
// With stride 1 and several input channels this is a forward conv (the tiled kernel above) of
// dy with KH - 1 - PT rows of zeros above and KW - 1 - PL columns left (and as many as it takes
// below and right) by the kernel turned 180 degrees with its channel axes swapped:
// wt[kh][kw][oc][ic] = w[KH-1-kh][KW-1-kw][ic][oc]. The per-tap dot products over oc below need
// a horizontal sum each, which made them 2/3 of Keras' second conv's backward.
void conv_backward_input_walk(const ConvShape& s, const float* w, const float* dy, float* dx, GradientWalk walk) {
  if (s.SH == 1 && s.SW == 1 && s.IC >= 4 && s.PT <= s.KH - 1 && s.PL <= s.KW - 1) {
    std::vector<float> wt(static_cast<size_t>(s.KH * s.KW * s.OC * s.IC));
    for (int64_t kh = 0; kh < s.KH; ++kh)
      for (int64_t kw = 0; kw < s.KW; ++kw)
        for (int64_t ic = 0; ic < s.IC; ++ic)
          for (int64_t oc = 0; oc < s.OC; ++oc)
            wt[((kh * s.KW + kw) * s.OC + oc) * s.IC + ic] = w[(((s.KH - 1 - kh) * s.KW + (s.KW - 1 - kw)) * s.IC + ic) * s.OC + oc];
    const ConvShape t{s.N, s.OH, s.OW, s.OC, s.KH, s.KW, s.IC, s.H, s.W, 1, 1, s.KH - 1 - s.PT, s.KW - 1 - s.PL};
    if (!sparse_conv_forward(t, dy, wt.data(), dx, walk)) conv_forward_t<Taps<0, 0, 0>>(t, dy, wt.data(), nullptr, dx);
    return;
  }
  if (s.IC >= 4) return strided_backward_input(s, w, dy, dx);
  parallel_for_dynamic(s.N, true, [=](int64_t n) {
    float* dxn = dx + n * s.H * s.W * s.IC;
    for (int64_t i = 0; i < s.H * s.W * s.IC; ++i) dxn[i] = 0.f;
    const float* dyn = dy + n * s.OH * s.OW * s.OC;
    for (int64_t oh = 0; oh < s.OH; ++oh)
      for (int64_t ow = 0; ow < s.OW; ++ow)
        for (int64_t kh = 0; kh < s.KH; ++kh) {
          const int64_t ih = oh * s.SH - s.PT + kh;
          if (ih < 0 || ih >= s.H) continue;
          for (int64_t kw = 0; kw < s.KW; ++kw) {
            const int64_t iw = ow * s.SW - s.PL + kw;
            if (iw < 0 || iw >= s.W) continue;
            const float* __restrict g = dyn + (oh * s.OW + ow) * s.OC;
            float* __restrict out = dxn + (ih * s.W + iw) * s.IC;
            const float* __restrict wk = w + (kh * s.KW + kw) * s.IC * s.OC;
            for (int64_t ic = 0; ic < s.IC; ++ic) {
              float acc = 0.f;
#pragma omp simd reduction(+ : acc)
              for (int64_t oc = 0; oc < s.OC; ++oc) acc += g[oc] * wk[ic * s.OC + oc];
              out[ic] += acc;
            }
          }
        }
  });
}

// --- the fused 3x3 conv + 2x2 max-pool ------------------------------------------------------
//
// The forward computes the four conv outputs of each 2x2 window side by side (four independent
// FMA chains instead of one), keeps their maximum and the window index of the first maximum
// (one byte per channel), and never writes the conv output. Its backward routes each pooled
// gradient to that one conv output: the kernel gradient sums g * patch(chosen position) over
// pooled pixels, a quarter of the plain conv backward's work. With `relu` the forward stores
// relu(maximum) and the index kClipped where the maximum is not above 0, which the backward
// reads as "no gradient": relu's own forward and backward passes, without their tensors.

void pooled_conv_forward(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                         uint8_t* which, float* range) {
  const int64_t PH = s.OH / 2, PW = s.OW / 2, blocks = (s.OC + kLanes - 1) / kLanes;
  VecBuffer wb(9 * blocks);
  block_kernel(s, w, wb.data());
  const vf* wbp = wb.data();
  float lo = __builtin_inff(), hi = -lo;
  // Image n's outputs; lo and hi take in its smallest and largest (with `range`).
  const auto image = [=](int64_t n, float& lo, float& hi) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int lanes = lanes_in_block(s.OC, b);
      const vf bias_b = bias ? load(bias + b * kLanes, lanes) : vf{};
      vf wk[9];
      for (int k = 0; k < 9; ++k) wk[k] = wbp[k * blocks + b];
      vf block_lo = splat(lo), block_hi = splat(hi);
      // The pooled pixel's maximum, which position gave it, and the range, from a window's 4 outputs.
      const auto finish = [&](int64_t ph, int64_t pw, vf a0, vf a1, vf a2, vf a3) {
        vf m = a0;
        vi q = {};
        vi gt = a1 > m;  // strictly greater: ties keep the first, as max_pool2d does
        m = gt ? a1 : m, q = gt ? vi{} + 1 : q;
        gt = a2 > m, m = gt ? a2 : m, q = gt ? vi{} + 2 : q;
        gt = a3 > m, m = gt ? a3 : m, q = gt ? vi{} + 3 : q;
        if (range) {
          const vf mn01 = a0 < a1 ? a0 : a1, mn23 = a2 < a3 ? a2 : a3, mn = mn01 < mn23 ? mn01 : mn23;
          block_lo = mn < block_lo ? mn : block_lo, block_hi = m > block_hi ? m : block_hi;
        }
        if (relu) {  // relu_forward's y = m > 0 ? m : 0 (NaN gives 0, as there)
          const vi positive = m > vf{};
          m = positive ? m : vf{}, q = positive ? q : vi{} + kClipped;
        }
        const int64_t pix = (n * PH + ph) * PW + pw;
        store(y + pix * s.OC + b * kLanes, m, lanes);
        *reinterpret_cast<vu8u*>(which + (pix * blocks + b) * kLanes) = __builtin_convertvector(q, vu8u);
      };
      // V windows side by side, from pooled column pw: each output sums its taps in conv_forward's
      // order, so the outputs are bit-identical for any V.
      const auto windows = [&]<int V>(int64_t ph, int64_t pw) {
        const float* r = x + (n * s.H + 2 * ph) * s.W + 2 * pw;
        vf a[V][4];
        for (int v = 0; v < V; ++v) a[v][0] = a[v][1] = a[v][2] = a[v][3] = bias_b;
        for (int kh = 0; kh < 3; ++kh)
          for (int kw = 0; kw < 3; ++kw) {
            const vf wv = wk[kh * 3 + kw];
            for (int v = 0; v < V; ++v) {
              const float* t = r + kh * s.W + kw + 2 * v;
              a[v][0] += t[0] * wv, a[v][1] += t[1] * wv, a[v][2] += t[s.W] * wv, a[v][3] += t[s.W + 1] * wv;
            }
          }
        for (int v = 0; v < V; ++v) finish(ph, pw + v, a[v][0], a[v][1], a[v][2], a[v][3]);
      };
      // Two windows at a time where there are registers for them (8 FMA chains, not 4: two FMA
      // units of latency 4 need 8 to stay busy).
      constexpr int kWindows = kLanes == 16 ? 2 : 1;
      for (int64_t ph = 0; ph < PH; ++ph) {
        int64_t pw = 0;
        for (; pw + kWindows <= PW; pw += kWindows) windows.template operator()<kWindows>(ph, pw);
        for (; pw < PW; ++pw) windows.template operator()<1>(ph, pw);
      }
      for (int l = 0; l < lanes; ++l) lo = min_f(lo, block_lo[l]), hi = max_f(hi, block_hi[l]);
    }
  };
  if (go_parallel(s.N, true)) {
#pragma omp parallel for schedule(dynamic) reduction(min : lo) reduction(max : hi)
    for (int64_t n = 0; n < s.N; ++n) image(n, lo, hi);
  } else {
    for (int64_t n = 0; n < s.N; ++n) image(n, lo, hi);
  }
  if (range) range[0] = lo, range[1] = hi;
}

// dW[k, oc] = sum over pooled pixels of dy * x[chosen position + tap k]; db = sum of dy. Per
// pixel, the gradient is split into the four window positions (zero where another position
// won) and each position's 3x3 patch is a set of broadcasts: 36 FMAs, no per-lane permute,
// which AVX2 and SSE lack. Partial sums per chunk of images, added in order.
void pooled_conv_backward_weights(const ConvShape& s, const float* x, const float* dy, const uint8_t* which, float* dw,
                                  float* db) {
  const int64_t PH = s.OH / 2, PW = s.OW / 2, blocks = (s.OC + kLanes - 1) / kLanes, width = 10 * blocks;
  const int64_t chunks = (s.N + kReductionChunk - 1) / kReductionChunk;
  VecBuffer partial(chunks * width);  // per chunk and block: 9 taps and the bias
  vf* const parts = partial.data();
  parallel_for_dynamic(chunks, true, [=](int64_t chunk) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int lanes = lanes_in_block(s.OC, b);
      vf acc[10] = {};
      for (int64_t n = chunk * kReductionChunk; n < min_i(s.N, (chunk + 1) * kReductionChunk); ++n)
        for (int64_t ph = 0; ph < PH; ++ph)
          for (int64_t pw = 0; pw < PW; ++pw) {
            const int64_t pix = (n * PH + ph) * PW + pw;
            const vi q = __builtin_convertvector(*reinterpret_cast<const vu8u*>(which + (pix * blocks + b) * kLanes), vi);
            const vf g = q != kClipped ? load(dy + pix * s.OC + b * kLanes, lanes) : vf{};  // relu's gradient: 0 there
            const vf g0 = q == 0 ? g : vf{}, g1 = q == 1 ? g : vf{};
            const vf g2 = q == 2 ? g : vf{}, g3 = q == 3 ? g : vf{};
            const float* r = x + (n * s.H + 2 * ph) * s.W + 2 * pw;  // the window's 4x4 input region
            for (int kh = 0; kh < 3; ++kh) {
              const float* t = r + kh * s.W;
              const float* u = t + s.W;
              for (int kw = 0; kw < 3; ++kw) {  // three of the four add exact zeros
                vf& a = acc[kh * 3 + kw];
                a += g0 * t[kw], a += g1 * t[kw + 1], a += g2 * u[kw], a += g3 * u[kw + 1];
              }
            }
            acc[9] += g;
          }
      for (int k = 0; k < 10; ++k) parts[chunk * width + b * 10 + k] = acc[k];
    }
  });
  add_chunks_in_order(partial.data(), chunks, width);
  for (int64_t b = 0; b < blocks; ++b) {
    const int lanes = lanes_in_block(s.OC, b);
    for (int k = 0; k < 9; ++k) store(dw + k * s.OC + b * kLanes, partial[b * 10 + k], lanes);
    if (db) store(db + b * kLanes, partial[b * 10 + 9], lanes);
  }
}

// The fused op's output, relu'd, fake-quantized in place: the values as relu_fake_quant_forward
// computes them (its input is already >= 0), a whole vector of the flat array at a time, each
// vector's lanes above real_hi kept as bits; then, if there were any (and `largest` says there may
// be), those values' window indices become kClipped, one by one. (Storing each pixel's 12 lanes
// made the next pixel's load wait for the store: the QAT epoch 14% slower; a pass per pixel to
// mark them, or a branch per vector, cost 2 - 3x the quantization.)
void pooled_fake_quant(int64_t pixels, int64_t C, float scale, float hi, float real_hi, float largest, float* y,
                       uint8_t* which) {
  const int64_t n = pixels * C, row = (C + kLanes - 1) / kLanes * kLanes;  // which's bytes per pixel
  const bool may_mark = largest > real_hi;
  parallel_for_ranges(n, n > kMinParallelElements, [=](int64_t begin, int64_t end) {
    const vf s = splat(scale), h = splat(hi), top = splat(real_hi);
    uint16_t* const above = scratch<uint16_t>((end - begin + kLanes - 1) / kLanes);
    uint32_t any = 0;
    for (int64_t i = begin, j = 0; i < end; i += kLanes, ++j) {
      const int lanes = static_cast<int>(min_i(kLanes, end - i));
      const vf v = load(y + i, lanes);  // lanes past the end read 0: never above
      const vf q = round_even(v / s);
      store(y + i, (q > h ? h : q) * s, lanes);
      if (may_mark) any |= above[j] = static_cast<uint16_t>(true_lanes(v > top));
    }
    if (any == 0) return;
    for (int64_t i = begin, j = 0; i < end; i += kLanes, ++j)
      for (uint32_t m = above[j]; m != 0; m &= m - 1) {
        const int64_t at = i + __builtin_ctz(m);
        which[at / C * row + at % C] = kClipped;
      }
  });
}

void conv_backward_input(const ConvShape& s, const float* w, const float* dy, float* dx) {
  conv_backward_input_walk(s, w, dy, dx, GradientWalk::kEither);
}

}  // namespace qnet::QNET_ISA_NS
