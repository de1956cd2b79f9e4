// End-to-end training on real MNIST (scripts/test fetches it; QNET_DATA_DIR points elsewhere).
#include <catch2/catch.hpp>

#include "data/mnist.h"
#include "layers/sequential.h"
#include "optim/trainer.h"

using namespace qnet;

namespace {
const Mnist& mnist() {
  static const Mnist m = load_mnist(mnist_dir(""));
  return m;
}

std::vector<float> train_subset(uint64_t seed, Evaluation* test) {
  Rng rng(seed);
  Sequential model = mnist_reference_model(rng);
  Adam adam(model.parameters());
  FitOptions fo;
  fo.epochs = 1;
  const std::vector<EpochStats> h = fit(model, adam, mnist().train.slice(0, 15000), mnist().train.slice(54000, 1000), fo, rng);
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
