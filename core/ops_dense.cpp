// matmul on Eigen: row-major maps over the tensors' storage, no copies.
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
}  // namespace

Variable matmul(const Variable& x, const Variable& w) {
  if (x.value().rank() != 2 || w.value().rank() != 2 || x.shape()[1] != w.shape()[0])
    throw std::invalid_argument(fmt::format("matmul: {} x {} (expected [N, K] x [K, M])", shape_str(x.shape()),
                                            shape_str(w.shape())));
  Tensor y({x.shape()[0], w.shape()[1]});
  as_matrix(y).noalias() = as_matrix(x.value()) * as_matrix(w.value());
  return make_result(std::move(y), {x, w}, [x, w](Node& self) {
    if (x.requires_grad()) {  // dX = dY W^T
      Tensor dx(x.shape());
      as_matrix(dx).noalias() = as_matrix(self.grad) * as_matrix(w.value()).transpose();
      x.add_grad(std::move(dx));
    }
    if (w.requires_grad()) {  // dW = X^T dY
      Tensor dw(w.shape());
      as_matrix(dw).noalias() = as_matrix(x.value()).transpose() * as_matrix(self.grad);
      w.add_grad(std::move(dw));
    }
  });
}

}  // namespace qnet
