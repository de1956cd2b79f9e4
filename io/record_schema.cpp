#include "io/record_schema.h"

#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "io/record_keys.h"

namespace qnet::qbin {

namespace {

namespace k = key;

struct IntSpec {
  const char* key;
  int32_t lo, hi;
  bool required;
};
struct FloatSpec {
  const char* key;
  float lo, hi;
  bool open_hi;  // the range is [lo, hi) rather than [lo, hi]
  bool required;
  const char* expected;  // the range in words, for messages
};
struct TensorSpec {
  const char* name;
  bool required;
};
struct Schema {
  const char* kind;
  std::vector<IntSpec> ints;
  std::vector<FloatSpec> floats;
  std::vector<TensorSpec> tensors;
};

constexpr int32_t kMaxInt = 0x7fffffff;
constexpr float kMinScale = 0x1p-40f, kMaxScale = 0x1p40f, kMaxRange = 0x1p40f;

// Ints of the weighted kinds' windows and the output records' codes, shared by several kinds.
const IntSpec kStrideH{k::kStrideH, 1, 64, true}, kStrideW{k::kStrideW, 1, 64, true}, kSame{k::kPaddingSame, 0, 1, true};
const IntSpec kWeightBits{k::kWeightBits, 2, 8, false}, kBits{k::kBits, 2, 8, false},
    kKeepFloat{k::kKeepFloat, 1, 1, false}, kTrainingOnly{k::kTrainingOnly, 1, 1, false};
const std::vector<TensorSpec> kWeights{{"kernel", true}, {"bias", false}};
// A record of an activation's codes: int8 files give its scale and zero point, QAT files its range.
const Schema activation(const char* kind, bool bits_required) {
  return {kind,
          {{k::kOutputBits, 2, 8, bits_required}, {k::kOutputZeroPoint, 0, 255, false}},
          {{k::kOutputScale, kMinScale, kMaxScale, false, false, "a scale in [2^-40, 2^40]"},
           {k::kOutputMin, -kMaxRange, kMaxRange, false, false, "a finite number within 2^40"},
           {k::kOutputMax, -kMaxRange, kMaxRange, false, false, "a finite number within 2^40"}},
          {}};
}

const std::vector<Schema>& schemas() {
  static const std::vector<Schema> all{
      {"Input",
       {{k::kHeight, 1, 16384, true}, {k::kWidth, 1, 16384, true}, {k::kChannels, 1, 4, true}, {k::kInputBits, 8, 8, false}},
       {{k::kInputScale, kMinScale, kMaxScale, false, false, "a scale in [2^-40, 2^40]"}},
       {}},
      {"Conv2D",
       {{k::kFilters, 1, 1 << 16, true}, {k::kInChannels, 1, 1 << 16, true}, {k::kKernelH, 1, 64, true}, {k::kKernelW, 1, 64, true},
        kStrideH, kStrideW, kSame, kWeightBits, kBits, kKeepFloat},
       {},
       kWeights},
      {"DepthwiseConv2D",
       {{k::kChannels, 1, 1 << 16, true}, {k::kDepthMultiplier, 1, 1 << 16, true}, {k::kKernelH, 1, 64, true}, {k::kKernelW, 1, 64, true},
        kStrideH, kStrideW, kSame, kWeightBits, kBits, kKeepFloat},
       {},
       kWeights},
      {"Dense", {{k::kUnits, 1, 1 << 16, true}, {k::kInFeatures, 1, 1 << 24, true}, kWeightBits, kBits, kKeepFloat}, {}, kWeights},
      {"BatchNormalization",
       {},
       {{k::kMomentum, 0.f, 1.f, true, true, "0 <= momentum < 1"}, {k::kEpsilon, 1e-12f, 1.f, false, true, "1e-12 <= epsilon <= 1"}},
       {{"gamma", true}, {"beta", true}, {"moving_mean", true}, {"moving_var", true}}},
      {"MaxPool2D", {{k::kWindowH, 1, 64, true}, {k::kWindowW, 1, 64, true}, kStrideH, kStrideW, kSame}, {}, {}},
      {"AveragePooling2D", {{k::kWindowH, 1, 64, true}, {k::kWindowW, 1, 64, true}, kStrideH, kStrideW, kSame, kBits}, {}, {}},
      {"GlobalAveragePooling2D", {kBits}, {}, {}},
      {"ZeroPadding2D",
       {{k::kPadTop, 0, 64, true}, {k::kPadBottom, 0, 64, true}, {k::kPadLeft, 0, 64, true}, {k::kPadRight, 0, 64, true}},
       {},
       {}},
      {"Flatten", {}, {}, {}},
      activation("ReLU", false),
      activation("Quantize", true),
      {"Dropout", {kTrainingOnly}, {{k::kRate, 0.f, 1.f, true, true, "0 <= rate < 1"}}, {}},
      {"GaussianNoise", {kTrainingOnly}, {{k::kStddev, 0.f, 1e6f, false, true, "0 <= stddev <= 1e6"}}, {}},
      {"Residual", {{k::kBodyRecords, 0, kMaxInt, true}, {k::kShortcutRecords, 0, kMaxInt, true}, kBits}, {}, {}},
  };
  return all;
}

const Schema* find(std::string_view kind) {
  for (const Schema& s : schemas())
    if (kind == s.kind) return &s;
  return nullptr;
}

template <typename Spec>
std::string names(const std::vector<Spec>& specs) {
  std::vector<std::string> out;
  for (const Spec& s : specs) {
    if constexpr (requires { s.key; }) out.emplace_back(s.key);
    else out.emplace_back(s.name);
  }
  return out.empty() ? "none" : fmt::format("{}", fmt::join(out, ", "));
}

}  // namespace

bool known_record_kind(std::string_view kind) { return find(kind) != nullptr; }

bool training_only_kind(std::string_view kind) { return kind == "Dropout" || kind == "GaussianNoise"; }

void check_record(const LayerRecord& r) {
  const auto fail = [&](const std::string& what) {
    throw FormatError(fmt::format("layer '{}' ({}): {}", shown(r.name), shown(r.kind), what));
  };
  const Schema* s = find(r.kind);
  if (!s) throw FormatError(fmt::format("layer '{}': unknown layer kind '{}'", shown(r.name), shown(r.kind)));
  for (size_t i = 0; i < r.ints.size(); ++i) {
    const auto& [key, value] = r.ints[i];
    for (size_t j = 0; j < i; ++j)
      if (r.ints[j].first == key) fail(fmt::format("attribute '{}' given twice", shown(key)));
    const IntSpec* spec = nullptr;
    for (const IntSpec& c : s->ints)
      if (key == c.key) spec = &c;
    if (!spec) {
      if (key == k::kTrainingOnly) fail("training_only (only Dropout and GaussianNoise, the identity at inference, take it)");
      fail(fmt::format("int attribute '{}' (a {} takes {})", shown(key), r.kind, names(s->ints)));
    }
    if (value < spec->lo || value > spec->hi) fail(fmt::format("{} = {} (expected {}..{})", key, value, spec->lo, spec->hi));
  }
  for (const IntSpec& c : s->ints) {
    bool present = false;
    for (const auto& [key, value] : r.ints) present = present || key == c.key;
    if (c.required && !present) fail(fmt::format("no int attribute '{}'", c.key));
  }
  for (size_t i = 0; i < r.floats.size(); ++i) {
    const auto& [key, value] = r.floats[i];
    for (size_t j = 0; j < i; ++j)
      if (r.floats[j].first == key) fail(fmt::format("attribute '{}' given twice", shown(key)));
    const FloatSpec* spec = nullptr;
    for (const FloatSpec& c : s->floats)
      if (key == c.key) spec = &c;
    if (!spec) fail(fmt::format("float attribute '{}' (a {} takes {})", shown(key), r.kind, names(s->floats)));
    if (!(value >= spec->lo && (spec->open_hi ? value < spec->hi : value <= spec->hi)))
      fail(fmt::format("{} = {} (expected {})", key, value, spec->expected));
  }
  for (const FloatSpec& c : s->floats) {
    bool present = false;
    for (const auto& [key, value] : r.floats) present = present || key == c.key;
    if (c.required && !present) fail(fmt::format("no float attribute '{}'", c.key));
  }
  for (size_t i = 0; i < r.tensors.size(); ++i) {
    const TensorRecord& t = r.tensors[i];
    for (size_t j = 0; j < i; ++j)
      if (r.tensors[j].name == t.name) fail(fmt::format("tensor '{}' given twice", shown(t.name)));
    bool known = false;
    for (const TensorSpec& c : s->tensors) known = known || t.name == c.name;
    if (!known) fail(fmt::format("tensor '{}' (a {} holds {})", shown(t.name), r.kind, names(s->tensors)));
  }
  for (const TensorSpec& c : s->tensors)
    if (c.required && !r.find_tensor(c.name)) fail(fmt::format("no tensor '{}'", c.name));
}

}  // namespace qnet::qbin
