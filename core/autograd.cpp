#include "core/autograd.h"

#include <stdexcept>
#include <unordered_set>

#include <fmt/format.h>

namespace qnet {

namespace {
thread_local bool g_grad_enabled = true;

void add_into(Tensor& dst, const Tensor& src) {
  float* d = dst.data();
  const float* s = src.data();
  for (int64_t i = 0, n = dst.numel(); i < n; ++i) d[i] += s[i];
}
}  // namespace

Variable::Variable(Tensor value, bool requires_grad) : node_(std::make_shared<Node>()) {
  node_->value = std::move(value);
  node_->requires_grad = requires_grad;
}

void Variable::add_grad(Tensor g) const {
  if (g.shape() != node_->value.shape())
    throw std::logic_error(fmt::format("add_grad: gradient shape {} does not match value shape {}",
                                       shape_str(g.shape()), shape_str(node_->value.shape())));
  if (node_->grad.empty())
    node_->grad = std::move(g);
  else
    add_into(node_->grad, g);
}

void Variable::backward() const {
  if (node_->value.numel() != 1)
    throw std::logic_error(fmt::format("backward() without a seed needs a scalar, got shape {}",
                                       shape_str(node_->value.shape())));
  backward(Tensor::full(node_->value.shape(), 1.f));
}

void Variable::backward(Tensor seed) const {
  if (!node_->requires_grad) throw std::logic_error("backward(): this variable does not require a gradient");
  // Iterative post-order DFS: parents appear after all of their inputs.
  std::vector<Node*> order;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<Node*, size_t>> stack{{node_.get(), 0}};
  visited.insert(node_.get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      Node* child = node->inputs[next++].get();
      if (child->requires_grad && visited.insert(child).second) stack.push_back({child, 0});
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  add_grad(std::move(seed));
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    if (node->backward_fn && !node->grad.empty()) node->backward_fn(*node);
  }
}

Variable make_result(Tensor value, const std::vector<Variable>& inputs, BackwardFn backward_fn) {
  Variable out(std::move(value), false);
  if (!g_grad_enabled) return out;
  bool any = false;
  for (const auto& v : inputs) any = any || v.requires_grad();
  if (!any) return out;
  out.node_->requires_grad = true;
  out.node_->backward_fn = std::move(backward_fn);
  out.node_->inputs.reserve(inputs.size());
  for (const auto& v : inputs) out.node_->inputs.push_back(v.node_ptr());
  return out;
}

bool grad_enabled() { return g_grad_enabled; }

NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

}  // namespace qnet
