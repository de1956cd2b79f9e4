// GaussianNoise: the layer and its kind, in one file (the worked example of adding a layer kind,
// docs/architecture.md).
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "core/distributed.h"
#include "core/random.h"
#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "layers/layers.h"

namespace qnet {

namespace key = qbin::key;

GaussianNoise::GaussianNoise(float stddev, uint64_t seed) : stddev_(stddev), rng_(std::make_unique<Rng>(seed)) {
  if (!(stddev >= 0.f && std::isfinite(stddev)))
    throw std::invalid_argument(fmt::format("GaussianNoise: stddev {} (expected a finite stddev >= 0)", stddev));
}

GaussianNoise::~GaussianNoise() = default;

std::unique_ptr<Module> GaussianNoise::clone() const {
  auto copy = std::make_unique<GaussianNoise>(stddev_, 0);
  *copy->rng_ = *rng_;  // the same state: the same noise from here on
  static_cast<Module&>(*copy) = *this;
  return copy;
}

Variable GaussianNoise::forward(const Variable& x) {
  if (!training() || stddev_ == 0.f) return x;
  Tensor noise(x.value().shape());
  // Drawn for the whole batch, this process's images kept: the same noise on any process count.
  const DrawRange d = draw_range(x.value().rank() == 0 || x.shape()[0] == 0 ? 0 : noise.numel() / x.shape()[0], noise.numel());
  // normal() takes two draws: the other ranks' values are skipped over, not computed.
  rng_->discard(2 * static_cast<uint64_t>(d.offset));
  for (int64_t i = 0; i < noise.numel(); ++i) noise[i] = stddev_ * rng_->normal();
  rng_->discard(2 * static_cast<uint64_t>(d.total - d.offset - noise.numel()));
  return add(x, Variable(std::move(noise), false));  // dL/dx = dL/dy
}

qbin::LayerRecord GaussianNoise::to_record() const {
  qbin::LayerRecord r = bare_record(*this);
  r.floats = {{key::kStddev, stddev_}};
  return r;
}

const LayerKind& gaussian_noise_kind() {
  static const LayerKind kind{
      .type = "GaussianNoise",
      .spec_name = "gaussiannoise",
      .positional = {"stddev"},
      .keys = {"stddev"},
      .role = Int8Role::kTrainingOnly,  // left out of int8 files; the f32 runtime skips it (training_only)
      .from_spec =
          [](const SpecArgs& a, const Shape&, Rng& rng) {
            const double stddev = a.real(a.need("stddev"), 0.0, 1e6, "gaussiannoise stddev (expected 0 <= stddev < 1e6)");
            std::vector<std::unique_ptr<Module>> made;
            made.push_back(std::make_unique<GaussianNoise>(static_cast<float>(stddev), rng.next_u64()));
            return made;
          },
      .from_record =
          [](const qbin::LayerRecord& r) -> std::unique_ptr<Module> {
            const float stddev = r.get_float(key::kStddev);
            if (!(stddev >= 0.f && stddev < 1e6f))
              throw qbin::FormatError(fmt::format("layer '{}' (GaussianNoise): stddev {} (expected 0 <= stddev < 1e6)", qbin::shown(r.name), stddev));
            auto m = std::make_unique<GaussianNoise>(stddev, 0);
            m->set_name(r.name);
            return m;
          },
  };
  return kind;
}

}  // namespace qnet
