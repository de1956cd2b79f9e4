// This ISA's table of kernels (core/kernels.h), read by kernels() in core/cpu.cpp.
#include "core/kernels.h"
#include "core/simd.h"

namespace qnet::QNET_ISA_NS {

void conv_forward(const ConvShape&, const float*, const float*, const float*, float*);
void conv_backward_weights(const ConvShape&, const float*, const float*, float*, float*);
void conv_backward_input(const ConvShape&, const float*, const float*, float*);
void conv_backward_weights_walk(const ConvShape&, const float*, const float*, float*, float*, GradientWalk);
void conv_backward_input_walk(const ConvShape&, const float*, const float*, float*, GradientWalk);
void pooled_conv_forward(const ConvShape&, const float*, const float*, const float*, bool, float*, uint8_t*, float*);
void pooled_conv_backward_weights(const ConvShape&, const float*, const float*, const uint8_t*, float*, float*);
void pooled_fake_quant(int64_t, int64_t, float, float, float, float, float*, uint8_t*);
void max_pool_forward(const PoolShape&, const float*, float*);
void max_pool_backward(const PoolShape&, const float*, const float*, const float*, float*);
void avg_pool_forward(const PoolShape&, const float*, float*);
void avg_pool_backward(const PoolShape&, const float*, float*);
void depthwise_forward(const PoolShape&, const float*, const float*, const float*, float*);
void depthwise_backward_input(const PoolShape&, const float*, const float*, float*);
void depthwise_backward_weights(const PoolShape&, const float*, const float*, float*, float*);
void channel_sum(int64_t, int64_t, int64_t, const float*, float*);
void channel_sq_dev(int64_t, int64_t, int64_t, const float*, const float*, float*);
void channel_dot_dev(int64_t, int64_t, int64_t, const float*, const float*, const float*, float*);
void channel_affine(int64_t, int64_t, const float*, const float*, const float*, const float*, float*);
void channel_affine2(int64_t, int64_t, const float*, const float*, const float*, const float*, const float*, const float*, float*);
void matmul(int64_t, int64_t, int64_t, const float*, const float*, float*);
void matmul_dx(int64_t, int64_t, int64_t, const float*, const float*, float*);
void matmul_dw(int64_t, int64_t, int64_t, const float*, const float*, float*);
void matmul_dw_parts(int, const int64_t*, const float* const*, const float* const*, int64_t, int64_t, int64_t, int64_t, float*);
void relu_forward(int64_t, const float*, float*);
void relu_backward(int64_t, const float*, const float*, float*);
void fake_quant_forward(int64_t, int64_t, const float*, const float*, const float*, const float*, float*);
void fake_quant_backward(int64_t, int64_t, const float*, const float*, const float*, const float*, float*);
void relu_fake_quant_forward(int64_t, const float*, float, float, float*);
void relu_fake_quant_backward(int64_t, const float*, float, const float*, float*);
void min_max(int64_t, const float*, float*, float*);
bool channel_abs_max(int64_t, int64_t, const float*, float*);
void adam_update(int64_t, float, float, float, float, float*, const float*, float*, float*);

extern const Kernels kKernels;
const Kernels kKernels = {
    .lanes = kLanes,
    .conv_forward = conv_forward,
    .conv_backward_weights = conv_backward_weights,
    .conv_backward_input = conv_backward_input,
    .conv_backward_input_walk = conv_backward_input_walk,
    .conv_backward_weights_walk = conv_backward_weights_walk,
    .pooled_conv_forward = pooled_conv_forward,
    .pooled_conv_backward_weights = pooled_conv_backward_weights,
    .pooled_fake_quant = pooled_fake_quant,
    .max_pool_forward = max_pool_forward,
    .max_pool_backward = max_pool_backward,
    .avg_pool_forward = avg_pool_forward,
    .avg_pool_backward = avg_pool_backward,
    .depthwise_forward = depthwise_forward,
    .depthwise_backward_input = depthwise_backward_input,
    .depthwise_backward_weights = depthwise_backward_weights,
    .channel_sum = channel_sum,
    .channel_sq_dev = channel_sq_dev,
    .channel_dot_dev = channel_dot_dev,
    .channel_affine = channel_affine,
    .channel_affine2 = channel_affine2,
    .matmul = matmul,
    .matmul_dx = matmul_dx,
    .matmul_dw = matmul_dw,
    .matmul_dw_parts = matmul_dw_parts,
    .relu_forward = relu_forward,
    .relu_backward = relu_backward,
    .fake_quant_forward = fake_quant_forward,
    .fake_quant_backward = fake_quant_backward,
    .relu_fake_quant_forward = relu_fake_quant_forward,
    .relu_fake_quant_backward = relu_fake_quant_backward,
    .min_max = min_max,
    .channel_abs_max = channel_abs_max,
    .adam_update = adam_update,
};

}  // namespace qnet::QNET_ISA_NS
