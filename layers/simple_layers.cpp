#include <stdexcept>

#include <fmt/format.h>

#include "core/distributed.h"
#include "core/random.h"
#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "layers/layers.h"

namespace qnet {

namespace key = qbin::key;

Shape MaxPool2D::output_shape(const Shape& in) const {
  if (in.size() != 3) throw std::invalid_argument(fmt::format("MaxPool2D '{}': input {} (expected [H, W, C])", name_, shape_str(in)));
  const auto& o = options_;
  return {axis_geometry(in[0], o.window_h, o.stride_h ? o.stride_h : o.window_h, o.padding).out,
          axis_geometry(in[1], o.window_w, o.stride_w ? o.stride_w : o.window_w, o.padding).out, in[2]};
}

qbin::LayerRecord MaxPool2D::to_record() const {
  qbin::LayerRecord r = bare_record(*this);
  const auto& o = options_;
  r.ints = {{key::kWindowH, o.window_h}, {key::kWindowW, o.window_w}, {key::kStrideH, o.stride_h ? o.stride_h : o.window_h},
            {key::kStrideW, o.stride_w ? o.stride_w : o.window_w}, {key::kPaddingSame, o.padding == Padding::kSame ? 1 : 0}};
  return r;
}

std::unique_ptr<MaxPool2D> MaxPool2D::from_record(const qbin::LayerRecord& r) {
  Pool2dOptions o{r.get_int(key::kWindowH), r.get_int(key::kWindowW), r.get_int(key::kStrideH), r.get_int(key::kStrideW),
                  r.get_int(key::kPaddingSame) ? Padding::kSame : Padding::kValid};
  if (o.window_h < 1 || o.window_w < 1 || o.stride_h < 1 || o.stride_w < 1)
    throw qbin::FormatError(fmt::format("layer '{}' (MaxPool2D): window and stride must be >= 1", qbin::shown(r.name)));
  auto p = std::make_unique<MaxPool2D>(o);
  p->set_name(r.name);
  return p;
}

Dropout::Dropout(float rate, uint64_t seed) : rate_(rate), rng_(std::make_unique<Rng>(seed)) {
  if (!(rate >= 0.f && rate < 1.f)) throw std::invalid_argument(fmt::format("Dropout: rate {} (expected 0 <= rate < 1)", rate));
}

Dropout::~Dropout() = default;

std::unique_ptr<Module> Dropout::clone() const {
  auto copy = std::make_unique<Dropout>(rate_, 0);
  *copy->rng_ = *rng_;  // the same state: the same masks from here on
  static_cast<Module&>(*copy) = *this;
  return copy;
}

Variable Dropout::forward(const Variable& x) {
  if (!training() || rate_ == 0.f) return x;
  Tensor mask(x.value().shape());
  const float keep = 1.f - rate_, scale = 1.f / keep;
  // Drawn for the whole batch, this process's images kept: the same masks on any process count.
  const DrawRange d = draw_range(x.value().rank() == 0 || x.shape()[0] == 0 ? 0 : mask.numel() / x.shape()[0], mask.numel());
  // Element i is kept when the generator's i-th uniform01() < keep; the other ranks' draws are
  // skipped over, not converted (a Keras-sized batch draws 51,200 a step, on every thread).
  const uint64_t cut = Rng::below_cut(keep);
  rng_->discard(static_cast<uint64_t>(d.offset));
  float* m = mask.data();
  const float choice[2] = {0.f, scale};  // by index, not a branch: half of them would be mispredicted
  for (int64_t i = 0; i < mask.numel(); ++i) m[i] = choice[(rng_->next_u64() >> 11) < cut];
  rng_->discard(static_cast<uint64_t>(d.total - d.offset - mask.numel()));
  return mul(x, Variable(std::move(mask), false));
}

qbin::LayerRecord Dropout::to_record() const {
  qbin::LayerRecord r = bare_record(*this);
  r.floats = {{key::kRate, rate_}};
  return r;
}

std::unique_ptr<Dropout> Dropout::from_record(const qbin::LayerRecord& r) {
  const float rate = r.get_float(key::kRate);
  if (!(rate >= 0.f && rate < 1.f))
    throw qbin::FormatError(fmt::format("layer '{}' (Dropout): rate {} (expected 0 <= rate < 1)", qbin::shown(r.name), rate));
  auto d = std::make_unique<Dropout>(rate, 0);
  d->set_name(r.name);
  return d;
}

namespace {
std::vector<std::unique_ptr<Module>> one(std::unique_ptr<Module> m) {
  std::vector<std::unique_ptr<Module>> v;
  v.push_back(std::move(m));
  return v;
}

// from_record of a kind with no attributes.
template <typename T>
std::unique_ptr<Module> plain_from_record(const qbin::LayerRecord& r) {
  auto m = std::make_unique<T>();
  m->set_name(r.name);
  return m;
}
}  // namespace

const LayerKind& maxpool2d_kind() {
  static const LayerKind kind{
      .type = "MaxPool2D",
      .spec_name = "maxpool2d",
      .positional = {"size"},
      .keys = {"size", "stride", "padding"},
      .role = Int8Role::kPassThrough,
      .from_spec =
          [](const SpecArgs& a, const Shape& input, Rng&) {
            if (input.size() != 3) a.fail("maxpool2d needs an image input (it comes after flatten or dense here)");
            const auto [ph, pw] = a.size2(a.need("size"), 1, 64, "pool size");
            const auto [sh, sw] = a.get("stride") ? a.size2(*a.get("stride"), 1, 64, "stride") : std::pair{ph, pw};
            return one(std::make_unique<MaxPool2D>(Pool2dOptions{ph, pw, sh, sw, a.padding()}));
          },
      .from_record = [](const qbin::LayerRecord& r) -> std::unique_ptr<Module> { return MaxPool2D::from_record(r); },
  };
  return kind;
}

const LayerKind& relu_kind() {
  static const LayerKind kind{
      .type = "ReLU",
      .spec_name = "relu",
      .role = Int8Role::kActivation,
      .from_spec = [](const SpecArgs&, const Shape&, Rng&) { return one(std::make_unique<ReLU>()); },
      .from_record = plain_from_record<ReLU>,
  };
  return kind;
}

const LayerKind& flatten_kind() {
  static const LayerKind kind{
      .type = "Flatten",
      .spec_name = "flatten",
      .role = Int8Role::kPassThrough,
      .from_spec = [](const SpecArgs&, const Shape&, Rng&) { return one(std::make_unique<Flatten>()); },
      .from_record = plain_from_record<Flatten>,
  };
  return kind;
}

const LayerKind& dropout_kind() {
  static const LayerKind kind{
      .type = "Dropout",
      .spec_name = "dropout",
      .positional = {"rate"},
      .keys = {"rate"},
      .role = Int8Role::kTrainingOnly,
      .from_spec =
          [](const SpecArgs& a, const Shape&, Rng& rng) {
            const double rate = a.real(a.need("rate"), 0.0, 1.0, "dropout rate (expected 0 <= rate < 1)");
            if (!(static_cast<float>(rate) < 1.f))  // 0.99999999 is 1 as a float: every value dropped
              spec_fail(a.need("rate"), "dropout rate (expected 0 <= rate < 1; this one is 1 as a 32-bit float)");
            return one(std::make_unique<Dropout>(static_cast<float>(rate), rng.next_u64()));
          },
      .from_record = [](const qbin::LayerRecord& r) -> std::unique_ptr<Module> { return Dropout::from_record(r); },
  };
  return kind;
}

}  // namespace qnet
