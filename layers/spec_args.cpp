#include "layers/spec_args.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>

#include "io/qbin.h"

namespace qnet {

// Tokens are quoted as file names are (qbin::shown): a NUL, an escape or a byte that is not
// printable ASCII reaches the message as \xNN, never raw.
void spec_fail(const SpecToken& t, const std::string& why) {
  throw SpecError(fmt::format("at character {} ('{}'): {}", t.at, qbin::shown(t.text), why));
}

std::string lower_case(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

SpecArgs::SpecArgs(const LayerSpec& l, const std::vector<std::string>& positional, const std::vector<std::string>& keys) : layer_(l) {
  size_t next = 0;
  for (const LayerSpec::Arg& a : l.args) {
    std::string key = lower_case(a.key.text);
    if (key.empty() && lower_case(a.value.text) == "relu" && std::find(keys.begin(), keys.end(), "activation") != keys.end()) {
      key = "activation";
    } else if (key.empty()) {
      if (next >= positional.size()) {
        if (positional.empty() && keys.empty()) spec_fail(a.value, fmt::format("{} takes no arguments", l.name.text));
        if (positional.empty())
          spec_fail(a.value, fmt::format("{} takes only named arguments ({}=)", l.name.text, fmt::join(keys, "=, ")));
        spec_fail(a.value, fmt::format("{} takes {} positional argument{} ({})", l.name.text, positional.size(), positional.size() == 1 ? "" : "s",
                                       fmt::join(positional, ", ")));
      }
      key = positional[next++];
    } else if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      spec_fail(a.key, keys.empty() ? fmt::format("{} takes no arguments", l.name.text)
                                    : fmt::format("{} has no argument '{}' (expected {})", l.name.text, a.key.text, fmt::join(keys, ", ")));
    }
    for (const auto& [k, v] : named_)
      if (k == key) spec_fail(a.value, fmt::format("{} given twice", key));
    named_.emplace_back(key, &a);
  }
}

const SpecToken* SpecArgs::get(const std::string& key) const {
  for (const auto& [k, v] : named_)
    if (k == key) {
      if (!v->chain.empty()) spec_fail(v->value, fmt::format("{} takes a value here, not layers", key));
      return &v->value;
    }
  return nullptr;
}

const std::vector<LayerSpec>* SpecArgs::chain(const std::string& key) const {
  for (const auto& [k, v] : named_)
    if (k == key) {
      if (!v->chain.empty()) return &v->chain;
      words_as_chains_.reserve(named_.size());  // no reallocation: earlier results stay valid
      words_as_chains_.push_back({LayerSpec{v->value, {}}});
      return &words_as_chains_.back();
    }
  return nullptr;
}

bool SpecArgs::flag(const std::string& key, bool fallback) const {
  const SpecToken* t = get(key);
  if (!t) return fallback;
  const std::string v = lower_case(t->text);
  if (v != "true" && v != "false") spec_fail(*t, fmt::format("{} (expected true or false)", key));
  return v == "true";
}

const SpecToken& SpecArgs::need(const std::string& key) const {
  if (const SpecToken* t = get(key)) return *t;
  fail(fmt::format("{} needs '{}'", layer_.name.text, key));
}

int64_t SpecArgs::integer(const SpecToken& t, int64_t lo, int64_t hi, const char* what) const {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
  if (ec != std::errc() || end != t.text.data() + t.text.size() || v < lo || v > hi)
    spec_fail(t, fmt::format("{} (expected an integer in {}..{})", what, lo, hi));
  return v;
}

std::pair<int, int> SpecArgs::size2(const SpecToken& t, int lo, int hi, const char* what) const {
  const size_t x = lower_case(t.text).find('x');
  if (x == std::string::npos) {
    const int v = static_cast<int>(integer(t, lo, hi, what));
    return {v, v};
  }
  return {static_cast<int>(integer({t.text.substr(0, x), t.at}, lo, hi, what)),
          static_cast<int>(integer({t.text.substr(x + 1), t.at + x + 1}, lo, hi, what))};
}

double SpecArgs::real(const SpecToken& t, double lo, double hi, const char* what) const {
  double v = -1;
  const auto [end, ec] = std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
  if (ec != std::errc() || end != t.text.data() + t.text.size() || !(v >= lo && v < hi))
    spec_fail(t, what);
  return v;
}

bool SpecArgs::relu() const {
  const SpecToken* t = get("activation");
  if (!t) return false;
  const std::string v = lower_case(t->text);
  if (v != "relu" && v != "none") spec_fail(*t, "activation (expected relu or none)");
  return v == "relu";
}

Padding SpecArgs::padding() const {
  const SpecToken* t = get("padding");
  if (!t) return Padding::kValid;
  const std::string v = lower_case(t->text);
  if (v != "valid" && v != "same") spec_fail(*t, "padding (expected valid or same)");
  return v == "same" ? Padding::kSame : Padding::kValid;
}

}  // namespace qnet
