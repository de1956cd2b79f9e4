#include <cmath>

#include "core/kernels.h"
#include "optim/optimizer.h"

namespace qnet {

Adam::Adam(std::vector<Variable*> params, const AdamOptions& options) : Optimizer(std::move(params)), options_(options) {
  for (Variable* p : params_) {
    m_.push_back(Tensor::zeros(p->shape()));
    v_.push_back(Tensor::zeros(p->shape()));
    t_.push_back(0);
  }
}

void Adam::step() {
  const auto& o = options_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Variable& p = *params_[i];
    if (!p.has_grad()) continue;
    const int64_t t = ++t_[i];
    const double alpha = o.lr * std::sqrt(1.0 - std::pow(double{o.beta2}, t)) / (1.0 - std::pow(double{o.beta1}, t));
    const float a = static_cast<float>(alpha), b1 = o.beta1, b2 = o.beta2, eps = o.epsilon;
    kernels().adam_update(p.value().numel(), a, b1, b2, eps, p.value().data(), p.grad().data(), m_[i].data(), v_[i].data());
  }
}

}  // namespace qnet
