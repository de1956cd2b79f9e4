// What a model file is checked for when it loads (issue 13, items 8 and 9): names that could
// reach a terminal, non-finite weights, scales and attributes outside their domain. Each case
// loaded (or printed raw bytes) before its check existed.
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <limits>

#include <catch2/catch.hpp>

#include "core/file_io.h"
#include "io/qbin.h"
#include "layers/model_spec.h"
#include "layers/sequential.h"
#include "quant/export.h"
#include "quant/runtime/inference_model.h"
#include "quant/runtime/runtime.h"
#include "quant/qat.h"
#include "tests/grad_check.h"

using namespace qnet;

namespace {

std::string temp_path(const char* name) { return std::string("/tmp/qnet_validation_") + name; }

// The CRC-32 of the payload rewritten, as the fuzz targets do: the damage reaches the checks
// behind the checksum.
void fix_crc(std::vector<uint8_t>& b) {
  const auto crc = static_cast<uint32_t>(crc32(0L, b.data() + qbin::kHeaderBytes, static_cast<uInt>(b.size() - qbin::kHeaderBytes)));
  std::memcpy(b.data() + 16, &crc, 4);
}

// `bytes` with the first occurrence of `from` replaced by `to` (same length), CRC fixed.
std::vector<uint8_t> patched(std::vector<uint8_t> bytes, const std::string& from, const std::string& to) {
  REQUIRE(from.size() == to.size());
  const auto at = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
  REQUIRE(at != bytes.end());
  std::copy(to.begin(), to.end(), at);
  fix_crc(bytes);
  return bytes;
}

bool printable_line(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    qbin::parse(bytes.data(), bytes.size());
  } catch (const qbin::FormatError& e) {
    return e.what();
  }
  return "";
}

qbin::Model float_file() {
  Rng rng(3);
  qbin::Model m = to_qbin(mnist_reference_model(rng));
  m.layers[1].name = "AAAAAAAAAAAA";  // a 12-byte name to patch
  return m;
}

}  // namespace

TEST_CASE("a name with control bytes is refused and shown escaped, with the reason after it", "[quant][validation]") {
  const std::vector<uint8_t> good = qbin::serialize(float_file());
  const std::string esc = parse_error(patched(good, "AAAAAAAAAAAA", "\x1b[2J\x1b[AAAAAA"));
  CHECK(esc.find("layer name '\\x1b[2J\\x1b[AAAAAA'") != std::string::npos);
  CHECK(esc.find("control character 0x1b at position 0") != std::string::npos);
  CHECK(printable_line(esc));  // before: the clear-screen sequence reached stderr
  const std::string nul = parse_error(patched(good, "AAAAAAAAAAAA", std::string("AB\0CDAAAAAAA", 12)));
  CHECK(nul.find("'AB\\x00CDAAAAAAA'") != std::string::npos);  // before: the message stopped at the zero byte
  CHECK(nul.find("control character 0x00 at position 2") != std::string::npos);
  const std::string latin1 = parse_error(patched(good, "AAAAAAAAAAAA", "Faltung\xe4" "AAAA"));
  CHECK(latin1.find("not UTF-8") != std::string::npos);
  CHECK(printable_line(latin1));
}

TEST_CASE("a damaged name length shows at most 64 escaped characters, then the reason", "[quant][validation]") {
  std::vector<uint8_t> bytes = qbin::serialize(float_file());
  const std::string name = "AAAAAAAAAAAA";
  const auto at = std::search(bytes.begin(), bytes.end(), name.begin(), name.end());
  REQUIRE(at != bytes.end());
  *(at - 1) = 250;  // the length byte before the name: now it runs into the tensors
  fix_crc(bytes);
  const std::string e = parse_error(bytes);
  REQUIRE(!e.empty());
  CHECK(printable_line(e));
  CHECK(e.size() < 400);  // before: hundreds of binary bytes
  CHECK(e.find("...' at payload offset") != std::string::npos);
  CHECK(e.find("a damaged length field") != std::string::npos);
}

TEST_CASE("printable UTF-8 names round-trip; bad ones are not written", "[quant][validation]") {
  qbin::Model m = float_file();
  m.layers[1].name = "Faltung_\xc3\xa4_\xe5\x8d\xb7\xe7\xa7\xaf";  // ä, 卷积
  const std::vector<uint8_t> bytes = qbin::serialize(m);
  CHECK(qbin::parse(bytes.data(), bytes.size()).layers[1].name == m.layers[1].name);
  m.layers[1].name = "tab\there";
  CHECK_THROWS_WITH(qbin::serialize(m), Catch::Contains("control character 0x09"));
  m.layers[1].name = "\xed\xa0\x80";  // a UTF-16 surrogate
  CHECK_THROWS_WITH(qbin::serialize(m), Catch::Contains("not UTF-8"));
  m.layers[1].name = "\xc0\xaf";  // an overlong '/'
  CHECK_THROWS_WITH(qbin::serialize(m), Catch::Contains("not UTF-8"));
  m.layers[1].name = "\xc2\x9b";  // C1 CSI, an escape on some terminals
  CHECK_THROWS_WITH(qbin::serialize(m), Catch::Contains("control character 0x9b"));
  CHECK(qbin::shown(std::string(100, 'x')) == std::string(64, 'x') + "...");
  CHECK(qbin::shown("a\\b") == "a\\x5cb");  // a backslash in a name cannot fake an escape
}

TEST_CASE("float weights and biases holding inf or NaN are refused, naming the tensor", "[quant][validation]") {
  for (const float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    qbin::Model m = float_file();
    qbin::TensorRecord& k = m.layers[1].tensors[0];
    std::memcpy(k.bytes.data() + 4 * 17, &bad, 4);
    CHECK_THROWS_WITH(from_qbin(m), Catch::Contains("tensor '" + k.name + "': element 17 is") && Catch::Contains("expected finite"));
    CHECK_THROWS_WITH(inference_model(m), Catch::Contains("element 17 is"));  // the f32 runtime too
    const std::string path = temp_path("nonfinite.qbin");
    qbin::save(m, path);
    CHECK_THROWS_WITH(load_any_model(path), Catch::StartsWith(path));  // train --init and quantize refuse before any work
  }
}

TEST_CASE("int8 scales outside [2^-40, 2^40] and bit widths outside 2..8 are refused", "[quant][validation]") {
  Rng rng(4);
  Sequential q = mnist_reference_model(rng);
  prepare_qat(q, {.bits = 8, .observer = {}});
  {
    NoGradGuard no_grad;
    q.forward(Variable(testing::random_tensor({8, 28, 28, 1}, rng, 0.f, 1.f), false));
  }
  const qbin::Model good = export_int8(q);
  CHECK_NOTHROW(inference_model(good));
  qbin::Model big = good;
  for (auto& [key, v] : big.layers[2].floats)
    if (key == "output_scale") v = 3e38f;  // before: accepted, and infer printed p = -nan
  CHECK_THROWS_WITH(inference_model(big), Catch::Contains("output_scale = 3e+38") && Catch::Contains("[2^-40, 2^40]"));
  qbin::Model tiny = good;
  tiny.layers[1].tensors[0].quant.scales[0] = 1e-30f;
  CHECK_THROWS_WITH(inference_model(tiny), Catch::Contains("kernel channel 0: scale 1e-30"));
  qbin::Model input = good;
  input.layers[0].floats = {{"input_scale", 1e20f}};
  CHECK_THROWS_WITH(inference_model(input), Catch::Contains("input_scale = 1e+20 (expected a scale in [2^-40, 2^40])"));

  // The QAT checkpoint: weight_bits and the ReLU's range.
  const std::string path = temp_path("qat.qbin");
  const qbin::Model checkpoint = to_qbin(q);
  auto refuses = [&](const std::function<void(qbin::Model&)>& damage, const std::string& expected) {
    qbin::Model m = checkpoint;
    damage(m);
    qbin::save(m, path);
    CHECK_THROWS_WITH(load_any_model(path), Catch::StartsWith(path) && Catch::Contains(expected));
  };
  auto set_int = [](qbin::LayerRecord& r, const std::string& key, int32_t v) {
    for (auto& [k, x] : r.ints)
      if (k == key) x = v;
  };
  auto set_float = [](qbin::LayerRecord& r, const std::string& key, float v) {
    for (auto& [k, x] : r.floats)
      if (k == key) x = v;
  };
  CHECK_NOTHROW(load_any_model((qbin::save(checkpoint, path), path)));
  refuses([&](qbin::Model& m) { set_int(m.layers[1], "weight_bits", 9); }, "weight_bits = 9 (expected 2..8)");
  refuses([&](qbin::Model& m) { set_int(m.layers[1], "weight_bits", 1); }, "weight_bits = 1 (expected 2..8)");
  // Each layer has its own widths (issue 23), its kernel's and its codes' (--int8-target avx2 gives
  // 8-bit kernels 7-bit codes): a 4-bit kernel giving 8-bit codes loads as written.
  {
    qbin::Model narrow = checkpoint;
    set_int(narrow.layers[1], "weight_bits", 4);
    qbin::save(narrow, path);
    const Sequential loaded = load_any_model(path);
    CHECK(qat_bits_text(loaded) == "mixed 4/8-bit");
    CHECK(qbin::serialize(to_qbin(loaded)) == qbin::serialize(narrow));
  }
  {
    qbin::Model mixed = checkpoint;
    set_int(mixed.layers[5], "weight_bits", 4);  // the logits layer: no grid of its own
    qbin::save(mixed, path);
    CHECK(qat_bits_text(load_any_model(path)) == "mixed 4/8-bit");
  }
  // Before: loaded, and training failed at its first step with "relu_fake_quant: zero point 28", no file named.
  refuses([&](qbin::Model& m) { set_float(m.layers[2], "output_min", -1.f), set_float(m.layers[2], "output_max", 3.47f); },
          "activation range [-1, 3.47]");
  refuses([&](qbin::Model& m) { set_float(m.layers[2], "output_max", std::numeric_limits<float>::infinity()); }, "output_max = inf (expected a finite number within 2^40)");
  std::remove(path.c_str());
}

TEST_CASE("every loader reads a record the same way: what one refuses, all refuse (issue 22, items 1 and 12)", "[quant][validation]") {
  Rng rng(5);
  Sequential m = model_from_spec("gaussiannoise(0.1) conv2d(4, 3, relu) flatten dropout(0.5) dense(10)", {28, 28, 1}, rng);
  const qbin::Model good = to_qbin(m);  // records: Input, GaussianNoise, Conv2D, ReLU, Flatten, Dropout, Dense
  REQUIRE(good.layers[2].kind == "Conv2D");
  REQUIRE(good.layers[5].kind == "Dropout");
  const std::string path = temp_path("loaders.qbin");
  // The same message from the runtime (evaluate, infer), training (train --init) and QAT files (quantize).
  auto refused_by_all = [&](const std::function<void(qbin::Model&)>& damage, const std::string& expected) {
    qbin::Model bad = good;
    damage(bad);
    INFO(expected);
    CHECK_THROWS_WITH(inference_model(bad), Catch::Contains(expected));
    CHECK_THROWS_WITH(from_qbin(bad), Catch::Contains(expected));
    qbin::save(bad, path);
    CHECK_THROWS_WITH(load_any_model(path), Catch::StartsWith(path) && Catch::Contains(expected));
  };
  // Before: the runtime skipped any record flagged training_only, so a Conv2D or a ReLU vanished
  // at inference (accuracy 0.63 -> 0.065, exit 0) while training kept it.
  refused_by_all([](qbin::Model& f) { f.layers[2].ints.emplace_back("training_only", 1); },
                 "layer 'conv2d' (Conv2D): training_only (only Dropout and GaussianNoise, the identity at inference, take it)");
  refused_by_all([](qbin::Model& f) { f.layers[3].ints.emplace_back("training_only", 1); }, "(ReLU): training_only");
  refused_by_all([](qbin::Model& f) { f.layers[5].ints = {{"training_only", 2}}; }, "(Dropout): training_only = 2 (expected 1..1)");
  for (float rate : {std::nanf(""), std::numeric_limits<float>::infinity(), 5.f})
    refused_by_all([&](qbin::Model& f) { f.layers[5].floats = {{"rate", rate}}; }, "(Dropout): rate = ");
  for (float stddev : {std::nanf(""), -1.f})
    refused_by_all([&](qbin::Model& f) { f.layers[1].floats = {{"stddev", stddev}}; }, "(GaussianNoise): stddev = ");
  refused_by_all([&](qbin::Model& f) { f.layers[5].tensors.push_back(f.layers[2].tensors[0]); },
                 "(Dropout): tensor 'kernel' (a Dropout holds none)");
  refused_by_all([](qbin::Model& f) { f.layers[2].ints.emplace_back("dilation", 2); }, "(Conv2D): int attribute 'dilation' (a Conv2D takes filters");
  refused_by_all([](qbin::Model& f) { f.layers[2].ints.emplace_back("filters", 4); }, "(Conv2D): attribute 'filters' given twice");
  refused_by_all([](qbin::Model& f) { f.layers[2].kind = "Conv3D"; }, "unknown layer kind 'Conv3D'");
  // A training-only record without its flag (files written before it) is the identity for all.
  qbin::Model old = good;
  old.layers[1].ints.clear(), old.layers[5].ints.clear();
  CHECK(inference_model(old).stages.size() == inference_model(good).stages.size());
  CHECK(from_qbin(old).size() == m.size());
  std::remove(path.c_str());
}

TEST_CASE("int8 accumulators: prepare_qat refuses what could overflow before training, with the real bit widths (issue 22, item 3)", "[quant][validation]") {
  Rng rng(6);
  // A Dense of 26 x 26 x 100 = 67,600 inputs: 8-bit codes can overflow int32; 7-bit ones cannot.
  Sequential eight = model_from_spec("conv2d(100, 3, relu) flatten dense(10)", {28, 28, 1}, rng);
  CHECK_THROWS_WITH(prepare_qat(eight, {.bits = 8, .observer = {}}),
                    Catch::Contains("layer 'dense' (Dense): its 67600-term dot products of 8-bit weight codes on input codes up to 255") &&
                        Catch::Contains("give it bits=6 or fewer, or train with --bits 7 or fewer"));
  Sequential four = model_from_spec("conv2d(100, 3, relu) flatten dense(10)", {28, 28, 1}, rng);
  CHECK_NOTHROW(prepare_qat(four, {.bits = 4, .observer = {}}));
  {
    NoGradGuard no_grad;
    four.forward(Variable(testing::random_tensor({2, 28, 28, 1}, rng, 0.f, 1.f), false));
  }
  const qbin::Model file = export_int8(four);
  CHECK_NOTHROW(inference_model(file));  // before: refused, the bound used 255 x 127 whatever the width
  // The runtime bounds the file's own weights: a channel whose codes sum past the limit is refused.
  qbin::Model bad = file;
  for (auto& t : bad.layers.back().tensors)
    if (t.name == "kernel") {
      t.quant.bits = 8;
      std::fill(t.bytes.begin(), t.bytes.end(), static_cast<uint8_t>(127));
    }
  for (auto& r : bad.layers) {
    for (auto& t : r.tensors)
      if (t.name == "kernel") t.quant.bits = 8;
    for (auto& [k, v] : r.ints)
      if (k == "weight_bits" || k == "output_bits") v = 8;
  }
  CHECK_THROWS_WITH(inference_model(bad), Catch::Contains("(Dense): output channel 0: its 67600 weight codes (sum of magnitudes 8585200)") &&
                                              Catch::Contains("beyond the int32 accumulator's 2147483647"));
}

TEST_CASE("the runtime's memory is bounded by its largest activations, not by its number of layers (issue 22, item 2)", "[quant][onednn][validation]") {
  for (const Precision precision : {Precision::kF32, Precision::kInt8}) {
    INFO(precision_name(precision));
    auto runtime = [&](int relus) {
      std::string spec;
      for (int i = 0; i < relus; ++i) spec += "relu ";
      Rng rng(7);
      Sequential m = model_from_spec(spec + "conv2d(4, 3) relu flatten dense(10)", {28, 28, 1}, rng);
      if (precision == Precision::kF32) return Runtime(inference_model(to_qbin(m)));
      prepare_qat(m, {.bits = 8, .observer = {}});
      NoGradGuard no_grad;
      m.forward(Variable(testing::random_tensor({4, 28, 28, 1}, rng, 0.f, 1.f), false));
      return Runtime(inference_model(export_int8(m)));
    };
    const size_t few = runtime(2).workspace_bytes(256), many = runtime(500).workspace_bytes(256);
    // Before: one buffer per stage, 500 ReLUs of 256 x 784 floats = 400 MB (2,000 ReLUs took 17 GB).
    CHECK(many <= few + 256 * 784 * 4);
    CHECK(many < size_t{16} << 20);
  }
}

TEST_CASE("what loaded or ran silently and wrongly is refused with the reason (issue 22, items 7, 9, 12)", "[quant][validation]") {
  Rng rng(8);
  Sequential q = mnist_reference_model(rng);
  prepare_qat(q, {.bits = 8, .observer = {}});
  {
    NoGradGuard no_grad;
    q.forward(Variable(testing::random_tensor({8, 28, 28, 1}, rng, 0.f, 1.f), false));
  }
  // An int8 model given to training: before, "tensor 'kernel' is s8 (expected f32)".
  CHECK_THROWS_WITH(from_qbin(export_int8(q)), Catch::Contains("this is an int8 model (for evaluate and infer), not a float model or a QAT checkpoint"));
  // A Quantize range of one value: before, train --init --qat took it (accuracy 0.14).
  Sequential m = model_from_spec("conv2d(4, 3) flatten dense(10)", {28, 28, 1}, rng);
  prepare_qat(m, {.bits = 8, .observer = {}});
  {
    NoGradGuard no_grad;
    m.forward(Variable(testing::random_tensor({4, 28, 28, 1}, rng, 0.f, 1.f), false));
  }
  qbin::Model checkpoint = to_qbin(m);
  for (auto& r : checkpoint.layers)
    if (r.kind == "Quantize") r.floats = {{"output_min", 0.f}, {"output_max", 0.f}};
  const std::string path = temp_path("empty_range.qbin");
  qbin::save(checkpoint, path);
  CHECK_THROWS_WITH(load_any_model(path), Catch::Contains("activation range [0, 0] (expected finite min < max"));
  std::remove(path.c_str());
  // Calibration on one image repeated (all zeros): before, quantize gave 0.085 for a 0.415 model, exit 0.
  Sequential f = mnist_reference_model(rng);
  const ImageSet zeros(std::make_shared<const std::vector<uint8_t>>(100 * 784, 0), std::make_shared<const std::vector<int32_t>>(100, 1), 28, 28);
  CHECK_THROWS_WITH(calibrate_ptq(f, zeros, {}), Catch::Contains("the 100 calibration images are all the same image"));
}
