// The quantization debugger (quant/debugger.h): its stages line up with the float and QAT models,
// its figures are the ones computed by hand, and its sensitivity is what a float layer gives.
#include <cmath>
#include <memory>

#include <catch2/catch.hpp>

#include "layers/container.h"
#include "layers/model_spec.h"
#include "quant/debugger.h"
#include "quant/export.h"
#include "optim/trainer.h"
#include "tests/quant/runtime_testing.h"

using namespace qnet;
using namespace qnet::testing;

namespace {

// n random images of `shape`, labelled with what `model` predicts (so its accuracy is 1).
ImageSet labelled_images(Sequential& model, const Shape& shape, int64_t n, Rng& rng) {
  const int64_t size = shape_numel(shape);
  auto px = std::make_shared<std::vector<uint8_t>>(random_pixels(n * size, rng));
  const std::vector<float> logits = float_forward(model, *px, n);
  const int64_t classes = static_cast<int64_t>(logits.size()) / n;
  auto labels = std::make_shared<std::vector<int32_t>>();
  for (int64_t i = 0; i < n; ++i) labels->push_back(argmax(logits.data() + i * classes, static_cast<int>(classes)));
  return ImageSet(px, labels, shape[0], shape[1], shape[2]);
}

const char* const kMixed =
    "conv2d(6, 3, padding=same) batchnorm relu dropout(0.2) conv2d(8, 3, stride=2) maxpool2d(2) "
    "residual(conv2d(8, 3, padding=same) batchnorm relu conv2d(8, 1)) relu "
    "averagepooling2d(2) flatten dense(12, relu) dense(5)";

}  // namespace

TEST_CASE("inspect: the int8 stages are the fake-quantized model's, the runtime's logits the reference's", "[quant][onednn]") {
  const Shape shape{12, 11, 2};
  Rng a(7), b(7), data_rng(8);
  // Two copies of one QAT model: the "float" one fake-quantizes too, so it equals the QAT model exactly.
  Sequential qat = with_qat_ranges(model_from_spec(kMixed, shape, a), 8, a);
  Sequential same = with_qat_ranges(model_from_spec(kMixed, shape, b), 8, b);
  const ImageSet images = labelled_images(qat, shape, 40, data_rng);
  const Inspection r = inspect(same, qat, images, {.batch_size = 16});

  CHECK(r.images == 40);
  CHECK(r.runtime_matches_reference);
  CHECK(r.accuracy_runtime == r.accuracy_int8);
  CHECK(r.accuracy_fake_quant == 1.0);
  REQUIRE(r.layers.size() >= 8);  // conv, conv, pool, block, avg pool, flatten, dense, dense
  for (const LayerInspection& l : r.layers) {
    INFO(l.name << " " << l.kind);
    CHECK(l.compared);
    CHECK(std::isinf(l.sqnr_fake_quant));  // the same model: no noise
    CHECK(l.sqnr_int8 > 25.0);
    CHECK(l.values == 40 * shape_numel(l.shape));
    // A rounding tie decided the other way moves a code by one; the stages after carry it.
    CHECK(l.values_differing <= l.values / 20);
  }
  CHECK(r.layers.front().kind == "Conv2D");
  // Inside the residual block, a row per stage of its body (its two convs), then the block's own.
  size_t block = 0;
  while (block < r.layers.size() && r.layers[block].kind != "Residual") ++block;
  REQUIRE(block < r.layers.size());
  REQUIRE(block >= 2);
  for (size_t i : {block - 2, block - 1}) {
    INFO(r.layers[i].name);
    CHECK(r.layers[i].kind == "Conv2D");
    CHECK(r.layers[i].depth == 1);
    CHECK(r.layers[i].in == "residual body");
    CHECK(r.layers[i].weight_bits == 8);
    CHECK(!std::isnan(r.layers[i].accuracy_with_float));  // the sensitivity of each conv in the block on its own
  }
  CHECK(r.layers[block - 2].name == "conv2d_2");
  CHECK(r.layers[block - 1].name == "conv2d_3");
  CHECK(r.layers[block].depth == 0);
  CHECK(r.layers[block].in.empty());
  CHECK(r.layers.front().weight_bits == 8);
  CHECK(r.layers.back().kind == "Dense");
  CHECK_FALSE(r.layers.back().codes);
  CHECK(r.layers.back().int8_path != "");
}

TEST_CASE("inspect: a float model with other layers lines up stage by stage, fake-quant and int8 SQNR agree", "[quant][onednn]") {
  const Shape shape{12, 11, 2};
  Rng a(3), b(3), data_rng(4);
  Sequential float_model = model_from_spec(kMixed, shape, a);
  Sequential qat = model_from_spec(kMixed, shape, b);  // the same weights
  prepare_qat(qat, {.bits = 8, .observer = {}});
  const ImageSet images = labelled_images(float_model, shape, 60, data_rng);
  {  // ranges observed on the images, as after training (the moving statistics kept: they are the float model's)
    freeze_bn_statistics(qat);
    qat.set_training(true);
    for_each_layer(qat, [](Module& l) {
      if (l.type_name() == "Dropout") l.set_training(false);
    });
    for (int64_t i = 0; i < 60; i += 20) qat.forward(Variable(images.batch(i, 20).x, false));
    freeze_observers(qat);
  }
  const Inspection r = inspect(float_model, qat, images, {.batch_size = 32});
  CHECK(r.accuracy_float == 1.0);
  for (const LayerInspection& l : r.layers) {
    INFO(l.name << " " << l.kind);
    CHECK(l.compared);
    CHECK(std::isfinite(l.sqnr_fake_quant));
    CHECK(l.sqnr_fake_quant > 20.0);  // 8 bits: about 6 dB a bit, less what the layers before add
    CHECK(std::abs(l.sqnr_fake_quant - l.sqnr_int8) < 1.0);
    CHECK(l.max_abs_error >= l.mean_abs_error);
    if (l.codes) {
      CHECK(l.clipped < 0.01);  // ranges observed on these very images (a moving average of each batch's)
      CHECK(l.range_used > 0.5);
      CHECK(l.range_used <= 1.0);
      int64_t counted = l.activation.below + l.activation.above;
      for (int64_t c : l.activation.counts) counted += c;
      CHECK(counted == 60 * shape_numel(l.shape));
    }
  }
}

TEST_CASE("inspect: weight SQNR per channel is the hand-computed one; a float layer gives the float accuracy", "[quant]") {
  const Shape shape{4, 4, 1};
  Rng rng(5), data_rng(6);
  Sequential float_model = model_from_spec("flatten dense(3)", shape, rng);
  Sequential qat = model_from_spec("flatten dense(3)", {4, 4, 1}, rng);
  // The same kernel in both: channel 0 holds 1, -1, 0.5 and zeros, channel 1 random, channel 2 zeros.
  for (Sequential* m : {&float_model, &qat}) {
    Tensor& k = m->parameters()[0]->value();
    for (int64_t i = 0; i < k.numel(); ++i) k[i] = i % 3 == 1 ? std::sin(static_cast<float>(i)) : 0.f;
    k[0] = 1.f, k[3] = -1.f, k[6] = 0.4f;
  }
  prepare_qat(qat, {.bits = 3, .observer = {}});
  const ImageSet images = labelled_images(float_model, shape, 50, data_rng);
  const Inspection r = inspect(float_model, qat, images, {.batch_size = 50});
  REQUIRE(r.layers.size() == 2);  // Flatten, Dense (the logits: nothing to observe)
  const LayerInspection& dense = r.layers[1];
  REQUIRE(dense.weight_sqnr.size() == 3);
  // 3 bits: codes -3..3, scale 1/3; 1 and -1 exact, 0.4 -> code 1 -> 1/3.
  CHECK(dense.weight_sqnr[0] == Approx(10 * std::log10(2.16 / ((0.4 - 1.0 / 3) * (0.4 - 1.0 / 3)))).epsilon(1e-5));
  CHECK(std::isnan(dense.weight_sqnr[2]));  // no signal
  CHECK(dense.weights.counts.size() == 7 * 4);  // quarter-code bins from -3.5 to 3.5
  // The Dense layer in float is the float model: accuracy 1 by construction of the labels.
  CHECK(r.accuracy_float == 1.0);
  CHECK(dense.accuracy_with_float == 1.0);
  CHECK(std::isnan(r.layers[0].accuracy_with_float));  // Flatten has nothing to quantize
  // The sensitivity run leaves the model quantized.
  CHECK(evaluate(qat, images).accuracy == r.accuracy_fake_quant);
}

TEST_CASE("inspect refuses a float model as the quantized one, another input or output, images of another shape", "[quant]") {
  Rng rng(1);
  Sequential f = model_from_spec("flatten dense(3)", {4, 4, 1}, rng);
  Sequential g = model_from_spec("flatten dense(3)", {4, 4, 1}, rng);
  const ImageSet images = labelled_images(f, {4, 4, 1}, 5, rng);
  CHECK_THROWS_WITH(inspect(f, g, images), Catch::Contains("not in QAT form"));
  prepare_qat(g, {.bits = 8, .observer = {}});
  Sequential other = model_from_spec("flatten dense(3)", {5, 4, 1}, rng);
  CHECK_THROWS_WITH(inspect(other, g, images), Catch::Contains("the float model takes [5, 4, 1] images"));
  Sequential classes = model_from_spec("flatten dense(4)", {4, 4, 1}, rng);
  CHECK_THROWS_WITH(inspect(classes, g, images), Catch::Contains("the float model gives [4], the quantized one [3]"));
  const ImageSet wrong = labelled_images(other, {5, 4, 1}, 5, rng);
  CHECK_THROWS_WITH(inspect(f, g, wrong), Catch::Contains("the images are [5, 4, 1]"));
}

TEST_CASE("inspect suggests the widths that reach a target: what PTQ with those --layer-bits gives", "[quant][onednn]") {
  const Shape shape{12, 11, 2};
  Rng rng(9), data_rng(10);
  Sequential float_model = model_from_spec(kMixed, shape, rng);
  const ImageSet images = labelled_images(float_model, shape, 60, data_rng);
  Sequential ptq = from_qbin(to_qbin(float_model));
  calibrate_ptq(ptq, images, {.bits = 2});
  const std::string before = qat_bits_text(ptq);
  const std::vector<uint8_t> file_before = qbin::serialize(to_qbin(ptq));
  const Inspection r = inspect(float_model, ptq, images, {.batch_size = 30, .target_accuracy = 0.95});
  REQUIRE(r.accuracy_float == 1.0);
  REQUIRE(r.accuracy_fake_quant < 0.95);  // 2 bits everywhere loses it
  REQUIRE(!r.suggestion.empty());
  CHECK(r.target_met == (r.suggestion.back().accuracy >= 0.95));
  for (size_t i = 1; i < r.suggestion.size(); ++i) CHECK(r.suggestion[i - 1].accuracy < 0.95);  // it stops at the first step that reaches it
  // The model is left as it was: same widths, same file.
  CHECK(qat_bits_text(ptq) == before);
  CHECK(qbin::serialize(to_qbin(ptq)) == file_before);
  // PTQ of the float model with the suggested widths scores what the suggestion says (calibration
  // ranges do not depend on the widths), and its int8 file is bit-exact as any other.
  Sequential fixed = from_qbin(to_qbin(float_model));
  for (const WidthStep& step : r.suggestion)
    for (const std::string& name : step.layers)
      for_each_layer(fixed, [&](Module& m) {
        if (m.name() == name) m.set_quant_bits(8);
      });
  calibrate_ptq(fixed, images, {.bits = 2});
  CHECK(evaluate(fixed, images, 30).accuracy == r.suggestion.back().accuracy);
  const InferenceModel m = inference_model(export_int8(fixed));
  const std::vector<uint8_t> px(images.image(0), images.image(0) + images.size() * images.image_bytes());
  CHECK(mismatches(Runtime(m).predict(px.data(), images.size()), reference_forward(m, px.data(), images.size())) == 0);
}
