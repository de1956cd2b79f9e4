// conv2d_max_pool2d against the two ops it fuses (three with its ReLU): values bit for bit,
// gradients to rounding, the conv output's range exactly, ties to the first maximum; the ReLU
// inside it bit for bit against relu() after it, and a QAT ReLU's fake quantization inside it
// against relu_fake_quant() after it; and finite differences.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <catch2/catch.hpp>

#include "core/kernels.h"
#include "core/ops.h"
#include "tests/grad_check.h"

using namespace qnet;
using namespace qnet::testing;

namespace {
struct Grads {
  Tensor y, dx, dw, db;
  ValueRange range;
  ValueRange grid_range;  // what a kReLUFakeQuant's grid was asked for
};

// A QAT ReLU's grid for the relu'd range: the top 30% of it above the last code, so some outputs
// clamp (and get no gradient).
ReluGrid grid_of(const ValueRange& r) {
  const float scale = r.max > 0.f ? r.max * 0.7f / 255.f : 1.f;
  return {scale, 255.f, 255.f * scale};
}

// How the output is made: the fused op (with the ReLU, or the ReLU and fake quantization, inside
// it or after it) or the plain ops.
enum class Path { kFused, kFusedReLU, kFusedThenReLU, kFusedQuant, kFusedThenQuant, kPlain, kPlainReLU };

Grads run(Path path, const Tensor& x, const Tensor& w, const Tensor* b, const Conv2dOptions& co, const Pool2dOptions& po,
          const Tensor& seed_of_shape_y) {
  Variable xv(x.clone(), true), wv(w.clone(), true), bv = b ? Variable(b->clone(), true) : Variable();
  Grads g;
  Variable y;
  if (path == Path::kFused || path == Path::kFusedThenReLU) {
    y = conv2d_max_pool2d(xv, wv, bv, co, po, &g.range);
    if (path == Path::kFusedThenReLU) y = relu(y);
  } else if (path == Path::kFusedReLU) {
    y = conv2d_max_pool2d(xv, wv, bv, co, po, &g.range, PooledActivation::kReLU);
  } else if (path == Path::kFusedQuant) {
    const PooledActivation quantize([&g](const ValueRange& r) {
      g.grid_range = r;
      return grid_of(r);
    });
    y = conv2d_max_pool2d(xv, wv, bv, co, po, &g.range, quantize);
  } else if (path == Path::kFusedThenQuant) {
    y = conv2d_max_pool2d(xv, wv, bv, co, po, &g.range);
    y = relu_fake_quant(y, grid_of({std::max(g.range.min, 0.f), std::max(g.range.max, 0.f)}));
  } else {
    Variable c = conv2d(xv, wv, bv, co);
    const auto [lo, hi] = std::minmax_element(c.value().data(), c.value().data() + c.value().numel());
    g.range = {*lo, *hi};
    y = max_pool2d(c, po);
    if (path == Path::kPlainReLU) y = relu(y);
  }
  y.backward(seed_of_shape_y.clone());
  g.y = y.value(), g.dx = xv.grad(), g.dw = wv.grad();
  if (b) g.db = bv.grad();
  return g;
}

void require_close(const Tensor& got, const Tensor& want, const char* what) {
  INFO(what);
  REQUIRE(got.shape() == want.shape());
  for (int64_t i = 0; i < got.numel(); ++i) {
    INFO("element " << i);
    REQUIRE(got[i] == Approx(want[i]).epsilon(1e-5).margin(1e-5));
  }
}
}  // namespace

TEST_CASE("conv2d_max_pool2d equals max_pool2d(conv2d): values, conv range and gradients", "[core][grad]") {
  Rng rng(21);
  struct Case {
    Shape x, w;
    Conv2dOptions conv;
    Pool2dOptions pool;
    bool bias;
  };
  const Case cases[] = {
      {{3, 28, 28, 1}, {3, 3, 1, 12}, {}, {}, true},              // the reference layer (fast path)
      {{2, 9, 7, 1}, {3, 3, 1, 20}, {}, {}, true},                // odd conv output (last row/column dropped), two blocks
      {{4, 6, 6, 1}, {3, 3, 1, 16}, {}, {}, false},               // one full block, no bias
      {{1, 4, 4, 1}, {3, 3, 1, 1}, {}, {}, true},                 // one window, one channel
      {{2, 8, 8, 3}, {3, 3, 3, 5}, {}, {}, true},                 // 3 input channels: the two ops
      {{2, 9, 9, 1}, {3, 3, 1, 4}, {2, 2, Padding::kValid}, {}, true},            // conv stride 2: the two ops
      {{2, 8, 8, 1}, {3, 3, 1, 4}, {1, 1, Padding::kSame}, {}, true},             // same padding: the two ops
      {{2, 8, 8, 1}, {3, 3, 1, 4}, {}, {3, 3, 1, 1, Padding::kValid}, true},      // overlapping pool: the two ops
      {{2, 10, 10, 1}, {5, 5, 1, 6}, {}, {2, 2, 0, 0, Padding::kSame}, true},     // 5x5 kernel: the two ops
  };
  int64_t clipped = 0, kept = 0;         // outputs the ReLU set to 0, and the others
  int64_t top_codes = 0, below_top = 0;  // fake-quantized outputs at the last code, and between 0 and it
  for (const Case& c : cases) {
    INFO("input " << shape_str(c.x) << " kernel " << shape_str(c.w) << " conv stride " << c.conv.stride_h << " pool "
                  << c.pool.window_h << "x" << c.pool.window_w);
    const Tensor x = random_tensor(c.x, rng), w = random_tensor(c.w, rng), b = random_tensor({c.w[3]}, rng);
    const Shape y_shape = max_pool2d(conv2d(Variable(x), Variable(w), Variable(), c.conv), c.pool).shape();
    const Tensor seed = random_tensor(y_shape, rng);
    for (const bool with_relu : {false, true}) {
      INFO("relu " << with_relu);
      const Tensor* bias = c.bias ? &b : nullptr;
      const Grads fused = run(with_relu ? Path::kFusedReLU : Path::kFused, x, w, bias, c.conv, c.pool, seed);
      const Grads plain = run(with_relu ? Path::kPlainReLU : Path::kPlain, x, w, bias, c.conv, c.pool, seed);
      CHECK(fused.y.to_vector() == plain.y.to_vector());  // same FMAs in the same order
      CHECK(fused.range.min == plain.range.min);          // the conv output's, before the ReLU
      CHECK(fused.range.max == plain.range.max);
      require_close(fused.dw, plain.dw, "kernel gradient");  // summed in another order
      require_close(fused.dx, plain.dx, "input gradient");
      if (c.bias) require_close(fused.db, plain.db, "bias gradient");
      if (with_relu) {  // the ReLU inside the op gives relu(op)'s bits: values and every gradient
        const Grads after = run(Path::kFusedThenReLU, x, w, bias, c.conv, c.pool, seed);
        CHECK(fused.y.to_vector() == after.y.to_vector());
        CHECK(fused.dw.to_vector() == after.dw.to_vector());
        CHECK(fused.dx.to_vector() == after.dx.to_vector());
        if (c.bias) CHECK(fused.db.to_vector() == after.db.to_vector());
        const int64_t zeros = std::count(fused.y.data(), fused.y.data() + fused.y.numel(), 0.f);
        clipped += zeros, kept += fused.y.numel() - zeros;
        // The fake quantization inside (in place, its gradient's cut in the op's backward) gives
        // relu_fake_quant's bits after the op, from the same grid.
        const Grads quant = run(Path::kFusedQuant, x, w, bias, c.conv, c.pool, seed);
        const Grads quant_after = run(Path::kFusedThenQuant, x, w, bias, c.conv, c.pool, seed);
        CHECK(quant.grid_range.min == std::max(plain.range.min, 0.f));
        CHECK(quant.grid_range.max == std::max(plain.range.max, 0.f));
        CHECK(quant.y.to_vector() == quant_after.y.to_vector());
        CHECK(quant.dw.to_vector() == quant_after.dw.to_vector());
        CHECK(quant.dx.to_vector() == quant_after.dx.to_vector());
        if (c.bias) CHECK(quant.db.to_vector() == quant_after.db.to_vector());
        const float top = grid_of(quant.grid_range).real_hi;
        for (int64_t i = 0; i < quant.y.numel(); ++i) top_codes += quant.y[i] == top, below_top += quant.y[i] > 0.f && quant.y[i] < top;
      }
    }
  }
  CHECK(clipped > 0);  // random weights: the ReLU clipped some outputs, and not all
  CHECK(kept > 0);
  CHECK(top_codes > 0);  // the grid clamped some outputs, and not all
  CHECK(below_top > 0);
}

// The in-place fake quantization (Kernels::pooled_fake_quant) against relu_fake_quant's formula,
// bit for bit, on values at half-integer codes and one, two and three floats either side of them,
// on scales that are not powers of 2, past the top code, 0, huge values, infinity and NaN; the
// values above real_hi, only those, lose their window index.
TEST_CASE("the fused op's in-place fake quantization equals relu_fake_quant's, at every rounding edge", "[core]") {
  const Kernels& k = kernels();
  const int64_t C = 12, row = (C + k.lanes - 1) / k.lanes * k.lanes;
  for (const float scale : {0.7f / 255.f, 0.1f, 1.f / 3.f, 2.3e-5f, 6.f / 255.f, 1.f}) {
    INFO("scale " << scale);
    std::vector<float> y;
    for (int code = 0; code <= 300; ++code)
      for (const float base : {static_cast<float>(code) * scale, (static_cast<float>(code) + 0.5f) * scale}) {
        float up = base, down = base;
        y.push_back(base);
        for (int step = 0; step < 3; ++step) y.push_back(up = std::nextafter(up, 1e30f)), y.push_back(down = std::nextafter(down, -1e30f));
      }
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    for (const float v : {0.f, 1e30f, 3e38f, inf, nan}) y.push_back(v);
    for (float& v : y) v = v > 0.f ? v : 0.f;  // the op's values are relu'd; NaN stays
    while (y.size() % C) y.push_back(0.f);
    const int64_t pixels = static_cast<int64_t>(y.size()) / C;
    const float hi = 255.f, real_hi = 255.f * scale;
    // With values above real_hi (the op's range says so: `largest`), and with none.
    for (const bool above : {true, false}) {
      INFO("values above real_hi " << above);
      std::vector<float> values = y;
      if (!above)
        for (float& v : values) v = v > real_hi ? real_hi : v;  // NaN stays: the op's relu'd values are never NaN
      std::vector<uint8_t> which(pixels * row, 1);
      std::vector<float> got = values;
      k.pooled_fake_quant(pixels, C, scale, hi, real_hi, above ? std::numeric_limits<float>::infinity() : real_hi, got.data(),
                          which.data());
      int64_t marked = 0;
      for (size_t i = 0; i < values.size(); ++i) {
        INFO("value " << values[i]);
        const float q = std::nearbyint(values[i] / scale), want = (q > hi ? hi : q) * scale;
        REQUIRE(std::memcmp(&got[i], &want, sizeof(float)) == 0);
        const uint8_t w = which[i / C * row + i % C];
        REQUIRE(w == (values[i] > real_hi ? kClipped : 1));
        marked += w == kClipped;
      }
      CHECK((marked > 0) == above);
    }
  }
}

TEST_CASE("conv2d_max_pool2d sends a tied window's gradient to its first maximum", "[core][grad]") {
  // A constant image makes the four conv outputs of every interior window equal.
  Rng rng(22);
  const Tensor x = Tensor::full({2, 8, 8, 1}, 0.5f), w = random_tensor({3, 3, 1, 12}, rng), b = random_tensor({12}, rng);
  const Tensor seed = random_tensor({2, 3, 3, 12}, rng);
  const Grads fused = run(Path::kFused, x, w, &b, {}, {}, seed);
  const Grads plain = run(Path::kPlain, x, w, &b, {}, {}, seed);
  require_close(fused.dx, plain.dx, "input gradient");
  require_close(fused.dw, plain.dw, "kernel gradient");
  // The first maximum is the window's top-left output: the image's last row and column,
  // which only the other three outputs read, get no gradient.
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t i = 0; i < 8; ++i) {
      CHECK(fused.dx[(n * 8 + 7) * 8 + i] == 0.f);
      CHECK(fused.dx[(n * 8 + i) * 8 + 7] == 0.f);
    }
}

TEST_CASE("conv2d_max_pool2d's gradients match finite differences", "[core][grad]") {
  Rng rng(23);
  for (const PooledActivation a : {PooledActivation::kNone, PooledActivation::kReLU}) {
    INFO("relu " << (a.kind == PooledActivation::kReLU));
    check_gradients([a](auto& v) { return conv2d_max_pool2d(v[0], v[1], v[2], {}, {}, nullptr, a); },
                    {distinct_tensor({2, 6, 7, 1}, rng, 0.03f), random_tensor({3, 3, 1, 3}, rng), random_tensor({3}, rng)}, 1e-3,
                    1e-2);
  }
}

TEST_CASE("conv2d_max_pool2d refuses what conv2d and max_pool2d refuse", "[core]") {
  Variable x(Tensor::zeros({1, 5, 5, 2})), w(Tensor::zeros({3, 3, 1, 4})), b(Tensor::zeros({4}));
  CHECK_THROWS_WITH(conv2d_max_pool2d(x, w, b, {}, {}), Catch::Contains("conv2d") && Catch::Contains("[1, 5, 5, 2]"));
  Variable x1(Tensor::zeros({1, 3, 3, 1}));
  CHECK_THROWS_WITH(conv2d_max_pool2d(x1, w, b, {}, {}), Catch::Contains("max_pool2d") && Catch::Contains("does not fit"));
  CHECK_THROWS_WITH(conv2d_max_pool2d(x1, w, b, {}, {0, 2, 0, 0, Padding::kValid}), Catch::Contains("max_pool2d"));
}
