// Differentiable ops: free functions that compute a value and record its backward.
//
//   Variable y = conv2d(x, w, b, {.stride_h = 1, .stride_w = 1, .padding = Padding::kValid});
//   Variable p = max_pool2d(relu(y), {.window_h = 2, .window_w = 2});
//   Variable loss = softmax_cross_entropy(matmul(flatten(p), w2), labels);
//
// Layouts: images NHWC, conv kernels HWIO [KH, KW, IC, OC], dense weights [IN, OUT].
// Every op checks its shapes up front and throws std::invalid_argument naming the op,
// the shapes it got and what it expected. Adding an op: docs/architecture.md.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "core/autograd.h"

namespace qnet {

enum class Padding { kValid, kSame };  // TensorFlow's meanings

struct Conv2dOptions {
  int stride_h = 1;
  int stride_w = 1;
  Padding padding = Padding::kValid;
};

struct Pool2dOptions {
  int window_h = 2;
  int window_w = 2;
  int stride_h = 0;  // 0 = the window size (Keras' default)
  int stride_w = 0;
  Padding padding = Padding::kValid;
};

// Output size and leading padding of one spatial axis under TensorFlow's rules.
struct AxisGeometry {
  int64_t out;
  int64_t pad_before;
};
inline AxisGeometry axis_geometry(int64_t in, int64_t window, int64_t stride, Padding padding) {
  if (padding == Padding::kValid) return {in >= window ? (in - window) / stride + 1 : 0, 0};
  const int64_t out = (in + stride - 1) / stride;
  const int64_t total = (out - 1) * stride + window - in;
  return {out, total > 0 ? total / 2 : 0};
}

// --- elementwise and reductions (core/ops_elementwise.cpp)
Variable add(const Variable& a, const Variable& b);          // same shapes
Variable mul(const Variable& a, const Variable& b);          // same shapes
Variable sum(const Variable& x);                              // -> shape [1]
Variable relu(const Variable& x);
// A grid from real 0 that a ReLU's output is fake-quantized on (a QAT ReLU's, quant/qat.h):
// y = min(round(relu(x) / scale), hi) * scale, gradient where 0 < x <= real_hi (eq. 7, 8).
struct ReluGrid {
  float scale = 1.f;
  float hi = 255.f;       // the largest code
  float real_hi = 255.f;  // the real value of code hi
};
Variable relu_fake_quant(const Variable& x, const ReluGrid& grid);  // fake_quant(relu(x)) in one pass each way
Variable bias_add(const Variable& x, const Variable& bias);  // bias [C] on the last axis
Variable reshape(const Variable& x, Shape shape);
Variable flatten(const Variable& x);                          // [N, ...] -> [N, rest]

// --- convolution (core/ops_conv.cpp); bias may be undefined (no bias)
Variable conv2d(const Variable& x, const Variable& w, const Variable& bias, const Conv2dOptions& options);

// --- depthwise convolution (core/ops_conv.cpp): kernel [KH, KW, 1, C * M] for an input of C
// channels; output channel c * M + m filters input channel c alone (M, the depth multiplier, is
// the kernel's last axis over C). bias [C * M] or undefined.
Variable depthwise_conv2d(const Variable& x, const Variable& w, const Variable& bias, const Conv2dOptions& options);

// --- pooling (core/ops_pool.cpp); max: the gradient goes to the first maximum of each window;
// average: the mean of the window's taps inside the input ("same" padding is not counted, as
// in TensorFlow); global: the mean over H and W, [N, H, W, C] -> [N, C].
Variable max_pool2d(const Variable& x, const Pool2dOptions& options);
Variable avg_pool2d(const Variable& x, const Pool2dOptions& options);
Variable global_avg_pool2d(const Variable& x);

// --- per-channel ops (core/ops_channel.cpp): the last axis is the channel axis.
// y[..., c] = x[..., c] * scale[c]
Variable mul_channels(const Variable& x, const Variable& scale);
// Batch normalization with the batch's statistics (Keras' BatchNormalization in training):
// y = gamma (x - mean) / sqrt(var + epsilon) + beta, mean and (biased) variance over every axis
// but the last. If `moving` is given, its mean and variance move toward the batch's:
// m <- momentum m + (1 - momentum) batch (the variance unbiased, n / (n - 1), as Keras and PyTorch).
struct MovingStatistics {
  Tensor mean, var;  // [C], updated in place (shared storage)
  float momentum = 0.99f;
};
Variable batch_norm_train(const Variable& x, const Variable& gamma, const Variable& beta, float epsilon, MovingStatistics* moving = nullptr);
// The same with given statistics (the moving ones: evaluation, or frozen statistics in training):
// y = gamma (x - mean) / sqrt(var + epsilon) + beta, a per-channel affine map of x.
Variable batch_norm_fixed(const Variable& x, const Variable& gamma, const Variable& beta, const Tensor& mean, const Tensor& var, float epsilon);

// --- zero padding (core/ops_pad.cpp): y = x in a frame of zeros, `top` rows above, `bottom`
// below, `left` and `right` columns beside; the gradient of x is dy's interior.
struct Pad2dOptions {
  int top = 0, bottom = 0, left = 0, right = 0;
};
Variable zero_pad2d(const Variable& x, const Pad2dOptions& options);

// --- conv2d then max_pool2d in one pass each way (core/ops_conv.cpp): the value and the
// gradients of max_pool2d(conv2d(x, w, bias, conv), pool), without the conv output in memory.
// Sequential uses it for conv -> activation -> max-pool when the activation is monotonic
// (ReLU, fake-quantized ReLU): max-pooling first and activating the pooled values gives the
// same result with a quarter of the activation work. If conv_range is given, it receives
// the min and max of the whole conv output (before pooling), which observers need. With
// PooledActivation::kReLU it returns relu(max_pool2d(conv2d(...))), the ReLU inside the fused op.
// Fast path: 3x3 kernel, 1 input channel, stride 1, valid padding, 2x2 pool with stride 2
// (the reference model); other shapes run the two (three) ops.
struct ValueRange {
  float min = 0.f;
  float max = 0.f;
};
// What the fused op applies to the pooled values itself. kReLUFakeQuant: the ReLU, then fake
// quantization on the grid `grid` gives for the range of the relu'd conv output ({max(min, 0),
// max(max, 0)} of the whole unpooled output, a QAT observer's input): called once per forward,
// between the conv and the quantization, so the grid can follow the batch. The quantization runs
// in place on the op's output, and its gradient mask joins the ReLU's in the op's backward.
struct PooledActivation {
  enum Kind { kNone, kReLU, kReLUFakeQuant };
  PooledActivation(Kind k = kNone) : kind(k) {}  // implicit: PooledActivation::kReLU is one
  explicit PooledActivation(std::function<ReluGrid(const ValueRange&)> grid_of) : kind(kReLUFakeQuant), grid(std::move(grid_of)) {}
  Kind kind;
  std::function<ReluGrid(const ValueRange& relu_range)> grid;  // kReLUFakeQuant
};
Variable conv2d_max_pool2d(const Variable& x, const Variable& w, const Variable& bias, const Conv2dOptions& conv,
                           const Pool2dOptions& pool, ValueRange* conv_range = nullptr,
                           const PooledActivation& activation = PooledActivation::kNone);

// --- dense (core/ops_dense.cpp)
Variable matmul(const Variable& x, const Variable& w);  // [N, K] x [K, M] -> [N, M]

// --- loss (core/ops_loss.cpp)
// Mean over the batch of -log softmax(logits)[label]; stable for any finite logits.
Variable softmax_cross_entropy(const Variable& logits, std::span<const int32_t> labels);

}  // namespace qnet
