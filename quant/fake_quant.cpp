#include "quant/fake_quant.h"

#include <memory>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include "core/kernels.h"
#include "quant/observer.h"

namespace qnet {

namespace {
// eq. 7 with each channel's parameters.
Tensor fake_quant_values(const Tensor& in, const std::vector<QParams>& params) {
  const int64_t C = static_cast<int64_t>(params.size());
  std::vector<float> scale(C), lo(C), hi(C);
  for (int64_t c = 0; c < C; ++c) {
    const QParams& p = params[c];
    scale[c] = p.scale, lo[c] = static_cast<float>(p.qmin - p.zero_point), hi[c] = static_cast<float>(p.qmax - p.zero_point);
  }
  Tensor out(in.shape());
  kernels().fake_quant_forward(in.numel(), C, in.data(), scale.data(), lo.data(), hi.data(), out.data());
  return out;
}
}  // namespace

Variable fake_quant(const Variable& x, const std::vector<QParams>& params) {
  const Tensor& in = x.value();
  const int64_t C = static_cast<int64_t>(params.size());
  if (C == 0 || (C > 1 && (in.rank() == 0 || in.dim(-1) != C)))
    throw std::invalid_argument(fmt::format("fake_quant: {} parameter sets for input {} (expected 1, or one per channel of the last axis)",
                                            C, shape_str(in.shape())));
  std::vector<float> real_lo(C), real_hi(C);
  for (int64_t c = 0; c < C; ++c) real_lo[c] = params[c].real_min(), real_hi[c] = params[c].real_max();
  Tensor out = fake_quant_values(in, params);  // eq. 7
  auto ranges = std::make_shared<std::pair<std::vector<float>, std::vector<float>>>(std::move(real_lo), std::move(real_hi));
  return make_result(std::move(out), {x}, [x, ranges, C](Node& self) {
    Tensor g(x.shape());
    kernels().fake_quant_backward(g.numel(), C, x.value().data(), ranges->first.data(), ranges->second.data(), self.grad.data(),
                                  g.data());  // eq. 8
    x.add_grad(std::move(g));
  });
}

// The scales come from these very weights, so every weight lies inside its channel's range, and
// eq. 8 passes the whole gradient, unless a channel's max |w| / qmax * qmax rounded below max |w|
// (1 channel in 400 at 8 bits) or a weight is NaN: then the masked gradient of fake_quant.
Variable fake_quant_weights(const Variable& w, int bits) {
  const Tensor& in = w.value();
  if (in.rank() == 0) throw std::invalid_argument("fake_quant_weights: a scalar (expected a kernel, channels on the last axis)");
  std::vector<float> amax(in.dim(-1));
  const bool numbers = kernels().channel_abs_max(in.numel(), in.dim(-1), in.data(), amax.data());
  const std::vector<QParams> params = weight_qparams(amax, bits);
  bool inside = numbers;
  for (size_t c = 0; c < amax.size(); ++c) inside = inside && amax[c] <= params[c].real_max();  // real_min() is -real_max()
  if (!inside) return fake_quant(w, params);
  return make_result(fake_quant_values(in, params), {w}, [w](Node& self) { w.add_grad(self.grad); });
}

Variable relu_fake_quant(const Variable& x, const QParams& p) {
  return relu_fake_quant(x, relu_grid(p));
}

ReluGrid relu_grid(const QParams& p) {
  if (p.zero_point != p.qmin)
    throw std::invalid_argument(fmt::format("relu_fake_quant: zero point {} (expected qmin {}: a range starting at 0)", p.zero_point, p.qmin));
  return {p.scale, static_cast<float>(p.qmax - p.zero_point), p.real_max()};
}

std::pair<float, float> relu_min_max(const Tensor& x) {
  const auto [lo, hi] = min_max(x);  // relu is monotonic: clamp the extremes at 0
  return {lo > 0.f ? lo : 0.f, hi > 0.f ? hi : 0.f};
}

}  // namespace qnet
