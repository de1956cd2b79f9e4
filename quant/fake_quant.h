// fake_quant: quantize then dequantize in float, with the straight-through estimator.
//
//   Variable y = fake_quant(x, {choose_activation_qparams(0.f, 4.f, 8)});   // per tensor
//   Variable wq = fake_quant(w, choose_weight_qparams(w.value(), 8));       // per last-axis channel
//
// Forward (eq. 7): y = (clamp(round(x / s) + z, qmin, qmax) - z) * s, round half to even.
// Backward (eq. 8): dL/dx = dL/dy where real_min <= x <= real_max, else 0.
#pragma once

#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "quant/quantization.h"

namespace qnet {

// params: one QParams (per tensor) or one per channel of the last axis.
Variable fake_quant(const Variable& x, const std::vector<QParams>& params);

// fake_quant(w, choose_weight_qparams(w.value(), bits)), the same values and gradient, whose
// backward passes the gradient on without a pass over it where eq. 8 keeps all of it (almost always).
Variable fake_quant_weights(const Variable& w, int bits);

// fake_quant(relu(x), {params}) in one pass each way; params must have real_min() == 0
// (a nudged range for ReLU output). Backward: dL/dx = dL/dy where 0 < x <= real_max.
Variable relu_fake_quant(const Variable& x, const QParams& params);
// The grid of such params for core's relu_fake_quant and the fused conv + ReLU + max-pool
// (core/ops.h): throws std::invalid_argument unless zero_point == qmin.
ReluGrid relu_grid(const QParams& params);

// min and max of relu(x) without computing relu(x).
std::pair<float, float> relu_min_max(const Tensor& x);

}  // namespace qnet
