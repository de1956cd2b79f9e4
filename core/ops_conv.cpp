// conv2d: direct NHWC convolution with HWIO kernels.
//
// The innermost loop runs over output channels, contiguous in both the kernel and the
// output, so it vectorises; batches are spread over threads. Direct convolution beat
// im2col + Eigen GEMM on the reference model (docs/performance.md): with IC = 1 the GEMM's
// inner dimension is 9 and the im2col copy costs more than the multiply.
#include <omp.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>

#include "core/ops.h"
#include "core/simd.h"

namespace qnet {

namespace {

struct ConvShape {
  int64_t N, H, W, IC, KH, KW, OC, OH, OW, SH, SW, PT, PL;
};

ConvShape conv_shape(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dOptions& o) {
  if (x.rank() != 4 || w.rank() != 4 || x.dim(3) != w.dim(2) || (bias && (bias->rank() != 1 || bias->dim(0) != w.dim(3))))
    throw std::invalid_argument(fmt::format(
        "conv2d: input {}, kernel {}, bias {} (expected input [N, H, W, C], kernel [KH, KW, C, OC], bias [OC])",
        shape_str(x.shape()), shape_str(w.shape()), bias ? shape_str(bias->shape()) : "none"));
  if (o.stride_h < 1 || o.stride_w < 1)
    throw std::invalid_argument(fmt::format("conv2d: stride {}x{} (expected >= 1)", o.stride_h, o.stride_w));
  ConvShape s{x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1), w.dim(3), 0, 0, o.stride_h, o.stride_w, 0, 0};
  const AxisGeometry gh = axis_geometry(s.H, s.KH, s.SH, o.padding);
  const AxisGeometry gw = axis_geometry(s.W, s.KW, s.SW, o.padding);
  s.OH = gh.out, s.PT = gh.pad_before, s.OW = gw.out, s.PL = gw.pad_before;
  if (s.OH <= 0 || s.OW <= 0)
    throw std::invalid_argument(fmt::format("conv2d: kernel {}x{} does not fit input {} with valid padding", s.KH, s.KW,
                                            shape_str(x.shape())));
  return s;
}

// Calls f(n, oh, ow, kh, kw, ih, iw) for every in-range tap of image n's output pixels.
template <typename F>
inline void for_each_tap(const ConvShape& s, int64_t n, F&& f) {
  for (int64_t oh = 0; oh < s.OH; ++oh)
    for (int64_t ow = 0; ow < s.OW; ++ow)
      for (int64_t kh = 0; kh < s.KH; ++kh) {
        const int64_t ih = oh * s.SH - s.PT + kh;
        if (ih < 0 || ih >= s.H) continue;
        for (int64_t kw = 0; kw < s.KW; ++kw) {
          const int64_t iw = ow * s.SW - s.PL + kw;
          if (iw < 0 || iw >= s.W) continue;
          f(oh, ow, kh, kw, ih, iw);
        }
      }
}

// Kernels are instantiated for common kernel sizes (KH_, KW_, IC_ known at compile time,
// so the tap loops unroll) and once generically (all 0: taken from the ConvShape).
template <int KH_, int KW_, int IC_>
struct Taps {
  static int64_t kh(const ConvShape& s) { return KH_ ? KH_ : s.KH; }
  static int64_t kw(const ConvShape& s) { return KW_ ? KW_ : s.KW; }
  static int64_t ic(const ConvShape& s) { return IC_ ? IC_ : s.IC; }
  static constexpr int64_t fixed_k = int64_t{KH_} * KW_ * IC_;  // 0 when generic
};

// The kernel [K = KH*KW*IC, OC] split into 16-channel blocks, zero-padded: [K][blocks].
std::vector<f32x16> blocked_kernel(const ConvShape& s, const float* w) {
  const int64_t K = s.KH * s.KW * s.IC, blocks = (s.OC + 15) / 16;
  std::vector<f32x16> wb(K * blocks);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t b = 0; b < blocks; ++b) wb[k * blocks + b] = load16(w + k * s.OC + b * 16, static_cast<int>(s.OC - b * 16));
  return wb;
}

// Calls tap(k, v) for the K = KH*KW*IC receptive-field values of output pixel (oh, ow) of
// image n, in (kh, kw, ic) order. Interior pixels read the input directly (with T's sizes
// fixed, the loops unroll into broadcast FMAs); border pixels skip the padding taps.
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

// y[p, oc] = bias[oc] + sum_k patch_p[k] * w[k, oc], 16 output channels per register.
template <typename T>
void conv_forward(const ConvShape& s, const float* x, const float* w, const float* bias, float* y) {
  const int64_t blocks = (s.OC + 15) / 16;
  const std::vector<f32x16> wb = blocked_kernel(s, w);
  const f32x16* wbp = wb.data();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t b = 0; b < blocks; ++b) {
      const int lanes = static_cast<int>(std::min<int64_t>(16, s.OC - b * 16));
      const f32x16 bias_b = bias ? load16(bias + b * 16, lanes) : f32x16{};
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          f32x16 acc = bias_b;
          for_each_tap_value<T>(s, x, n, oh, ow, [&](int64_t k, float v) { acc += v * wbp[k * blocks + b]; });
          store16(y + ((n * s.OH + oh) * s.OW + ow) * s.OC + b * 16, acc, lanes);
        }
    }
}

// dW[k, oc] = sum over pixels p of patch_p[k] * dy[p, oc]; db[oc] = sum of dy[p, oc].
// Each thread sums a fixed slice of the batch; the slices are added in thread order, so
// the result depends only on the thread count.
template <typename T>
void conv_backward_weights(const ConvShape& s, const float* x, const float* dy, float* dw, float* db) {
  const int64_t K = T::kh(s) * T::kw(s) * T::ic(s), blocks = (s.OC + 15) / 16, width = (K + 1) * blocks;
  const int threads = std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>(s.N)));
  std::vector<f32x16> partial(threads * width, f32x16{});  // per thread: [blocks][K + 1 (bias)]
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int64_t b = 0; b < blocks; ++b) {
      const int lanes = static_cast<int>(std::min<int64_t>(16, s.OC - b * 16));
      constexpr int64_t kFixedK = T::fixed_k;  // registers when K is known, else memory
      f32x16 acc_fixed[kFixedK > 0 ? kFixedK + 1 : 1] = {};
      std::vector<f32x16> acc_dynamic(kFixedK > 0 ? 0 : K + 1, f32x16{});
      f32x16* acc = kFixedK > 0 ? acc_fixed : acc_dynamic.data();
      for (int64_t n = s.N * t / nt; n < s.N * (t + 1) / nt; ++n)
        for (int64_t oh = 0; oh < s.OH; ++oh)
          for (int64_t ow = 0; ow < s.OW; ++ow) {
            const f32x16 g = load16(dy + ((n * s.OH + oh) * s.OW + ow) * s.OC + b * 16, lanes);
            acc[K] += g;
            for_each_tap_value<T>(s, x, n, oh, ow, [&](int64_t k, float v) { acc[k] += v * g; });
          }
      std::copy(acc, acc + K + 1, partial.begin() + t * width + b * (K + 1));
    }
  }
  for (int t = 1; t < threads; ++t)
    for (int64_t i = 0; i < width; ++i) partial[i] += partial[t * width + i];
  for (int64_t b = 0; b < blocks; ++b) {
    const int lanes = static_cast<int>(std::min<int64_t>(16, s.OC - b * 16));
    for (int64_t k = 0; k < K; ++k) store16(dw + k * s.OC + b * 16, partial[b * (K + 1) + k], lanes);
    if (db) store16(db + b * 16, partial[b * (K + 1) + K], lanes);
  }
}

// Runs f.template operator()<Taps<...>>() with the kernel dimensions fixed where a
// specialisation exists (3x3 and 5x5 on 1 or 3 channels), else the generic version.
template <typename F>
void conv_dispatch(const ConvShape& s, F&& f) {
  if (s.KH == 3 && s.KW == 3 && s.IC == 1) return f.template operator()<Taps<3, 3, 1>>();
  if (s.KH == 3 && s.KW == 3 && s.IC == 3) return f.template operator()<Taps<3, 3, 3>>();
  if (s.KH == 5 && s.KW == 5 && s.IC == 1) return f.template operator()<Taps<5, 5, 1>>();
  return f.template operator()<Taps<0, 0, 0>>();
}

// dx[n, ih, iw, ic] = sum over taps of dy[n, oh, ow, :] . w[kh, kw, ic, :]
void conv_backward_input(const ConvShape& s, const float* w, const float* dy, float* dx) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.N; ++n) {
    std::fill(dx + n * s.H * s.W * s.IC, dx + (n + 1) * s.H * s.W * s.IC, 0.f);
    const float* dyn = dy + n * s.OH * s.OW * s.OC;
    for_each_tap(s, n, [&](int64_t oh, int64_t ow, int64_t kh, int64_t kw, int64_t ih, int64_t iw) {
      const float* __restrict g = dyn + (oh * s.OW + ow) * s.OC;
      float* __restrict out = dx + ((n * s.H + ih) * s.W + iw) * s.IC;
      const float* __restrict wk = w + (kh * s.KW + kw) * s.IC * s.OC;
      for (int64_t ic = 0; ic < s.IC; ++ic) {
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t oc = 0; oc < s.OC; ++oc) acc += g[oc] * wk[ic * s.OC + oc];
        out[ic] += acc;
      }
    });
  }
}

}  // namespace

Variable conv2d(const Variable& x, const Variable& w, const Variable& bias, const Conv2dOptions& options) {
  const bool has_bias = bias.defined();
  const ConvShape s = conv_shape(x.value(), w.value(), has_bias ? &bias.value() : nullptr, options);
  Tensor y({s.N, s.OH, s.OW, s.OC});
  conv_dispatch(s, [&]<typename T>() {
    conv_forward<T>(s, x.value().data(), w.value().data(), has_bias ? bias.value().data() : nullptr, y.data());
  });
  std::vector<Variable> inputs{x, w};
  if (has_bias) inputs.push_back(bias);
  return make_result(std::move(y), inputs, [x, w, bias, s, has_bias](Node& self) {
    const bool want_b = has_bias && bias.requires_grad();
    if (w.requires_grad() || want_b) {
      Tensor dw(w.shape()), db({s.OC});
      conv_dispatch(s, [&]<typename T>() {
        conv_backward_weights<T>(s, x.value().data(), self.grad.data(), dw.data(), want_b ? db.data() : nullptr);
      });
      if (w.requires_grad()) w.add_grad(std::move(dw));
      if (want_b) bias.add_grad(std::move(db));
    }
    if (x.requires_grad()) {
      Tensor dx(x.shape());
      conv_backward_input(s, w.value().data(), self.grad.data(), dx.data());
      x.add_grad(std::move(dx));
    }
  });
}

// --- conv2d_max_pool2d ---------------------------------------------------------------------
//
// The fast path computes the four conv outputs of each 2x2 window side by side (four
// independent FMA chains instead of one), keeps their maximum and the window index of the
// first maximum (one byte per channel), and never writes the 26x26 conv output. Its backward
// routes each pooled gradient to that one conv output: the kernel gradient sums
// g * patch(chosen position) over pooled pixels, a quarter of the plain conv backward's work.
// The chosen position differs per channel, so the 4x4 input region under a window is held in
// one 16-float register and each tap's values are picked per lane with a permute.
namespace {

using i32x16 = int32_t __attribute__((vector_size(64)));
using u8x16 = uint8_t __attribute__((vector_size(16)));
using f32x4u = float __attribute__((vector_size(16), aligned(4)));
using f32x8 = float __attribute__((vector_size(32)));

struct PooledConv {
  ConvShape conv;
  int64_t PH, PW, blocks;  // pooled size; 16-channel blocks (also the stride of `which`, x16 bytes)
};

bool fast_path(const ConvShape& s, const Pool2dOptions& p) {
  const int sh = p.stride_h ? p.stride_h : p.window_h, sw = p.stride_w ? p.stride_w : p.window_w;
  return s.KH == 3 && s.KW == 3 && s.IC == 1 && s.SH == 1 && s.SW == 1 && s.OH == s.H - 2 && s.OW == s.W - 2 &&
         s.OH >= 2 && s.OW >= 2 && p.window_h == 2 && p.window_w == 2 && sh == 2 && sw == 2 && p.padding == Padding::kValid;
}

// The 4x4 input region whose 3x3 patches are the conv outputs of window (ph, pw), row-major.
inline f32x16 window_region(const PooledConv& f, const float* x, int64_t n, int64_t ph, int64_t pw) {
  const int64_t W = f.conv.W;
  const float* r = x + (n * f.conv.H + 2 * ph) * W + 2 * pw;
  const f32x4u r0 = *reinterpret_cast<const f32x4u*>(r), r1 = *reinterpret_cast<const f32x4u*>(r + W);
  const f32x4u r2 = *reinterpret_cast<const f32x4u*>(r + 2 * W), r3 = *reinterpret_cast<const f32x4u*>(r + 3 * W);
  const f32x8 top = __builtin_shufflevector(r0, r1, 0, 1, 2, 3, 4, 5, 6, 7);
  const f32x8 bottom = __builtin_shufflevector(r2, r3, 0, 1, 2, 3, 4, 5, 6, 7);
  return __builtin_shufflevector(top, bottom, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// y = the window maxima, which = window index (0..3, row-major) of each first maximum.
void pooled_conv_forward(const PooledConv& f, const float* x, const float* w, const float* bias, float* y,
                         uint8_t* which, ValueRange* range) {
  const ConvShape& s = f.conv;
  const std::vector<f32x16> wb = blocked_kernel(s, w);
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
#pragma omp parallel for schedule(static) reduction(min : lo) reduction(max : hi)
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t b = 0; b < f.blocks; ++b) {
      const int lanes = static_cast<int>(std::min<int64_t>(16, s.OC - b * 16));
      const f32x16 bias_b = bias ? load16(bias + b * 16, lanes) : f32x16{};
      f32x16 wk[9];
      for (int k = 0; k < 9; ++k) wk[k] = wb[k * f.blocks + b];
      f32x16 block_lo = splat16(lo), block_hi = splat16(hi);
      for (int64_t ph = 0; ph < f.PH; ++ph)
        for (int64_t pw = 0; pw < f.PW; ++pw) {
          const float* r = x + (n * s.H + 2 * ph) * s.W + 2 * pw;
          f32x16 a0 = bias_b, a1 = bias_b, a2 = bias_b, a3 = bias_b;  // the window's 4 outputs
          for (int kh = 0; kh < 3; ++kh)
            for (int kw = 0; kw < 3; ++kw) {  // same order as conv_forward: bit-identical outputs
              const float* t = r + kh * s.W + kw;
              const f32x16 wv = wk[kh * 3 + kw];
              a0 += t[0] * wv, a1 += t[1] * wv, a2 += t[s.W] * wv, a3 += t[s.W + 1] * wv;
            }
          f32x16 m = a0;
          i32x16 q = {};
          i32x16 gt = a1 > m;  // strictly greater: ties keep the first, as max_pool2d does
          m = gt ? a1 : m, q = gt ? i32x16{} + 1 : q;
          gt = a2 > m, m = gt ? a2 : m, q = gt ? i32x16{} + 2 : q;
          gt = a3 > m, m = gt ? a3 : m, q = gt ? i32x16{} + 3 : q;
          const int64_t pix = (n * f.PH + ph) * f.PW + pw;
          store16(y + pix * s.OC + b * 16, m, lanes);
          const u8x16 qb = __builtin_convertvector(q, u8x16);
          std::memcpy(which + (pix * f.blocks + b) * 16, &qb, 16);
          if (range) {
            const f32x16 mn01 = a0 < a1 ? a0 : a1, mn23 = a2 < a3 ? a2 : a3, mn = mn01 < mn23 ? mn01 : mn23;
            block_lo = mn < block_lo ? mn : block_lo, block_hi = m > block_hi ? m : block_hi;
          }
        }
      for (int l = 0; l < lanes; ++l) lo = std::min(lo, block_lo[l]), hi = std::max(hi, block_hi[l]);
    }
  if (range) *range = {lo, hi};
}

// dW[k, oc] = sum over pooled pixels of dy * x[chosen position + tap k]; db = sum of dy. Batch
// slices per thread, added in thread order (deterministic for a thread count).
void pooled_conv_backward_weights(const PooledConv& f, const float* x, const float* dy, const uint8_t* which, float* dw,
                                  float* db) {
  const ConvShape& s = f.conv;
  const int64_t width = 10 * f.blocks;  // per block: 9 taps and the bias
  const int threads = std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>(s.N)));
  std::vector<f32x16> partial(threads * width, f32x16{});
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int64_t b = 0; b < f.blocks; ++b) {
      const int lanes = static_cast<int>(std::min<int64_t>(16, s.OC - b * 16));
      f32x16 acc[10] = {};
      for (int64_t n = s.N * t / nt; n < s.N * (t + 1) / nt; ++n)
        for (int64_t ph = 0; ph < f.PH; ++ph)
          for (int64_t pw = 0; pw < f.PW; ++pw) {
            const int64_t pix = (n * f.PH + ph) * f.PW + pw;
            const f32x16 g = load16(dy + pix * s.OC + b * 16, lanes);
            u8x16 qb;
            std::memcpy(&qb, which + (pix * f.blocks + b) * 16, 16);
            const i32x16 q = __builtin_convertvector(qb, i32x16);
            const i32x16 origin = q + (q & 2);  // window index qh*2+qw -> region index qh*4+qw
            const f32x16 region = window_region(f, x, n, ph, pw);
            for (int kh = 0; kh < 3; ++kh)
              for (int kw = 0; kw < 3; ++kw) acc[kh * 3 + kw] += g * __builtin_shuffle(region, origin + (kh * 4 + kw));
            acc[9] += g;
          }
      std::copy(acc, acc + 10, partial.begin() + t * width + b * 10);
    }
  }
  for (int t = 1; t < threads; ++t)
    for (int64_t i = 0; i < width; ++i) partial[i] += partial[t * width + i];
  for (int64_t b = 0; b < f.blocks; ++b) {
    const int lanes = static_cast<int>(std::min<int64_t>(16, s.OC - b * 16));
    for (int k = 0; k < 9; ++k) store16(dw + k * s.OC + b * 16, partial[b * 10 + k], lanes);
    if (db) store16(db + b * 16, partial[b * 10 + 9], lanes);
  }
}

// The conv output's gradient: each pooled gradient at its window's chosen position, 0 elsewhere.
Tensor unpooled_gradient(const PooledConv& f, const float* dy, const uint8_t* which) {
  const ConvShape& s = f.conv;
  Tensor g = Tensor::zeros({s.N, s.OH, s.OW, s.OC});
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t ph = 0; ph < f.PH; ++ph)
      for (int64_t pw = 0; pw < f.PW; ++pw)
        for (int64_t c = 0; c < s.OC; ++c) {
          const int64_t pix = (n * f.PH + ph) * f.PW + pw;
          const int q = which[pix * f.blocks * 16 + c];
          g.data()[((n * s.OH + 2 * ph + q / 2) * s.OW + 2 * pw + q % 2) * s.OC + c] = dy[pix * s.OC + c];
        }
  return g;
}

}  // namespace

Variable conv2d_max_pool2d(const Variable& x, const Variable& w, const Variable& bias, const Conv2dOptions& conv,
                           const Pool2dOptions& pool, ValueRange* conv_range) {
  const bool has_bias = bias.defined();
  const ConvShape s = conv_shape(x.value(), w.value(), has_bias ? &bias.value() : nullptr, conv);
  if (!fast_path(s, pool)) {
    Variable c = conv2d(x, w, bias, conv);
    if (conv_range) {
      const float* v = c.value().data();
      const auto [lo, hi] = std::minmax_element(v, v + c.value().numel());
      *conv_range = {*lo, *hi};
    }
    return max_pool2d(c, pool);
  }
  const PooledConv f{s, s.OH / 2, s.OW / 2, (s.OC + 15) / 16};
  Tensor y({s.N, f.PH, f.PW, s.OC});
  std::shared_ptr<uint8_t[]> which = std::make_shared_for_overwrite<uint8_t[]>(s.N * f.PH * f.PW * f.blocks * 16);
  pooled_conv_forward(f, x.value().data(), w.value().data(), has_bias ? bias.value().data() : nullptr, y.data(),
                      which.get(), conv_range);
  std::vector<Variable> inputs{x, w};
  if (has_bias) inputs.push_back(bias);
  return make_result(std::move(y), inputs, [x, w, bias, f, which, has_bias](Node& self) {
    const bool want_b = has_bias && bias.requires_grad();
    if (w.requires_grad() || want_b) {
      Tensor dw(w.shape()), db({f.conv.OC});
      pooled_conv_backward_weights(f, x.value().data(), self.grad.data(), which.get(), dw.data(),
                                   want_b ? db.data() : nullptr);
      if (w.requires_grad()) w.add_grad(std::move(dw));
      if (want_b) bias.add_grad(std::move(db));
    }
    if (x.requires_grad()) {  // not needed for a first layer; through the plain conv backward
      const Tensor g = unpooled_gradient(f, self.grad.data(), which.get());
      Tensor dx(x.shape());
      conv_backward_input(f.conv, w.value().data(), g.data(), dx.data());
      x.add_grad(std::move(dx));
    }
  });
}

}  // namespace qnet
