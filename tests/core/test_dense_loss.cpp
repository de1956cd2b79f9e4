#include <cmath>

#include <catch2/catch.hpp>

#include "core/ops.h"
#include "tests/grad_check.h"

using namespace qnet;
using namespace qnet::testing;

TEST_CASE("matmul matches hand values and finite differences", "[core][grad]") {
  Variable a(Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6})), b(Tensor::from({3, 2}, {1, 0, 0, 1, 1, 1}));
  CHECK(matmul(a, b).value().to_vector() == std::vector<float>{4, 5, 10, 11});
  Rng rng(8);
  check_gradients([](auto& v) { return matmul(v[0], v[1]); }, {random_tensor({3, 5}, rng), random_tensor({5, 4}, rng)});
  check_gradients([](auto& v) { return matmul(v[0], v[1]); }, {random_tensor({33, 7}, rng), random_tensor({7, 10}, rng)});
}

TEST_CASE("softmax cross-entropy matches hand values", "[core]") {
  // Row 0: logits (0, 0) -> loss log 2; row 1: (ln 3, 0), label 0 -> -log(3/4).
  Variable z(Tensor::from({2, 2}, {0.f, 0.f, std::log(3.f), 0.f}), true);
  const std::vector<int32_t> labels{1, 0};
  Variable loss = softmax_cross_entropy(z, labels);
  CHECK(loss.value()[0] == Approx((std::log(2.0) - std::log(0.75)) / 2));
  loss.backward();  // (softmax - onehot) / N
  CHECK(z.grad()[0] == Approx(0.25f));
  CHECK(z.grad()[1] == Approx(-0.25f));
  CHECK(z.grad()[2] == Approx(-0.125f));
  CHECK(z.grad()[3] == Approx(0.125f));
}

TEST_CASE("softmax cross-entropy stays finite for huge logits", "[core]") {
  Variable z(Tensor::from({2, 3}, {1e30f, -1e30f, 0.f, -1e30f, 1e30f, 1e4f}), true);
  const std::vector<int32_t> labels{0, 0};
  Variable loss = softmax_cross_entropy(z, labels);
  // Row 0 is certain and right (loss 0); row 1 is wrong by a margin of 2e30 (the loss is that margin).
  CHECK(std::isfinite(loss.value()[0]));
  CHECK(loss.value()[0] == Approx(1e30f));
  loss.backward();
  for (float g : z.grad().to_vector()) CHECK(std::isfinite(g));
  CHECK(z.grad()[3] == Approx(-0.5f));
  CHECK(z.grad()[4] == Approx(0.5f));
}

TEST_CASE("softmax cross-entropy gradient matches finite differences", "[core][grad]") {
  Rng rng(9);
  const std::vector<int32_t> labels{3, 0, 9, 5};
  check_gradients([&](auto& v) { return softmax_cross_entropy(v[0], labels); }, {random_tensor({4, 10}, rng, -3.f, 3.f)},
                  1e-2, 5e-3);
}

TEST_CASE("softmax cross-entropy refuses labels out of range", "[core]") {
  Variable z(Tensor::zeros({1, 10}));
  const std::vector<int32_t> bad{10};
  CHECK_THROWS_WITH(softmax_cross_entropy(z, bad), Catch::Contains("label 10") && Catch::Contains("expected 0..9"));
}
