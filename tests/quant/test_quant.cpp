#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <catch2/catch.hpp>

#include "core/kernels.h"
#include "data/mnist.h"
#include "optim/trainer.h"
#include "quant/fake_quant.h"
#include "quant/qat.h"
#include "tests/grad_check.h"

using namespace qnet;
using namespace qnet::testing;

TEST_CASE("fake-quant forward matches hand-computed values, ties to even", "[quant]") {
  // scale 0.5, zero point 0, uint8: x / s = 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4 (half to even).
  const QParams p{.scale = 0.5f, .zero_point = 0, .qmin = 0, .qmax = 255};
  Variable x(Tensor::from({6}, {0.25f, 0.75f, 1.25f, 1.75f, -3.f, 200.f}));
  CHECK(fake_quant(x, {p}).value().to_vector() == std::vector<float>{0.f, 1.f, 1.f, 2.f, 0.f, 127.5f});
  // Asymmetric: scale 0.1, zero point 10 -> real range [-1.0, 24.5].
  const QParams a{.scale = 0.1f, .zero_point = 10, .qmin = 0, .qmax = 255};
  Variable y(Tensor::from({4}, {-2.f, -0.04f, 0.26f, 30.f}));
  const auto v = fake_quant(y, {a}).value().to_vector();
  CHECK(v[0] == Approx(-1.0f));
  CHECK(v[1] == 0.f);
  CHECK(v[2] == Approx(0.3f));
  CHECK(v[3] == Approx(24.5f));
}

TEST_CASE("fake-quant outputs lie on the grid", "[quant]") {
  Rng rng(11);
  const QParams p = choose_activation_qparams(-1.3f, 4.1f, 8);
  const Tensor y = fake_quant(Variable(random_tensor({1000}, rng, -3.f, 6.f)), {p}).value();
  for (int64_t i = 0; i < y.numel(); ++i) {
    const float q = y[i] / p.scale + p.zero_point;
    REQUIRE(std::fabs(q - std::round(q)) < 1e-3f);
    REQUIRE(std::round(q) >= p.qmin);
    REQUIRE(std::round(q) <= p.qmax);
  }
}

TEST_CASE("nudging makes real zero exact", "[quant]") {
  for (auto [lo, hi] : {std::pair{-1.3f, 4.1f}, {0.2f, 5.f}, {-7.f, -0.5f}, {-0.001f, 100.f}}) {
    for (int bits : {2, 4, 8}) {
      const QParams p = choose_activation_qparams(lo, hi, bits);
      INFO("range [" << lo << ", " << hi << "], " << bits << " bits");
      CHECK(p.real_min() <= 0.f);
      CHECK(p.real_max() >= 0.f);
      CHECK(dequantize(quantize(0.f, p), p) == 0.f);
      CHECK(p.qmax == (1 << bits) - 1);
    }
  }
  const QParams relu_range = choose_activation_qparams(0.f, 6.f, 8);
  CHECK(relu_range.zero_point == 0);
  CHECK(relu_range.scale == Approx(6.f / 255.f));
}

TEST_CASE("per-channel weight scales are max|w| / qmax per output channel", "[quant]") {
  // Kernel [2, 3]: channels (last axis) have max |w| 4, 0.5, 0.
  const Tensor k = Tensor::from({2, 3}, {-4.f, 0.5f, 0.f, 1.f, -0.25f, 0.f});
  const auto p8 = choose_weight_qparams(k, 8);
  CHECK(p8[0].scale == Approx(4.f / 127.f));
  CHECK(p8[1].scale == Approx(0.5f / 127.f));
  CHECK(p8[2].scale == 1.f);  // an all-zero channel still has a usable scale
  CHECK(p8[0].qmin == -127);
  CHECK(p8[0].zero_point == 0);
  // 4 bits, exact ties: channel 0 max 7 -> scale 1; channel 1 max 3.5 -> scale 0.5.
  const Tensor k4 = Tensor::from({3, 2}, {7.f, -3.5f, 2.5f, 1.25f, -1.5f, 0.75f});
  const auto p4 = choose_weight_qparams(k4, 4);
  CHECK(p4[0].qmax == 7);
  CHECK(p4[0].scale == 1.f);
  CHECK(p4[1].scale == 0.5f);
  // 2.5 -> 2, 1.25/0.5 = 2.5 -> 2, -1.5 -> -2, 0.75/0.5 = 1.5 -> 2 (half to even); extremes exact.
  CHECK(fake_quant(Variable(k4), p4).value().to_vector() == std::vector<float>{7.f, -3.5f, 2.f, 1.f, -2.f, 1.f});
}

// Per-channel fake quantization runs rows of few channels (a classifier's 10) as runs of whole
// vectors (core/kernels/elementwise.cpp): against a plain loop, bit for bit, on channel counts
// that make runs of several rows, whole vectors, or no runs, with leftover rows.
TEST_CASE("per-channel fake quantization and its gradient equal a plain loop on any channel count", "[quant]") {
  Rng rng(43);
  for (const int64_t C : {2, 3, 10, 12, 16, 33}) {
    INFO("channels " << C);
    const int64_t rows = 57, n = rows * C;
    Tensor x = random_tensor({rows, C}, rng, -3.f, 3.f);
    const Tensor gy = random_tensor({rows, C}, rng, -1.f, 1.f);
    std::vector<float> scale(C), lo(C), hi(C), real_lo(C), real_hi(C);
    for (int64_t c = 0; c < C; ++c) {
      scale[c] = 0.01f + 0.003f * static_cast<float>(c);
      lo[c] = -127.f + static_cast<float>(c % 5), hi[c] = 127.f - static_cast<float>(c % 7);
      real_lo[c] = -1.f - 0.1f * static_cast<float>(c % 4), real_hi[c] = 1.f + 0.05f * static_cast<float>(c % 3);
      x[5 * C + c] = real_lo[c], x[6 * C + c] = real_hi[c];  // the range's ends pass the gradient
    }
    std::vector<float> y(n), gx(n);
    kernels().fake_quant_forward(n, C, x.data(), scale.data(), lo.data(), hi.data(), y.data());
    kernels().fake_quant_backward(n, C, x.data(), real_lo.data(), real_hi.data(), gy.data(), gx.data());
    int64_t clamped = 0, passed = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t c = i % C;
      const float q = std::nearbyint(x[i] / scale[c]);
      clamped += q < lo[c] || q > hi[c];
      REQUIRE(y[i] == std::clamp(q, lo[c], hi[c]) * scale[c]);
      const bool inside = x[i] >= real_lo[c] && x[i] <= real_hi[c];
      passed += inside;
      REQUIRE(gx[i] == (inside ? gy[i] : 0.f));
    }
    CHECK(clamped > 0);  // both branches of each side are taken
    CHECK(passed > 0);
    CHECK(passed < n);
  }
}

// The weight scales' per-channel max |w| runs the same way: against std::max over a plain loop, on
// channel counts with runs, whole vectors, no runs (33 x 16 lanes > 256) and more than 256 channels,
// with the maximum in a leftover row, -0, and a NaN (passed over, as std::max passes it).
TEST_CASE("per-channel max |w| equals a plain loop on any channel count", "[quant]") {
  Rng rng(44);
  for (const int64_t C : {1, 2, 3, 10, 12, 16, 33, 300}) {
    INFO("channels " << C);
    for (const int64_t rows : {1, 7, 57}) {
      INFO("rows " << rows);
      Tensor x = random_tensor({rows, C}, rng, -3.f, 3.f);
      x[(rows - 1) * C] = -9.f;  // the largest, in the last row
      if (C > 1) x[C - 1] = -0.f;
      if (C > 2 && rows > 1) x[C + 2] = std::numeric_limits<float>::quiet_NaN();
      std::vector<float> expected(C, 0.f), amax(C, -1.f);
      for (int64_t i = 0; i < rows * C; ++i) expected[i % C] = std::max(expected[i % C], std::fabs(x[i]));
      kernels().channel_abs_max(rows * C, C, x.data(), amax.data());
      CHECK(amax == expected);
      CHECK(amax[0] == 9.f);
    }
  }
  const Tensor zeros = Tensor::from({2, 3}, {0.f, -0.f, 0.f, -0.f, 0.f, 0.f});
  std::vector<float> amax(3, -1.f);
  kernels().channel_abs_max(6, 3, zeros.data(), amax.data());
  CHECK(amax == std::vector<float>(3, 0.f));
  CHECK_FALSE(std::signbit(amax[1]));
}

// QAT's weights (QatWeights) go through fake_quant_weights, whose backward hands the gradient on
// when eq. 8 keeps all of it: the same values and gradients as fake_quant with the chosen scales,
// also where a channel's max |w| rounds above qmax * scale (0x1.cb924p-2 at 4 bits: that weight gets
// no gradient), with a NaN weight, and with an all-zero channel.
TEST_CASE("fake_quant_weights equals fake_quant with choose_weight_qparams, values and gradients", "[quant][grad]") {
  Rng rng(45);
  for (const int bits : {8, 4}) {
    for (const int edge : {0, 1, 2, 3}) {  // none, a max |w| that rounds above, a NaN, a zero channel
      INFO("bits " << bits << " case " << edge);
      Tensor k = random_tensor({3, 3, 2, 10}, rng, -0.4f, 0.4f);
      if (edge == 1) k[7 * 10 + 3] = -0x1.cb924p-2f;
      if (edge == 2) k[5 * 10 + 6] = std::numeric_limits<float>::quiet_NaN();
      if (edge == 3)
        for (int64_t r = 0; r < 18; ++r) k[r * 10 + 9] = 0.f;
      const Tensor seed = random_tensor({3, 3, 2, 10}, rng, -1.f, 1.f);
      Variable a(k.clone(), true), b(k.clone(), true);
      Variable ya = fake_quant_weights(a, bits), yb = fake_quant(b, choose_weight_qparams(k, bits));
      ya.backward(seed.clone()), yb.backward(seed.clone());
      const std::vector<float> va = ya.value().to_vector(), vb = yb.value().to_vector();
      const std::vector<float> ga = a.grad().to_vector(), gb = b.grad().to_vector();
      for (size_t i = 0; i < va.size(); ++i) {
        INFO("element " << i);
        REQUIRE(std::memcmp(&va[i], &vb[i], sizeof(float)) == 0);  // NaN too
        REQUIRE(ga[i] == gb[i]);
      }
      if (edge == 1 && bits == 4) CHECK(ga[7 * 10 + 3] == 0.f);  // the one weight eq. 8 cuts
      if (edge == 2) CHECK(ga[5 * 10 + 6] == 0.f);
    }
  }
}

TEST_CASE("the straight-through estimator passes gradients inside the range only", "[quant][grad]") {
  const QParams p{.scale = 0.5f, .zero_point = 2, .qmin = 0, .qmax = 7};  // real range [-1, 2.5]
  Variable x(Tensor::from({5}, {-1.5f, -1.f, 0.3f, 2.5f, 2.6f}), true);
  fake_quant(x, {p}).backward(Tensor::from({5}, {1.f, 2.f, 3.f, 4.f, 5.f}));
  CHECK(x.grad().to_vector() == std::vector<float>{0.f, 2.f, 3.f, 4.f, 0.f});

  const QParams r = choose_activation_qparams(0.f, 2.f, 8);
  Variable z(Tensor::from({4}, {-0.5f, 0.f, 1.f, 2.5f}), true);
  relu_fake_quant(z, r).backward(Tensor::full({4}, 1.f));
  CHECK(z.grad().to_vector() == std::vector<float>{0.f, 0.f, 1.f, 0.f});
}

TEST_CASE("relu_fake_quant equals fake_quant of relu", "[quant]") {
  Rng rng(12);
  const Tensor x = random_tensor({4096}, rng, -2.f, 5.f);
  const QParams p = choose_activation_qparams(0.f, 4.f, 8);
  CHECK(relu_fake_quant(Variable(x), p).value().to_vector() == fake_quant(relu(Variable(x)), {p}).value().to_vector());
  const auto [lo, hi] = relu_min_max(x);
  CHECK(lo == 0.f);
  CHECK(hi == Approx(5.f).margin(0.01));
}

TEST_CASE("the moving-average observer follows eq. 9", "[quant]") {
  MovingAverageObserver first({.averaging_constant = 0.01f});
  first.observe(Tensor::from({2}, {0.f, 10.f}));  // the first batch initialises
  CHECK(first.max() == 10.f);
  first.observe(Tensor::from({2}, {0.f, 20.f}));
  CHECK(first.max() == Approx(10.1f));
  first.freeze();
  first.observe(Tensor::from({2}, {-5.f, 100.f}));
  CHECK(first.max() == Approx(10.1f));
  CHECK(first.min() == 0.f);

  MovingAverageObserver tfmot({.averaging_constant = 0.001f, .init_from_first_batch = false});
  CHECK(tfmot.max() == 6.f);
  tfmot.observe(Tensor::from({2}, {0.f, 16.f}));
  CHECK(tfmot.max() == Approx(6.01f));
  CHECK(tfmot.min() == Approx(-5.994f));
}

TEST_CASE("a QAT conv's gradients are the float conv's at the fake-quantized kernel", "[quant][grad]") {
  Rng rng(13);
  Sequential m({6, 6, 1});
  m.add(std::make_unique<Conv2D>(Conv2DOptions{.in_channels = 1, .filters = 3, .kernel_h = 3, .kernel_w = 3, .conv = {}}, rng));
  m.add(std::make_unique<ReLU>());
  prepare_qat(m, {.bits = 4, .observer = {}});
  auto& qconv = dynamic_cast<QatWeights&>(m.layer(0));
  auto& conv = dynamic_cast<Conv2D&>(qconv.inner());
  const Tensor x = random_tensor({2, 6, 6, 1}, rng);
  const Tensor seed = random_tensor({2, 4, 4, 3}, rng);
  Variable xv(x, true);
  qconv.forward(xv).backward(seed);

  const Tensor wq = fake_quant(Variable(conv.kernel().value()), choose_weight_qparams(conv.kernel().value(), 4)).value();
  Variable x2(x, true), w2(wq, true), b2(conv.bias().value(), true);
  conv2d(x2, w2, b2, {}).backward(seed);
  CHECK(conv.kernel().grad().to_vector() == w2.grad().to_vector());  // STE: identity through the weight quantizer
  CHECK(conv.bias().grad().to_vector() == b2.grad().to_vector());
  CHECK(xv.grad().to_vector() == x2.grad().to_vector());
  // ... and those float gradients match finite differences (away from any quantization step:
  // the quantized kernel is held fixed).
  check_gradients([](auto& v) { return conv2d(v[0], v[1], v[2], {}); }, {x, wq, conv.bias().value()});
}

TEST_CASE("a fused QAT conv -> ReLU -> max-pool observes and computes what the layers do", "[quant]") {
  // The observer must see the whole unpooled ReLU output's range, not the pooled one's.
  Rng rng(16);
  Sequential fused = mnist_reference_model(rng);
  Sequential plain = from_qbin(to_qbin(fused));
  plain.set_fusion(false);
  // Positive kernels and inputs: every conv output is positive, so the smallest one (which
  // only the unpooled output holds) sets the observed minimum.
  for (Sequential* m : {&fused, &plain}) {
    Tensor& k = m->parameters()[0]->value();
    for (int64_t i = 0; i < k.numel(); ++i) k[i] = std::abs(k[i]);
    prepare_qat(*m, {.bits = 8, .observer = {}});
  }
  const Tensor x = random_tensor({6, 28, 28, 1}, rng, 0.1f, 1.f);
  for (int step = 0; step < 3; ++step) {
    const Tensor yf = fused.forward(Variable(x)).value(), yp = plain.forward(Variable(x)).value();
    CHECK(yf.to_vector() == yp.to_vector());
    const auto& of = dynamic_cast<QatReLU&>(fused.layer(1)).observer();
    const auto& op = dynamic_cast<QatReLU&>(plain.layer(1)).observer();
    CHECK(of.min() == op.min());
    CHECK(of.max() == op.max());
    CHECK(of.min() > 0.f);
  }
}

TEST_CASE("prepare_qat keeps the parameters and refuses graphs int8 cannot run", "[quant]") {
  Rng rng(14);
  Sequential m = mnist_reference_model(rng);
  const std::vector<float> before = m.parameters()[0]->value().to_vector();
  prepare_qat(m, {.bits = 8, .observer = {}});
  CHECK(m.layer(0).type_name() == "QatConv2D");
  CHECK(m.layer(1).type_name() == "QatReLU");
  CHECK(m.layer(4).type_name() == "QatDense");
  CHECK(m.layer(0).name() == "conv2d");
  CHECK(m.parameters()[0]->value().to_vector() == before);
  CHECK_THROWS_WITH(prepare_qat(m, {}), Catch::Contains("already"));

  Sequential bad({8, 8, 1});
  bad.add(std::make_unique<MaxPool2D>());
  bad.add(std::make_unique<Flatten>());
  CHECK_THROWS_WITH(prepare_qat(bad, {}), Catch::Contains("no Conv2D, DepthwiseConv2D or Dense"));
  CHECK_THROWS_WITH(prepare_qat(m, {.bits = 9, .observer = {}}), Catch::Contains("expected 2..8"));
}

TEST_CASE("prepare_qat quantizes every activation between weighted layers and leaves the logits float", "[quant]") {
  Rng rng(16);
  Sequential m({8, 8, 1});
  m.add(std::make_unique<Conv2D>(Conv2DOptions{.in_channels = 1, .filters = 2, .kernel_h = 3, .kernel_w = 3, .conv = {}}, rng));
  m.add(std::make_unique<MaxPool2D>());
  m.add(std::make_unique<ReLU>());
  m.add(std::make_unique<Flatten>());
  m.add(std::make_unique<Dense>(DenseOptions{.in_features = 18, .units = 6}, rng));
  m.add(std::make_unique<ReLU>());
  m.add(std::make_unique<Dense>(DenseOptions{.in_features = 6, .units = 3}, rng));
  m.add(std::make_unique<ReLU>());
  prepare_qat(m, {.bits = 8, .observer = {}});
  std::vector<std::string> types;
  for (size_t i = 0; i < m.size(); ++i) types.push_back(m.layer(i).type_name());
  CHECK(types == std::vector<std::string>{"QatConv2D", "QatQuantize", "MaxPool2D", "ReLU", "Flatten", "QatDense", "QatReLU", "QatDense", "ReLU"});
  CHECK(m.layer(1).name() == "quantize");

  // The inserted QatQuantize observes signed values and comes back from a file with its range.
  Variable x(random_tensor({4, 8, 8, 1}, rng, 0.f, 1.f), false);
  m.parameters()[1]->value().fill(-0.5f);  // the conv's bias: negative outputs
  m.forward(x);
  auto& q = dynamic_cast<QatQuantize&>(m.layer(1));
  CHECK(q.observer().min() < 0.f);
  CHECK(q.observer().qparams(8).zero_point > 0);
  const std::string path = "/tmp/qnet_test_qat_quantize.qbin";
  save_model(m, path);
  Sequential back = load_any_model(path);
  CHECK(back.size() == m.size());
  CHECK(dynamic_cast<QatQuantize&>(back.layer(1)).observer().min() == q.observer().min());
  back.set_training(false), m.set_training(false);
  CHECK(m.forward(x).value().to_vector() == back.forward(x).value().to_vector());
  std::remove(path.c_str());
}

TEST_CASE("one predicate decides the conv -> activation -> max-pool fusion, float and QAT", "[quant][layers]") {
  Rng rng(17);
  Sequential m({8, 8, 1});
  m.add(std::make_unique<Conv2D>(Conv2DOptions{.in_channels = 1, .filters = 2, .kernel_h = 3, .kernel_w = 3, .conv = {}}, rng));
  m.add(std::make_unique<ReLU>());
  m.add(std::make_unique<MaxPool2D>());
  m.add(std::make_unique<Conv2D>(Conv2DOptions{.in_channels = 2, .filters = 2, .kernel_h = 1, .kernel_w = 1, .conv = {}}, rng));
  m.add(std::make_unique<MaxPool2D>());
  m.add(std::make_unique<Flatten>());
  m.add(std::make_unique<Dense>(DenseOptions{.in_features = 2 * 1 * 1, .units = 3}, rng));
  CHECK(fuses_with_max_pool(m.layer(0), m.layer(1), m.layer(2)));        // Conv2D, ReLU, MaxPool2D
  CHECK_FALSE(fuses_with_max_pool(m.layer(3), m.layer(4), m.layer(5)));  // no activation between
  CHECK_FALSE(fuses_with_max_pool(m.layer(1), m.layer(1), m.layer(2)));  // a ReLU cannot forward pooled
  prepare_qat(m, {.bits = 8, .observer = {}});  // conv2d_1 gets a QatQuantize before its pool
  REQUIRE(m.layer(4).type_name() == "QatQuantize");
  CHECK(fuses_with_max_pool(m.layer(0), m.layer(1), m.layer(2)));  // QatWeights(conv), QatReLU, pool
  CHECK(fuses_with_max_pool(m.layer(3), m.layer(4), m.layer(5)));  // QatWeights(conv), QatQuantize, pool
  CHECK_FALSE(fuses_with_max_pool(m.layer(7), m.layer(1), m.layer(2)));  // QatWeights around a Dense
  // And the fused forward is the layer-by-layer one: the same observed ranges, the same logits.
  Variable x(random_tensor({4, 8, 8, 1}, rng, 0.f, 1.f), false), x2(random_tensor({4, 8, 8, 1}, rng, 0.f, 1.f), false);
  m.forward(x);  // the observers start from this batch
  Sequential unfused_copy = load_any_model([&] {
    const std::string path = "/tmp/qnet_test_fusion.qbin";
    save_model(m, path);
    return path;
  }());
  unfused_copy.set_fusion(false);
  m.forward(x2), unfused_copy.forward(x2);  // training mode: both observers take this batch
  CHECK(dynamic_cast<QatQuantize&>(m.layer(4)).observer().min() == dynamic_cast<QatQuantize&>(unfused_copy.layer(4)).observer().min());
  CHECK(dynamic_cast<QatReLU&>(m.layer(1)).observer().max() == dynamic_cast<QatReLU&>(unfused_copy.layer(1)).observer().max());
  freeze_observers(m);
  Sequential plain = load_any_model([&] {
    const std::string path = "/tmp/qnet_test_fusion.qbin";
    save_model(m, path);
    return path;
  }());
  std::remove("/tmp/qnet_test_fusion.qbin");
  plain.set_fusion(false);
  m.set_training(false), plain.set_training(false);
  CHECK(m.forward(x).value().to_vector() == plain.forward(x).value().to_vector());
}

TEST_CASE("a QAT model file keeps its bit width and activation ranges", "[quant]") {
  Rng rng(15);
  Sequential m = mnist_reference_model(rng);
  prepare_qat(m, {.bits = 5, .observer = {}});
  auto& act = dynamic_cast<QatReLU&>(m.layer(1));
  act.observer().set_range(0.f, 3.25f);
  const std::string path = "/tmp/qnet_test_qat.qbin";
  save_model(m, path);
  Sequential back = load_any_model(path);
  CHECK(qat_bits(back) == 5);
  CHECK(dynamic_cast<QatReLU&>(back.layer(1)).observer().max() == 3.25f);
  back.set_training(false), m.set_training(false);
  Variable x(random_tensor({2, 28, 28, 1}, rng, 0.f, 1.f));
  CHECK(m.forward(x).value().to_vector() == back.forward(x).value().to_vector());
  std::remove(path.c_str());
}

TEST_CASE("a reloaded QAT model keeps averaging its ranges with the chosen observer", "[quant]") {
  Rng rng(17);
  Sequential m = mnist_reference_model(rng);
  prepare_qat(m, {.bits = 8, .observer = {}});
  dynamic_cast<QatReLU&>(m.layer(1)).observer().set_range(0.f, 4.f);
  const std::string path = "/tmp/qnet_test_qat_observer.qbin";
  save_model(m, path);
  struct Case { ObserverOptions options; float expected_max; };
  for (const Case& c : {Case{tfmot_observer(), 4.f + 0.001f * 10.f}, Case{pytorch_observer(), 4.f + 0.01f * 10.f}}) {
    Sequential back = load_any_model(path, c.options);
    auto& observer = dynamic_cast<QatReLU&>(back.layer(1)).observer();
    CHECK(observer.max() == 4.f);  // the saved range, not the options' [0, 6] start
    observer.observe_range(0.f, 14.f);
    CHECK(observer.max() == Approx(c.expected_max));
  }
  std::remove(path.c_str());
}

TEST_CASE("QAT from scratch on 15,000 MNIST images reaches 0.90 in one epoch", "[quant][slow][e2e]") {
  const Mnist mnist = load_mnist(mnist_dir(""));
  for (int bits : {8, 4}) {
    Rng rng(1);
    Sequential model = mnist_reference_model(rng);
    prepare_qat(model, {.bits = bits, .observer = {}});
    Adam adam(model.parameters());
    FitOptions fo;
    fo.epochs = 1;
    fit(model, adam, mnist.train.slice(0, 15000), mnist.train.slice(54000, 1000), fo, rng);
    const Evaluation test = evaluate(model, mnist.test);
    INFO(bits << " bits");
    CHECK(test.accuracy >= 0.90);
    CHECK(dynamic_cast<QatReLU&>(model.layer(1)).observer().max() > 0.5f);
  }
}

TEST_CASE("a QAT ReLU with tfmot's observer starts its range at 0, not -6", "[quant]") {
  // tfmot initialises ranges to [-6, 6]; after a ReLU that would mean a zero point of 127,
  // which relu_fake_quant (and the uint8 runtime) refuse. The ReLU's range starts at [0, 6].
  QatReLU relu(8, {.averaging_constant = 0.001f, .init_from_first_batch = false});
  CHECK(relu.observer().min() == 0.f);
  CHECK(relu.observer().max() == 6.f);
  Variable x(Tensor::from({4}, {-1.f, 0.5f, 2.f, 9.f}), true);
  const Variable y = relu.forward(x);
  CHECK(relu.observer().qparams(8).zero_point == 0);
  CHECK(relu.observer().max() == Approx(6.003f));  // 6 + 0.001 (9 - 6)
  CHECK(y.value()[0] == 0.f);
}
