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
Variable bias_add(const Variable& x, const Variable& bias);  // bias [C] on the last axis
Variable reshape(const Variable& x, Shape shape);
Variable flatten(const Variable& x);                          // [N, ...] -> [N, rest]

// --- convolution (core/ops_conv.cpp); bias may be undefined (no bias)
Variable conv2d(const Variable& x, const Variable& w, const Variable& bias, const Conv2dOptions& options);

// --- pooling (core/ops_pool.cpp); gradient goes to the first maximum of each window
Variable max_pool2d(const Variable& x, const Pool2dOptions& options);

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
// the min and max of the whole conv output (before pooling), which observers need.
// Fast path: 3x3 kernel, 1 input channel, stride 1, valid padding, 2x2 pool with stride 2
// (the reference model); other shapes run the two ops.
struct ValueRange {
  float min = 0.f;
  float max = 0.f;
};
Variable conv2d_max_pool2d(const Variable& x, const Variable& w, const Variable& bias, const Conv2dOptions& conv,
                           const Pool2dOptions& pool, ValueRange* conv_range = nullptr);

// --- dense (core/ops_dense.cpp)
Variable matmul(const Variable& x, const Variable& w);  // [N, K] x [K, M] -> [N, M]

// --- loss (core/ops_loss.cpp)
// Mean over the batch of -log softmax(logits)[label]; stable for any finite logits.
Variable softmax_cross_entropy(const Variable& logits, std::span<const int32_t> labels);

}  // namespace qnet
