#include "quant/fake_quant.h"

#include "core/parallel.h"
#include "quant/observer.h"

#include <memory>
#include <stdexcept>

#include <fmt/format.h>

namespace qnet {

Variable fake_quant(const Variable& x, const std::vector<QParams>& params) {
  const Tensor& in = x.value();
  const int64_t C = static_cast<int64_t>(params.size());
  if (C == 0 || (C > 1 && (in.rank() == 0 || in.dim(-1) != C)))
    throw std::invalid_argument(fmt::format("fake_quant: {} parameter sets for input {} (expected 1, or one per channel of the last axis)",
                                            C, shape_str(in.shape())));
  Tensor out(in.shape());
  const int64_t n = in.numel();
  const float* src = in.data();
  float* dst = out.data();
  if (C == 1) {
    const QParams p = params[0];
    const float lo = static_cast<float>(p.qmin - p.zero_point), hi = static_cast<float>(p.qmax - p.zero_point);
    // Same as dequantize(quantize(x)) (z is an integer), in one vectorisable line (eq. 7).
#pragma omp parallel for simd schedule(static) if (parallel : n > kMinParallelElements)
    for (int64_t i = 0; i < n; ++i) {
      const float q = std::nearbyint(src[i] / p.scale);
      dst[i] = (q < lo ? lo : (q > hi ? hi : q)) * p.scale;
    }
  } else {
    // Per channel of the last axis: rows x C, vectorised over the channels.
    std::vector<float> scale(C), lo(C), hi(C);
    for (int64_t c = 0; c < C; ++c)
      scale[c] = params[c].scale, lo[c] = static_cast<float>(params[c].qmin - params[c].zero_point),
      hi[c] = static_cast<float>(params[c].qmax - params[c].zero_point);
    for (int64_t r = 0; r < n / C; ++r)
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float q = std::nearbyint(src[r * C + c] / scale[c]);
        dst[r * C + c] = (q < lo[c] ? lo[c] : (q > hi[c] ? hi[c] : q)) * scale[c];
      }
  }
  auto ranges = std::make_shared<std::vector<QParams>>(params);
  return make_result(std::move(out), {x}, [x, ranges](Node& self) {
    const int64_t C = static_cast<int64_t>(ranges->size());
    Tensor g(x.shape());
    const float* xv = x.value().data();
    const float* gy = self.grad.data();
    float* gx = g.data();
    const int64_t n = g.numel();
    // The masks use & on bools, not &&: a short-circuit becomes a branch per element, which
    // kept these loops scalar and mispredicted (measured 20x slower than relu's backward).
    if (C == 1) {
      const float lo = (*ranges)[0].real_min(), hi = (*ranges)[0].real_max();
#pragma omp parallel for simd schedule(static) if (parallel : n > kMinParallelElements)
      for (int64_t i = 0; i < n; ++i) gx[i] = ((xv[i] >= lo) & (xv[i] <= hi)) ? gy[i] : 0.f;  // eq. 8
    } else {
      std::vector<float> lo(C), hi(C);
      for (int64_t c = 0; c < C; ++c) lo[c] = (*ranges)[c].real_min(), hi[c] = (*ranges)[c].real_max();
      for (int64_t r = 0; r < n / C; ++r)
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = r * C + c;
          gx[i] = ((xv[i] >= lo[c]) & (xv[i] <= hi[c])) ? gy[i] : 0.f;  // eq. 8
        }
    }
    x.add_grad(std::move(g));
  });
}

Variable relu_fake_quant(const Variable& x, const QParams& p) {
  if (p.zero_point != p.qmin)
    throw std::invalid_argument(fmt::format("relu_fake_quant: zero point {} (expected qmin {}: a range starting at 0)", p.zero_point, p.qmin));
  Tensor out(x.shape());
  const float* src = x.value().data();
  float* dst = out.data();
  const int64_t n = out.numel();
  const float hi_q = static_cast<float>(p.qmax - p.zero_point), scale = p.scale;
#pragma omp parallel for simd schedule(static) if (parallel : n > kMinParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const float q = std::nearbyint((src[i] > 0.f ? src[i] : 0.f) / scale);  // eq. 7 on relu(x)
    dst[i] = (q > hi_q ? hi_q : q) * scale;
  }
  const float real_max = p.real_max();
  return make_result(std::move(out), {x}, [x, real_max](Node& self) {
    Tensor g(x.shape());
    const float* xv = x.value().data();
    const float* gy = self.grad.data();
    float* gx = g.data();
    const int64_t n = g.numel();
    const float hi = real_max;  // a local, not a capture read through `this` in the loop
#pragma omp parallel for simd schedule(static) if (parallel : n > kMinParallelElements)
    for (int64_t i = 0; i < n; ++i) gx[i] = ((xv[i] > 0.f) & (xv[i] <= hi)) ? gy[i] : 0.f;  // relu' x eq. 8
    x.add_grad(std::move(g));
  });
}

std::pair<float, float> relu_min_max(const Tensor& x) {
  const auto [lo, hi] = min_max(x);  // relu is monotonic: clamp the extremes at 0
  return {lo > 0.f ? lo : 0.f, hi > 0.f ? hi : 0.f};
}

}  // namespace qnet
