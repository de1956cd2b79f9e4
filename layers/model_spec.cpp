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

}  // namespace

Sequential model_from_spec(const std::string& spec, const Shape& input, Rng& rng) {
  Sequential model(input);
  Shape shape = input;
  for (const LayerSpec& l : parse(spec)) {
    const LayerKind* kind = find_layer_kind_in_specs(l.name.text);
    if (!kind) {
      std::vector<std::string> names;
      for (const LayerKind* k : layer_kinds()) names.push_back(k->spec_name);
      const std::string last = names.back();
      names.pop_back();
      fail(l.name, fmt::format("unknown layer (expected {} or {})", fmt::join(names, ", "), last));
    }
    std::vector<std::unique_ptr<Module>> made = kind->from_spec(SpecArgs(l, kind->positional, kind->keys), shape, rng);
    for (auto& m : made) {
      try {
        shape = m->output_shape(shape);
        if (std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 1; }))
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
