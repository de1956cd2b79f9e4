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
  step_part(0, 1);
  end_step();
}

bool Adam::step_part(int part, int parts) {
  const auto& o = options_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Variable& p = *params_[i];
    if (!p.has_grad()) continue;
    const int64_t t = t_[i] + 1, n = p.value().numel(), begin = n * part / parts, end = n * (part + 1) / parts;
    const double alpha = o.lr * std::sqrt(1.0 - std::pow(double{o.beta2}, t)) / (1.0 - std::pow(double{o.beta1}, t));
    const float a = static_cast<float>(alpha), b1 = o.beta1, b2 = o.beta2, eps = o.epsilon;
    kernels().adam_update(end - begin, a, b1, b2, eps, p.value().data() + begin, p.grad().data() + begin, m_[i].data() + begin,
                          v_[i].data() + begin);
  }
  return true;
}

void Adam::end_step() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i]->has_grad()) ++t_[i];
}

}  // namespace qnet
