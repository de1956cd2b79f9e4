#include <catch2/catch.hpp>

#include "core/ops.h"
#include "tests/grad_check.h"

using namespace qnet;
using namespace qnet::testing;

TEST_CASE("max_pool2d forward takes each window's maximum per channel", "[core]") {
  // 2 channels interleaved (NHWC): channel 0 = 1..16, channel 1 = -(1..16).
  std::vector<float> v;
  for (int i = 1; i <= 16; ++i) v.push_back(static_cast<float>(i)), v.push_back(static_cast<float>(-i));
  Variable x(Tensor::from({1, 4, 4, 2}, v));
  const Tensor y = max_pool2d(x, {}).value();
  CHECK(y.shape() == Shape{1, 2, 2, 2});
  CHECK(y.to_vector() == std::vector<float>{6, -1, 8, -3, 14, -9, 16, -11});
}

TEST_CASE("max_pool2d backward matches finite differences", "[core][grad]") {
  Rng rng(7);
  check_gradients([](auto& v) { return max_pool2d(v[0], {}); }, {distinct_tensor({2, 6, 6, 12}, rng)});
  check_gradients([](auto& v) { return max_pool2d(v[0], {3, 3, 1, 1, Padding::kValid}); },  // overlapping windows
                  {distinct_tensor({1, 5, 5, 3}, rng)});
  check_gradients([](auto& v) { return max_pool2d(v[0], {2, 2, 2, 2, Padding::kSame}); },  // odd size, padded
                  {distinct_tensor({1, 5, 7, 17}, rng)});
  check_gradients([](auto& v) { return max_pool2d(v[0], {2, 3, 1, 2, Padding::kValid}); },
                  {distinct_tensor({2, 5, 7, 2}, rng)});
}

TEST_CASE("max_pool2d sends a tied window's gradient to its first maximum only", "[core][grad]") {
  Variable x(Tensor::from({1, 2, 2, 1}, {5.f, 5.f, 5.f, 1.f}), true);
  Variable y = max_pool2d(x, {});
  y.backward(Tensor::full({1, 1, 1, 1}, 3.f));
  CHECK(x.grad().to_vector() == std::vector<float>{3.f, 0.f, 0.f, 0.f});

  // Overlapping windows: each window picks its own first maximum and the gradients add up.
  Variable z(Tensor::from({1, 1, 3, 1}, {2.f, 2.f, 2.f}), true);
  max_pool2d(z, {1, 2, 1, 1, Padding::kValid}).backward(Tensor::from({1, 1, 2, 1}, {1.f, 10.f}));
  CHECK(z.grad().to_vector() == std::vector<float>{1.f, 10.f, 0.f});
}
