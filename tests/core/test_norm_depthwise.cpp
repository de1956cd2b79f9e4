// The ops of real architectures (issue 20): batch normalization and per-channel scaling
// (core/ops_channel.cpp), depthwise convolution (core/ops_conv.cpp), average pooling
// (core/ops_pool.cpp) and the add of a residual branch: values against plain references,
// gradients against finite differences.
#include <cmath>

#include <catch2/catch.hpp>

#include "core/ops.h"
#include "core/parallel.h"
#include "tests/grad_check.h"

using namespace qnet;
using namespace qnet::testing;

TEST_CASE("batch_norm_train normalizes each channel with the batch's statistics and moves the moving ones", "[core]") {
  Rng rng(21);
  const Tensor x = random_tensor({5, 3, 4, 2}, rng, -3.f, 7.f);
  Variable gamma(Tensor::from({2}, {2.f, -0.5f}), true), beta(Tensor::from({2}, {1.f, 3.f}), true);
  MovingStatistics moving{Tensor::zeros({2}), Tensor::full({2}, 1.f), 0.9f};
  const Tensor y = batch_norm_train(Variable(x), gamma, beta, 1e-3f, &moving).value();
  const int64_t rows = 5 * 3 * 4;
  for (int c = 0; c < 2; ++c) {
    double mean = 0, var = 0, ymean = 0, yvar = 0;
    for (int64_t r = 0; r < rows; ++r) mean += x[r * 2 + c], ymean += y[r * 2 + c];
    mean /= rows, ymean /= rows;
    for (int64_t r = 0; r < rows; ++r) var += (x[r * 2 + c] - mean) * (x[r * 2 + c] - mean), yvar += (y[r * 2 + c] - ymean) * (y[r * 2 + c] - ymean);
    var /= rows, yvar /= rows;
    CHECK(ymean == Approx(beta.value()[c]).margin(1e-5));
    CHECK(yvar == Approx(gamma.value()[c] * gamma.value()[c] * var / (var + 1e-3)).epsilon(1e-4));
    for (int64_t r = 0; r < rows; ++r)  // each element: gamma (x - mean) / sqrt(var + eps) + beta
      CHECK(y[r * 2 + c] == Approx(gamma.value()[c] * (x[r * 2 + c] - mean) / std::sqrt(var + 1e-3) + beta.value()[c]).margin(1e-4));
    CHECK(moving.mean[c] == Approx(0.1 * mean).epsilon(1e-5));
    CHECK(moving.var[c] == Approx(0.9 + 0.1 * var * rows / (rows - 1)).epsilon(1e-5));  // unbiased, as Keras and PyTorch
  }
}

TEST_CASE("batch normalization backward matches finite differences, with batch and with fixed statistics", "[core][grad]") {
  Rng rng(22);
  const Tensor stats_mean = random_tensor({3}, rng), stats_var = random_tensor({3}, rng, 0.2f, 2.f);
  for (const Shape& shape : {Shape{4, 3, 2, 3}, Shape{6, 3}}) {  // images, and a Dense layer's output
    INFO(shape_str(shape));
    check_gradients([](auto& v) { return batch_norm_train(v[0], v[1], v[2], 1e-3f); },
                    {random_tensor(shape, rng, -2.f, 2.f), random_tensor({3}, rng, 0.5f, 1.5f), random_tensor({3}, rng)}, 1e-2, 1e-2);
    check_gradients([&](auto& v) { return batch_norm_fixed(v[0], v[1], v[2], stats_mean, stats_var, 1e-3f); },
                    {random_tensor(shape, rng, -2.f, 2.f), random_tensor({3}, rng, 0.5f, 1.5f), random_tensor({3}, rng)});
  }
  check_gradients([](auto& v) { return mul_channels(v[0], v[1]); }, {random_tensor({3, 3, 2, 4}, rng), random_tensor({4}, rng)});
}

TEST_CASE("depthwise_conv2d equals a full conv whose kernel is zero between different channels", "[core]") {
  Rng rng(23);
  for (const int multiplier : {1, 2})
    for (const Padding padding : {Padding::kValid, Padding::kSame})
      for (const int stride : {1, 2}) {
        INFO("multiplier " << multiplier << ", stride " << stride << ", " << (padding == Padding::kSame ? "same" : "valid"));
        const int64_t C = 19, OC = C * multiplier;  // 19: more than a vector of channels, and a partial one
        const Tensor x = random_tensor({2, 9, 8, C}, rng), w = random_tensor({3, 3, 1, OC}, rng), b = random_tensor({OC}, rng);
        Tensor full = Tensor::zeros({3, 3, C, OC});
        for (int64_t tap = 0; tap < 9; ++tap)
          for (int64_t o = 0; o < OC; ++o) full[(tap * C + o / multiplier) * OC + o] = w[tap * OC + o];
        const Conv2dOptions o{.stride_h = stride, .stride_w = stride, .padding = padding};
        const Tensor got = depthwise_conv2d(Variable(x), Variable(w), Variable(b), o).value();
        const Tensor want = conv2d(Variable(x), Variable(full), Variable(b), o).value();
        REQUIRE(got.shape() == want.shape());
        for (int64_t i = 0; i < got.numel(); ++i) REQUIRE(got[i] == Approx(want[i]).margin(1e-5));
      }
}

TEST_CASE("depthwise_conv2d backward matches finite differences", "[core][grad]") {
  Rng rng(24);
  check_gradients([](auto& v) { return depthwise_conv2d(v[0], v[1], v[2], {}); },
                  {random_tensor({2, 5, 6, 3}, rng), random_tensor({3, 3, 1, 3}, rng), random_tensor({3}, rng)});
  check_gradients([](auto& v) { return depthwise_conv2d(v[0], v[1], Variable(), {.stride_h = 2, .stride_w = 2, .padding = Padding::kSame}); },
                  {random_tensor({2, 7, 6, 18}, rng), random_tensor({3, 2, 1, 18}, rng)});
  check_gradients([](auto& v) { return depthwise_conv2d(v[0], v[1], v[2], {.stride_h = 1, .stride_w = 2, .padding = Padding::kSame}); },
                  {random_tensor({1, 5, 5, 2}, rng), random_tensor({3, 3, 1, 6}, rng), random_tensor({6}, rng)});  // multiplier 3
}

TEST_CASE("avg_pool2d averages the taps inside the input; global_avg_pool2d the whole image", "[core]") {
  // One channel, 3x3: 1..9. A 2x2 window, stride 2, "same" padding: windows of 4, 2, 2 and 1 taps.
  Variable x(Tensor::from({1, 3, 3, 1}, {1, 2, 3, 4, 5, 6, 7, 8, 9}));
  const Tensor y = avg_pool2d(x, {2, 2, 2, 2, Padding::kSame}).value();
  CHECK(y.to_vector() == std::vector<float>{3.f, 4.5f, 7.5f, 9.f});
  CHECK(avg_pool2d(x, {2, 2, 1, 1, Padding::kValid}).value().to_vector() == std::vector<float>{3.f, 4.f, 6.f, 7.f});
  const Tensor g = global_avg_pool2d(x).value();
  CHECK(g.shape() == Shape{1, 1});
  CHECK(g[0] == 5.f);
}

TEST_CASE("average pooling backward matches finite differences", "[core][grad]") {
  Rng rng(25);
  check_gradients([](auto& v) { return avg_pool2d(v[0], {}); }, {random_tensor({2, 6, 6, 17}, rng)});
  check_gradients([](auto& v) { return avg_pool2d(v[0], {3, 3, 2, 1, Padding::kSame}); }, {random_tensor({1, 5, 7, 3}, rng)});
  check_gradients([](auto& v) { return global_avg_pool2d(v[0]); }, {random_tensor({3, 4, 5, 6}, rng)});
}

TEST_CASE("an add whose two inputs share a variable (a residual block) sums both gradients into it", "[core][grad]") {
  Rng rng(26);
  check_gradients(
      [](auto& v) {
        const Variable body = relu(conv2d(v[0], v[1], Variable(), {.stride_h = 1, .stride_w = 1, .padding = Padding::kSame}));
        return relu(add(body, v[0]));  // the identity shortcut reads the same x
      },
      {distinct_tensor({2, 4, 4, 3}, rng, 0.03f), random_tensor({3, 3, 3, 3}, rng)});
}

TEST_CASE("batch norm, depthwise and average pooling gradients do not depend on the thread count", "[core]") {
  Rng rng(27);
  const Tensor x = random_tensor({9, 6, 6, 20}, rng), w = random_tensor({3, 3, 1, 20}, rng);
  const Tensor gamma = random_tensor({20}, rng), beta = random_tensor({20}, rng), seed = random_tensor({9, 20}, rng);
  const int saved = num_threads();
  auto run = [&](int threads) {
    set_num_threads(threads);
    Variable vx(x, true), vw(w, true), vg(gamma, true), vb(beta, true);
    const Variable y = global_avg_pool2d(avg_pool2d(batch_norm_train(depthwise_conv2d(vx, vw, Variable(), {}), vg, vb, 1e-3f), {2, 2, 1, 1, Padding::kSame}));
    y.backward(seed);
    std::vector<float> all = vx.grad().to_vector();
    for (const Variable* v : {&vw, &vg, &vb})
      for (float f : v->grad().to_vector()) all.push_back(f);
    return all;
  };
  const std::vector<float> one = run(1), two = run(2);
  set_num_threads(saved);
  CHECK(one == two);
}
