// Optimizers update parameters from their accumulated gradients.
//
//   Adam adam(model.parameters(), {.lr = 1e-3f});
//   adam.zero_grad();  loss.backward();  adam.step();
#pragma once

#include <vector>

#include "core/autograd.h"

namespace qnet {

class Optimizer {
 public:
  explicit Optimizer(std::vector<Variable*> params) : params_(std::move(params)) {}
  virtual ~Optimizer() = default;
  virtual void step() = 0;  // parameters without a gradient are left alone
  void zero_grad() {
    for (Variable* p : params_) p->zero_grad();
  }

 protected:
  std::vector<Variable*> params_;
};

// Keras' Adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), t counted per parameter.
struct AdamOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-7f;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Variable*> params, const AdamOptions& options = {});
  void step() override;

 private:
  AdamOptions options_;
  std::vector<Tensor> m_, v_;
  std::vector<int64_t> t_;
};

// SGD with (optionally Nesterov) momentum as in Keras: v = momentum v - lr g; w += v
// (Nesterov: w += momentum v - lr g).
struct SgdOptions {
  float lr = 0.01f;
  float momentum = 0.f;
  bool nesterov = false;
};

class Sgd : public Optimizer {
 public:
  Sgd(std::vector<Variable*> params, const SgdOptions& options = {});
  void step() override;

 private:
  SgdOptions options_;
  std::vector<Tensor> velocity_;
};

}  // namespace qnet
