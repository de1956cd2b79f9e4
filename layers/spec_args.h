// The arguments of one layer in a model spec (layers/model_spec.h), checked and read by name;
// each layer kind's from_spec reads its own (layers/layer_kind.h). Every mistake is a SpecError
// pointing at the offending token: "at character 14 ('3x'): kernel size (expected ...)".
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/ops.h"

namespace qnet {

class SpecError : public std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct SpecToken {
  std::string text;
  size_t at = 0;  // 1-based character position in the spec
};

[[noreturn]] void spec_fail(const SpecToken& t, const std::string& why);

// One layer as written: its name and its arguments, positional (empty key) or key=value. A value
// is a word ("3", "3x5", "same", "0.5") or a chain of layers separated by spaces (a residual
// block's branches: "conv2d(16, 3) batchnorm relu"); one bare word is both.
struct LayerSpec {
  struct Arg {
    SpecToken key;
    SpecToken value;               // the word, or the chain's first layer name
    std::vector<LayerSpec> chain;  // the layers, if the value is not a single bare word
  };
  SpecToken name;
  std::vector<Arg> args;
};

class SpecArgs {
 public:
  // Positional arguments take `positional` names in order; `keys` are all the names the kind
  // takes. A lone `relu` means activation=relu when the kind takes `activation`.
  SpecArgs(const LayerSpec& layer, const std::vector<std::string>& positional, const std::vector<std::string>& keys);

  const SpecToken& layer() const { return layer_.name; }
  [[noreturn]] void fail(const std::string& why) const { spec_fail(layer_.name, why); }
  // A word argument (a SpecError if it is a chain of layers); nullptr if absent.
  const SpecToken* get(const std::string& key) const;
  const SpecToken& need(const std::string& key) const;  // a SpecError if absent
  // A chain-of-layers argument (a single bare word is a one-layer chain); nullptr if absent.
  const std::vector<LayerSpec>* chain(const std::string& key) const;

  int64_t integer(const SpecToken& t, int64_t lo, int64_t hi, const char* what) const;
  std::pair<int, int> size2(const SpecToken& t, int lo, int hi, const char* what) const;  // "3" or "3x5"
  // A number in [lo, hi); otherwise `why` (what was expected) at the token.
  double real(const SpecToken& t, double lo, double hi, const char* why) const;
  bool relu() const;         // activation=relu|none (default none)
  Padding padding() const;   // padding=valid|same (default valid)
  bool flag(const std::string& key, bool fallback) const;  // key=true|false

 private:
  const LayerSpec& layer_;
  std::vector<std::pair<std::string, const LayerSpec::Arg*>> named_;
  mutable std::vector<std::vector<LayerSpec>> words_as_chains_;  // storage for chain() of a bare word
};

std::string lower_case(std::string s);

}  // namespace qnet
