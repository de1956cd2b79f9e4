#include "optim/optimizer.h"

namespace qnet {

Sgd::Sgd(std::vector<Variable*> params, const SgdOptions& options) : Optimizer(std::move(params)), options_(options) {
  for (Variable* p : params_) velocity_.push_back(Tensor::zeros(p->shape()));
}

void Sgd::step() { step_part(0, 1); }

bool Sgd::step_part(int part, int parts) {
  const auto& o = options_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Variable& p = *params_[i];
    if (!p.has_grad()) continue;
    float* w = p.value().data();
    const float* g = p.grad().data();
    float* v = velocity_[i].data();
    const int64_t n = p.value().numel();
    for (int64_t k = n * part / parts, end = n * (part + 1) / parts; k < end; ++k) {
      v[k] = o.momentum * v[k] - o.lr * g[k];
      w[k] += o.nesterov ? o.momentum * v[k] - o.lr * g[k] : v[k];
    }
  }
  return true;
}

}  // namespace qnet
