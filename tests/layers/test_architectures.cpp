// The layers of real architectures (issue 20) as a user writes them: specs with residual blocks,
// depthwise convolutions, batch normalization and average pooling; their summary, names, files,
// and the refusals.
#include <cmath>
#include <cstdio>
#include <set>

#include <catch2/catch.hpp>

#include "core/random.h"
#include "layers/model_spec.h"
#include "layers/residual.h"
#include "quant/qat.h"
#include "quant/runtime/inference_model.h"
#include "tests/grad_check.h"
#include "tests/spec_testing.h"

using namespace qnet;
using namespace qnet::testing;

namespace {

std::vector<float> eval_forward(Sequential& m, const Tensor& x) {
  NoGradGuard no_grad;
  m.set_training(false);
  return m.forward(Variable(x, false)).value().to_vector();
}

}  // namespace

TEST_CASE("models/resnet8.spec builds PyTorch's ResNet-8 of 77,754 parameters", "[layers][spec]") {
  Rng rng(1);
  Sequential m = model_from_spec(documented_spec("resnet8"), {28, 28, 1}, rng);
  CHECK(m.parameter_count() == 77754);
  CHECK(m.non_trainable_count() == 672);  // the moving statistics of 336 channels
  CHECK(m.output_shape({28, 28, 1}) == Shape{10});
  int blocks = 0, identity = 0;
  for (size_t i = 0; i < m.size(); ++i)
    if (auto* r = dynamic_cast<Residual*>(&m.layer(i))) ++blocks, identity += r->shortcut().size() == 0;
  CHECK(blocks == 3);
  CHECK(identity == 1);
  const std::string summary = m.summary();
  CHECK_THAT(summary, Catch::Contains("residual_1 (Residual)"));
  CHECK_THAT(summary, Catch::Contains("  shortcut: identity"));
  CHECK_THAT(summary, Catch::Contains("Trainable params: 77,754"));
  CHECK_THAT(summary, Catch::Contains("Non-trainable params: 672"));
  // Names are unique across the blocks, in Keras' order.
  std::set<std::string> names;
  int layers = 0;
  for_each_layer(m, [&](const Module& l) { names.insert(l.name()), ++layers; });
  CHECK(static_cast<int>(names.size()) == layers);
  CHECK(names.count("conv2d_8") == 1);
  CHECK(names.count("batch_normalization_8") == 1);
}

TEST_CASE("models/mobilenet.spec builds the small MobileNet of 18,826 parameters", "[layers][spec]") {
  Rng rng(1);
  Sequential m = model_from_spec(documented_spec("mobilenet"), {28, 28, 1}, rng);
  CHECK(m.parameter_count() == 18826);
  CHECK(m.output_shape({28, 28, 1}) == Shape{10});
}

TEST_CASE("residual blocks nest, take an identity or a chain as shortcut, and add both branches", "[layers][spec]") {
  Rng rng(2);
  Sequential m = model_from_spec("residual(residual(conv2d(4, 3, padding=same) relu) conv2d(4, 1), shortcut = identity) flatten dense(3)",
                                 {5, 5, 4}, rng);
  auto& outer = dynamic_cast<Residual&>(m.layer(0));
  REQUIRE(outer.body().size() == 2);
  CHECK(dynamic_cast<Residual*>(&outer.body().layer(0)) != nullptr);
  CHECK(outer.shortcut().size() == 0);
  // y = body(x) + x
  const Tensor x = testing::random_tensor({2, 5, 5, 4}, rng);
  NoGradGuard no_grad;
  const Tensor y = outer.forward(Variable(x)).value(), b = outer.body().forward(Variable(x)).value();
  for (int64_t i = 0; i < y.numel(); ++i) CHECK(y[i] == b[i] + x[i]);
}

TEST_CASE("a residual model, BatchNormalization's statistics included, round-trips through its file", "[layers]") {
  Rng rng(3);
  Sequential m = model_from_spec("conv2d(4, 3, use_bias=false) batchnorm relu residual(depthwiseconv2d(3, padding=same) batchnorm relu "
                                 "conv2d(4, 1) batchnorm, shortcut=averagepooling2d(3, stride=1, padding=same)) relu "
                                 "globalaveragepooling2d dense(3)",
                                 {8, 8, 2}, rng);
  const Tensor x = testing::random_tensor({4, 8, 8, 2}, rng);
  m.set_training(true);
  for (int i = 0; i < 3; ++i) m.forward(Variable(x));  // the moving statistics move
  const std::string path = "/tmp/qnet_test_residual_model.qbin";
  save_model(m, path);
  Sequential back = load_model(path);
  std::remove(path.c_str());
  CHECK(back.summary() == m.summary());
  CHECK(eval_forward(back, x) == eval_forward(m, x));
}

TEST_CASE("BatchNormalization uses the batch's statistics in training and the moving ones in evaluation", "[layers]") {
  Rng rng(4);
  BatchNormalization bn({.channels = 3, .momentum = 0.5f, .epsilon = 1e-3f});
  const Tensor x = testing::random_tensor({16, 3}, rng, 2.f, 4.f);
  bn.set_training(true);
  const Tensor y = bn.forward(Variable(x)).value();
  double mean = 0;
  for (int64_t r = 0; r < 16; ++r) mean += y[r * 3];
  CHECK(mean / 16 == Approx(0.0).margin(1e-5));
  CHECK(bn.moving().mean[0] > 0.9f);  // half of a batch mean near 3
  bn.set_training(false);
  const Tensor z = bn.forward(Variable(x)).value();
  for (int64_t i = 0; i < z.numel(); ++i) {
    const int64_t c = i % 3;
    CHECK(z[i] == Approx((x[i] - bn.moving().mean[c]) / std::sqrt(bn.moving().var[c] + 1e-3f)).margin(1e-5));
  }
}

TEST_CASE("specs of the new kinds: mistakes are refused at their token", "[layers][spec]") {
  CHECK_THAT(spec_error("residual(conv2d(8, 3, stride=2, padding=same))", {8, 8, 8}),
             Catch::Contains("('residual'): the body gives [4, 4, 8] and the identity shortcut gives [8, 8, 8] (expected the same shape: "
                             "give a shortcut such as shortcut=conv2d(8, 1, stride=2) batchnorm)"));
  CHECK_THAT(spec_error("residual(conv2d(8, 3, padding=same) conv2x)", {8, 8, 8}), Catch::StartsWith("at character 37 ('conv2x'): unknown layer"));
  CHECK_THAT(spec_error("residual(shortcut=conv2d(8, 1))", {8, 8, 8}), Catch::Contains("residual needs its body"));
  CHECK_THAT(spec_error("residual(relu, shortcut=conv2d(4, 1))", {8, 8, 8}), Catch::Contains("the body gives [8, 8, 8] and the shortcut gives [8, 8, 4]"));
  CHECK_THAT(spec_error("flatten residual(relu)"), Catch::Contains("residual needs an image input"));
  CHECK_THAT(spec_error("conv2d(8, 3, use_bias=no)"), Catch::Contains("('no'): use_bias (expected true or false)"));
  CHECK_THAT(spec_error("conv2d(8, conv2d(3))"), Catch::Contains("kernel takes a value here, not layers"));
  CHECK_THAT(spec_error("batchnorm(momentum=1)"), Catch::Contains("('1'): momentum (expected 0 <= momentum < 1)"));
  CHECK_THAT(spec_error("batchnorm(2)"), Catch::Contains("('2'): batchnorm takes only named arguments (momentum=, epsilon=)"));
  CHECK_THAT(spec_error("depthwiseconv2d(3, depth_multiplier=0)"), Catch::Contains("depth multiplier (expected an integer in 1..64)"));
  CHECK_THAT(spec_error("globalaveragepooling2d globalaveragepooling2d"), Catch::Contains("globalaveragepooling2d needs an image input"));
  CHECK_THAT(spec_error("averagepooling2d(30)"), Catch::Contains("does not fit its input"));
  std::string deep;
  for (int i = 0; i < 40; ++i) deep += "residual(";
  deep += "relu";
  for (int i = 0; i < 40; ++i) deep += ")";
  CHECK_THAT(spec_error(deep), Catch::Contains("nested more than 32 deep"));
}

TEST_CASE("files written before residual blocks and BatchNormalization existed load and write back byte for byte", "[layers][quant]") {
  const std::string dir = QNET_SOURCE_DIR "/tests/fuzz/corpus/qbin/";  // written by qnet in November 2026 (commit 32e541a)
  {
    const qbin::Model file = qbin::load(dir + "tiny_float");
    CHECK(qbin::serialize(to_qbin(from_qbin(file))) == qbin::serialize(file));
  }
  {
    const std::string path = "/tmp/qnet_test_old_qat.qbin";
    Sequential qat = load_any_model(dir + "tiny_qat_checkpoint");
    CHECK(is_qat(qat));
    save_model(qat, path);
    CHECK(qbin::serialize(qbin::load(path)) == qbin::serialize(qbin::load(dir + "tiny_qat_checkpoint")));
    std::remove(path.c_str());
  }
  for (const char* name : {"reference_int8", "tiny_int8_4bit"}) {
    INFO(name);
    CHECK(inference_model(qbin::load(dir + name)).precision == Precision::kInt8);
  }
}

TEST_CASE("a spec of 200,000 layers, as many as 1 MiB of spec holds, builds, saves and loads (issue 22, item 6)", "[layers][spec]") {
  // Building was quadratic in the layers: 32,000 ReLUs took 25 s and 100,000 never started; this
  // test waited on ctest's timeout before. Now each layer's shape check and name cost O(1).
  std::string spec;
  for (int i = 0; i < 200000; ++i) spec += "relu ";
  Rng rng(9);
  Sequential m = model_from_spec(spec + "flatten dense(3)", {4, 4, 1}, rng);
  CHECK(m.size() == 200002);
  CHECK(m.layer(199999).name() == "re_lu_199999");
  const Sequential back = from_qbin(to_qbin(m));
  CHECK(back.size() == m.size());
}

// Module::clone, which fit() uses to give each thread a copy to train its chunks on
// (optim/trainer.cpp): the copy computes the model's outputs, with the same noise and dropout
// masks, and holds its own parameters, statistics and ranges.
TEST_CASE("a model's clone computes the same outputs and trains apart from it, float and QAT", "[layers]") {
  constexpr const char* kSpec =
      "gaussiannoise(0.2) conv2d(4, 3) batchnorm relu dropout(0.3) residual(conv2d(4, 3, padding=same) batchnorm relu "
      "depthwiseconv2d(3, padding=same) batchnorm) zeropadding2d(1) averagepooling2d(2) flatten dense(3)";
  for (bool qat : {false, true}) {
    INFO((qat ? "QAT" : "float"));
    Rng rng(2);
    Sequential model = model_from_spec(kSpec, {8, 8, 1}, rng);
    if (qat) prepare_qat(model, {.bits = 8, .observer = pytorch_observer()});
    std::unique_ptr<Module> copy = model.clone();
    REQUIRE(copy != nullptr);
    auto& chain = dynamic_cast<Sequential&>(*copy);
    CHECK(chain.summary() == model.summary());
    Tensor x({4, 8, 8, 1});
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1.f, 1.f);
    for (int step = 0; step < 2; ++step) {  // training mode: noise, masks, batch statistics, observed ranges
      const Tensor a = model.forward(Variable(x)).value(), b = chain.forward(Variable(x)).value();
      CHECK(a.to_vector() == b.to_vector());
    }
    const std::vector<uint8_t> file = qbin::serialize(to_qbin(model));
    CHECK(qbin::serialize(to_qbin(chain)) == file);  // moving statistics and ranges moved alike
    for (Variable* p : chain.parameters()) p->value().fill(0.25f);
    chain.forward(Variable(x));
    CHECK(qbin::serialize(to_qbin(model)) == file);  // the model's own are untouched
    model.set_training(false), chain.set_training(false);
    CHECK(model.forward(Variable(x)).value().to_vector() != chain.forward(Variable(x)).value().to_vector());
  }
}
