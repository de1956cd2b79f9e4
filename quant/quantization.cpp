#include "quant/quantization.h"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

#include "core/kernels.h"

namespace qnet {

void check_bits(int bits) {
  if (bits < 2 || bits > 8) throw std::invalid_argument(fmt::format("bit width {} (expected 2..8)", bits));
}

QParams choose_activation_qparams(float min, float max, int bits) {
  check_bits(bits);
  QParams p;
  p.qmin = 0;
  p.qmax = (1 << bits) - 1;
  min = std::min(min, 0.f);  // eq. 3: the range contains 0
  max = std::max(max, 0.f);
  if (!(max - min > 1e-12f) || !std::isfinite(max - min)) {
    p.scale = 1.f, p.zero_point = 0;  // empty or broken range: everything maps to 0
    return p;
  }
  p.scale = (max - min) / static_cast<float>(p.qmax - p.qmin);  // eq. 4
  const float z = round_half_even(static_cast<float>(p.qmin) - min / p.scale);
  p.zero_point = static_cast<int32_t>(std::clamp(z, static_cast<float>(p.qmin), static_cast<float>(p.qmax)));
  return p;
}

std::vector<QParams> choose_weight_qparams(const Tensor& kernel, int bits) {
  const int64_t C = kernel.dim(-1);
  std::vector<float> amax(C);
  kernels().channel_abs_max(kernel.numel(), C, kernel.data(), amax.data());
  return weight_qparams(amax, bits);
}

std::vector<QParams> weight_qparams(const std::vector<float>& amax, int bits) {
  check_bits(bits);
  const int32_t qmax = (1 << (bits - 1)) - 1;
  std::vector<QParams> out(amax.size());
  for (size_t c = 0; c < amax.size(); ++c) {
    out[c].qmin = -qmax, out[c].qmax = qmax, out[c].zero_point = 0;
    out[c].scale = amax[c] > 0.f ? amax[c] / static_cast<float>(qmax) : 1.f;  // eq. 6
  }
  return out;
}

}  // namespace qnet
