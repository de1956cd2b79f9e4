// matmul on Eigen: row-major maps over the tensors' storage, no copies.
#include <omp.h>

#include <stdexcept>

#include <Eigen/Core>
#include <fmt/format.h>

#include "core/ops.h"

namespace qnet {

namespace {
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<Matrix, Eigen::Aligned64>;
using ConstMap = Eigen::Map<const Matrix, Eigen::Aligned64>;

ConstMap as_matrix(const Tensor& t) { return ConstMap(t.data(), t.dim(0), t.dim(1)); }
Map as_matrix(Tensor& t) { return Map(t.data(), t.dim(0), t.dim(1)); }

// Eigen does not split these small products over threads; we split the rows of the
// result: f(begin, count) computes rows [begin, begin + count) with a single-threaded Eigen
// product. Every row is computed the same way whatever the split, so results do not
// depend on the thread count.
template <typename F>
void for_row_blocks(int64_t rows, F&& f) {
#pragma omp parallel if (rows >= 16)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    if (end > begin) f(begin, end - begin);
  }
}
}  // namespace

Variable matmul(const Variable& x, const Variable& w) {
  if (x.value().rank() != 2 || w.value().rank() != 2 || x.shape()[1] != w.shape()[0])
    throw std::invalid_argument(fmt::format("matmul: {} x {} (expected [N, K] x [K, M])", shape_str(x.shape()),
                                            shape_str(w.shape())));
  Tensor y({x.shape()[0], w.shape()[1]});
  for_row_blocks(y.dim(0), [&](int64_t r, int64_t n) {
    as_matrix(y).middleRows(r, n).noalias() = as_matrix(x.value()).middleRows(r, n) * as_matrix(w.value());
  });
  return make_result(std::move(y), {x, w}, [x, w](Node& self) {
    if (x.requires_grad()) {  // dX = dY W^T
      Tensor dx(x.shape());
      for_row_blocks(dx.dim(0), [&](int64_t r, int64_t n) {
        as_matrix(dx).middleRows(r, n).noalias() = as_matrix(self.grad).middleRows(r, n) * as_matrix(w.value()).transpose();
      });
      x.add_grad(std::move(dx));
    }
    if (w.requires_grad()) {  // dW = X^T dY
      Tensor dw(w.shape());
      for_row_blocks(dw.dim(0), [&](int64_t r, int64_t n) {
        as_matrix(dw).middleRows(r, n).noalias() = as_matrix(x.value()).middleCols(r, n).transpose() * as_matrix(self.grad);
      });
      w.add_grad(std::move(dw));
    }
  });
}

}  // namespace qnet
