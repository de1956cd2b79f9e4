// Real architectures (issue 20) in QAT, export and both runtimes: BatchNormalization folded into
// the layer before it, depthwise convolutions, average pooling and residual adds, bit-exact with
// the integer reference on every oneDNN path (ctest runs the [onednn] tests under each ISA cap).
#include <cmath>
#include <cstdio>

#include <catch2/catch.hpp>

#include "layers/model_spec.h"
#include "layers/residual.h"
#include "quant/export.h"
#include "quant/runtime/reference.h"
#include "tests/quant/runtime_testing.h"
#include "tests/spec_testing.h"

using namespace qnet;
using namespace qnet::testing;

namespace {

// Every BatchNormalization gets moving statistics and a gamma that are not the initial ones (one
// channel's gamma 0, one negative), so that folding them changes the weights.
void random_statistics(Sequential& m, Rng& rng) {
  for_each_layer(m, [&](Module& l) {
    auto* bn = dynamic_cast<BatchNormalization*>(&l);
    if (!bn) return;
    for (int64_t c = 0; c < bn->options().channels; ++c) {
      bn->moving().mean[c] = rng.uniform(-0.5f, 0.5f);
      bn->moving().var[c] = rng.uniform(0.2f, 2.f);
      bn->gamma().value()[c] = c == 0 ? 0.f : (c == 1 ? -0.7f : rng.uniform(0.5f, 1.5f));
      bn->beta().value()[c] = rng.uniform(-0.3f, 0.3f);
    }
  });
}

// Every new path at once: folded convs and depthwise convs (multiplier 2, strides, "same" padding
// over codes with a zero point), identity and chain shortcuts, an add with and without a ReLU
// after it, a nested block, average pooling with a varying count, global average pooling.
const char* const kEveryPath =
    "conv2d(6, 3, padding=same, use_bias=false) batchnorm relu "
    "residual(depthwiseconv2d(3, padding=same, use_bias=false) batchnorm relu conv2d(6, 1) batchnorm) relu "
    "residual(conv2d(8, 3, stride=2, padding=same) batchnorm, "
    "         shortcut=depthwiseconv2d(3, stride=2, padding=same, depth_multiplier=2) conv2d(8, 1)) "
    "depthwiseconv2d(3, padding=same) batchnorm "
    "averagepooling2d(2, padding=same) "
    "residual(residual(relu) conv2d(8, 1)) relu "
    "globalaveragepooling2d dense(5)";

Sequential every_path_model(Rng& rng) {
  Sequential m = model_from_spec(kEveryPath, {12, 11, 2}, rng);
  random_statistics(m, rng);
  return m;
}

// The logits of the model in evaluation mode for x.
std::vector<float> float_forward_of(Sequential& m, const Tensor& x) {
  NoGradGuard no_grad;
  const bool was = m.training();
  m.set_training(false);
  std::vector<float> y = m.forward(Variable(x, false)).value().to_vector();
  m.set_training(was);
  return y;
}

}  // namespace

TEST_CASE("a BatchNormalization folded into a Conv2D, DepthwiseConv2D or Dense computes what the two layers compute", "[quant]") {
  Rng rng(41);
  for (const char* spec : {"conv2d(5, 3, padding=same) batchnorm flatten dense(2)", "depthwiseconv2d(3, depth_multiplier=2) batchnorm flatten dense(2)",
                           "flatten dense(7, use_bias=false) batchnorm dense(2)"}) {
    INFO(spec);
    Sequential m = model_from_spec(spec, {6, 5, 3}, rng);
    random_statistics(m, rng);
    const Tensor x = random_tensor({4, 6, 5, 3}, rng);
    // The float layers in evaluation mode, up to and including the BatchNormalization.
    const size_t layer = m.layer(0).type_name() == "Flatten" ? 1 : 0;
    NoGradGuard no_grad;
    m.set_training(false);
    Variable in(x);
    for (size_t i = 0; i < layer; ++i) in = m.layer(i).forward(in);
    const Tensor want = m.layer(layer + 1).forward(m.layer(layer).forward(in)).value();
    // The fold, as export and QAT see it: the layer with w * f and beta + (b - mean) f.
    prepare_qat(m, {.bits = 8, .observer = {}});
    const auto& q = dynamic_cast<QatWeights&>(m.layer(layer));
    REQUIRE(q.folded() != nullptr);
    Variable kernel(q.deployed_kernel()), bias(q.deployed_bias());
    const std::string type = q.inner().type_name();
    Variable got;
    if (type == "Conv2D") got = conv2d(in, kernel, bias, dynamic_cast<const Conv2D&>(q.inner()).options().conv);
    else if (type == "DepthwiseConv2D") got = depthwise_conv2d(in, kernel, bias, {});
    else got = bias_add(matmul(in, kernel), bias);
    REQUIRE(got.value().shape() == want.shape());
    for (int64_t i = 0; i < want.numel(); ++i) CHECK(got.value()[i] == Approx(want[i]).margin(1e-5));
  }
}

TEST_CASE("QAT with folded BatchNormalization: frozen statistics make training compute the deployed graph", "[quant]") {
  Rng rng(42);
  Sequential m = model_from_spec("conv2d(4, 3, use_bias=false) batchnorm relu flatten dense(3)", {6, 6, 1}, rng);
  random_statistics(m, rng);  // channel 0 has gamma 0: its folded kernel is 0, nothing divides by it
  prepare_qat(m, {.bits = 8, .observer = {}});
  const Tensor x = random_tensor({8, 6, 6, 1}, rng, 0.f, 1.f);
  m.set_training(true);
  const Tensor batch_mode = m.forward(Variable(x)).value();
  for (int64_t i = 0; i < batch_mode.numel(); ++i) REQUIRE(std::isfinite(batch_mode[i]));
  freeze_observers(m);
  freeze_bn_statistics(m);
  const auto& bn = dynamic_cast<const BatchNormalization&>(dynamic_cast<QatBatchNorm&>(m.layer(1)).inner());
  const std::vector<float> mean = bn.moving().mean.to_vector();
  const std::vector<float> trained = m.forward(Variable(x)).value().to_vector();  // training mode
  CHECK(bn.moving().mean.to_vector() == mean);  // frozen: the batch no longer moves them
  CHECK(trained == float_forward_of(m, x));
  CHECK(trained != batch_mode.to_vector());
}

TEST_CASE("QAT refuses, before training, what no int8 graph holds", "[quant]") {
  Rng rng(43);
  auto refusal = [&](const char* spec) {
    Sequential m = model_from_spec(spec, {8, 8, 1}, rng);
    try {
      prepare_qat(m, {.bits = 8, .observer = {}});
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THAT(refusal("conv2d(4, 3) relu batchnorm flatten dense(3)"),
             Catch::Contains("BatchNormalization 'batch_normalization' follows a ReLU (int8 folds a BatchNormalization into the Conv2D, "
                             "DepthwiseConv2D or Dense right before it: put it there)"));
  CHECK_THAT(refusal("batchnorm conv2d(4, 3) flatten dense(3)"), Catch::Contains("follows nothing"));
  CHECK_THAT(refusal("residual(conv2d(1, 3, padding=same)) flatten"), Catch::Contains("last layer with weights is inside 'residual'"));
  CHECK_THAT(refusal("flatten dense(3) relu batchnorm"), Catch::Contains("works on the float logits of 'dense'"));
  CHECK(refusal("flatten dense(3) batchnorm").empty());  // folded into the logits layer
  CHECK(refusal("conv2d(4, 3) batchnorm relu residual(relu) globalaveragepooling2d dense(3) batchnorm relu").empty());
}

TEST_CASE("a QAT checkpoint of a residual model comes back with its ranges and folded statistics", "[quant]") {
  Rng rng(44);
  Sequential m = with_qat_ranges(every_path_model(rng), 8, rng);
  const std::string path = "/tmp/qnet_test_qat_residual.qbin";
  save_model(m, path);
  Sequential back = load_any_model(path);
  std::remove(path.c_str());
  CHECK(back.summary() == m.summary());
  const Tensor x = random_tensor({3, 12, 11, 2}, rng, 0.f, 1.f);
  CHECK(float_forward_of(back, x) == float_forward_of(m, x));
  CHECK(qbin::serialize(export_int8(back)) == qbin::serialize(export_int8(m)));
}

TEST_CASE("residual blocks, depthwise convs, folded BatchNormalization and average pooling run bit-exactly in int8", "[quant][onednn][architectures]") {
  Rng rng(45);
  for (int bits : {8, 4}) {
    Rng model_rng(46);
    Sequential qat = with_qat_ranges(every_path_model(model_rng), bits, model_rng);
    const qbin::Model file = export_int8(qat);
    for (const auto& r : file.layers) CHECK(r.kind != "BatchNormalization");  // all folded
    const InferenceModel m = inference_model(file);
    const Runtime rt(m, {.max_batch = 64});
    INFO(bits << " bits, oneDNN ISA " << onednn_isa() << ", int8 path " << rt.int8_path());
    CHECK(rt.int8_path() == expected_path(bits));
    for (const char* step : {"add ", "depthwise conv", "avg pool qnet:u8_2x2", "avg pool qnet:u8_3x3", "pad qnet:u8_with_"}) {
      INFO(step);
      CHECK(uses(rt, 64, step));
    }
    const int64_t n = 150;
    const std::vector<uint8_t> px = random_pixels(n * static_cast<int64_t>(m.input_size()), rng);
    const std::vector<float> ref = check_bit_exact(rt, px, n);  // batches of 64 and a remainder
    check_close_to_qat(qat, px, n, ref, 0.02f, 0.f);
  }
}

TEST_CASE("ResNet-8 and the MobileNet of models/ run bit-exactly in int8", "[quant][onednn][architectures]") {
  Rng rng(47);
  for (const char* file : {"resnet8", "mobilenet"}) {
    INFO(file);
    Rng model_rng(48);
    Sequential model = model_from_spec(documented_spec(file), {28, 28, 1}, model_rng);
    random_statistics(model, model_rng);
    const InferenceModel m = inference_model(export_int8(with_qat_ranges(std::move(model), 8, model_rng)));
    const Runtime rt(m);
    const std::vector<uint8_t> px = random_pixels(40 * 784, rng);
    CHECK(mismatches(rt.predict(px.data(), 40), reference_forward(m, px.data(), 40)) == 0);
  }
}

TEST_CASE("the f32 runtime runs real architectures, BatchNormalization folded or standalone, as the float graph does", "[quant][onednn]") {
  Rng rng(49);
  for (const char* spec : {kEveryPath, "conv2d(4, 3) relu batchnorm averagepooling2d(2) flatten dense(8) relu batchnorm dense(3)"}) {
    INFO(spec);
    Rng model_rng(50);
    Sequential model = model_from_spec(spec, {12, 11, 2}, model_rng);
    random_statistics(model, model_rng);
    const Runtime rt(inference_model(to_qbin(model)));
    const int64_t n = 30;
    const std::vector<uint8_t> px = random_pixels(n * 12 * 11 * 2, rng);
    const std::vector<float> expected = float_forward(model, px, n), got = rt.predict(px.data(), n);
    REQUIRE(got.size() == expected.size());
    for (size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == Approx(expected[i]).margin(1e-4));
  }
}

TEST_CASE("PTQ calibrates a residual model with folded BatchNormalization", "[quant][onednn]") {
  Rng rng(51);
  Sequential model = every_path_model(rng);
  const ImageSet calibration(std::make_shared<const std::vector<uint8_t>>(random_pixels(64 * 12 * 11 * 2, rng)),
                             std::make_shared<const std::vector<int32_t>>(64, 0), 12, 11, 2);
  for (auto method : {CalibrationMethod::kMinMax, CalibrationMethod::kPercentile}) {
    Sequential copy = from_qbin(to_qbin(model));
    calibrate_ptq(copy, calibration, {.method = method});
    const InferenceModel m = inference_model(export_int8(copy));
    const std::vector<uint8_t> px = random_pixels(20 * m.input_size(), rng);
    CHECK(mismatches(Runtime(m).predict(px.data(), 20), reference_forward(m, px.data(), 20)) == 0);
  }
}
