#include <catch2/catch.hpp>

#include "core/ops.h"
#include "tests/grad_check.h"

using namespace qnet;
using namespace qnet::testing;

TEST_CASE("gradients accumulate when a variable is used twice", "[core][grad]") {
  Variable x(Tensor::from({3}, {1.f, -2.f, 3.f}), true);
  Variable y = sum(add(mul(x, x), x));  // d/dx = 2x + 1
  y.backward();
  CHECK(x.grad().to_vector() == std::vector<float>{3.f, -3.f, 7.f});
  sum(x).backward();  // a second backward adds into the same gradient
  CHECK(x.grad().to_vector() == std::vector<float>{4.f, -2.f, 8.f});
}

TEST_CASE("a diamond graph runs each backward once, after all its consumers", "[core][grad]") {
  Variable x(Tensor::from({2}, {2.f, 3.f}), true);
  Variable a = mul(x, x);         // x^2
  Variable b = add(a, a);         // 2x^2
  Variable c = mul(b, a);         // 2x^4 -> d/dx = 8x^3
  sum(c).backward();
  CHECK(x.grad()[0] == Approx(64.f));
  CHECK(x.grad()[1] == Approx(216.f));
}

TEST_CASE("no-grad mode records no graph", "[core]") {
  Variable x(Tensor::from({2}, {1.f, 2.f}), true);
  {
    NoGradGuard guard;
    Variable y = mul(x, x);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.node().inputs.empty());
  }
  CHECK(mul(x, x).requires_grad());
}

TEST_CASE("backward without a seed needs a scalar", "[core]") {
  Variable x(Tensor::zeros({2}), true);
  CHECK_THROWS_WITH(mul(x, x).backward(), Catch::Contains("needs a scalar"));
}

TEST_CASE("elementwise ops match finite differences", "[core][grad]") {
  Rng rng(3);
  check_gradients([](auto& v) { return mul(v[0], v[1]); }, {random_tensor({2, 5}, rng), random_tensor({2, 5}, rng)});
  check_gradients([](auto& v) { return add(v[0], v[1]); }, {random_tensor({4}, rng), random_tensor({4}, rng)});
  check_gradients([](auto& v) { return relu(v[0]); }, {distinct_tensor({3, 7}, rng)});
  check_gradients([](auto& v) { return bias_add(v[0], v[1]); }, {random_tensor({2, 3, 4}, rng), random_tensor({4}, rng)});
  check_gradients([](auto& v) { return flatten(v[0]); }, {random_tensor({2, 3, 2, 2}, rng)});
}

TEST_CASE("shape errors name the op and the shapes", "[core]") {
  Variable a(Tensor::zeros({2, 3})), b(Tensor::zeros({3, 2}));
  CHECK_THROWS_WITH(add(a, b), Catch::Contains("add") && Catch::Contains("[2, 3]") && Catch::Contains("[3, 2]"));
  CHECK_THROWS_WITH(matmul(a, a), Catch::Contains("matmul") && Catch::Contains("expected [N, K] x [K, M]"));
  CHECK_THROWS_WITH(reshape(a, {4}), Catch::Contains("reshape"));
}
