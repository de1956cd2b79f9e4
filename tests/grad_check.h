// The one gradient-check helper: analytic gradients against central differences.
//
//   check_gradients([](const std::vector<Variable>& v) { return relu(v[0]); }, {random_tensor({2, 3}, rng)});
//
// The scalar checked is L = sum(R * f(inputs)) with a fixed random R, so every output
// element contributes with its own weight. Differences use double accumulation of the
// float outputs; tolerances are relative with an absolute floor.
#pragma once

#include <functional>
#include <vector>

#include <catch2/catch.hpp>

#include "core/ops.h"
#include "core/random.h"

namespace qnet::testing {

inline Tensor random_tensor(Shape shape, Rng& rng, float lo = -1.f, float hi = 1.f) {
  Tensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(lo, hi);
  return t;
}

using Fn = std::function<Variable(const std::vector<Variable>&)>;

inline void check_gradients(const Fn& f, const std::vector<Tensor>& inputs, double eps = 1e-2, double tol = 2e-3) {
  Rng rng(1234);
  std::vector<Variable> vars;
  for (const Tensor& t : inputs) vars.emplace_back(t.clone(), true);
  Variable out = f(vars);
  const Tensor weights = random_tensor(out.shape(), rng);
  auto objective = [&](const std::vector<Variable>& v) {
    NoGradGuard no_grad;
    const Tensor y = f(v).value();
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += double{weights[i]} * y[i];
    return s;
  };
  out.backward(weights.clone());
  for (size_t i = 0; i < vars.size(); ++i) {
    INFO("input " << i << " of shape " << shape_str(vars[i].shape()));
    REQUIRE(vars[i].has_grad());
    const Tensor analytic = vars[i].grad();
    for (int64_t k = 0; k < vars[i].value().numel(); ++k) {
      float& x = vars[i].value()[k];
      const float saved = x;
      x = saved + static_cast<float>(eps);
      const double up = objective(vars);
      x = saved - static_cast<float>(eps);
      const double down = objective(vars);
      x = saved;
      const double numeric = (up - down) / (2 * eps);
      INFO("element " << k << ": analytic " << analytic[k] << ", numeric " << numeric);
      CHECK(std::abs(analytic[k] - numeric) <= tol * std::max(1.0, std::abs(numeric)));
    }
  }
}

// Values spaced at least `gap` apart in random order: no ties, no kinks within eps.
inline Tensor distinct_tensor(Shape shape, Rng& rng, float gap = 0.05f) {
  Tensor t(std::move(shape));
  std::vector<int64_t> order(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) order[i] = i;
  rng.shuffle(order);
  for (int64_t i = 0; i < t.numel(); ++i) t[order[i]] = (static_cast<float>(i) - t.numel() / 2.f) * gap + 0.0123f;
  return t;
}

}  // namespace qnet::testing
