// End-to-end training on real MNIST (scripts/test fetches it; QNET_DATA_DIR points elsewhere).
#include <catch2/catch.hpp>

#include "core/parallel.h"
#include "data/mnist.h"
#include "quant/qat.h"
#include "layers/sequential.h"
#include "optim/trainer.h"

using namespace qnet;

namespace {
const Mnist& mnist() {
  static const Mnist m = load_mnist(mnist_dir(""));
  return m;
}

std::vector<float> train_subset(uint64_t seed, Evaluation* test, int64_t images = 15000, bool qat = false) {
  Rng rng(seed);
  Sequential model = mnist_reference_model(rng);
  if (qat) prepare_qat(model, {.bits = 8, .observer = tfmot_observer()});
  Adam adam(model.parameters());
  FitOptions fo;
  fo.epochs = 1;
  const std::vector<EpochStats> h = fit(model, adam, mnist().train.slice(0, images), mnist().train.slice(54000, 1000), fo, rng);
  REQUIRE(h.size() == 1);
  if (test) *test = evaluate(model, mnist().test);
  std::vector<float> weights;
  for (Variable* p : model.parameters())
    for (float v : p->value().to_vector()) weights.push_back(v);
  return weights;
}
}  // namespace

TEST_CASE("one epoch on 15,000 MNIST images reaches 0.90 test accuracy", "[slow][e2e]") {
  Evaluation test;
  train_subset(1, &test);
  CHECK(test.images == 10000);
  CHECK(test.accuracy >= 0.90);
}

TEST_CASE("the same seed and thread count give the same weights", "[slow][e2e]") {
  CHECK(train_subset(7, nullptr) == train_subset(7, nullptr));
  CHECK(train_subset(7, nullptr) != train_subset(8, nullptr));
}

TEST_CASE("a seed gives bit-identical weights on OpenMP teams of 1, 2 and 8, float and QAT", "[slow][e2e][threads-determinism]") {
  const int saved = num_threads();
  for (bool qat : {false, true}) {
    INFO((qat ? "QAT" : "float") << ", 200 steps of 32 images");
    set_num_threads(1);
    const std::vector<float> one = train_subset(11, nullptr, 6400, qat);
    set_num_threads(2);
    CHECK(train_subset(11, nullptr, 6400, qat) == one);
    set_num_threads(8);
    CHECK(train_subset(11, nullptr, 6400, qat) == one);
  }
  set_num_threads(saved);
}
