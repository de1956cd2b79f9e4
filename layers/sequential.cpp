#include "layers/sequential.h"

#include <cctype>
#include <map>
#include <set>
#include <stdexcept>

#include <fmt/format.h>

#include "core/random.h"
#include "layers/container.h"

namespace qnet {

namespace {
// "MaxPool2D" -> "max_pool2d" (Keras' naming of unnamed layers).
std::string snake_case(const std::string& type) {
  std::string s;
  for (size_t i = 0; i < type.size(); ++i) {
    const char c = type[i];
    if (std::isupper(static_cast<unsigned char>(c))) {
      const bool prev_lower = i > 0 && std::islower(static_cast<unsigned char>(type[i - 1]));
      const bool next_lower = i + 1 < type.size() && std::islower(static_cast<unsigned char>(type[i + 1]));
      if (i > 0 && (prev_lower || (next_lower && std::isupper(static_cast<unsigned char>(type[i - 1]))))) s += '_';
      s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else {
      s += c;
    }
  }
  return s;
}

std::string with_thousands(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}
}  // namespace

std::vector<const Sequential*> Container::branches() const {
  std::vector<const Sequential*> out;
  for (Sequential* b : const_cast<Container*>(this)->branches()) out.push_back(b);
  return out;
}

void for_each_layer(Sequential& chain, const std::function<void(Module&)>& f) {
  for (size_t i = 0; i < chain.size(); ++i) {
    f(chain.layer(i));
    if (auto* c = dynamic_cast<Container*>(&chain.layer(i)))
      for (Sequential* branch : c->branches()) for_each_layer(*branch, f);
  }
}

void for_each_layer(const Sequential& chain, const std::function<void(const Module&)>& f) {
  for_each_layer(const_cast<Sequential&>(chain), [&](Module& m) { f(m); });
}

// Every layer in `layer` (itself, and inside a container) without a name, or whose name is taken
// in this model, gets the first free one of "conv2d", "conv2d_1", "conv2d_2", ... in order.
void Sequential::name_new(Module& layer) {
  if (!names_layers_) return;
  auto name = [&](Module& m) {
    if (!m.name().empty() && names_.insert(m.name()).second) return;
    const std::string base = snake_case(m.type_name());
    int& k = next_suffix_[base];
    std::string candidate = k == 0 ? base : fmt::format("{}_{}", base, k);
    while (names_.count(candidate)) candidate = fmt::format("{}_{}", base, ++k);
    ++k;
    m.set_name(candidate);
    names_.insert(candidate);
  };
  name(layer);
  if (auto* c = dynamic_cast<Container*>(&layer))
    for (Sequential* branch : c->branches()) for_each_layer(*branch, name);
}

Module& Sequential::add(std::unique_ptr<Module> layer) {
  name_new(*layer);  // first, so that a shape error names the layer
  const Shape out = layer->output_shape(output_);  // throws if the shapes do not chain
  layers_.push_back(std::move(layer));
  shapes_.push_back(out);
  output_ = out;
  return *layers_.back();
}

Module& Sequential::insert(size_t i, std::unique_ptr<Module> layer) {
  if (i > layers_.size()) throw std::out_of_range(fmt::format("Sequential::insert at {} of {} layers", i, layers_.size()));
  const Shape before = i == 0 ? input_shape_ : shapes_[i - 1];
  if (layer->output_shape(before) != before)
    throw std::invalid_argument(fmt::format("Sequential::insert: a {} changes the shape {}", layer->type_name(), shape_str(before)));
  name_new(*layer);
  shapes_.insert(shapes_.begin() + static_cast<std::ptrdiff_t>(i), before);
  return **layers_.insert(layers_.begin() + static_cast<std::ptrdiff_t>(i), std::move(layer));
}

void Sequential::transform(size_t i, const std::function<std::unique_ptr<Module>(std::unique_ptr<Module>)>& make) {
  const std::string name = layers_.at(i)->name();
  layers_[i] = make(std::move(layers_[i]));
  layers_[i]->set_name(name);
}

std::unique_ptr<Sequential> Sequential::clone_chain() const {
  auto copy = std::make_unique<Sequential>(input_shape_, names_layers_);
  static_cast<Module&>(*copy) = *this;
  copy->output_ = output_, copy->shapes_ = shapes_, copy->names_ = names_, copy->next_suffix_ = next_suffix_, copy->fusion_ = fusion_;
  for (const auto& l : layers_) {
    std::unique_ptr<Module> c = l->clone();
    if (!c) return nullptr;
    copy->layers_.push_back(std::move(c));
  }
  const auto copy_of = [&](const Module* original) -> Module* {
    for (size_t i = 0; i < layers_.size(); ++i)
      if (layers_[i].get() == original) return copy->layers_[i].get();
    return nullptr;
  };
  for (size_t i = 0; i < layers_.size(); ++i) copy->layers_[i]->link_clone(*layers_[i], copy_of);
  return copy;
}

std::unique_ptr<Module> Sequential::clone() const { return clone_chain(); }

Variable Sequential::forward(const Variable& x) {
  const Shape& s = x.shape();
  if (s.size() != input_shape_.size() + 1 || !std::equal(input_shape_.begin(), input_shape_.end(), s.begin() + 1))
    throw std::invalid_argument(fmt::format("model input {} (expected [N, {}])", shape_str(s), fmt::join(input_shape_, ", ")));
  Variable y = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (fusion_ && i + 2 < layers_.size() && fuses_with_max_pool(*layers_[i], *layers_[i + 1], *layers_[i + 2])) {
      // max_pool(act(conv)) == act(max_pool(conv)) for a monotonic act: pool first, in one op.
      ValueRange range;
      const auto& pool = dynamic_cast<const MaxPool2D&>(*layers_[i + 2]);
      auto& activation = dynamic_cast<PoolCommutingActivation&>(*layers_[i + 1]);
      const PooledActivation inside = activation.inside_pooled_op();
      const bool outside = inside.kind == PooledActivation::kNone;  // only then is the conv's range needed
      const Variable pooled =
          dynamic_cast<PooledForward&>(*layers_[i]).forward_max_pooled(y, pool.options(), outside ? &range : nullptr, inside);
      y = outside ? activation.activate_pooled(pooled, range) : pooled;
      i += 2;
      continue;
    }
    y = layers_[i]->forward(y);
  }
  return y;
}

Shape Sequential::output_shape(const Shape& input) const {
  if (input == input_shape_) return output_;
  Shape s = input;
  for (const auto& l : layers_) s = l->output_shape(s);
  return s;
}

std::vector<Variable*> Sequential::parameters() {
  std::vector<Variable*> all;
  for (auto& l : layers_)
    for (Variable* p : l->parameters()) all.push_back(p);
  return all;
}

void Sequential::set_training(bool training) {
  Module::set_training(training);
  for (auto& l : layers_) l->set_training(training);
}

int64_t Sequential::non_trainable_count() const {
  int64_t n = 0;
  for (const auto& l : layers_) n += l->non_trainable_count();
  return n;
}

namespace {

struct SummaryRow {
  std::string label, shape, params;
};

// One row per layer; a container's branches follow it, indented, under "body:" and "shortcut:"
// (an empty branch is the identity).
void summary_rows(Sequential& chain, const std::string& indent, std::vector<SummaryRow>& rows) {
  Shape s = chain.input_shape();
  for (size_t i = 0; i < chain.size(); ++i) {
    Module& layer = chain.layer(i);
    s = layer.output_shape(s);
    rows.push_back({fmt::format("{}{} ({})", indent, layer.name(), layer.type_name()), fmt::format("(None, {})", fmt::join(s, ", ")),
                    with_thousands(layer.parameter_count())});
    if (auto* c = dynamic_cast<Container*>(&layer)) {
      const std::vector<Sequential*> branches = c->branches();
      for (size_t b = 0; b < branches.size(); ++b) {
        const char* what = b == 0 ? "body" : "shortcut";
        if (branches[b]->size() == 0) {
          rows.push_back({fmt::format("{}  {}: identity", indent, what), "", ""});
          continue;
        }
        rows.push_back({fmt::format("{}  {}:", indent, what), "", ""});
        summary_rows(*branches[b], indent + "  ", rows);
      }
    }
  }
}

}  // namespace

std::string Sequential::summary() {
  std::vector<SummaryRow> rows;
  summary_rows(*this, "", rows);
  size_t width = 28;
  for (const SummaryRow& r : rows) width = std::max(width, r.label.size() + 2);
  const std::string rule(width + 37, '_'), double_rule(width + 37, '=');
  std::string out = fmt::format("Model: \"sequential\"\n{}\n {:<{}}{:<26}{}\n{}\n", rule, "Layer (type)", width, "Output Shape",
                                "Param #", double_rule);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::string line = fmt::format(" {:<{}} {:<26}{}", rows[i].label, width - 1, rows[i].shape, rows[i].params);
    line.erase(line.find_last_not_of(' ') + 1);  // branch headings have no shape or count
    out += line + "\n";
    out += (i + 1 < rows.size() && rows[i + 1].label.front() != ' ') ? "\n" : "";
  }
  const int64_t trainable = parameter_count(), fixed = non_trainable_count();
  out += fmt::format("{}\nTotal params: {}\nTrainable params: {}\nNon-trainable params: {}\n{}\n", double_rule,
                     with_thousands(trainable + fixed), with_thousands(trainable), with_thousands(fixed), rule);
  return out;
}

Sequential mnist_reference_model(Rng& rng) { return reference_model({28, 28, 1}, 10, rng); }

Sequential reference_model(const Shape& input, int64_t classes, Rng& rng) {
  if (input.size() != 3 || input[0] < 4 || input[1] < 4 || input[2] < 1 || classes < 2)
    throw std::invalid_argument(fmt::format("reference_model: input {} and {} classes (expected H, W >= 4 and at least 2 classes)",
                                            shape_str(input), classes));
  Sequential m(input);
  m.add(std::make_unique<Conv2D>(Conv2DOptions{.in_channels = input[2], .filters = 12, .kernel_h = 3, .kernel_w = 3, .conv = {}}, rng));
  m.add(std::make_unique<ReLU>());
  m.add(std::make_unique<MaxPool2D>(Pool2dOptions{.window_h = 2, .window_w = 2}));
  m.add(std::make_unique<Flatten>());
  m.add(std::make_unique<Dense>(DenseOptions{.in_features = (input[0] - 2) / 2 * ((input[1] - 2) / 2) * 12, .units = classes}, rng));
  return m;
}

bool fuses_with_max_pool(const Module& a, const Module& b, const Module& c) {
  const auto* conv = dynamic_cast<const PooledForward*>(&a);
  return conv && conv->can_forward_max_pooled() && dynamic_cast<const PoolCommutingActivation*>(&b) &&
         dynamic_cast<const MaxPool2D*>(&c);
}

}  // namespace qnet
