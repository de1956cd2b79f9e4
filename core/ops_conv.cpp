// conv2d: direct NHWC convolution with HWIO kernels.
//
// The innermost loop runs over output channels, contiguous in both the kernel and the
// output, so it vectorises; batches are spread over threads. Direct convolution beat
// im2col + Eigen GEMM on the reference model (docs/performance.md): with IC = 1 the GEMM's
// inner dimension is 9 and the im2col copy costs more than the multiply.
#include <omp.h>

#include <algorithm>
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

}  // namespace qnet
