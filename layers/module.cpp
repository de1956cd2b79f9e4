#include "layers/module.h"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "core/random.h"

namespace qnet {

int64_t Module::parameter_count() {
  int64_t n = 0;
  for (Variable* p : parameters()) n += p->value().numel();
  return n;
}

Variable deep_copy(const Variable& v) { return v.defined() ? Variable(v.value().clone(), v.requires_grad()) : Variable(); }

void check_parameters(const char* layer, int64_t count) {
  if (count > kMaxParameters)
    throw std::invalid_argument(fmt::format("{}: {} parameters ({:.1f} GB), more than a model file holds ({} parameters, 1 GiB)", layer,
                                            count, static_cast<double>(count) * 4e-9, kMaxParameters));
}

Tensor glorot_uniform(Shape shape, int64_t fan_in, int64_t fan_out, Rng& rng) {
  Tensor t(std::move(shape));
  const float limit = std::sqrt(6.f / static_cast<float>(fan_in + fan_out));
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(-limit, limit);
  return t;
}

}  // namespace qnet
