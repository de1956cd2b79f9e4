// Models from a spec (layers/model_spec.h) and the Dropout layer.
#include <catch2/catch.hpp>

#include <cmath>

#include "io/qbin.h"
#include "core/random.h"
#include "layers/model_spec.h"
#include "quant/export.h"
#include "quant/runtime/inference_model.h"
#include "quant/qat.h"
#include "tests/grad_check.h"
#include "tests/spec_testing.h"

using namespace qnet;
using namespace qnet::testing;

namespace {
const char* const kKeras = "conv2d(32, 3, relu) maxpool2d(2) conv2d(64, 3, relu) maxpool2d(2) flatten dropout(0.5) dense(10)";

}  // namespace

TEST_CASE("Keras' classic MNIST convnet builds from its spec", "[layers][spec]") {
  Rng rng(1);
  Sequential m = model_from_spec(kKeras, {28, 28, 1}, rng);
  CHECK(m.size() == 9);  // conv, relu, pool, conv, relu, pool, flatten, dropout, dense
  CHECK(m.output_shape({28, 28, 1}) == Shape{10});
  CHECK(m.parameter_count() == 34826);  // Keras' summary of the same model
  CHECK(m.layer(7).type_name() == "Dropout");
  Rng a(2), b(2);
  CHECK(model_from_spec(reference_spec(10), {28, 28, 1}, a).parameter_count() == reference_model({28, 28, 1}, 10, b).parameter_count());
}

TEST_CASE("spec options: sizes NxM, strides, same padding, dense activations, comments and new lines", "[layers][spec]") {
  Rng rng(1);
  Sequential m = model_from_spec("# a file form\nCONV2D(8, 3x5, stride=2, padding=same, activation=relu)\n"
                                 "maxpool2d(2x1, stride=1)  # tall windows\nflatten, dense(16, relu), dense(4)",
                                 {20, 20, 3}, rng);
  CHECK(m.layer(0).output_shape({20, 20, 3}) == Shape{10, 10, 8});
  CHECK(m.layer(2).output_shape({10, 10, 8}) == Shape{9, 10, 8});
  CHECK(m.output_shape({20, 20, 3}) == Shape{4});
  CHECK(m.layer(4).type_name() == "Dense");
  CHECK(m.layer(5).type_name() == "ReLU");
}

TEST_CASE("a bad spec is refused with the position and text of the offending token", "[layers][spec]") {
  CHECK(spec_error("conv2d(8, 3, relu) conv2x(2)") ==
        "at character 20 ('conv2x'): unknown layer (expected conv2d, depthwiseconv2d, maxpool2d, averagepooling2d, globalaveragepooling2d, "
        "zeropadding2d, batchnorm, relu, flatten, dropout, gaussiannoise, dense or residual)");
  CHECK_THAT(spec_error("conv2d(8, 3y3)"), Catch::StartsWith("at character 11 ('3y3'): kernel size"));
  CHECK_THAT(spec_error("conv2d(8, 3 maxpool2d(2)"), Catch::Contains("expected ',' or ')' in conv2d(...)"));
  CHECK_THAT(spec_error("conv2d(8, 3, 4)"), Catch::Contains("('4'): conv2d takes 2 positional arguments (filters, kernel)"));
  CHECK_THAT(spec_error("conv2d(8, 3, strides=2)"), Catch::Contains("('strides'): conv2d has no argument 'strides'"));
  CHECK_THAT(spec_error("conv2d(8, 3, padding=full)"), Catch::Contains("('full'): padding (expected valid or same)"));
  CHECK_THAT(spec_error("conv2d(kernel=3)"), Catch::Contains("('conv2d'): conv2d needs 'filters'"));
  CHECK_THAT(spec_error("conv2d(8, 3) dense(10)"), Catch::Contains("('dense'): dense needs a flat input, not [26, 26, 8] (put flatten before it)"));
  CHECK_THAT(spec_error("flatten conv2d(8, 3)"), Catch::Contains("conv2d needs an image input"));
  CHECK_THAT(spec_error("conv2d(8, 30)"), Catch::Contains("('conv2d'): does not fit its input"));
  CHECK_THAT(spec_error("flatten dropout(1.5) dense(10)"), Catch::Contains("('1.5'): dropout rate (expected 0 <= rate < 1)"));
  CHECK_THAT(spec_error("flatten dense(0)"), Catch::Contains("('0'): units (expected an integer in 1..65536)"));
  CHECK_THAT(spec_error("relu(2)"), Catch::Contains("relu takes no arguments"));
  CHECK_THAT(spec_error("conv2d(8, 3, relu, relu)"), Catch::Contains("activation given twice"));
  CHECK_THAT(spec_error("  # nothing\n"), Catch::StartsWith("an empty model spec"));
}

TEST_CASE("Dropout drops about its rate in training, scales the rest, and is the identity otherwise", "[layers][spec]") {
  Dropout d(0.25f, 7);
  const Variable x(Tensor::full({1000, 10}, 2.f), true);
  Variable y = d.forward(x);
  int64_t zeros = 0;
  for (int64_t i = 0; i < y.value().numel(); ++i) {
    CHECK((y.value()[i] == 0.f || y.value()[i] == Approx(2.f / 0.75f)));
    zeros += y.value()[i] == 0.f;
  }
  CHECK(zeros > 2300);  // 10,000 elements, 2,500 expected
  CHECK(zeros < 2700);
  sum(y).backward();  // the gradient is the mask itself
  for (int64_t i = 0; i < y.value().numel(); ++i) CHECK(x.grad()[i] == Approx(y.value()[i] / 2.f));
  d.set_training(false);
  CHECK(d.forward(x).value().to_vector() == x.value().to_vector());
}

TEST_CASE("Dropout keeps element i when the seed's i-th uniform01() is below 1 - rate", "[layers][spec]") {
  Dropout d(0.3f, 11);
  const Variable x(Tensor::full({64, 40}, 1.f), false);
  Rng reference(11);
  for (int step = 0; step < 2; ++step) {  // the second step continues where the first left off
    const Tensor y = d.forward(x).value();
    for (int64_t i = 0; i < y.numel(); ++i) REQUIRE(y[i] == (reference.uniform01() < 0.7f ? 1.f / 0.7f : 0.f));
  }
  // The integer test it uses instead: n * 2^-53 < p exactly when n < below_cut(p), at the cut's edge.
  for (const double p : {0.7, double(0.7f), 0.5, 1e-10, double(1e-30f), 0x1.0p-60, std::nextafter(1.0, 0.0), 0.0, 1.0}) {
    const uint64_t cut = Rng::below_cut(p);
    for (const uint64_t n : {cut - 1, cut, cut + 1}) {
      if (n >= (uint64_t{1} << 53)) continue;  // outside what uniform01() can draw
      CHECK((static_cast<double>(n) * 0x1.0p-53 < p) == (n < cut));
    }
  }
  CHECK(Rng::below_cut(0.0) == 0);
  CHECK(Rng::below_cut(1.0) == uint64_t{1} << 53);
}

TEST_CASE("Rng::discard(n) leaves the generator where n draws would", "[layers][spec]") {
  Rng a(5), b(5);
  for (int i = 0; i < 1000; ++i) a.next_u64();
  b.discard(1000);
  CHECK(a.next_u64() == b.next_u64());
}

TEST_CASE("Dropout is saved in float files and left out of int8 ones; the runtime skips it", "[layers][spec]") {
  Rng rng(3);
  Sequential m = model_from_spec("conv2d(4, 3, relu) maxpool2d(2) flatten dropout(0.3) dense(10)", {28, 28, 1}, rng);
  const qbin::Model file = to_qbin(m);
  Sequential back = from_qbin(file);
  REQUIRE(back.layer(4).type_name() == "Dropout");
  CHECK(dynamic_cast<Dropout&>(back.layer(4)).rate() == Approx(0.3f));
  const InferenceModel f32 = inference_model(file);  // no Dropout stage
  CHECK(f32.stages.size() == 4);
  prepare_qat(m, {.bits = 8, .observer = {}});
  {
    NoGradGuard no_grad;
    m.set_training(false);
    m.forward(Variable(testing::random_tensor({4, 28, 28, 1}, rng, 0.f, 1.f), false));
  }
  const qbin::Model int8 = export_int8(m);
  for (const auto& r : int8.layers) CHECK(r.kind != "Dropout");
  CHECK(inference_model(int8).stages.size() == 4);
}
