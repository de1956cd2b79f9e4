#include <cmath>

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
    float* __restrict w = p.value().data();
    const float* __restrict g = p.grad().data();
    float* __restrict m = m_[i].data();
    float* __restrict v = v_[i].data();
    const int64_t n = p.value().numel();
#pragma omp parallel for simd schedule(static) if (parallel : n > 4096)
    for (int64_t k = 0; k < n; ++k) {
      m[k] = b1 * m[k] + (1.f - b1) * g[k];
      v[k] = b2 * v[k] + (1.f - b2) * g[k] * g[k];
      w[k] -= a * m[k] / (std::sqrt(v[k]) + eps);
    }
  }
}

}  // namespace qnet
