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

namespace qnet {

AxisGeometry axis_geometry(int64_t in, int64_t window, int64_t stride, Padding padding) {
  if (padding == Padding::kValid) return {in >= window ? (in - window) / stride + 1 : 0, 0};
  const int64_t out = (in + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + window - in, 0);
  return {out, total / 2};
}

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

void conv_forward(const ConvShape& s, const float* x, const float* w, const float* bias, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.N; ++n) {
    float* yn = y + n * s.OH * s.OW * s.OC;
    for (int64_t p = 0; p < s.OH * s.OW; ++p)
      for (int64_t oc = 0; oc < s.OC; ++oc) yn[p * s.OC + oc] = bias ? bias[oc] : 0.f;
    for_each_tap(s, n, [&](int64_t oh, int64_t ow, int64_t kh, int64_t kw, int64_t ih, int64_t iw) {
      float* __restrict out = yn + (oh * s.OW + ow) * s.OC;
      const float* in = x + ((n * s.H + ih) * s.W + iw) * s.IC;
      const float* __restrict wk = w + (kh * s.KW + kw) * s.IC * s.OC;
      for (int64_t ic = 0; ic < s.IC; ++ic) {
        const float v = in[ic];
#pragma omp simd
        for (int64_t oc = 0; oc < s.OC; ++oc) out[oc] += v * wk[ic * s.OC + oc];
      }
    });
  }
}

// dW[kh, kw, ic, oc] = sum over n, oh, ow of x[n, ih, iw, ic] * dy[n, oh, ow, oc];
// db[oc] = sum of dy. Each thread sums a fixed slice of the batch; slices are added in
// thread order, so the result depends only on the thread count.
void conv_backward_weights(const ConvShape& s, const float* x, const float* dy, float* dw, float* db) {
  const int64_t wsize = s.KH * s.KW * s.IC * s.OC;
  const int threads = std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>(s.N)));
  std::vector<float> partial(static_cast<size_t>(threads) * (wsize + s.OC), 0.f);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    float* __restrict pw = partial.data() + t * (wsize + s.OC);
    float* __restrict pb = pw + wsize;
    for (int64_t n = s.N * t / T; n < s.N * (t + 1) / T; ++n) {
      const float* dyn = dy + n * s.OH * s.OW * s.OC;
      if (db)
        for (int64_t p = 0; p < s.OH * s.OW; ++p)
#pragma omp simd
          for (int64_t oc = 0; oc < s.OC; ++oc) pb[oc] += dyn[p * s.OC + oc];
      for_each_tap(s, n, [&](int64_t oh, int64_t ow, int64_t kh, int64_t kw, int64_t ih, int64_t iw) {
        const float* __restrict g = dyn + (oh * s.OW + ow) * s.OC;
        const float* in = x + ((n * s.H + ih) * s.W + iw) * s.IC;
        float* __restrict wk = pw + (kh * s.KW + kw) * s.IC * s.OC;
        for (int64_t ic = 0; ic < s.IC; ++ic) {
          const float v = in[ic];
#pragma omp simd
          for (int64_t oc = 0; oc < s.OC; ++oc) wk[ic * s.OC + oc] += v * g[oc];
        }
      });
    }
  }
  std::fill(dw, dw + wsize, 0.f);
  if (db) std::fill(db, db + s.OC, 0.f);
  for (int t = 0; t < threads; ++t) {
    const float* pw = partial.data() + t * (wsize + s.OC);
    for (int64_t i = 0; i < wsize; ++i) dw[i] += pw[i];
    if (db)
      for (int64_t oc = 0; oc < s.OC; ++oc) db[oc] += pw[wsize + oc];
  }
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
  conv_forward(s, x.value().data(), w.value().data(), has_bias ? bias.value().data() : nullptr, y.data());
  std::vector<Variable> inputs{x, w};
  if (has_bias) inputs.push_back(bias);
  return make_result(std::move(y), inputs, [x, w, bias, s, has_bias](Node& self) {
    const bool want_b = has_bias && bias.requires_grad();
    if (w.requires_grad() || want_b) {
      Tensor dw(w.shape()), db({s.OC});
      conv_backward_weights(s, x.value().data(), self.grad.data(), dw.data(), want_b ? db.data() : nullptr);
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
