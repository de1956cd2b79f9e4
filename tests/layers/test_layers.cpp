#include <cmath>
#include <cstdio>
#include <fstream>

#include <catch2/catch.hpp>

#include "core/file_io.h"
#include "layers/sequential.h"
#include "tests/grad_check.h"

using namespace qnet;
using namespace qnet::testing;

namespace {
std::string temp_path(const char* name) { return std::string("/tmp/qnet_test_") + name; }
}

TEST_CASE("the reference model has the article's shapes and 20,410 parameters", "[layers]") {
  Rng rng(1);
  Sequential m = mnist_reference_model(rng);
  CHECK(m.output_shape({28, 28, 1}) == Shape{10});
  CHECK(m.parameter_count() == 12 * 9 + 12 + 2028 * 10 + 10);
  const std::string s = m.summary();
  CHECK_THAT(s, Catch::Contains("conv2d (Conv2D)") && Catch::Contains("(None, 26, 26, 12)") &&
                    Catch::Contains("(None, 13, 13, 12)") && Catch::Contains("(None, 2028)") &&
                    Catch::Contains("Total params: 20,410"));
}

TEST_CASE("Glorot-uniform kernels stay within their limit and biases start at zero", "[layers]") {
  Rng rng(2);
  Dense d({.in_features = 2028, .units = 10}, rng);
  const float limit = std::sqrt(6.f / (2028 + 10));
  float lo = 1, hi = -1;
  for (float v : d.kernel().value().to_vector()) lo = std::min(lo, v), hi = std::max(hi, v);
  CHECK(lo >= -limit);
  CHECK(hi <= limit);
  CHECK(hi > 0.9f * limit);  // the whole range is used
  for (float v : d.bias().value().to_vector()) CHECK(v == 0.f);
}

TEST_CASE("layers chain only with matching shapes", "[layers]") {
  Rng rng(3);
  Sequential m({28, 28, 1});
  m.add(std::make_unique<Flatten>());
  CHECK_THROWS_WITH(m.add(std::make_unique<Dense>(DenseOptions{.in_features = 100, .units = 10}, rng)),
                    Catch::Contains("expected [100]"));
}

TEST_CASE("a whole model's gradient matches finite differences", "[layers][grad]") {
  Rng rng(4);
  Sequential m({6, 6, 1});
  m.add(std::make_unique<Conv2D>(Conv2DOptions{.in_channels = 1, .filters = 3, .kernel_h = 3, .kernel_w = 3, .conv = {}}, rng));
  m.add(std::make_unique<ReLU>());
  m.add(std::make_unique<MaxPool2D>());
  m.add(std::make_unique<Flatten>());
  m.add(std::make_unique<Dense>(DenseOptions{.in_features = 12, .units = 4}, rng));
  auto* conv = dynamic_cast<Conv2D*>(&m.layer(0));
  auto* dense = dynamic_cast<Dense*>(&m.layer(4));
  const std::vector<int32_t> labels{1, 3};
  const Tensor x = random_tensor({2, 6, 6, 1}, rng, 0.f, 1.f);
  check_gradients(
      [&](const std::vector<Variable>& v) {
        conv->kernel() = v[0], conv->bias() = v[1], dense->kernel() = v[2], dense->bias() = v[3];
        return softmax_cross_entropy(m.forward(Variable(x)), labels);
      },
      {conv->kernel().value(), conv->bias().value(), dense->kernel().value(), random_tensor({4}, rng)}, 1e-3, 1e-2);
}

TEST_CASE("the fused conv -> ReLU -> max-pool forward equals the layer-by-layer one", "[layers][grad]") {
  Rng rng(6);
  Sequential fused = mnist_reference_model(rng);
  Sequential plain = from_qbin(to_qbin(fused));
  plain.set_fusion(false);
  const Tensor x = random_tensor({5, 28, 28, 1}, rng, 0.f, 1.f);
  const std::vector<int32_t> labels{0, 3, 9, 4, 7};
  Variable loss_fused = softmax_cross_entropy(fused.forward(Variable(x)), labels);
  Variable loss_plain = softmax_cross_entropy(plain.forward(Variable(x)), labels);
  CHECK(loss_fused.value()[0] == loss_plain.value()[0]);  // same values, bit for bit
  loss_fused.backward(), loss_plain.backward();
  const auto pf = fused.parameters(), pp = plain.parameters();
  for (size_t i = 0; i < pf.size(); ++i) {
    INFO("parameter " << i);
    const Tensor gf = pf[i]->grad(), gp = pp[i]->grad();
    for (int64_t k = 0; k < gf.numel(); ++k) REQUIRE(gf[k] == Approx(gp[k]).epsilon(1e-5).margin(1e-6));
  }
}

TEST_CASE("a float model file round-trips exactly", "[layers]") {
  Rng rng(5);
  Sequential m = mnist_reference_model(rng);
  for (Variable* p : m.parameters())
    for (int64_t i = 0; i < p->value().numel(); ++i) p->value()[i] = rng.uniform(-1, 1);
  const std::string path = temp_path("roundtrip.qbin");
  save_model(m, path);
  Sequential back = load_model(path);
  REQUIRE(back.size() == m.size());
  const auto a = m.parameters(), b = back.parameters();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i]->value().to_vector() == b[i]->value().to_vector());
  Variable x(random_tensor({3, 28, 28, 1}, rng, 0.f, 1.f));
  CHECK(m.forward(x).value().to_vector() == back.forward(x).value().to_vector());
  std::remove(path.c_str());
}

TEST_CASE("a damaged model file is refused with a reason", "[layers]") {
  Rng rng(6);
  const std::string path = temp_path("damaged.qbin");
  const std::vector<uint8_t> good = qbin::serialize(to_qbin(mnist_reference_model(rng)));
  auto load_bytes = [&](std::vector<uint8_t> bytes) {
    write_file_atomic(path, bytes);
    return load_model(path);
  };
  auto flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  CHECK_THROWS_WITH(load_bytes(flipped), Catch::Contains("CRC-32 mismatch"));
  CHECK_THROWS_WITH(load_bytes(std::vector<uint8_t>(good.begin(), good.begin() + 100)), Catch::Contains("payload bytes"));
  CHECK_THROWS_WITH(load_bytes(std::vector<uint8_t>(good.begin(), good.begin() + 7)), Catch::Contains("shorter than"));
  auto magic = good;
  magic[0] = 'X';
  CHECK_THROWS_WITH(load_bytes(magic), Catch::Contains("not a qbin model"));
  auto version = good;
  version[4] = 9;
  CHECK_THROWS_WITH(load_bytes(version), Catch::Contains("format version 9"));
  CHECK_THROWS_WITH(load_model("/nonexistent/model.qbin"), Catch::Contains("cannot open"));
  std::remove(path.c_str());
}
