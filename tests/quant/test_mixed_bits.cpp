// Bits per layer (issue 23, item 2): `bits=N` in a spec gives a layer's weights and output codes
// their own width; QAT, PTQ, the files, the integer reference and the oneDNN runtime honour it,
// bit-exactly on every oneDNN path (ctest runs the [onednn] tests under each ISA cap).
#include <cstdio>
#include <map>

#include <catch2/catch.hpp>

#include "layers/container.h"
#include "layers/model_spec.h"
#include "quant/export.h"
#include "quant/runtime/reference.h"
#include "quant/runtime/stage_kind.h"
#include "tests/quant/runtime_testing.h"
#include "tests/spec_testing.h"

using namespace qnet;
using namespace qnet::testing;

namespace {

// Every kind that takes `bits` (weights, average pooling, residual adds), at every width 2..8
// (the unmarked ones at the model's default, 8), on the paths of the architectures tests.
const char* const kMixed =
    "conv2d(6, 3, padding=same, use_bias=false, bits=4) batchnorm relu "
    "residual(depthwiseconv2d(3, padding=same, use_bias=false, bits=6) batchnorm relu conv2d(6, 1, bits=3) batchnorm, bits=5) relu "
    "residual(conv2d(8, 3, stride=2, padding=same) batchnorm, "
    "         shortcut=depthwiseconv2d(3, stride=2, padding=same, depth_multiplier=2, bits=2) conv2d(8, 1, bits=7)) "
    "depthwiseconv2d(3, padding=same, bits=5) batchnorm "
    "averagepooling2d(2, padding=same, bits=3) "
    "residual(residual(relu, bits=6) conv2d(8, 1, bits=4)) relu "
    "globalaveragepooling2d(bits=7) dense(5, bits=4)";

// name -> the bit width each QAT layer got.
std::map<std::string, int> widths_of(const Sequential& qat) {
  std::map<std::string, int> w;
  for_each_layer(qat, [&](const Module& m) {
    if (auto* q = dynamic_cast<const QatWeights*>(&m)) w[q->name()] = q->bits();
    if (auto* a = dynamic_cast<const QatObservedActivation*>(&m)) w[a->name()] = a->bits();
  });
  return w;
}

}  // namespace

TEST_CASE("bits=N in a spec: the layer's weights and output codes get N bits in QAT, the rest the model's", "[quant][mixed]") {
  Rng rng(61);
  Sequential m = model_from_spec("conv2d(6, 3, relu, bits=4) maxpool2d(2) conv2d(8, 3, bits=6) averagepooling2d(2, bits=3) flatten dense(10)",
                                 {16, 16, 1}, rng);
  CHECK(m.layer(0).quant_bits() == 4);
  CHECK(m.layer(5).quant_bits() == 0);  // dense: the default
  // A float file keeps what the spec asked for.
  const qbin::Model file = to_qbin(m);
  CHECK(file.layers[1].get_int("bits", 0) == 4);
  CHECK(file.layers[6].get_int("bits", 0) == 0);
  Sequential back = from_qbin(file);
  CHECK(back.layer(0).quant_bits() == 4);
  CHECK(qbin::serialize(to_qbin(back)) == qbin::serialize(file));

  Sequential qat = with_qat_ranges(std::move(back), 5, rng);  // default 5: the dense
  const std::map<std::string, int> w = widths_of(qat);
  CHECK(w.at("conv2d") == 4);
  CHECK(w.at("re_lu") == 4);       // the conv's ReLU gives its 4-bit codes
  CHECK(w.at("conv2d_1") == 6);
  CHECK(w.at("quantize") == 6);    // inserted after conv2d_1: its codes
  CHECK(w.at("quantize_1") == 3);  // the average pooling's grid
  CHECK(w.at("dense") == 5);
  CHECK(qat_bits(qat) == 6);
  CHECK(qat_bits_text(qat) == "mixed 3/4/5/6-bit");

  // The QAT checkpoint comes back with every width, and exports the same int8 file.
  const std::string path = "/tmp/qnet_test_mixed_qat.qbin";
  save_model(qat, path);
  Sequential again = load_any_model(path);
  std::remove(path.c_str());
  CHECK(widths_of(again) == w);
  const qbin::Model int8 = export_int8(qat);
  CHECK(qbin::serialize(export_int8(again)) == qbin::serialize(int8));
  // The int8 file: each kernel on its own grid, each activation record its codes' width.
  std::map<std::string, int> in_file;
  for (const auto& r : int8.layers) {
    if (const qbin::TensorRecord* k = r.find_tensor("kernel")) in_file[r.name] = k->quant.bits;
    if (r.get_int("output_bits", 0) != 0) in_file[r.name] = r.get_int("output_bits");
  }
  CHECK(in_file == w);
  const InferenceModel im = inference_model(int8);
  CHECK(im.stages[0].bits == 4);  // conv2d + ReLU: 4-bit codes
  CHECK(im.stages[1].bits == 4);  // max pooling keeps them
}

TEST_CASE("bits=N is checked where it is written", "[quant][mixed][spec]") {
  CHECK_THAT(spec_error("conv2d(4, 3, bits=9) flatten dense(10)"),
             Catch::Contains("at character 19 ('9'): bits (the layer's weight and activation bit width) (expected an integer in 2..8)"));
  CHECK_THAT(spec_error("conv2d(4, 3) maxpool2d(2, bits=4) flatten dense(10)"), Catch::Contains("maxpool2d has no argument 'bits'"));
  CHECK_THAT(spec_error("conv2d(4, 3) relu(bits=4) flatten dense(10)"), Catch::Contains("relu"));
  CHECK(spec_error("conv2d(4, 3, bits=2) globalaveragepooling2d(bits=8) dense(10, bits=3)").empty());
  // A float file with a width outside 2..8 is refused by every loader.
  Rng rng(62);
  qbin::Model file = to_qbin(model_from_spec("conv2d(4, 3, bits=4) flatten dense(10)", {8, 8, 1}, rng));
  for (auto& [k, v] : file.layers[1].ints)
    if (k == "bits") v = 9;
  CHECK_THROWS_WITH(from_qbin(file), Catch::Contains("layer 'conv2d' (Conv2D): bits = 9 (expected 2..8)"));
  CHECK_THROWS_WITH(inference_model(file), Catch::Contains("bits = 9 (expected 2..8)"));
}

TEST_CASE("the int8 accumulator bound uses each layer's own widths", "[quant][mixed]") {
  Rng rng(63);
  // 67,600 inputs: 8-bit weights on 8-bit codes can overflow int32 (test_model_validation.cpp);
  // 8-bit weights on the 4-bit codes of a conv with bits=4, or 6-bit weights on 8-bit codes, cannot.
  Sequential narrow_input = model_from_spec("conv2d(100, 3, relu, bits=4) flatten dense(10)", {28, 28, 1}, rng);
  CHECK_NOTHROW(prepare_qat(narrow_input, {.bits = 8, .observer = {}}));
  {  // A QAT file is checked with its own widths: the same model with 8-bit codes before the dense is refused.
    qbin::Model file = to_qbin(with_qat_ranges(model_from_spec("conv2d(100, 3, relu, bits=4) flatten dense(10)", {28, 28, 1}, rng), 8, rng));
    for (auto& [k, v] : file.layers[2].ints)
      if (k == "output_bits") v = 8;
    const std::string path = "/tmp/qnet_test_mixed_accumulator.qbin";
    qbin::save(file, path);
    CHECK_THROWS_WITH(load_any_model(path), Catch::Contains("its 67600-term dot products of 8-bit weight codes on input codes up to 255"));
    std::remove(path.c_str());
  }
  Sequential narrow_weights = model_from_spec("conv2d(100, 3, relu) flatten dense(10, bits=6)", {28, 28, 1}, rng);
  CHECK_NOTHROW(prepare_qat(narrow_weights, {.bits = 8, .observer = {}}));
  Sequential wide = model_from_spec("conv2d(100, 3, relu, bits=2) flatten dense(10, bits=8)", {28, 28, 1}, rng);
  CHECK_NOTHROW(prepare_qat(wide, {.bits = 8, .observer = {}}));
  Sequential too_wide = model_from_spec("conv2d(100, 3, relu, bits=8) flatten dense(10, bits=7)", {28, 28, 1}, rng);
  CHECK_THROWS_WITH(prepare_qat(too_wide, {.bits = 4, .observer = {}}),
                    Catch::Contains("its 67600-term dot products of 7-bit weight codes on input codes up to 255") &&
                        Catch::Contains("give it bits=6 or fewer"));
}

TEST_CASE("mixed-bit models run bit-exactly in int8, and the runtime checks each layer's own width", "[quant][onednn][mixed]") {
  Rng rng(64);
  Rng model_rng(65);
  Sequential model = model_from_spec(kMixed, {12, 11, 2}, model_rng);
  Sequential qat = with_qat_ranges(std::move(model), 8, model_rng);
  CHECK(qat_bits_text(qat) == "mixed 2/3/4/5/6/7/8-bit");
  const qbin::Model file = export_int8(qat);
  const InferenceModel m = inference_model(file);
  const Runtime rt(m, {.max_batch = 64});
  INFO("oneDNN ISA " << onednn_isa() << ", int8 path " << rt.int8_path());
  // Its only 8-bit kernel (the second block's conv) reads 5-bit codes: 2 x 31 x 127 fits int16,
  // so no layer needs the split-weights path on any CPU.
  CHECK(rt.int8_path() == std::string("one-pass"));
  const int64_t n = 150;
  const std::vector<uint8_t> px = random_pixels(n * static_cast<int64_t>(m.input_size()), rng);
  const std::vector<float> ref = check_bit_exact(rt, px, n);
  check_close_to_qat(qat, px, n, ref, 0.1f, 0.f);  // a tie at 2 or 3 bits moves a code by a large step

  // A code beyond its own layer's range is refused, though it fits the model's widest.
  const auto refused = [&](const std::function<void(qbin::Model&)>& damage, const std::string& expected) {
    qbin::Model bad = file;
    damage(bad);
    CHECK_THROWS_WITH(inference_model(bad), Catch::Contains(expected));
  };
  REQUIRE(file.layers[1].name == "conv2d");
  refused([](qbin::Model& f) { f.layers[1].tensors[0].bytes[0] = 9; }, "layer 'conv2d' (Conv2D): kernel code 9 outside [-7, 7] for 4 bits");
  refused([](qbin::Model& f) { f.layers[1].tensors[0].quant.bits = 5; }, "kernel quantization: 5 bits, axis 3, 6 scales (expected 2..8 bits, "
                                                                            "the layer's weight_bits 4");
  refused([](qbin::Model& f) { f.layers[2].ints = {{"output_bits", 1}, {"output_zero_point", 0}}; }, "output_bits = 1 (expected 2..8)");
}

namespace {

// A model with every place a width is chosen: a kernel on the pixels, kernels on codes (a conv,
// a residual body, the dense), grids of their own (a conv without ReLU, average pooling, the add).
const char* const kTargetModel =
    "conv2d(6, 3, relu) maxpool2d(2) conv2d(8, 3, padding=same) "
    "residual(conv2d(8, 1) batchnorm relu conv2d(8, 3, padding=same, bits=4)) relu "
    "averagepooling2d(2) flatten dense(5)";

}  // namespace

TEST_CASE("the avx2 int8 target: 7-bit codes and 7-bit kernels on the pixels, so every CPU runs one pass, bit-exactly", "[quant][onednn][mixed]") {
  Rng rng(66);
  const auto prepared = [&](Int8Target target) {
    Rng model_rng(67);
    Sequential m = model_from_spec(kTargetModel, {14, 13, 1}, model_rng);
    for (Variable* p : m.parameters())
      if (p->value().rank() == 1)
        for (int64_t i = 0; i < p->value().numel(); ++i) p->value()[i] = model_rng.uniform(-0.3f, 0.3f);
    prepare_qat(m, {.bits = 8, .target = target, .observer = {}});
    for (int i = 0; i < 3; ++i) m.forward(Variable(testing::random_tensor({8, 14, 13, 1}, model_rng, 0.f, 1.f), false));
    freeze_observers(m);
    return m;
  };
  Sequential qat = prepared(Int8Target::kAvx2);
  const std::map<std::string, int> w = widths_of(qat);
  CHECK(w.at("conv2d") == 7);      // reads the pixels: 2 x 255 x 63 <= 32,767
  CHECK(w.at("re_lu") == 7);       // every grid: 7 bits
  CHECK(w.at("conv2d_1") == 8);    // reads 7-bit codes: 2 x 127 x 127 <= 32,767
  CHECK(w.at("quantize") == 7);
  CHECK(w.at("conv2d_2") == 8);    // inside the block
  CHECK(w.at("conv2d_3") == 4);    // its own bits=4 stays
  CHECK(w.at("quantize_1") == 4);
  CHECK(w.at("quantize_2") == 7);  // the average pooling's grid
  CHECK(w.at("dense") == 8);
  CHECK(qat_bits_text(qat) == "mixed 4/7/8-bit");

  // The checkpoint keeps each width; the int8 file runs one pass on every oneDNN ISA (ctest runs
  // this under each cap) and equals the integer reference bit for bit.
  const std::string path = "/tmp/qnet_test_target_qat.qbin";
  save_model(qat, path);
  Sequential again = load_any_model(path);
  std::remove(path.c_str());
  CHECK(widths_of(again) == w);
  const qbin::Model file = export_int8(qat);
  CHECK(qbin::serialize(export_int8(again)) == qbin::serialize(file));
  const InferenceModel m = inference_model(file);
  const Runtime rt(m, {.max_batch = 64});
  INFO("oneDNN ISA " << onednn_isa() << ", int8 path " << rt.int8_path());
  CHECK(rt.int8_path() == std::string("one-pass"));
  for (const Stage& st : m.stages) CHECK(st.op->widest_pair_sum() <= kPairSumMax);
  CHECK(uses(rt, 64, "dense (as a 1x1 conv)") == !onednn_has_vnni());
  const int64_t n = 150;
  const std::vector<uint8_t> px = random_pixels(n * static_cast<int64_t>(m.input_size()), rng);
  const std::vector<float> ref = check_bit_exact(rt, px, n);
  check_close_to_qat(qat, px, n, ref, 0.1f, 0.f);

  // The same model at the default target: 8-bit codes, and without VNNI the split-weights path.
  Sequential full = prepared(Int8Target::kVnni);
  CHECK(qat_bits_text(full) == "mixed 4/8-bit");
  const Runtime full_rt(inference_model(export_int8(full)), {.max_batch = 64});
  CHECK(full_rt.int8_path() == expected_path(8));
  CHECK(uses(full_rt, 64, "dense split-weights (as a 1x1 conv)") == !onednn_has_vnni());
}
