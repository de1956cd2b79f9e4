// Guarded training: a NaN loss or a NaN weight stops fit() with an error naming where, and the
// model saved after the last good epoch stays on disk, loadable.
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "core/random.h"
#include "data/mnist.h"
#include "layers/sequential.h"
#include "optim/trainer.h"

using namespace qnet;

namespace {

// Trains 3 epochs of 20 steps, saving after each; `poison` runs at the start of epoch 2.
std::string guarded_run(const std::function<void(Sequential&)>& poison, const std::string& path) {
  static const Mnist m = load_mnist(mnist_dir(""));
  Rng rng(1);
  Sequential model = mnist_reference_model(rng);
  Adam adam(model.parameters());
  FitOptions fo;
  fo.epochs = 3;
  fo.on_epoch_end = [&](const EpochStats&) { save_model(model, path); };
  fo.on_epoch_begin = [&](int epoch) {
    if (epoch == 2) poison(model);
  };
  try {
    fit(model, adam, m.train.slice(0, 640), m.train.slice(640, 64), fo, rng);
  } catch (const TrainingError& e) {
    return e.what();
  }
  return "no error";
}

bool all_finite(const std::string& path) {
  Sequential saved = load_model(path);
  for (Variable* p : saved.parameters())
    for (int64_t i = 0; i < p->value().numel(); ++i)
      if (!std::isfinite(p->value()[i])) return false;
  return true;
}

}  // namespace

TEST_CASE("a NaN loss stops training at its epoch and step and keeps the last good model", "[optim][guard]") {
  const std::string path = (std::filesystem::temp_directory_path() / fmt::format("qnet-guard-{}.qbin", ::getpid())).string();
  // A NaN in the Dense kernel reaches the logits and the loss at the first step of epoch 2.
  const std::string error = guarded_run([](Sequential& m) { m.parameters()[2]->value()[0] = std::nanf(""); }, path);
  CHECK_THAT(error, Catch::Contains("loss is nan at epoch 2, step 1/20"));
  CHECK(all_finite(path));  // epoch 1's model
  std::filesystem::remove(path);
}

TEST_CASE("a NaN weight that the loss does not show is caught before the model is saved", "[optim][guard]") {
  const std::string path = (std::filesystem::temp_directory_path() / fmt::format("qnet-guard2-{}.qbin", ::getpid())).string();
  // A NaN in the conv kernel: ReLU turns its outputs into 0, so the loss stays finite.
  const std::string error = guarded_run([](Sequential& m) { m.parameters()[0]->value()[0] = std::nanf(""); }, path);
  CHECK_THAT(error, Catch::Contains("at the end of epoch 2"));
  CHECK(all_finite(path));
  std::filesystem::remove(path);
}
