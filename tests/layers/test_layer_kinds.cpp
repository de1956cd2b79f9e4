// The layer kinds table (layers/layer_kind.h): every kind builds from a spec, saves and loads
// through its own record code, and says its part in the int8 graph.
#include <map>
#include <set>

#include <catch2/catch.hpp>

#include "core/autograd.h"
#include "core/random.h"
#include "io/record_schema.h"
#include "layers/layer_kind.h"
#include "layers/model_spec.h"
#include "layers/residual.h"
#include "quant/export.h"
#include "quant/runtime/inference_model.h"
#include "quant/qat.h"
#include "quant/runtime/runtime.h"
#include "quant/runtime/stage_kind.h"
#include "tests/grad_check.h"

using namespace qnet;

TEST_CASE("every layer kind builds from a spec and round-trips through its record", "[layers]") {
  // An example spec and input for each kind: a kind added without one fails here.
  const std::map<std::string, std::pair<std::string, Shape>> examples{
      {"Conv2D", {"conv2d(4, 3x2, stride=2, padding=same)", {7, 6, 2}}},
      {"DepthwiseConv2D", {"depthwiseconv2d(3, stride=2, padding=same, depth_multiplier=2)", {7, 6, 3}}},
      {"MaxPool2D", {"maxpool2d(2, stride=1)", {5, 5, 3}}},
      {"AveragePooling2D", {"averagepooling2d(3, stride=2, padding=same)", {5, 5, 3}}},
      {"GlobalAveragePooling2D", {"globalaveragepooling2d", {5, 4, 3}}},
      {"BatchNormalization", {"batchnorm(momentum=0.9, epsilon=0.01)", {4, 4, 3}}},
      {"Residual", {"residual(conv2d(3, 3, padding=same) batchnorm relu, shortcut=conv2d(3, 1))", {5, 5, 2}}},
      {"ReLU", {"relu", {4}}},
      {"Flatten", {"flatten", {2, 3, 4}}},
      {"Dropout", {"dropout(0.25)", {6}}},
      {"GaussianNoise", {"gaussiannoise(0.1)", {3, 3, 1}}},
      {"ZeroPadding2D", {"zeropadding2d(1x2, top=0)", {3, 4, 2}}},
      {"Dense", {"dense(3)", {6}}},
  };
  std::set<std::string> types, spec_names;
  for (const LayerKind* k : layer_kinds()) {
    const LayerKind& kind = *k;
    INFO(kind.type);
    CHECK(types.insert(kind.type).second);
    CHECK(spec_names.insert(kind.spec_name).second);
    CHECK(find_layer_kind(kind.type) == &kind);
    CHECK(find_layer_kind_in_specs(lower_case(kind.spec_name)) == &kind);
    REQUIRE(examples.count(kind.type) == 1);
    const auto& [spec, input] = examples.at(kind.type);
    Rng rng(3);
    Sequential m = model_from_spec(spec, input, rng);
    REQUIRE(m.size() == 1);
    CHECK(m.layer(0).type_name() == kind.type);
    const qbin::LayerRecord record = record_of(m.layer(0));
    CHECK(record.kind == kind.type);
    CHECK(static_cast<bool>(kind.from_record) != static_cast<bool>(kind.from_branches));
    if (kind.from_record) {  // through its kind's record code
      const std::unique_ptr<Module> back = kind.from_record(record);
      CHECK(back->type_name() == kind.type);
      const qbin::LayerRecord again = record_of(*back);
      CHECK(again.ints == record.ints);
      CHECK(again.floats == record.floats);
      REQUIRE(again.tensors.size() == record.tensors.size());
      for (size_t t = 0; t < again.tensors.size(); ++t) CHECK(again.tensors[t].bytes == record.tensors[t].bytes);
    }
    if (input.size() == 3) {  // through a file (a container: its record and its branches' records)
      const qbin::Model file = to_qbin(m);
      const Sequential back = from_qbin(file);
      REQUIRE(back.size() == 1);
      CHECK(back.layer(0).type_name() == kind.type);
      const qbin::Model again = to_qbin(back);
      REQUIRE(again.layers.size() == file.layers.size());
      for (size_t i = 0; i < file.layers.size(); ++i) {
        CHECK(again.layers[i].kind == file.layers[i].kind);
        CHECK(again.layers[i].ints == file.layers[i].ints);
        CHECK(again.layers[i].floats == file.layers[i].floats);
        REQUIRE(again.layers[i].tensors.size() == file.layers[i].tensors.size());
        for (size_t t = 0; t < again.layers[i].tensors.size(); ++t) CHECK(again.layers[i].tensors[t].bytes == file.layers[i].tensors[t].bytes);
      }
    }
    CHECK((kind.from_record != nullptr || input.size() == 3));  // every container's example is a model that has a file
    {  // it copies itself, so that the threads of a training step can each train a copy (Module::clone)
      const std::unique_ptr<Module> copy = m.layer(0).clone();
      REQUIRE(copy != nullptr);
      CHECK(copy->type_name() == kind.type);
      CHECK(copy->name() == m.layer(0).name());
      const qbin::LayerRecord copied = record_of(*copy);
      REQUIRE(copied.tensors.size() == record.tensors.size());
      for (size_t t = 0; t < copied.tensors.size(); ++t) CHECK(copied.tensors[t].bytes == record.tensors[t].bytes);
    }
    CHECK((kind.role == Int8Role::kWeights) == static_cast<bool>(kind.kernel));
    CHECK((kind.role == Int8Role::kWeights) == static_cast<bool>(kind.bias));
    if (kind.kernel) CHECK(kind.kernel(m.layer(0)).value().rank() >= 2);
  }
  CHECK(find_layer_kind("conv2d") == nullptr);  // types are case-sensitive, spec names are not
  CHECK(find_layer_kind_in_specs("CONV2D") == find_layer_kind("Conv2D"));
}

TEST_CASE("every kind that computes at inference has its runtime stage kind, and every stage kind its layer kind", "[layers][quant]") {
  std::set<std::string_view> records;
  for (const StageKind* s : stage_kinds()) {
    INFO(s->record_kind);
    CHECK(records.insert(s->record_kind).second);
    CHECK(find_stage_kind(s->record_kind) == s);
    // Quantize is QAT's activation range for a Conv2D or Dense without ReLU (quant/qat.h), not a spec kind.
    CHECK((find_layer_kind(s->record_kind) != nullptr || s->record_kind == "Quantize"));
  }
  for (const LayerKind* k : layer_kinds()) {
    INFO(k->type);
    // Training-only kinds are the identity at inference: the runtime skips them by kind.
    const bool runs = k->role != Int8Role::kTrainingOnly;
    CHECK((find_stage_kind(k->type) != nullptr) == runs);
    CHECK(qbin::training_only_kind(k->type) == !runs);
    CHECK(qbin::known_record_kind(k->type));  // every kind has its record schema (io/record_schema.h)
  }
  CHECK(find_stage_kind("conv2d") == nullptr);
}

TEST_CASE("a training-only kind added through the table trains, saves, runs in f32 and leaves int8 files", "[layers][quant]") {
  Rng rng(4);
  Sequential m = model_from_spec("gaussiannoise(0.3) conv2d(3, 3, relu) flatten dropout(0.2) dense(4)", {6, 6, 1}, rng);
  Variable x(testing::random_tensor({5, 6, 6, 1}, rng, 0.f, 1.f), false);
  NoGradGuard no_grad;
  m.set_training(true);
  const std::vector<float> noisy = m.forward(x).value().to_vector();
  m.set_training(false);
  const std::vector<float> clean = m.forward(x).value().to_vector();
  CHECK(noisy != clean);  // the noise is there in training, and only there
  CHECK(m.forward(x).value().to_vector() == clean);

  const qbin::Model file = to_qbin(m);
  CHECK(file.layers[1].kind == "GaussianNoise");
  CHECK(file.layers[1].get_int("training_only", 0) == 1);
  Sequential back = from_qbin(file);
  back.set_training(false);
  CHECK(back.forward(x).value().to_vector() == clean);
  const InferenceModel f32 = inference_model(file);  // the f32 runtime's graph skips it
  CHECK(f32.stages.size() == 3);                     // conv (ReLU fused), flatten, dense
  const std::vector<float> rt = Runtime(f32).predict(std::vector<uint8_t>(36 * 5, 128).data(), 5);
  CHECK(rt.size() == 20);

  prepare_qat(m, {.bits = 8, .observer = {}});
  m.set_training(true);
  m.forward(x);
  freeze_observers(m);
  const qbin::Model int8 = export_int8(m);
  for (const auto& r : int8.layers) CHECK((r.kind != "GaussianNoise" && r.kind != "Dropout"));
  CHECK(inference_model(int8).precision == Precision::kInt8);
}
