#include <cmath>
#include <memory>

#include <catch2/catch.hpp>

#include "optim/optimizer.h"

using namespace qnet;

TEST_CASE("an Adam step matches hand-computed values", "[optim]") {
  Variable w(Tensor::from({2}, {1.f, -2.f}), true);
  Adam adam({&w}, {.lr = 0.1f});
  // Step 1, g = (0.5, -4): m = 0.1 g, v = 0.001 g^2, alpha = 0.1 * sqrt(0.001) / 0.1;
  // update = alpha * m / (sqrt(v) + 1e-7) = 0.1 * sign(g) (up to epsilon).
  w.add_grad(Tensor::from({2}, {0.5f, -4.f}));
  adam.step();
  const double alpha1 = 0.1 * std::sqrt(1 - 0.999) / (1 - 0.9);
  const double m0 = 0.05, v0 = 0.00025, m1 = -0.4, v1 = 0.016;
  CHECK(w.value()[0] == Approx(1.0 - alpha1 * m0 / (std::sqrt(v0) + 1e-7)).epsilon(1e-6));
  CHECK(w.value()[1] == Approx(-2.0 - alpha1 * m1 / (std::sqrt(v1) + 1e-7)).epsilon(1e-6));
  // Step 2 with g = (0.5, 0): the moments decay and bias correction uses t = 2.
  const double w0 = w.value()[0], w1 = w.value()[1];
  adam.zero_grad();
  w.add_grad(Tensor::from({2}, {0.5f, 0.f}));
  adam.step();
  const double alpha2 = 0.1 * std::sqrt(1 - 0.999 * 0.999) / (1 - 0.9 * 0.9);
  const double m0b = 0.9 * m0 + 0.05, v0b = 0.999 * v0 + 0.00025, m1b = 0.9 * m1, v1b = 0.999 * v1;
  CHECK(w.value()[0] == Approx(w0 - alpha2 * m0b / (std::sqrt(v0b) + 1e-7)).epsilon(1e-6));
  CHECK(w.value()[1] == Approx(w1 - alpha2 * m1b / (std::sqrt(v1b) + 1e-7)).epsilon(1e-6));
}

TEST_CASE("Adam leaves parameters without a gradient alone", "[optim]") {
  Variable a(Tensor::from({1}, {1.f}), true), b(Tensor::from({1}, {2.f}), true);
  Adam adam({&a, &b});
  a.add_grad(Tensor::from({1}, {1.f}));
  adam.step();
  CHECK(a.value()[0] != 1.f);
  CHECK(b.value()[0] == 2.f);
}

TEST_CASE("SGD with momentum matches hand-computed values", "[optim]") {
  Variable w(Tensor::from({1}, {1.f}), true);
  Sgd sgd({&w}, {.lr = 0.1f, .momentum = 0.9f});
  w.add_grad(Tensor::from({1}, {2.f}));
  sgd.step();  // v = -0.2, w = 0.8
  CHECK(w.value()[0] == Approx(0.8f));
  sgd.step();  // v = 0.9 * -0.2 - 0.2 = -0.38, w = 0.42
  CHECK(w.value()[0] == Approx(0.42f));
}

// How the threads of a training step update the parameters (optim/trainer.cpp): each its part
// of every parameter, then end_step() once. The same bits as step(), over several steps (the
// step count in Adam's bias correction advances once per step).
TEST_CASE("Adam and SGD stepped in parts give the bits of whole steps", "[optim]") {
  for (bool adam : {true, false}) {
    INFO((adam ? "Adam" : "SGD with Nesterov momentum"));
    Variable a(Tensor::from({7}, {1, -2, 3, 0.5f, -1, 2, 0}), true), b(Tensor::from({3}, {0.1f, 0.2f, -0.3f}), true);
    Variable c(a.value().clone(), true), d(b.value().clone(), true);
    std::unique_ptr<Optimizer> whole, parts;
    if (adam)
      whole = std::make_unique<Adam>(std::vector<Variable*>{&a, &b}), parts = std::make_unique<Adam>(std::vector<Variable*>{&c, &d});
    else
      whole = std::make_unique<Sgd>(std::vector<Variable*>{&a, &b}, SgdOptions{.lr = 0.1f, .momentum = 0.9f, .nesterov = true}),
      parts = std::make_unique<Sgd>(std::vector<Variable*>{&c, &d}, SgdOptions{.lr = 0.1f, .momentum = 0.9f, .nesterov = true});
    for (int step = 0; step < 4; ++step) {
      Tensor ga({7}), gb({3});
      for (int64_t i = 0; i < 7; ++i) ga[i] = std::sin(1.f + i + step);
      for (int64_t i = 0; i < 3; ++i) gb[i] = std::cos(2.f + i * step);
      for (Variable* v : {&a, &b, &c, &d}) v->zero_grad();
      a.add_grad(ga.clone()), c.add_grad(ga.clone());
      if (step != 2) b.add_grad(gb.clone()), d.add_grad(gb.clone());  // a step without b's gradient: b left alone
      whole->step();
      for (int k = 0; k < 3; ++k) REQUIRE(parts->step_part(k, 3));
      parts->end_step();
      CHECK(c.value().to_vector() == a.value().to_vector());
      CHECK(d.value().to_vector() == b.value().to_vector());
    }
  }
}
