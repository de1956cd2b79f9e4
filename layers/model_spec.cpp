#include "layers/model_spec.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "core/random.h"

namespace qnet {

namespace {

struct Token {
  std::string text;
  size_t at = 0;  // 1-based character position in the spec
};

struct Arg {
  Token key;  // empty text: positional
  Token value;
};

struct LayerSpec {
  Token name;
  std::vector<Arg> args;
};

[[noreturn]] void fail(const Token& t, const std::string& why) {
  throw SpecError(fmt::format("at character {} ('{}'): {}", t.at, t.text, why));
}

bool word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'; }

// Splits the spec into layers; only the layout is checked here (names, brackets, commas).
std::vector<LayerSpec> parse(const std::string& s) {
  std::vector<LayerSpec> layers;
  size_t i = 0;
  auto skip = [&](bool commas) {
    while (i < s.size()) {
      if (s[i] == '#') {
        while (i < s.size() && s[i] != '\n') ++i;
      } else if (std::isspace(static_cast<unsigned char>(s[i])) || (commas && s[i] == ',')) {
        ++i;
      } else {
        break;
      }
    }
  };
  auto word = [&](const char* what) {
    Token t{"", i + 1};
    while (i < s.size() && word_char(s[i])) t.text += s[i++];
    if (t.text.empty()) fail({std::string(1, i < s.size() ? s[i] : ' '), i + 1}, fmt::format("expected {}", what));
    return t;
  };
  for (skip(true); i < s.size(); skip(true)) {
    LayerSpec l{word("a layer name"), {}};
    skip(false);
    if (i < s.size() && s[i] == '(') {
      ++i;
      for (;;) {
        skip(false);
        Arg a{{}, word("a value")};
        skip(false);
        if (i < s.size() && s[i] == '=') {
          ++i, skip(false);
          a.key = a.value, a.value = word("a value after '='");
          skip(false);
        }
        l.args.push_back(a);
        if (i < s.size() && s[i] == ',') {
          ++i;
          continue;
        }
        if (i < s.size() && s[i] == ')') {
          ++i;
          break;
        }
        fail({i < s.size() ? std::string(1, s[i]) : "end", i + 1}, fmt::format("expected ',' or ')' in {}(...)", l.name.text));
      }
    }
    layers.push_back(std::move(l));
  }
  if (layers.empty()) throw SpecError("an empty model spec (expected layers such as 'conv2d(12, 3, relu) maxpool2d(2) flatten dense(10)')");
  return layers;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int64_t integer(const Token& t, int64_t lo, int64_t hi, const char* what) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
  if (ec != std::errc() || end != t.text.data() + t.text.size() || v < lo || v > hi)
    fail(t, fmt::format("{} (expected an integer in {}..{})", what, lo, hi));
  return v;
}

// "3" or "3x5" -> {3, 3} or {3, 5}.
std::pair<int, int> size2(const Token& t, int lo, int hi, const char* what) {
  const size_t x = lower(t.text).find('x');
  if (x == std::string::npos) {
    const int v = static_cast<int>(integer(t, lo, hi, what));
    return {v, v};
  }
  return {static_cast<int>(integer({t.text.substr(0, x), t.at}, lo, hi, what)),
          static_cast<int>(integer({t.text.substr(x + 1), t.at + x + 1}, lo, hi, what))};
}

// The layer's arguments by name: positional ones take `positional` names in order; `relu` alone
// means activation=relu.
struct Args {
  const LayerSpec& layer;
  std::vector<std::pair<std::string, Token>> named;

  Args(const LayerSpec& l, const std::vector<std::string>& positional, const std::vector<std::string>& keys) : layer(l) {
    size_t next = 0;
    for (const Arg& a : l.args) {
      std::string key = lower(a.key.text);
      if (key.empty() && lower(a.value.text) == "relu" && std::find(keys.begin(), keys.end(), "activation") != keys.end()) {
        key = "activation";
      } else if (key.empty()) {
        if (next >= positional.size())
          fail(a.value, fmt::format("{} takes {} positional argument{} ({})", l.name.text, positional.size(), positional.size() == 1 ? "" : "s",
                                    fmt::join(positional, ", ")));
        key = positional[next++];
      } else if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
        fail(a.key, fmt::format("{} has no argument '{}' (expected {})", l.name.text, a.key.text, fmt::join(keys, ", ")));
      }
      for (const auto& [k, v] : named)
        if (k == key) fail(a.value, fmt::format("{} given twice", key));
      named.emplace_back(key, a.value);
    }
  }
  const Token* get(const std::string& key) const {
    for (const auto& [k, v] : named)
      if (k == key) return &v;
    return nullptr;
  }
  const Token& need(const std::string& key) const {
    if (const Token* t = get(key)) return *t;
    fail(layer.name, fmt::format("{} needs '{}'", layer.name.text, key));
  }
  bool relu() const {
    const Token* t = get("activation");
    if (!t) return false;
    const std::string v = lower(t->text);
    if (v != "relu" && v != "none") fail(*t, "activation (expected relu or none)");
    return v == "relu";
  }
  Padding padding() const {
    const Token* t = get("padding");
    if (!t) return Padding::kValid;
    const std::string v = lower(t->text);
    if (v != "valid" && v != "same") fail(*t, "padding (expected valid or same)");
    return v == "same" ? Padding::kSame : Padding::kValid;
  }
};

}  // namespace

Sequential model_from_spec(const std::string& spec, const Shape& input, Rng& rng) {
  Sequential model(input);
  Shape shape = input;
  for (const LayerSpec& l : parse(spec)) {
    const std::string kind = lower(l.name.text);
    std::vector<std::unique_ptr<Module>> made;
    if (kind == "conv2d") {
      const Args a(l, {"filters", "kernel"}, {"filters", "kernel", "stride", "padding", "activation"});
      if (shape.size() != 3) fail(l.name, "conv2d needs an image input (it comes after flatten or dense here)");
      const auto [kh, kw] = size2(a.need("kernel"), 1, 64, "kernel size");
      const auto [sh, sw] = a.get("stride") ? size2(*a.get("stride"), 1, 64, "stride") : std::pair{1, 1};
      made.push_back(std::make_unique<Conv2D>(
          Conv2DOptions{.in_channels = shape[2], .filters = integer(a.need("filters"), 1, 4096, "filters"), .kernel_h = kh, .kernel_w = kw,
                        .conv = {.stride_h = sh, .stride_w = sw, .padding = a.padding()}},
          rng));
      if (a.relu()) made.push_back(std::make_unique<ReLU>());
    } else if (kind == "maxpool2d") {
      const Args a(l, {"size"}, {"size", "stride", "padding"});
      if (shape.size() != 3) fail(l.name, "maxpool2d needs an image input (it comes after flatten or dense here)");
      const auto [ph, pw] = size2(a.need("size"), 1, 64, "pool size");
      const auto [sh, sw] = a.get("stride") ? size2(*a.get("stride"), 1, 64, "stride") : std::pair{ph, pw};
      made.push_back(std::make_unique<MaxPool2D>(Pool2dOptions{ph, pw, sh, sw, a.padding()}));
    } else if (kind == "relu" || kind == "flatten") {
      if (!l.args.empty()) fail(l.args[0].value, fmt::format("{} takes no arguments", l.name.text));
      if (kind == "relu") made.push_back(std::make_unique<ReLU>());
      else made.push_back(std::make_unique<Flatten>());
    } else if (kind == "dropout") {
      const Args a(l, {"rate"}, {"rate"});
      const Token& t = a.need("rate");
      double rate = -1;
      const auto [end, ec] = std::from_chars(t.text.data(), t.text.data() + t.text.size(), rate);
      if (ec != std::errc() || end != t.text.data() + t.text.size() || !(rate >= 0 && rate < 1)) fail(t, "dropout rate (expected 0 <= rate < 1)");
      made.push_back(std::make_unique<Dropout>(static_cast<float>(rate), rng.next_u64()));
    } else if (kind == "dense") {
      const Args a(l, {"units"}, {"units", "activation"});
      if (shape.size() != 1) fail(l.name, fmt::format("dense needs a flat input, not {} (put flatten before it)", shape_str(shape)));
      made.push_back(std::make_unique<Dense>(DenseOptions{.in_features = shape[0], .units = integer(a.need("units"), 1, 65536, "units")}, rng));
      if (a.relu()) made.push_back(std::make_unique<ReLU>());
    } else {
      fail(l.name, "unknown layer (expected conv2d, maxpool2d, relu, flatten, dropout or dense)");
    }
    for (auto& m : made) {
      try {
        shape = m->output_shape(shape);
        if (std::find(shape.begin(), shape.end(), int64_t{0}) != shape.end() || std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 1; }))
          throw std::invalid_argument(fmt::format("its output would be {}", shape_str(shape)));
        model.add(std::move(m));
      } catch (const std::invalid_argument& e) {
        if (dynamic_cast<const SpecError*>(&e)) throw;
        fail(l.name, fmt::format("does not fit its input: {}", e.what()));
      }
    }
  }
  return model;
}

std::string reference_spec(int64_t classes) { return fmt::format("conv2d(12, 3, relu) maxpool2d(2) flatten dense({})", classes); }

}  // namespace qnet
