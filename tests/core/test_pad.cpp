#include <catch2/catch.hpp>

#include "core/ops.h"
#include "tests/grad_check.h"

using namespace qnet;
using namespace qnet::testing;

TEST_CASE("zero_pad2d puts the image in a frame of zeros", "[core]") {
  // 2 channels: (1, -1), (2, -2) in one row; one row above, two columns on the right.
  Variable x(Tensor::from({1, 1, 2, 2}, {1, -1, 2, -2}));
  const Tensor y = zero_pad2d(x, {.top = 1, .bottom = 0, .left = 0, .right = 2}).value();
  CHECK(y.shape() == Shape{1, 2, 4, 2});
  CHECK(y.to_vector() == std::vector<float>{0, 0, 0, 0, 0, 0, 0, 0,  //
                                            1, -1, 2, -2, 0, 0, 0, 0});
  CHECK(zero_pad2d(x, {}).value().to_vector() == x.value().to_vector());
}

TEST_CASE("zero_pad2d backward matches finite differences", "[core][grad]") {
  Rng rng(11);
  check_gradients([](auto& v) { return zero_pad2d(v[0], {.top = 1, .bottom = 2, .left = 3, .right = 0}); },
                  {random_tensor({2, 3, 4, 3}, rng)});
  check_gradients([](auto& v) { return zero_pad2d(v[0], {.top = 0, .bottom = 0, .left = 1, .right = 1}); },
                  {random_tensor({1, 2, 2, 5}, rng)});
}

TEST_CASE("zero_pad2d refuses negative padding and non-image inputs", "[core]") {
  Variable image(Tensor({1, 2, 2, 1})), flat(Tensor({2, 4}));
  CHECK_THROWS_WITH(zero_pad2d(image, {.top = -1}), Catch::Contains("expected [N, H, W, C] and paddings in 0..65536"));
  CHECK_THROWS_WITH(zero_pad2d(flat, {.left = 1}), Catch::Contains("zero_pad2d: input [2, 4]"));
}
