// BatchNormalization: the layer (layers/layers.h), its spec batchnorm([momentum=M][, epsilon=E])
// and its record (floats momentum, epsilon; tensors gamma, beta, moving_mean, moving_var).
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "layers/layers.h"

namespace qnet {

namespace key = qbin::key;

namespace {
bool options_ok(const BatchNormOptions& o) {
  return o.channels >= 1 && o.momentum >= 0.f && o.momentum < 1.f && o.epsilon >= 1e-12f && o.epsilon <= 1.f;
}
}  // namespace

BatchNormalization::BatchNormalization(const BatchNormOptions& o) : options_(o) {
  if (!options_ok(o))
    throw std::invalid_argument(fmt::format("BatchNormalization: {} channels, momentum {}, epsilon {} (expected channels >= 1, "
                                            "0 <= momentum < 1, 1e-12 <= epsilon <= 1)", o.channels, o.momentum, o.epsilon));
  gamma_ = Variable(Tensor::full({o.channels}, 1.f), true);
  beta_ = Variable(Tensor::zeros({o.channels}), true);
  moving_ = {Tensor::zeros({o.channels}), Tensor::full({o.channels}, 1.f), o.momentum};
}

std::unique_ptr<Module> BatchNormalization::clone() const {
  auto copy = std::make_unique<BatchNormalization>(*this);
  copy->gamma_ = deep_copy(gamma_), copy->beta_ = deep_copy(beta_);
  copy->moving_.mean = moving_.mean.clone(), copy->moving_.var = moving_.var.clone();
  return copy;
}

Variable BatchNormalization::forward(const Variable& x) {
  if (training_) return batch_norm_train(x, gamma_, beta_, options_.epsilon, &moving_);
  return batch_norm_fixed(x, gamma_, beta_, moving_.mean, moving_.var, options_.epsilon);
}

Shape BatchNormalization::output_shape(const Shape& in) const {
  if (in.empty() || in.back() != options_.channels)
    throw std::invalid_argument(fmt::format("BatchNormalization '{}': input {} (expected {} channels on the last axis)", name_, shape_str(in),
                                            options_.channels));
  return in;
}

qbin::LayerRecord BatchNormalization::to_record() const {
  qbin::LayerRecord r = bare_record(*this);
  r.floats = {{key::kMomentum, options_.momentum}, {key::kEpsilon, options_.epsilon}};
  r.tensors = {qbin::f32_tensor("gamma", gamma_.value()), qbin::f32_tensor("beta", beta_.value()),
               qbin::f32_tensor("moving_mean", moving_.mean), qbin::f32_tensor("moving_var", moving_.var)};
  return r;
}

std::unique_ptr<BatchNormalization> BatchNormalization::from_record(const qbin::LayerRecord& r) {
  const qbin::TensorRecord& gamma = r.tensor("gamma");
  const BatchNormOptions o{gamma.shape.size() == 1 ? gamma.shape[0] : 0, r.get_float(key::kMomentum), r.get_float(key::kEpsilon)};
  if (!options_ok(o))
    throw qbin::FormatError(fmt::format("layer '{}' (BatchNormalization): gamma {}, momentum {}, epsilon {} (expected [C], "
                                        "0 <= momentum < 1, 1e-12 <= epsilon <= 1)", qbin::shown(r.name), shape_str(gamma.shape),
                                        o.momentum, o.epsilon));
  auto bn = std::make_unique<BatchNormalization>(o);
  Tensor* into[] = {&bn->gamma_.value(), &bn->beta_.value(), &bn->moving_.mean, &bn->moving_.var};
  const char* names[] = {"gamma", "beta", "moving_mean", "moving_var"};
  for (int i = 0; i < 4; ++i) {
    const qbin::TensorRecord& t = r.tensor(names[i]);
    if (t.shape != Shape{o.channels})
      throw qbin::FormatError(fmt::format("layer '{}' (BatchNormalization): {} {} (expected [{}])", qbin::shown(r.name), names[i],
                                          shape_str(t.shape), o.channels));
    *into[i] = qbin::to_f32(t);
  }
  for (int64_t c = 0; c < o.channels; ++c)
    if (!(bn->moving_.var[c] >= 0.f))
      throw qbin::FormatError(fmt::format("layer '{}' (BatchNormalization): moving_var[{}] = {} (expected >= 0)", qbin::shown(r.name), c,
                                          bn->moving_.var[c]));
  bn->set_name(r.name);
  return bn;
}

const LayerKind& batch_norm_kind() {
  static const LayerKind kind{
      .type = "BatchNormalization",
      .spec_name = "batchnorm",
      .keys = {key::kMomentum, key::kEpsilon},
      .role = Int8Role::kNormalize,
      .from_spec =
          [](const SpecArgs& a, const Shape& input, Rng&) {
            BatchNormOptions o{.channels = input.empty() ? 0 : input.back()};
            if (const SpecToken* t = a.get(key::kMomentum)) o.momentum = static_cast<float>(a.real(*t, 0.0, 1.0, "momentum (expected 0 <= momentum < 1)"));
            if (const SpecToken* t = a.get(key::kEpsilon)) o.epsilon = static_cast<float>(a.real(*t, 1e-12, 1.0 + 1e-9, "epsilon (expected 1e-12..1)"));
            std::vector<std::unique_ptr<Module>> made;
            made.push_back(std::make_unique<BatchNormalization>(o));
            return made;
          },
      .from_record = [](const qbin::LayerRecord& r) -> std::unique_ptr<Module> { return BatchNormalization::from_record(r); },
  };
  return kind;
}

}  // namespace qnet
