// Reverse-mode automatic differentiation on Tensors.
//
//   Variable w(Tensor::zeros({3}), /*requires_grad=*/true);
//   Variable loss = sum(mul(w, w));   // ops live in core/ops.h
//   loss.backward();                  // w.grad() now holds dloss/dw
//   { NoGradGuard no_grad; ... }      // inference: no graph is recorded
//
// Each op computes its value and, when an input needs a gradient, hands the result a
// backward closure (make_result). backward() sorts the graph topologically and runs the
// closures in reverse; closures *add* into their inputs' gradients (add_grad).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace qnet {

struct Node;
using BackwardFn = std::function<void(Node& self)>;

struct Node {
  Tensor value;
  Tensor grad;  // empty until a gradient arrives
  bool requires_grad = false;
  std::vector<std::shared_ptr<Node>> inputs;
  BackwardFn backward_fn;
};

class Variable {
 public:
  Variable() = default;
  explicit Variable(Tensor value, bool requires_grad = false);

  const Tensor& value() const { return node_->value; }
  Tensor& value() { return node_->value; }
  const Shape& shape() const { return node_->value.shape(); }
  bool requires_grad() const { return node_->requires_grad; }
  bool has_grad() const { return !node_->grad.empty(); }
  const Tensor& grad() const { return node_->grad; }
  void zero_grad() { node_->grad = Tensor(); }
  // Adds g (same shape as value) into this variable's gradient; takes g's storage if none yet.
  void add_grad(Tensor g) const;
  bool defined() const { return node_ != nullptr; }

  // Gradient of this scalar with respect to every variable that requires one.
  void backward() const;
  // Same, with an explicit seed gradient of this variable's shape.
  void backward(Tensor seed) const;

  Node& node() const { return *node_; }
  const std::shared_ptr<Node>& node_ptr() const { return node_; }

 private:
  friend Variable make_result(Tensor, const std::vector<Variable>&, BackwardFn);
  std::shared_ptr<Node> node_;
};

// Wraps an op's output. If gradients are enabled and any input requires one, the result
// keeps its inputs and the backward closure; otherwise it is a constant leaf.
Variable make_result(Tensor value, const std::vector<Variable>& inputs, BackwardFn backward_fn);

bool grad_enabled();

// While alive, ops record no graph (evaluation, inference, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace qnet
