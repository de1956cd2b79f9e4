// Quantization parameters and arithmetic: r = scale * (q - zero_point)   (docs/quantization.md, eq. 1).
//
//   QParams a = choose_activation_qparams(0.f, 6.f, 8);      // uint8 [0, 255], nudged (eq. 3-5)
//   std::vector<QParams> w = choose_weight_qparams(kernel, 8); // per output channel, symmetric (eq. 6)
//   int32_t q = quantize(x, a);  float r = dequantize(q, a);
//
// Rounding is half to even everywhere (eq. 2), as oneDNN converts f32 to int8.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace qnet {

struct QParams {
  float scale = 1.f;
  int32_t zero_point = 0;
  int32_t qmin = 0;
  int32_t qmax = 255;
  // The real interval that maps onto [qmin, qmax] (eq. 5).
  float real_min() const { return static_cast<float>(qmin - zero_point) * scale; }
  float real_max() const { return static_cast<float>(qmax - zero_point) * scale; }
};

inline float round_half_even(float x) { return std::nearbyint(x); }  // default FE_TONEAREST

// q = clamp(round(x / scale) + zero_point, qmin, qmax)   (eq. 2)
inline int32_t quantize(float x, const QParams& p) {
  const float q = round_half_even(x / p.scale) + static_cast<float>(p.zero_point);
  const float lo = static_cast<float>(p.qmin), hi = static_cast<float>(p.qmax);
  return static_cast<int32_t>(q < lo ? lo : (q > hi ? hi : q));  // not fmin/fmax: those are library calls
}
inline float dequantize(int32_t q, const QParams& p) { return static_cast<float>(q - p.zero_point) * p.scale; }

// Unsigned activations: [0, 2^bits - 1]. The range is widened to contain 0, and the zero
// point is an integer so real 0 is exact (eq. 3-5).
QParams choose_activation_qparams(float min, float max, int bits);

// Symmetric, narrow-range weights per output channel (the last axis): zero point 0,
// [-(2^(bits-1) - 1), 2^(bits-1) - 1], scale = max|w_c| / qmax (eq. 6).
std::vector<QParams> choose_weight_qparams(const Tensor& kernel, int bits);
// The same from each channel's largest |w| (Kernels::channel_abs_max).
std::vector<QParams> weight_qparams(const std::vector<float>& amax, int bits);

void check_bits(int bits);  // throws std::invalid_argument outside 2..8

}  // namespace qnet
