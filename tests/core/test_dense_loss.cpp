#include <cmath>

#include <catch2/catch.hpp>

#include "core/kernels.h"
#include "core/ops.h"
#include "core/parallel.h"
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

// The input gradient runs on Eigen in fixed blocks of rows (core/kernels/products.h), the
// forward and weight gradient on hand tiles: all against a plain double product, on shapes with
// several row blocks and leftover rows and columns, and the same bits on 1, 2 and 3 threads.
TEST_CASE("matmul and its gradients match a plain product and do not depend on the thread count", "[core]") {
  Rng rng(31);
  struct Case { int64_t N, K, M; };
  for (const Case c : {Case{96, 300, 40}, Case{50, 2028, 10}, Case{7, 3, 17}, Case{129, 65, 33}}) {
    INFO("x [" << c.N << ", " << c.K << "] w [" << c.K << ", " << c.M << "]");
    const Tensor x = random_tensor({c.N, c.K}, rng), w = random_tensor({c.K, c.M}, rng), g = random_tensor({c.N, c.M}, rng);
    const int saved = num_threads();
    std::vector<std::vector<float>> runs;
    for (int threads : {1, 2, 3}) {
      set_num_threads(threads);
      Variable vx(x, true), vw(w, true);
      const Variable y = matmul(vx, vw);
      y.backward(g);
      std::vector<float> all = y.value().to_vector();
      for (const Variable* v : {&vx, &vw})
        for (float f : v->grad().to_vector()) all.push_back(f);
      runs.push_back(std::move(all));
    }
    set_num_threads(saved);
    CHECK(runs[1] == runs[0]);
    CHECK(runs[2] == runs[0]);
    // runs[0] = y [N, M], dx [N, K], dw [K, M]
    const float* y = runs[0].data();
    const float* dx = y + c.N * c.M;
    const float* dw = dx + c.N * c.K;
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t m = 0; m < c.M; ++m) {
        double e = 0;
        for (int64_t k = 0; k < c.K; ++k) e += double{x[n * c.K + k]} * w[k * c.M + m];
        REQUIRE(y[n * c.M + m] == Approx(e).margin(1e-3));
      }
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t k = 0; k < c.K; ++k) {
        double e = 0;
        for (int64_t m = 0; m < c.M; ++m) e += double{g[n * c.M + m]} * w[k * c.M + m];
        REQUIRE(dx[n * c.K + k] == Approx(e).margin(1e-3));
      }
    for (int64_t k = 0; k < c.K; ++k)
      for (int64_t m = 0; m < c.M; ++m) {
        double e = 0;
        for (int64_t n = 0; n < c.N; ++n) e += double{x[n * c.K + k]} * g[n * c.M + m];
        REQUIRE(dw[k * c.M + m] == Approx(e).margin(1e-3));
      }
  }
}

// The weight gradient of a batch split over the threads of a team (core/distributed.h,
// matmul_dw_on_shared_ranks): the parts' chunks added in order give matmul_dw's bits for the
// batch as one, whatever share of dw's rows each thread computes. Parts of whole chunks but the
// last, as shards are; the 2028 x 10 shape is the article's Dense layer.
TEST_CASE("a weight gradient over a batch in parts gives the bits of the batch as one", "[core]") {
  Rng rng(37);
  struct Case { int64_t K, M; std::vector<int64_t> rows; };
  for (const Case& c : {Case{2028, 10, {16, 16}}, Case{65, 33, {8, 4, 11}}, Case{300, 40, {4}}, Case{9, 17, {12, 3}}}) {
    int64_t N = 0;
    for (int64_t r : c.rows) N += r;
    INFO("K " << c.K << ", M " << c.M << ", " << c.rows.size() << " parts of " << N << " rows");
    const Tensor x = random_tensor({N, c.K}, rng), dy = random_tensor({N, c.M}, rng);
    std::vector<float> whole(c.K * c.M);
    kernels().matmul_dw(N, c.K, c.M, x.data(), dy.data(), whole.data());
    std::vector<const float*> xs, dys;
    for (int64_t at = 0; const int64_t r : c.rows) xs.push_back(x.data() + at * c.K), dys.push_back(dy.data() + at * c.M), at += r;
    const int parts = static_cast<int>(c.rows.size());
    for (int shares : {1, 2, 3}) {  // dw's rows split as a team of `shares` threads splits them
      std::vector<float> split(c.K * c.M, -1.f);
      for (int s = 0; s < shares; ++s)
        kernels().matmul_dw_parts(parts, c.rows.data(), xs.data(), dys.data(), c.K, c.M, c.K * s / shares, c.K * (s + 1) / shares,
                                  split.data());
      CHECK(split == whole);
    }
  }
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
