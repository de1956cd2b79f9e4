// Float islands (issue 23, item 3): a Conv2D, DepthwiseConv2D or Dense kept in float (`float=true`
// in a spec, --keep-float) is trained and calibrated with its float kernel, keeps the grid of its
// output, and the int8 file holds it with f32 weights between codes; the runtime's kernel for it
// (u8::float_island) equals the integer reference's plain loops bit for bit on every oneDNN path
// (ctest runs the [onednn] tests under each ISA cap, qemu the [mixed] ones on other CPUs).
#include <cstdio>
#include <cstring>

#include <catch2/catch.hpp>

#include "layers/container.h"
#include "layers/model_spec.h"
#include "quant/export.h"
#include "quant/runtime/byte_kernels.h"
#include "quant/runtime/reference.h"
#include "quant/runtime/stage_kind.h"
#include "tests/quant/runtime_testing.h"
#include "tests/spec_testing.h"

using namespace qnet;
using namespace qnet::testing;

namespace {

// Islands of every kind and place: a conv on the pixels, a BatchNormalization folded into one, a
// conv on codes with a zero point and padding, a depthwise conv (multiplier 2) inside a residual
// block, and the Dense that gives the logits; quantized layers between them.
const char* const kIslands =
    "conv2d(6, 3, relu, float=true) conv2d(8, 3, padding=same) "
    "conv2d(8, 3, padding=same, float=true, use_bias=false) batchnorm relu "
    "residual(depthwiseconv2d(3, padding=same, depth_multiplier=2, float=true) conv2d(8, 1)) relu "
    "maxpool2d(2) conv2d(6, 1, bits=4) flatten dense(5, float=true)";

bool kept_float(const qbin::LayerRecord& r) { return r.get_int("float", 0) == 1; }

}  // namespace

TEST_CASE("float=true in a spec keeps a layer in float: the files record it, QAT leaves its kernel unquantized", "[quant][mixed][island]") {
  Rng rng(71);
  Sequential m = model_from_spec("conv2d(6, 3, relu, float=true) maxpool2d(2) flatten dense(10)", {12, 12, 1}, rng);
  CHECK(m.layer(0).keep_float());
  CHECK_FALSE(m.layer(4).keep_float());
  const qbin::Model file = to_qbin(m);
  CHECK(kept_float(file.layers[1]));
  CHECK_FALSE(kept_float(file.layers[5]));
  Sequential back = from_qbin(file);
  CHECK(back.layer(0).keep_float());
  CHECK(qbin::serialize(to_qbin(back)) == qbin::serialize(file));

  Sequential qat = with_qat_ranges(std::move(back), 8, rng);
  CHECK(qat_bits_text(qat) == "8-bit, 1 layer in float");
  // The kept layer computes with its float kernel: the same output as the float layer alone.
  auto& kept = dynamic_cast<QatWeights&>(qat.layer(0));
  const Tensor x = random_tensor({2, 12, 12, 1}, rng, 0.f, 1.f);
  NoGradGuard no_grad;
  const Tensor through_qat = kept.forward(Variable(x, false)).value();
  const Tensor plain = kept.inner().forward(Variable(x, false)).value();
  CHECK(std::memcmp(through_qat.data(), plain.data(), static_cast<size_t>(plain.numel()) * sizeof(float)) == 0);
  // ... and the Dense, quantized, does not.
  auto& dense = dynamic_cast<QatWeights&>(qat.layer(qat.size() - 1));
  const Tensor features = random_tensor({2, 150}, rng, 0.f, 1.f);  // the 5 x 5 x 6 pooled features
  CHECK(std::memcmp(dense.forward(Variable(features, false)).value().data(), dense.inner().forward(Variable(features, false)).value().data(),
                    10 * sizeof(float)) != 0);

  // The checkpoint comes back with the layer kept float; the int8 file holds its f32 weights.
  const std::string path = "/tmp/qnet_test_island_qat.qbin";
  save_model(qat, path);
  Sequential again = load_any_model(path);
  std::remove(path.c_str());
  CHECK(dynamic_cast<QatWeights&>(again.layer(0)).inner().keep_float());
  const qbin::Model int8 = export_int8(qat);
  CHECK(qbin::serialize(export_int8(again)) == qbin::serialize(int8));
  REQUIRE(int8.layers[1].name == "conv2d");
  CHECK(kept_float(int8.layers[1]));
  CHECK(int8.layers[1].get_int("weight_bits", 0) == 0);
  CHECK(int8.layers[1].tensor("kernel").dtype == qbin::DType::kF32);
  CHECK(int8.layers[1].tensor("bias").dtype == qbin::DType::kF32);
  const Tensor& kernel = kept.inner().parameters()[0]->value();
  CHECK(std::memcmp(int8.layers[1].tensor("kernel").bytes.data(), kernel.data(), static_cast<size_t>(kernel.numel()) * sizeof(float)) == 0);
  CHECK(int8.layers[2].kind == "ReLU");  // its output keeps its grid
  CHECK(int8.layers[2].get_int("output_bits") == 8);
}

TEST_CASE("float= is checked where it is written", "[quant][mixed][island][spec]") {
  CHECK_THAT(spec_error("conv2d(4, 3, float=yes) flatten dense(10)"), Catch::Contains("float (expected true or false)"));
  CHECK_THAT(spec_error("conv2d(4, 3) maxpool2d(2, float=true) flatten dense(10)"), Catch::Contains("maxpool2d has no argument 'float'"));
  CHECK_THAT(spec_error("conv2d(4, 3) flatten averagepooling2d(2, float=true) dense(10)"), Catch::Contains("no argument 'float'"));
  CHECK(spec_error("conv2d(4, 3, float=false) depthwiseconv2d(3, float=true) flatten dense(10, float=true)").empty());
}

TEST_CASE("float islands run bit-exactly in int8 on every path, close to the QAT model", "[quant][onednn][mixed][island]") {
  Rng rng(72);
  Rng model_rng(73);
  Sequential qat = with_qat_ranges(model_from_spec(kIslands, {12, 11, 2}, model_rng), 8, model_rng);
  CHECK(qat_bits_text(qat) == "mixed 4/8-bit, 4 layers in float");
  const qbin::Model file = export_int8(qat);
  int islands = 0;
  for (const auto& r : file.layers) islands += kept_float(r);
  CHECK(islands == 4);
  const InferenceModel m = inference_model(file);
  int island_stages = 0;
  std::function<void(const std::vector<Stage>&)> count = [&](const std::vector<Stage>& stages) {
    for (const Stage& st : stages) {
      island_stages += st.op->float_island();
      for (const auto* branch : st.op->branches()) count(*branch);
    }
  };
  count(m.stages);
  CHECK(island_stages == 4);
  const Runtime rt(m, {.max_batch = 64});
  INFO("oneDNN ISA " << onednn_isa() << ", int8 path " << rt.int8_path());
  CHECK(uses(rt, 64, "conv qnet:f32_island"));
  CHECK(uses(rt, 64, "depthwise conv qnet:f32_island"));
  CHECK(uses(rt, 64, "dense qnet:f32_island"));
  const int64_t n = 150;
  const std::vector<uint8_t> px = random_pixels(n * static_cast<int64_t>(m.input_size()), rng);
  const std::vector<float> ref = check_bit_exact(rt, px, n);
  check_close_to_qat(qat, px, n, ref, 0.05f, 0.f);

  // The island's f32 weights must be finite, and f32 tensors belong to islands only.
  const auto refused = [&](const std::function<void(qbin::Model&)>& damage, const std::string& expected) {
    qbin::Model bad = file;
    damage(bad);
    CHECK_THROWS_WITH(inference_model(bad), Catch::Contains(expected));
  };
  REQUIRE(file.layers[1].name == "conv2d");
  refused([](qbin::Model& f) { std::memcpy(f.layers[1].tensors[0].bytes.data(), "\x00\x00\xc0\x7f", 4); },
          "layer 'conv2d' (Conv2D): tensor 'kernel': element 0 is nan (expected finite numbers)");
  refused([](qbin::Model& f) { std::erase_if(f.layers[1].ints, [](const auto& kv) { return kv.first == "float"; }); },
          "the model mixes f32 and integer tensors");
  refused([](qbin::Model& f) { f.layers[1].tensors[0].shape = {3, 3, 1, 6}; }, "tensor 'kernel' has shape [3, 3, 1, 6] (expected [3, 3, 2, 6])");
}

TEST_CASE("a model whose every layer with weights is kept in float still runs on codes", "[quant][onednn][mixed][island]") {
  Rng rng(74);
  Sequential qat = with_qat_ranges(model_from_spec("conv2d(4, 3, float=true) relu maxpool2d(2) flatten dense(3, float=true)", {9, 9, 1}, rng),
                                   8, rng);
  const qbin::Model file = export_int8(qat);
  for (const auto& r : file.layers)
    for (const auto& t : r.tensors) CHECK(t.dtype == qbin::DType::kF32);
  // With no codes at all there is nothing to quantize: refused before any training.
  Sequential lone = model_from_spec("flatten dense(3, float=true)", {9, 9, 1}, rng);
  CHECK_THROWS_WITH(prepare_qat(lone, {.bits = 8, .observer = {}}), Catch::Contains("nothing to quantize"));
  const InferenceModel m = inference_model(file);
  CHECK(m.precision == Precision::kInt8);  // the ReLU's codes sit between the two islands
  const Runtime rt(m, {.max_batch = 16});
  const std::vector<uint8_t> px = random_pixels(40 * 81, rng);
  check_close_to_qat(qat, px, 40, check_bit_exact(rt, px, 40), 0.02f, 0.f);
}

TEST_CASE("the float island kernel equals its plain reference", "[quant][island]") {
  Rng rng(75);
  for (int64_t N : {1, 70})
    for (int depthwise : {0, 1}) {
      for (bool codes : {true, false}) {
        INFO(N << " images, depthwise " << depthwise << ", codes " << codes);
        u8::FloatIsland p{};
        p.H = 9, p.W = 7, p.IC = 5, p.KH = 3, p.KW = 2, p.SH = 2, p.SW = 1, p.pad_top = 1, p.pad_left = 1;
        p.OH = 5, p.OW = 7;
        p.depth_multiplier = depthwise ? 3 : 0;
        p.OC = depthwise ? p.IC * 3 : 19;
        const int64_t K = depthwise ? 6 : 6 * p.IC;
        std::vector<float> kernel(static_cast<size_t>(K * p.OC)), bias(static_cast<size_t>(p.OC));
        for (float& w : kernel) w = rng.uniform(-1.f, 1.f);
        for (float& b : bias) b = rng.uniform(-0.5f, 0.5f);
        p.kernel = kernel.data(), p.bias = bias.data();
        p.in_scale = 0.0173f, p.in_zero = 37, p.relu = !codes, p.codes = codes;
        p.out_scale = 0.041f, p.out_zero = 101, p.qmax = 200;
        std::vector<uint8_t> in(static_cast<size_t>(N * p.H * p.W * p.IC));
        for (auto& q : in) q = static_cast<uint8_t>(rng.uniform(0.f, 256.f));
        const size_t outputs = static_cast<size_t>(N * p.OH * p.OW * p.OC), bytes = outputs * (codes ? 1 : sizeof(float));
        std::vector<uint8_t> fast(bytes + 1, 0xA5), plain(bytes + 1, 0xA5);
        u8::float_island(in.data(), fast.data(), N, p);
        u8::reference::float_island(in.data(), plain.data(), N, p);
        CHECK(fast == plain);
        CHECK(fast.back() == 0xA5);
        if (codes) {  // the codes reach both ends of [0, qmax]
          CHECK(*std::max_element(fast.begin(), fast.end() - 1) == 200);
          CHECK(*std::min_element(fast.begin(), fast.end() - 1) == 0);
        }
      }
    }
  // Rounding half to even on the output grid, and NaN to code 0.
  u8::FloatIsland q{};
  q.out_scale = 0.5f, q.out_zero = 10, q.qmax = 255;
  CHECK(u8::float_island_code(0.25f, q) == 10);   // 0.5 steps: to even
  CHECK(u8::float_island_code(0.75f, q) == 12);   // 1.5 steps
  CHECK(u8::float_island_code(-100.f, q) == 0);
  CHECK(u8::float_island_code(1e30f, q) == 255);
  CHECK(u8::float_island_code(std::nanf(""), q) == 0);
}
