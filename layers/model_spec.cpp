#include "layers/model_spec.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "core/random.h"
#include "layers/layer_kind.h"

namespace qnet {

namespace {

using Token = SpecToken;
using Arg = LayerSpec::Arg;

[[noreturn]] void fail(const Token& t, const std::string& why) { spec_fail(t, why); }

bool word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'; }

// Splits the spec into layers, recursively for chains inside arguments; only the layout is
// checked here (names, brackets, commas).
class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  std::vector<LayerSpec> spec() {
    std::vector<LayerSpec> layers;
    for (skip(true); i_ < s_.size(); skip(true)) layers.push_back(layer());
    if (layers.empty())
      throw SpecError("an empty model spec (expected layers such as 'conv2d(12, 3, relu) maxpool2d(2) flatten dense(10)')");
    return layers;
  }

 private:
  static constexpr int kMaxDepth = 32;  // residual blocks nested deeper are refused

  void skip(bool commas) {
    while (i_ < s_.size()) {
      if (s_[i_] == '#') {
        while (i_ < s_.size() && s_[i_] != '\n') ++i_;
      } else if (std::isspace(static_cast<unsigned char>(s_[i_])) || (commas && s_[i_] == ',')) {
        ++i_;
      } else {
        break;
      }
    }
  }
  bool at(char c) const { return i_ < s_.size() && s_[i_] == c; }
  // The character at i_ (a whole UTF-8 sequence, not one of its bytes), or "end".
  Token here() const {
    if (i_ >= s_.size()) return {"end", i_ + 1};
    size_t n = 1;
    while (i_ + n < s_.size() && n < 4 && (static_cast<unsigned char>(s_[i_ + n]) & 0xC0) == 0x80) ++n;
    return {s_.substr(i_, n), i_ + 1};
  }
  Token word(const char* what) {
    Token t{"", i_ + 1};
    while (i_ < s_.size() && word_char(s_[i_])) t.text += s_[i_++];
    if (t.text.empty()) fail(here(), fmt::format("expected {}", what));
    return t;
  }

  // NAME [ '(' arg { ',' arg } ')' ]
  LayerSpec layer() {
    LayerSpec l{word("a layer name"), {}};
    skip(false);
    if (!at('(')) return l;
    if (++depth_ > kMaxDepth) fail(l.name, fmt::format("layers nested more than {} deep", kMaxDepth));
    ++i_;
    for (;;) {
      skip(false);
      LayerSpec::Arg a = value("a value");
      skip(false);
      if (at('=')) {
        if (!a.chain.empty()) fail(a.value, "expected a key before '='");
        ++i_, skip(false);
        const Token key = a.value;
        a = value("a value after '='");
        a.key = key;
      }
      l.args.push_back(std::move(a));
      skip(false);
      if (at(',')) {
        ++i_;
        continue;
      }
      if (at(')')) {
        ++i_;
        break;
      }
      fail(here(), fmt::format("expected ',' or ')' in {}(...)", l.name.text));
    }
    --depth_;
    return l;
  }

  // A word, or layers separated by spaces up to the next ',', ')' or '=' (a chain).
  LayerSpec::Arg value(const char* what) {
    LayerSpec::Arg a;
    const size_t begin = i_;
    a.value = word(what);
    skip(false);
    if (!at('(') && (i_ >= s_.size() || at(',') || at(')') || at('='))) return a;  // a bare word
    i_ = begin;
    while (i_ < s_.size() && !at(',') && !at(')') && !at('=')) {
      a.chain.push_back(layer());
      skip(false);
    }
    return a;
  }

  const std::string& s_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

Sequential model_from_spec(const std::string& spec, const Shape& input, Rng& rng) {
  const std::string bom = "\xEF\xBB\xBF";  // a UTF-8 byte order mark, as some editors start a file
  const std::string text = spec.rfind(bom, 0) == 0 ? spec.substr(bom.size()) : spec;
  return model_from_layer_specs(Parser(text).spec(), input, rng, true);
}

Sequential model_from_layer_specs(const std::vector<LayerSpec>& layers, const Shape& input, Rng& rng, bool names_layers) {
  Sequential model(input, names_layers);
  Shape shape = input;
  int64_t parameters = 0;
  for (const LayerSpec& l : layers) {
    const LayerKind* kind = find_layer_kind_in_specs(l.name.text);
    if (!kind) {
      std::vector<std::string> names;
      for (const LayerKind* k : layer_kinds()) names.push_back(k->spec_name);
      const std::string last = names.back();
      names.pop_back();
      fail(l.name, fmt::format("unknown layer (expected {} or {})", fmt::join(names, ", "), last));
    }
    std::vector<std::unique_ptr<Module>> made;
    try {  // a layer refuses what it cannot hold (too many parameters) before allocating it
      const bool quantized = takes_bits(kind->role);
      std::vector<std::string> keys = kind->keys;
      if (quantized) keys.push_back("bits");  // its own bit width in QAT and PTQ (Module::quant_bits)
      if (kind->role == Int8Role::kWeights) keys.push_back("float");  // kept in float by QAT and PTQ (Module::keep_float)
      const SpecArgs args(l, kind->positional, keys);
      made = kind->from_spec(args, shape, rng);
      if (const SpecToken* bits = quantized ? args.get("bits") : nullptr)
        made.front()->set_quant_bits(static_cast<int>(args.integer(*bits, 2, 8, "bits (the layer's weight and activation bit width)")));
      if (kind->role == Int8Role::kWeights) made.front()->set_keep_float(args.flag("float", false));
    } catch (const std::invalid_argument& e) {
      if (dynamic_cast<const SpecError*>(&e)) throw;
      fail(l.name, e.what());
    }
    for (auto& m : made) {
      try {
        shape = m->output_shape(shape);
        if (std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 1; }))
          throw std::invalid_argument(fmt::format("its output would be {}", shape_str(shape)));
        parameters += m->parameter_count();
        model.add(std::move(m));
      } catch (const std::invalid_argument& e) {
        if (dynamic_cast<const SpecError*>(&e)) throw;
        fail(l.name, fmt::format("does not fit its input: {}", e.what()));
      }
      if (parameters > kMaxParameters)
        fail(l.name, fmt::format("the model holds {} parameters up to here ({:.1f} GB), more than a model file holds ({} parameters, "
                                 "1 GiB): use fewer units or filters", parameters, static_cast<double>(parameters) * 4e-9, kMaxParameters));
    }
  }
  return model;
}

std::string reference_spec(int64_t classes) { return fmt::format("conv2d(12, 3, relu) maxpool2d(2) flatten dense({})", classes); }

}  // namespace qnet
