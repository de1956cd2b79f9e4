// matmul: the shape check and the autograd closure; the products are per-ISA kernels
// (core/kernels/gemm.cpp).
#include <stdexcept>

#include <fmt/format.h>

#include "core/distributed.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace qnet {

Variable matmul(const Variable& x, const Variable& w) {
  if (x.value().rank() != 2 || w.value().rank() != 2 || x.shape()[1] != w.shape()[0])
    throw std::invalid_argument(fmt::format("matmul: {} x {} (expected [N, K] x [K, M])", shape_str(x.shape()),
                                            shape_str(w.shape())));
  const int64_t N = x.shape()[0], K = x.shape()[1], M = w.shape()[1];
  Tensor y({N, M});
  kernels().matmul(N, K, M, x.value().data(), w.value().data(), y.data());
  return make_result(std::move(y), {x, w}, [x, w, N, K, M](Node& self) {
    if (x.requires_grad()) {  // dX = dY W^T
      Tensor dx(x.shape());
      kernels().matmul_dx(N, K, M, self.grad.data(), w.value().data(), dx.data());
      x.add_grad(std::move(dx));
    }
    if (w.requires_grad()) {  // dW = X^T dY
      Tensor dw(w.shape());
      if (!sharded_step()) {
        kernels().matmul_dw(N, K, M, x.value().data(), self.grad.data(), dw.data());
      } else if (!matmul_dw_on_shared_ranks(N, K, M, x.value().data(), self.grad.data(), dw.data())) {
        // the rows are images: chunk by chunk, then across ranks (core/distributed.h)
        sum_chunks_across_ranks(
            K * M,
            [&](int64_t first, int64_t rows, float* dst) {
              kernels().matmul_dw(rows, K, M, x.value().data() + first * K, self.grad.data() + first * M, dst);
            },
            dw.data());
      }
      w.add_grad(std::move(dw));
    }
  });
}

}  // namespace qnet
