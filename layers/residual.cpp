// Residual: the container kind (layers/residual.h), its spec residual(BODY[, shortcut=CHAIN]) and
// its record: kind and name, then (layers/model_file.cpp) the body's records and the shortcut's,
// counted by the ints body_records and shortcut_records.
#include "layers/residual.h"

#include <stdexcept>

#include <fmt/format.h>

#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "layers/model_spec.h"

namespace qnet {

namespace key = qbin::key;

Residual::Residual(Sequential body, Sequential shortcut) : body_(std::move(body)), shortcut_(std::move(shortcut)) {
  const Shape& in = body_.input_shape();
  if (shortcut_.input_shape() != in)
    throw std::invalid_argument(fmt::format("Residual: the body takes {} and the shortcut {} (expected the same input)", shape_str(in),
                                            shape_str(shortcut_.input_shape())));
  const Shape a = body_.output_shape(in), b = shortcut_.output_shape(in);
  if (a != b)
    throw std::invalid_argument(fmt::format("Residual: the body gives {} and the {} gives {} (expected the same shape{})", shape_str(a),
                                            shortcut_.size() ? "shortcut" : "identity shortcut", shape_str(b),
                                            shortcut_.size() ? "" : fmt::format(": give a shortcut such as shortcut=conv2d({}, 1{}) batchnorm",
                                                                                a.back(), a[0] != b[0] ? fmt::format(", stride={}", b[0] / a[0]) : "")));
}

std::unique_ptr<Module> Residual::clone() const {
  std::unique_ptr<Sequential> body = body_.clone_chain(), shortcut = shortcut_.clone_chain();
  if (!body || !shortcut) return nullptr;
  auto copy = std::make_unique<Residual>(std::move(*body), std::move(*shortcut));
  static_cast<Module&>(*copy) = *this;
  return copy;
}

Variable Residual::forward(const Variable& x) { return add(body_.forward(x), shortcut_.forward(x)); }

Shape Residual::output_shape(const Shape& input) const {
  if (input != body_.input_shape())
    throw std::invalid_argument(fmt::format("Residual '{}': input {} (expected {})", name_, shape_str(input), shape_str(body_.input_shape())));
  return body_.output_shape(input);
}

std::vector<Variable*> Residual::parameters() {
  std::vector<Variable*> all = body_.parameters();
  for (Variable* p : shortcut_.parameters()) all.push_back(p);
  return all;
}

void Residual::set_training(bool training) {
  Module::set_training(training);
  body_.set_training(training);
  shortcut_.set_training(training);
}

int64_t Residual::non_trainable_count() const { return body_.non_trainable_count() + shortcut_.non_trainable_count(); }

const LayerKind& residual_kind() {
  static const LayerKind kind{
      .type = "Residual",
      .spec_name = "residual",
      .positional = {"body"},
      .keys = {"body", "shortcut"},
      .role = Int8Role::kRequantize,
      .from_spec =
          [](const SpecArgs& a, const Shape& input, Rng& rng) {
            if (input.size() != 3) a.fail("residual needs an image input (it comes after flatten or dense here)");
            const std::vector<LayerSpec>* body_spec = a.chain("body");
            if (!body_spec) a.fail("residual needs its body, e.g. residual(conv2d(16, 3, padding=same) batchnorm relu conv2d(16, 3, padding=same) batchnorm)");
            Sequential body = model_from_layer_specs(*body_spec, input, rng, false);
            Sequential shortcut(input, false);
            if (const std::vector<LayerSpec>* s = a.chain("shortcut"); s && !(s->size() == 1 && s->front().args.empty() &&
                                                                                lower_case(s->front().name.text) == "identity"))
              shortcut = model_from_layer_specs(*s, input, rng, false);
            std::vector<std::unique_ptr<Module>> made;
            try {
              made.push_back(std::make_unique<Residual>(std::move(body), std::move(shortcut)));
            } catch (const std::invalid_argument& e) {
              a.fail(std::string(e.what()).substr(std::string("Residual: ").size()));
            }
            return made;
          },
      .from_record = nullptr,
      .branch_counts = {key::kBodyRecords, key::kShortcutRecords},
      .from_branches =
          [](const qbin::LayerRecord& r, std::vector<Sequential> branches) -> std::unique_ptr<Module> {
            if (branches.size() != 2) throw qbin::FormatError(fmt::format("layer '{}' (Residual): {} branches (expected 2)", qbin::shown(r.name), branches.size()));
            std::unique_ptr<Residual> block;
            try {
              block = std::make_unique<Residual>(std::move(branches[0]), std::move(branches[1]));
            } catch (const std::invalid_argument& e) {
              throw qbin::FormatError(fmt::format("layer '{}': {}", qbin::shown(r.name), e.what()));
            }
            block->set_name(r.name);
            return block;
          },
  };
  return kind;
}

}  // namespace qnet
