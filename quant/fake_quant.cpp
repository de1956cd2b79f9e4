#include "quant/fake_quant.h"

#include <memory>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include "core/kernels.h"
#include "quant/observer.h"

namespace qnet {

Variable fake_quant(const Variable& x, const std::vector<QParams>& params) {
  const Tensor& in = x.value();
  const int64_t C = static_cast<int64_t>(params.size());
  if (C == 0 || (C > 1 && (in.rank() == 0 || in.dim(-1) != C)))
    throw std::invalid_argument(fmt::format("fake_quant: {} parameter sets for input {} (expected 1, or one per channel of the last axis)",
                                            C, shape_str(in.shape())));
  std::vector<float> scale(C), lo(C), hi(C), real_lo(C), real_hi(C);
  for (int64_t c = 0; c < C; ++c) {
    const QParams& p = params[c];
    scale[c] = p.scale, lo[c] = static_cast<float>(p.qmin - p.zero_point), hi[c] = static_cast<float>(p.qmax - p.zero_point);
    real_lo[c] = p.real_min(), real_hi[c] = p.real_max();
  }
  Tensor out(in.shape());
  kernels().fake_quant_forward(in.numel(), C, in.data(), scale.data(), lo.data(), hi.data(), out.data());  // eq. 7
  auto ranges = std::make_shared<std::pair<std::vector<float>, std::vector<float>>>(std::move(real_lo), std::move(real_hi));
  return make_result(std::move(out), {x}, [x, ranges, C](Node& self) {
    Tensor g(x.shape());
    kernels().fake_quant_backward(g.numel(), C, x.value().data(), ranges->first.data(), ranges->second.data(), self.grad.data(),
                                  g.data());  // eq. 8
    x.add_grad(std::move(g));
  });
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
