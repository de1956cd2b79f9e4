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
  // The same update in `parts` pieces, for the threads of a training step (optim/trainer.cpp):
  // step_part(k, parts) updates elements [n k / parts, n (k + 1) / parts) of each parameter of n,
  // and once every part is done, end_step() once. False: this optimizer updates only whole
  // (step() is called instead).
  virtual bool step_part(int /*part*/, int /*parts*/) { return false; }
  virtual void end_step() {}
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
  bool step_part(int part, int parts) override;
  void end_step() override;  // counts the step of each parameter that had a gradient

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
  bool step_part(int part, int parts) override;

 private:
  SgdOptions options_;
  std::vector<Tensor> velocity_;
};

}  // namespace qnet
