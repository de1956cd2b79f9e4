#include "layers/module.h"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "core/random.h"

namespace qnet {

qbin::LayerRecord Module::to_record() const { return {type_name(), name_, {}, {}, {}}; }

int64_t Module::parameter_count() {
  int64_t n = 0;
  for (Variable* p : parameters()) n += p->value().numel();
  return n;
}

Variable bias_from_record(const qbin::LayerRecord& r, int64_t channels) {
  const qbin::TensorRecord* b = r.find_tensor("bias");
  if (!b) return Variable();
  if (b->shape != Shape{channels})
    throw qbin::FormatError(
        fmt::format("layer '{}' ({}): bias {} (expected [{}])", qbin::shown(r.name), qbin::shown(r.kind), shape_str(b->shape), channels));
  return Variable(qbin::to_f32(*b), true);
}

Tensor glorot_uniform(Shape shape, int64_t fan_in, int64_t fan_out, Rng& rng) {
  Tensor t(std::move(shape));
  const float limit = std::sqrt(6.f / static_cast<float>(fan_in + fan_out));
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(-limit, limit);
  return t;
}

}  // namespace qnet
