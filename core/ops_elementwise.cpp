// Elementwise ops, reductions and reshapes: each forward sits next to its backward.
#include <stdexcept>

#include <fmt/format.h>

#include "core/distributed.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace qnet {

namespace {
void check_same_shape(const char* op, const Variable& a, const Variable& b) {
  if (a.shape() != b.shape())
    throw std::invalid_argument(
        fmt::format("{}: shapes {} and {} differ (expected equal shapes)", op, shape_str(a.shape()), shape_str(b.shape())));
}
}  // namespace

Variable add(const Variable& a, const Variable& b) {
  check_same_shape("add", a, b);
  Tensor out(a.shape());
  for (int64_t i = 0; i < out.numel(); ++i) out[i] = a.value()[i] + b.value()[i];
  return make_result(std::move(out), {a, b}, [a, b](Node& self) {
    if (a.requires_grad()) a.add_grad(self.grad.clone());
    if (b.requires_grad()) b.add_grad(self.grad.clone());
  });
}

Variable mul(const Variable& a, const Variable& b) {
  check_same_shape("mul", a, b);
  Tensor out(a.shape());
  for (int64_t i = 0; i < out.numel(); ++i) out[i] = a.value()[i] * b.value()[i];
  return make_result(std::move(out), {a, b}, [a, b](Node& self) {
    for (auto [x, other] : {std::pair{a, b}, std::pair{b, a}}) {
      if (!x.requires_grad()) continue;
      Tensor g(x.shape());
      for (int64_t i = 0; i < g.numel(); ++i) g[i] = self.grad[i] * other.value()[i];
      x.add_grad(std::move(g));
    }
  });
}

Variable sum(const Variable& x) {
  double total = 0;
  for (int64_t i = 0; i < x.value().numel(); ++i) total += x.value()[i];
  return make_result(Tensor::full({1}, static_cast<float>(total)), {x},
                     [x](Node& self) { x.add_grad(Tensor::full(x.shape(), self.grad[0])); });
}

Variable relu(const Variable& x) {
  Tensor out(x.shape());
  kernels().relu_forward(out.numel(), x.value().data(), out.data());
  return make_result(out, {x}, [x, out](Node& self) {
    Tensor g(x.shape());
    kernels().relu_backward(g.numel(), out.data(), self.grad.data(), g.data());
    x.add_grad(std::move(g));
  });
}

Variable relu_fake_quant(const Variable& x, const ReluGrid& grid) {
  Tensor out(x.shape());
  kernels().relu_fake_quant_forward(out.numel(), x.value().data(), grid.scale, grid.hi, out.data());
  return make_result(std::move(out), {x}, [x, real_hi = grid.real_hi](Node& self) {
    Tensor g(x.shape());
    kernels().relu_fake_quant_backward(g.numel(), x.value().data(), real_hi, self.grad.data(), g.data());  // relu' x eq. 8
    x.add_grad(std::move(g));
  });
}

Variable bias_add(const Variable& x, const Variable& bias) {
  const int64_t C = bias.value().numel();
  if (bias.value().rank() != 1 || x.value().rank() < 1 || x.shape().back() != C)
    throw std::invalid_argument(fmt::format("bias_add: input {} and bias {} (expected bias [C] with C = last input axis)",
                                            shape_str(x.shape()), shape_str(bias.shape())));
  Tensor out(x.shape());
  const int64_t rows = out.numel() / C;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) out[r * C + c] = x.value()[r * C + c] + bias.value()[c];
  return make_result(std::move(out), {x, bias}, [x, bias, C](Node& self) {
    if (x.requires_grad()) x.add_grad(self.grad.clone());
    if (bias.requires_grad()) {  // over the batch in chunks of images (on several processes, all ranks')
      Tensor g({C});
      const float* dy = self.grad.data();
      batch_channel_sum(
          x.shape(), [&](int64_t r0, int64_t n, int64_t chunk, float* d) { kernels().channel_sum(n, C, chunk, dy + r0 * C, d); }, g.data());
      bias.add_grad(std::move(g));
    }
  });
}

Variable reshape(const Variable& x, Shape shape) {
  Tensor out = x.value().reshaped(std::move(shape));  // throws on a size mismatch
  return make_result(std::move(out), {x}, [x](Node& self) { x.add_grad(self.grad.reshaped(x.shape())); });
}

Variable flatten(const Variable& x) {
  if (x.value().rank() < 1) throw std::invalid_argument("flatten: input has rank 0 (expected [N, ...])");
  const int64_t N = x.shape()[0];
  return reshape(x, {N, N == 0 ? 0 : x.value().numel() / N});
}

}  // namespace qnet
