#include <stdexcept>

#include <fmt/format.h>

#include "core/random.h"
#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "layers/layers.h"

namespace qnet {

namespace key = qbin::key;

Dense::Dense(const DenseOptions& o, Rng& rng) : options_(o) {
  if (o.in_features < 1 || o.units < 1)
    throw std::invalid_argument(fmt::format("Dense: {} inputs, {} units (expected both >= 1)", o.in_features, o.units));
  check_parameters("Dense", o.in_features * o.units + o.units);
  kernel_ = Variable(glorot_uniform({o.in_features, o.units}, o.in_features, o.units, rng), true);
  if (o.use_bias) bias_ = Variable(Tensor::zeros({o.units}), true);
}

Variable Dense::forward(const Variable& x) {
  Variable y = matmul(x, kernel_);
  return bias_.defined() ? bias_add(y, bias_) : y;
}

Shape Dense::output_shape(const Shape& in) const {
  if (in.size() != 1 || in[0] != options_.in_features)
    throw std::invalid_argument(
        fmt::format("Dense '{}': input {} (expected [{}])", name_, shape_str(in), options_.in_features));
  return {options_.units};
}

std::unique_ptr<Module> Dense::clone() const {
  auto copy = std::make_unique<Dense>(*this);
  copy->kernel_ = deep_copy(kernel_), copy->bias_ = deep_copy(bias_);
  return copy;
}

std::vector<Variable*> Dense::parameters() {
  if (bias_.defined()) return {&kernel_, &bias_};
  return {&kernel_};
}

qbin::LayerRecord Dense::to_record() const {
  qbin::LayerRecord r = bare_record(*this);
  r.ints = {{key::kUnits, static_cast<int32_t>(options_.units)}, {key::kInFeatures, static_cast<int32_t>(options_.in_features)}};
  r.tensors.push_back(qbin::f32_tensor("kernel", kernel_.value()));
  if (bias_.defined()) r.tensors.push_back(qbin::f32_tensor("bias", bias_.value()));
  return r;
}

std::unique_ptr<Dense> Dense::from_record(const qbin::LayerRecord& r) {
  std::unique_ptr<Dense> d(new Dense());
  auto& o = d->options_;
  o.units = r.get_int(key::kUnits);
  o.in_features = r.get_int(key::kInFeatures);
  if (o.units < 1 || o.in_features < 1)
    throw qbin::FormatError(fmt::format("layer '{}' (Dense): units {} in_features {} (expected >= 1)", qbin::shown(r.name), o.units, o.in_features));
  const qbin::TensorRecord& k = r.tensor("kernel");
  if (k.shape != Shape{o.in_features, o.units})
    throw qbin::FormatError(fmt::format("layer '{}' (Dense): kernel {} (expected [{}, {}])", qbin::shown(r.name), shape_str(k.shape),
                                        o.in_features, o.units));
  d->kernel_ = Variable(qbin::to_f32(k), true);
  d->bias_ = bias_from_record(r, o.units);
  o.use_bias = d->bias_.defined();
  d->set_name(r.name);
  return d;
}

const LayerKind& dense_kind() {
  static const LayerKind kind{
      .type = "Dense",
      .spec_name = "dense",
      .positional = {"units"},
      .keys = {key::kUnits, "activation", "use_bias"},
      .role = Int8Role::kWeights,
      .from_spec =
          [](const SpecArgs& a, const Shape& input, Rng& rng) {
            if (input.size() != 1) a.fail(fmt::format("dense needs a flat input, not {} (put flatten before it)", shape_str(input)));
            std::vector<std::unique_ptr<Module>> made;
            made.push_back(std::make_unique<Dense>(
                DenseOptions{.in_features = input[0], .units = a.integer(a.need("units"), 1, 65536, "units"), .use_bias = a.flag("use_bias", true)},
                rng));
            if (a.relu()) made.push_back(std::make_unique<ReLU>());
            return made;
          },
      .from_record = [](const qbin::LayerRecord& r) -> std::unique_ptr<Module> { return Dense::from_record(r); },
      .kernel = [](Module& m) -> Variable& { return dynamic_cast<Dense&>(m).kernel(); },
      .bias = [](Module& m) -> Variable& { return dynamic_cast<Dense&>(m).bias(); },
  };
  return kind;
}

}  // namespace qnet
