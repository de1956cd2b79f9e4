#include "quant/qat.h"

#include <stdexcept>

#include <fmt/format.h>

#include "core/ops.h"
#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "quant/fake_quant.h"

namespace qnet {

namespace key = qbin::key;

namespace {
// The layer's kind, if its role is kWeights (layers/layer_kind.h).
const LayerKind* weights_kind(const Module& m) {
  const LayerKind* k = find_layer_kind(m.type_name());
  return k && k->role == Int8Role::kWeights ? k : nullptr;
}
Variable& kernel_of(Module& m) { return weights_kind(m)->kernel(m); }
}  // namespace

QatWeights::QatWeights(std::unique_ptr<Module> layer, int bits) : layer_(std::move(layer)), bits_(bits) {
  check_bits(bits);
  if (!weights_kind(*layer_))
    throw std::invalid_argument(fmt::format("QatWeights: cannot wrap a {} (expected a layer with weights: Conv2D or Dense)", layer_->type_name()));
}

// Runs the inner layer with its kernel fake-quantized. The scales come from the current
// weights at every step (eq. 6); no gradient flows into them.
template <typename F>
Variable QatWeights::with_quantized_kernel(F&& run) {
  Variable& kernel = kernel_of(*layer_);
  const Variable float_kernel = kernel;
  kernel = fake_quant(float_kernel, choose_weight_qparams(float_kernel.value(), bits_));
  Variable y;
  try {
    y = run(*layer_);
  } catch (...) {
    kernel = float_kernel;
    throw;
  }
  kernel = float_kernel;  // the parameter stays the float weight; the graph holds the fake-quantized one
  return y;
}

Variable QatWeights::forward(const Variable& x) {
  return with_quantized_kernel([&](Module& inner) { return inner.forward(x); });
}

Variable QatWeights::forward_max_pooled(const Variable& x, const Pool2dOptions& pool, ValueRange* range) {
  return with_quantized_kernel([&](Module& inner) { return dynamic_cast<PooledForward&>(inner).forward_max_pooled(x, pool, range); });
}

qbin::LayerRecord QatWeights::to_record() const {
  qbin::LayerRecord r = record_of(*layer_);
  r.name = name_;
  r.ints.emplace_back(key::kWeightBits, bits_);
  return r;
}

namespace {
// A ReLU's output is never negative: a range starting below 0 (tfmot's [-6, 6]) would give a
// zero point above 0, which the uint8 runtime cannot use after ReLU, and waste half the codes.
ObserverOptions relu_range(ObserverOptions o) {
  o.init_min = std::max(o.init_min, 0.f);
  return o;
}
}  // namespace

QatObservedActivation::QatObservedActivation(int bits, const ObserverOptions& observer) : bits_(bits), observer_(observer) {
  check_bits(bits);
}

QatReLU::QatReLU(int bits, const ObserverOptions& observer) : QatObservedActivation(bits, relu_range(observer)) {}

Variable QatReLU::forward(const Variable& x) {
  if (observing()) {
    const auto [lo, hi] = relu_min_max(x.value());
    observer_.observe_range(lo, hi);
  }
  return relu_fake_quant(x, observer_.qparams(bits_));
}

// The observer sees the range of the whole unpooled relu output, as forward() would.
Variable QatReLU::activate_pooled(const Variable& pooled, const ValueRange& unpooled) {
  if (observing()) observer_.observe_range(std::max(unpooled.min, 0.f), std::max(unpooled.max, 0.f));
  return relu_fake_quant(pooled, observer_.qparams(bits_));
}

qbin::LayerRecord QatReLU::to_record() const {
  qbin::LayerRecord r{"ReLU", name_, {{key::kOutputBits, bits_}}, {{key::kOutputMin, observer_.min()}, {key::kOutputMax, observer_.max()}}, {}};
  return r;
}

Variable QatQuantize::forward(const Variable& x) {
  if (observing()) observer_.observe(x.value());
  return fake_quant(x, {observer_.qparams(bits_)});
}

Variable QatQuantize::activate_pooled(const Variable& pooled, const ValueRange& unpooled) {
  if (observing()) observer_.observe_range(unpooled.min, unpooled.max);
  return fake_quant(pooled, {observer_.qparams(bits_)});
}

qbin::LayerRecord QatQuantize::to_record() const {
  return {"Quantize", name_, {{key::kOutputBits, bits_}}, {{key::kOutputMin, observer_.min()}, {key::kOutputMax, observer_.max()}}, {}};
}

void prepare_qat(Sequential& model, const QatOptions& o) {
  check_bits(o.bits);
  if (is_qat(model)) throw std::invalid_argument("prepare_qat: the model is already prepared for QAT");
  std::vector<Int8Role> roles;  // each layer's part in the int8 graph, from its kind
  size_t last = model.size();    // the layer giving the float logits
  for (size_t i = 0; i < model.size(); ++i) {
    const LayerKind* kind = find_layer_kind(model.layer(i).type_name());
    if (!kind) throw std::invalid_argument(fmt::format("prepare_qat: layer '{}' ({}) has no int8 form", model.layer(i).name(), model.layer(i).type_name()));
    roles.push_back(kind->role);
    if (kind->role == Int8Role::kWeights) last = i;
  }
  if (last == model.size()) throw std::invalid_argument("prepare_qat: the model has no Conv2D or Dense layer to quantize");
  size_t inserted = 0;
  for (size_t j = 0; j <= last; ++j) {  // j: the layer's index before insertions
    if (roles[j] != Int8Role::kWeights) continue;
    const size_t i = j + inserted;
    model.transform(i, [&](std::unique_ptr<Module> m) { return std::make_unique<QatWeights>(std::move(m), o.bits); });
    if (j == last) break;  // its output stays float, and so does a ReLU after it
    if (roles[j + 1] == Int8Role::kActivation) {
      model.transform(i + 1, [&](std::unique_ptr<Module>) { return std::make_unique<QatReLU>(o.bits, o.observer); });
      ++j;
    } else {
      auto quantize = std::make_unique<QatQuantize>(o.bits, o.observer);
      quantize->set_name(inserted == 0 ? "quantize" : fmt::format("quantize_{}", inserted));
      model.insert(i + 1, std::move(quantize));
      ++inserted;
    }
  }
}

void freeze_observers(Sequential& model) {
  for (size_t i = 0; i < model.size(); ++i) {
    if (auto* q = dynamic_cast<QatObservedActivation*>(&model.layer(i))) q->observer().freeze();
  }
}

bool is_qat(const Sequential& model) { return qat_bits(model) != 0; }

int qat_bits(const Sequential& model) {
  for (size_t i = 0; i < model.size(); ++i)
    if (auto* q = dynamic_cast<const QatWeights*>(&model.layer(i))) return q->bits();
  return 0;
}

Sequential load_any_model(const std::string& path, const ObserverOptions& observer) {
  const qbin::Model file = qbin::load(path);
  try {
    qbin::Model float_part = file;  // the float layers; prepare_qat puts the Quantize records back
    std::erase_if(float_part.layers, [](const qbin::LayerRecord& r) { return r.kind == "Quantize"; });
    Sequential model = from_qbin(float_part);
    int bits = 0;
    for (const auto& r : file.layers) {
      const int b = r.get_int(key::kWeightBits, 0);
      if (b != 0 && (b < 2 || b > 8 || (bits != 0 && b != bits)))
        throw qbin::FormatError(fmt::format("layer '{}': weight_bits {} (expected 2..8, the same in every layer{})", qbin::shown(r.name),
                                            b, bits ? fmt::format(": {} before", bits) : ""));
      bits = std::max(bits, b);
    }
    if (bits == 0) {
      if (float_part.layers.size() != file.layers.size()) throw qbin::FormatError("a Quantize record in a float model (no weight_bits)");
      return model;
    }
    prepare_qat(model, {.bits = bits, .observer = observer});
    if (model.size() + 1 != file.layers.size())
      throw qbin::FormatError(fmt::format("{} layer records (expected {} for the QAT form of its layers: a Quantize record after each "
                                          "Conv2D or Dense, but the last, that no ReLU follows)", file.layers.size() - 1, model.size()));
    for (size_t i = 0; i < model.size(); ++i) {
      const qbin::LayerRecord& r = file.layers[i + 1];  // record 0 is Input
      Module& layer = model.layer(i);
      const bool quantize = dynamic_cast<QatQuantize*>(&layer) != nullptr;
      if (quantize != (r.kind == "Quantize"))
        throw qbin::FormatError(fmt::format("layer '{}' ({}): expected {} here", qbin::shown(r.name), qbin::shown(r.kind),
                                            quantize ? "a Quantize record" : layer.type_name()));
      auto* observed = dynamic_cast<QatObservedActivation*>(&layer);
      if (!observed) continue;
      const bool relu = !quantize;
      layer.set_name(r.name);
      if (r.get_int(key::kOutputBits, 0) != observed->bits())
        throw qbin::FormatError(fmt::format("layer '{}': output_bits {} (expected {})", qbin::shown(r.name), r.get_int(key::kOutputBits, 0), bits));
      const float lo = r.get_float(key::kOutputMin), hi = r.get_float(key::kOutputMax);
      const bool ok = std::isfinite(lo) && std::isfinite(hi) && lo <= hi && hi <= 0x1p40f && lo >= -0x1p40f && (quantize || lo >= 0.f);
      if (!ok)
        throw qbin::FormatError(fmt::format("layer '{}': activation range [{}, {}] (expected finite {}min <= max, within 2^40{})",
                                            qbin::shown(r.name), lo, hi, relu ? "0 <= " : "", relu ? ": a ReLU's output starts at 0" : ""));
      observed->observer().set_range(lo, hi);
    }
    return model;
  } catch (const std::invalid_argument& e) {
    throw qbin::FormatError(fmt::format("{}: {}", path, e.what()));
  } catch (const qbin::FormatError& e) {
    throw qbin::FormatError(fmt::format("{}: {}", path, e.what()));
  }
}

}  // namespace qnet
