#include "quant/qat.h"

#include <cmath>
#include <limits>
#include <set>
#include <stdexcept>

#include <fmt/format.h>

#include "core/ops.h"
#include "io/record_keys.h"
#include "layers/container.h"
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
Variable& bias_of(Module& m) { return weights_kind(m)->bias(m); }

BatchNormalization& batch_norm(Module& m) { return dynamic_cast<BatchNormalization&>(m); }
}  // namespace

// --- QatWeights ----------------------------------------------------------------------------

QatWeights::QatWeights(std::unique_ptr<Module> layer, int bits) : layer_(std::move(layer)), bits_(bits) {
  check_bits(bits);
  if (!weights_kind(*layer_))
    throw std::invalid_argument(fmt::format("QatWeights: cannot wrap a {} (expected a layer with weights: Conv2D, DepthwiseConv2D or Dense)",
                                            layer_->type_name()));
}

void QatWeights::set_bits(int bits) {
  check_bits(bits);
  bits_ = bits;
}

std::unique_ptr<Module> QatWeights::clone() const {
  std::unique_ptr<Module> inner = layer_->clone();
  if (!inner) return nullptr;
  auto copy = std::make_unique<QatWeights>(std::move(inner), bits_);
  static_cast<Module&>(*copy) = *this;
  copy->float_ = float_;
  return copy;
}

void QatWeights::link_clone(const Module& original, const std::function<Module*(const Module*)>& copy_of) {
  const QatBatchNorm* bn = dynamic_cast<const QatWeights&>(original).folded_;
  if (bn) fold(dynamic_cast<QatBatchNorm&>(*copy_of(bn)));
}

void QatWeights::fold(QatBatchNorm& bn) {
  folded_ = &bn;
  bn.layer_ = this;
}

bool QatWeights::can_forward_max_pooled() const {
  const auto* inner = dynamic_cast<const PooledForward*>(layer_.get());
  return !folded_ && inner && inner->can_forward_max_pooled();
}

// Runs the inner layer with its kernel fake-quantized (the folded one, and no bias, with a
// BatchNormalization folded in). The scales come from the current weights at every step (eq. 6);
// no gradient flows into them.
template <typename F>
Variable QatWeights::with_quantized_kernel(F&& run) {
  Variable& kernel = kernel_of(*layer_);
  Variable& bias = bias_of(*layer_);
  const Variable float_kernel = kernel, float_bias = bias;
  const Variable deployed = folded_ ? mul_channels(float_kernel, folded_->factor()) : float_kernel;  // eq. 13
  kernel = float_ || layer_->keep_float() ? deployed : fake_quant_weights(deployed, bits_);
  if (folded_) bias = Variable();  // the QatBatchNorm adds it (eq. 14)
  Variable y;
  try {
    y = run(*layer_);
  } catch (...) {
    kernel = float_kernel, bias = float_bias;
    throw;
  }
  kernel = float_kernel, bias = float_bias;  // the parameters stay the float ones; the graph holds the quantized kernel
  return y;
}

Variable QatWeights::forward(const Variable& x) {
  if ((float_ || layer_->keep_float()) && !folded_) return layer_->forward(x);
  return with_quantized_kernel([&](Module& inner) { return inner.forward(x); });
}

Variable QatWeights::forward_max_pooled(const Variable& x, const Pool2dOptions& pool, ValueRange* range,
                                        const PooledActivation& activation) {
  const auto run = [&](Module& inner) { return dynamic_cast<PooledForward&>(inner).forward_max_pooled(x, pool, range, activation); };
  if (float_ || layer_->keep_float()) return run(*layer_);
  return with_quantized_kernel(run);
}

Tensor QatWeights::deployed_kernel() const {
  const Variable& k = kernel_of(const_cast<Module&>(*layer_));
  if (!folded_) return k.value();
  NoGradGuard no_grad;
  return mul_channels(k, folded_->factor()).value();
}

Tensor QatWeights::deployed_bias() const {
  const Variable& b = bias_of(*layer_);
  if (!folded_) return b.defined() ? b.value() : Tensor();
  NoGradGuard no_grad;
  return folded_->folded_bias(b).value();
}

qbin::LayerRecord QatWeights::to_record() const {
  qbin::LayerRecord r = record_of(*layer_);
  r.name = name_;
  r.ints.emplace_back(key::kWeightBits, bits_);  // kept float too: the width QAT would give it
  if (layer_->keep_float()) r.ints.emplace_back(key::kKeepFloat, 1);
  return r;
}

// --- QatBatchNorm ----------------------------------------------------------------------------

QatBatchNorm::QatBatchNorm(std::unique_ptr<Module> batch_norm) : bn_(std::move(batch_norm)) {
  if (!dynamic_cast<BatchNormalization*>(bn_.get()))
    throw std::invalid_argument(fmt::format("QatBatchNorm: cannot wrap a {} (expected a BatchNormalization)", bn_->type_name()));
}

std::unique_ptr<Module> QatBatchNorm::clone() const {
  std::unique_ptr<Module> inner = bn_->clone();
  if (!inner) return nullptr;
  auto copy = std::make_unique<QatBatchNorm>(std::move(inner));
  static_cast<Module&>(*copy) = *this;
  copy->frozen_ = frozen_;
  return copy;
}

void QatBatchNorm::set_training(bool training) {
  Module::set_training(training);
  bn_->set_training(training);
}

Variable QatBatchNorm::factor() const {
  BatchNormalization& bn = batch_norm(*bn_);
  const int64_t C = bn.options().channels;
  Tensor r({C});
  for (int64_t c = 0; c < C; ++c) r[c] = 1.f / std::sqrt(bn.moving().var[c] + bn.options().epsilon);
  return mul(bn.gamma(), Variable(r, false));
}

Variable QatBatchNorm::folded_bias(const Variable& b) const {
  BatchNormalization& bn = batch_norm(*bn_);
  Tensor minus_mean = bn.moving().mean.clone();
  for (int64_t c = 0; c < minus_mean.numel(); ++c) minus_mean[c] = -minus_mean[c];
  const Variable centered = b.defined() ? add(b, Variable(minus_mean, false)) : Variable(minus_mean, false);
  return add(bn.beta(), mul(centered, factor()));  // eq. 14
}

Variable QatBatchNorm::forward(const Variable& z) {
  if (!layer_) throw std::logic_error(fmt::format("QatBatchNorm '{}' is folded into no layer", name_));
  const Variable& b = bias_of(layer_->inner());
  if (!training_ || frozen_) return bias_add(z, folded_bias(b));  // eq. 15
  // z / f with the current f (a constant here: the normalization cancels any scale of its input,
  // so the gradient through it is 0 up to epsilon), then the layer's bias and the batch's BN.
  const Tensor f = factor().value();
  Tensor inverse(f.shape());
  for (int64_t c = 0; c < f.numel(); ++c) inverse[c] = f[c] != 0.f ? 1.f / f[c] : 0.f;
  Variable u = mul_channels(z, Variable(inverse, false));
  if (b.defined()) u = bias_add(u, b);
  return bn_->forward(u);
}

qbin::LayerRecord QatBatchNorm::to_record() const {
  qbin::LayerRecord r = record_of(*bn_);
  r.name = name_;
  return r;
}

// --- the activations -----------------------------------------------------------------------

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

void QatObservedActivation::set_bits(int bits) {
  check_bits(bits);
  bits_ = bits;
}

QatReLU::QatReLU(int bits, const ObserverOptions& observer) : QatObservedActivation(bits, relu_range(observer)) {}

Variable QatReLU::forward(const Variable& x) {
  if (sink_) {
    Variable y = relu(x);
    sink_(*this, y.value());
    return y;
  }
  if (observing()) {
    const auto [lo, hi] = relu_min_max(x.value());
    observer_.observe_range(lo, hi);
  }
  return relu_fake_quant(x, observer_.qparams(bits_));
}

// The observer sees the range of the whole unpooled relu output, as forward() would.
PooledActivation QatReLU::inside_pooled_op() {
  if (sink_) return PooledActivation::kNone;  // calibration runs unfused (set_calibration)
  return PooledActivation([this](const ValueRange& relu_range) {
    if (observing()) observer_.observe_range(relu_range.min, relu_range.max);
    return relu_grid(observer_.qparams(bits_));
  });
}

Variable QatReLU::activate_pooled(const Variable& pooled, const ValueRange& unpooled) {
  if (sink_) return forward(pooled);  // calibration runs unfused (set_calibration)
  if (observing()) observer_.observe_range(std::max(unpooled.min, 0.f), std::max(unpooled.max, 0.f));
  return relu_fake_quant(pooled, observer_.qparams(bits_));
}

qbin::LayerRecord QatReLU::to_record() const {
  qbin::LayerRecord r{"ReLU", name_, {{key::kOutputBits, bits_}}, {{key::kOutputMin, observer_.min()}, {key::kOutputMax, observer_.max()}}, {}};
  return r;
}

Variable QatQuantize::forward(const Variable& x) {
  if (sink_) {
    sink_(*this, x.value());
    return x;
  }
  if (observing()) observer_.observe(x.value());
  return fake_quant(x, {observer_.qparams(bits_)});
}

Variable QatQuantize::activate_pooled(const Variable& pooled, const ValueRange& unpooled) {
  if (sink_) return forward(pooled);
  if (observing()) observer_.observe_range(unpooled.min, unpooled.max);
  return fake_quant(pooled, {observer_.qparams(bits_)});
}

qbin::LayerRecord QatQuantize::to_record() const {
  return {"Quantize", name_, {{key::kOutputBits, bits_}}, {{key::kOutputMin, observer_.min()}, {key::kOutputMax, observer_.max()}}, {}};
}

// --- the transform -------------------------------------------------------------------------

namespace {

constexpr size_t kNone = std::numeric_limits<size_t>::max();

const LayerKind& kind_of(const Module& m) {
  const LayerKind* kind = find_layer_kind(m.type_name());
  if (!kind) throw std::invalid_argument(fmt::format("prepare_qat: layer '{}' ({}) has no int8 form", m.name(), m.type_name()));
  return *kind;
}

bool holds_weights(const Sequential& chain) {
  bool any = false;
  for_each_layer(chain, [&](const Module& m) { any = any || weights_kind(m); });
  return any;
}

// The rewrite of one chain: the top one, whose layer `logits` gives the float logits, or a
// branch (logits = kNone), whose every output is codes.
struct Preparer {
  const QatOptions& o;
  int quantizers = 0;  // QatQuantize layers inserted so far: "quantize", "quantize_1", ...

  // A layer's own bit width (spec `bits=N`), else the model's.
  int bits_of(const Module& layer) const { return layer.quant_bits() != 0 ? layer.quant_bits() : o.bits; }
  // The width of the grid a layer's output gets: kAvx2 keeps it within 7 bits.
  int activation_bits(const Module& layer) const { return o.target == Int8Target::kAvx2 ? std::min(bits_of(layer), 7) : bits_of(layer); }
  // The width of a layer's kernel on input codes up to code_max: kAvx2 narrows it until two
  // products x w fit int16 (the 8-bit pixels take 7-bit weights; 7-bit codes 8-bit ones).
  int weight_bits(const Module& layer, int64_t code_max) const {
    int b = bits_of(layer);
    if (o.target == Int8Target::kAvx2)  // 32,767: vpmaddubsw's int16 (quant/runtime/plan.h, kPairSumMax)
      while (b > 2 && 2 * code_max * ((1 << (b - 1)) - 1) > 32767) --b;
    return b;
  }

  // The output of layer i gets its own grid of `bits`: a ReLU after it becomes a QatReLU, or a
  // QatQuantize is inserted. Returns the index of that quantizer.
  size_t quantize_output(Sequential& chain, size_t i, int bits) {
    if (i + 1 < chain.size() && kind_of(chain.layer(i + 1)).role == Int8Role::kActivation) {
      chain.transform(i + 1, [&](std::unique_ptr<Module>) { return std::make_unique<QatReLU>(bits, o.observer); });
    } else {
      auto quantize = std::make_unique<QatQuantize>(bits, o.observer);
      quantize->set_name(quantizers == 0 ? "quantize" : fmt::format("quantize_{}", quantizers));
      ++quantizers;
      chain.insert(i + 1, std::move(quantize));
    }
    return i + 1;
  }

  // Wraps the kWeights layer i, its kernel on `bits`, folding a BatchNormalization right after
  // it; returns the index of the layer's last part (the BatchNormalization if folded).
  size_t weights(Sequential& chain, size_t i, int bits) {
    chain.transform(i, [&](std::unique_ptr<Module> m) { return std::make_unique<QatWeights>(std::move(m), bits); });
    if (i + 1 >= chain.size() || kind_of(chain.layer(i + 1)).role != Int8Role::kNormalize) return i;
    chain.transform(i + 1, [&](std::unique_ptr<Module> m) { return std::make_unique<QatBatchNorm>(std::move(m)); });
    dynamic_cast<QatWeights&>(chain.layer(i)).fold(dynamic_cast<QatBatchNorm&>(chain.layer(i + 1)));
    return i + 1;
  }

  // code_max: the largest input code of the chain (255: the pixels).
  void chain(Sequential& c, const Module* logits, int64_t code_max) {
    size_t logits_at = kNone;  // once passed, the layers work on floats
    for (size_t i = 0; i < c.size(); ++i) {
      Module& layer = c.layer(i);
      const LayerKind& kind = kind_of(layer);
      if (logits_at != kNone) {  // the float logits: no grids, no folds
        if (kind.role == Int8Role::kNormalize || dynamic_cast<Container*>(&layer))
          throw std::invalid_argument(fmt::format("prepare_qat: layer '{}' ({}) works on the float logits of '{}' (after the model's last "
                                                  "Conv2D, DepthwiseConv2D or Dense, int8 runs only pooling, padding, Flatten and ReLU)",
                                                  layer.name(), layer.type_name(), c.layer(logits_at).name()));
        continue;
      }
      switch (kind.role) {
        case Int8Role::kWeights: {
          const bool gives_logits = &layer == logits;
          const int bits = activation_bits(layer);
          const size_t end = weights(c, i, weight_bits(layer, code_max));
          if (gives_logits) logits_at = i;
          i = gives_logits ? end : quantize_output(c, end, bits);
          if (!gives_logits) code_max = (int64_t{1} << bits) - 1;
          break;
        }
        case Int8Role::kRequantize:
          if (auto* container = dynamic_cast<Container*>(&layer))
            for (Sequential* branch : container->branches()) chain(*branch, nullptr, code_max);
          layer.set_quant_bits(activation_bits(layer));  // its QAT file records the width its grid has (Quantize's output_bits)
          i = quantize_output(c, i, layer.quant_bits());
          code_max = (int64_t{1} << layer.quant_bits()) - 1;
          break;
        case Int8Role::kNormalize:
          throw std::invalid_argument(fmt::format("prepare_qat: BatchNormalization '{}' follows {} (int8 folds a BatchNormalization into "
                                                  "the Conv2D, DepthwiseConv2D or Dense right before it: put it there)",
                                                  layer.name(), i == 0 ? "nothing" : fmt::format("a {}", record_of(c.layer(i - 1)).kind)));
        default:
          break;
      }
    }
  }
};

// The int8 accumulators of the prepared model, checked before any training: for each layer with
// weights, K terms of input codes up to code_max (255 for the pixels, 2^b - 1 after a b-bit grid
// of the model's own) times its weight codes up to 2^(bits-1) - 1, twice that where the input has
// a zero point (the runtime folds it into the bias), plus a bias of up to 2^30 accumulator units
// (export's cap), must fit int32 whatever the weights become. The runtime checks the trained
// weights' own sums again at load (quant/runtime/stage_kind.h).
struct Accumulators {
  // code_max: the largest input code; pixels: the input is the 8-bit pixels (no grid of the
  // model's own yet).
  void chain(const Sequential& c, int64_t code_max, bool pixels, bool zero_point) const {
    for (size_t i = 0; i < c.size(); ++i) {
      const Module& layer = c.layer(i);
      if (const auto* q = dynamic_cast<const QatWeights*>(&layer)) check(*q, code_max, pixels, zero_point);
      if (const auto* a = dynamic_cast<const QatObservedActivation*>(&layer))
        code_max = (int64_t{1} << a->bits()) - 1, pixels = false, zero_point = dynamic_cast<const QatQuantize*>(a) != nullptr;
      if (const auto* container = dynamic_cast<const Container*>(&layer))
        for (const Sequential* branch : container->branches()) chain(*branch, code_max, pixels, zero_point);
    }
  }
  static int64_t bound(int64_t K, int64_t code_max, int w_bits, bool zero_point) {
    return K * code_max * ((1 << (w_bits - 1)) - 1) * (zero_point ? 2 : 1) + (int64_t{1} << 30);
  }
  static void check(const QatWeights& q, int64_t code_max, bool pixels, bool zero_point) {
    if (q.inner().keep_float()) return;  // a float island: f32 arithmetic, no accumulator
    const Tensor& kernel = kernel_of(const_cast<Module&>(q.inner())).value();
    const int64_t K = kernel.numel() / kernel.dim(-1);
    const int bits = q.bits();
    constexpr int64_t kInt32 = 2147483647;
    if (bound(K, code_max, bits, zero_point) <= kInt32) return;
    int own = 0, all = 0;  // the most bits that fit: of its weights alone; of every layer (the pixels stay 8-bit codes)
    for (int b = bits - 1; b >= 2; --b) {
      if (own == 0 && bound(K, code_max, b, zero_point) <= kInt32) own = b;
      if (all == 0 && bound(K, pixels ? 255 : (1 << b) - 1, b, zero_point) <= kInt32) all = b;
    }
    std::vector<std::string> fixes;
    if (own) fixes.push_back(fmt::format("give it bits={} or fewer", own));
    if (all && q.inner().quant_bits() == 0) fixes.push_back(fmt::format("train with --bits {} or fewer", all));  // it takes --bits
    fixes.push_back("give it fewer inputs, e.g. a pooling before it");
    throw std::invalid_argument(fmt::format(
        "prepare_qat: layer '{}' ({}): its {}-term dot products of {}-bit weight codes on input codes up to {}{} can reach {}, plus a bias, "
        "beyond the int32 accumulator's 2147483647 ({})",
        q.name(), q.inner().type_name(), K, bits, code_max, zero_point ? " with a zero point" : "",
        bound(K, code_max, bits, zero_point) - (int64_t{1} << 30), fmt::join(fixes, ", or ")));
  }
};

}  // namespace

void prepare_qat(Sequential& model, const QatOptions& o) {
  check_bits(o.bits);
  if (is_qat(model)) throw std::invalid_argument("prepare_qat: the model is already prepared for QAT");
  for_each_layer(model, [](const Module& m) { kind_of(m); });
  size_t logits = kNone;  // the last top-level layer with weights gives the float logits
  for (size_t i = 0; i < model.size(); ++i)
    if (kind_of(model.layer(i)).role == Int8Role::kWeights) logits = i;
  if (!holds_weights(model)) throw std::invalid_argument("prepare_qat: the model has no Conv2D, DepthwiseConv2D or Dense layer to quantize");
  for (size_t i = logits == kNone ? 0 : logits + 1; i < model.size(); ++i) {
    auto* c = dynamic_cast<Container*>(&model.layer(i));
    bool inside = false;
    if (c)
      for (Sequential* b : c->branches()) inside = inside || holds_weights(*b);
    if (inside)
      throw std::invalid_argument(fmt::format("prepare_qat: the model's last layer with weights is inside '{}' ({}): the logits come from "
                                              "a Conv2D, DepthwiseConv2D or Dense outside any block (end with e.g. "
                                              "globalaveragepooling2d dense(CLASSES))", model.layer(i).name(), model.layer(i).type_name()));
  }
  for_each_layer(model, [](const Module& m) {
    if (m.quant_bits() != 0) check_bits(m.quant_bits());
  });
  Preparer{o}.chain(model, logits == kNone ? nullptr : &model.layer(logits), 255);
  if (!is_qat(model))  // one Dense kept in float: no kernel and no grid left to quantize
    throw std::invalid_argument("prepare_qat: nothing to quantize (every layer with weights is kept in float and none gives codes to another)");
  Accumulators{}.chain(model, 255, true, false);
}

void freeze_observers(Sequential& model) {
  for_each_layer(model, [](Module& m) {
    if (auto* q = dynamic_cast<QatObservedActivation*>(&m)) q->observer().freeze();
  });
}

void freeze_bn_statistics(Sequential& model) {
  for_each_layer(model, [](Module& m) {
    if (auto* bn = dynamic_cast<QatBatchNorm*>(&m)) bn->freeze();
  });
}

const char* int8_target_name(Int8Target target) { return target == Int8Target::kAvx2 ? "avx2" : "vnni"; }

bool is_qat(const Sequential& model) { return qat_bits(model) != 0; }

std::set<int> qat_bit_widths(const Sequential& model) {
  std::set<int> widths;
  for_each_layer(model, [&](const Module& m) {
    if (auto* q = dynamic_cast<const QatWeights*>(&m); q && !q->inner().keep_float()) widths.insert(q->bits());
    if (auto* a = dynamic_cast<const QatObservedActivation*>(&m)) widths.insert(a->bits());
  });
  return widths;
}

int qat_bits(const Sequential& model) {
  const std::set<int> widths = qat_bit_widths(model);
  return widths.empty() ? 0 : *widths.rbegin();
}

std::string qat_bits_text(const Sequential& model) {
  const std::set<int> widths = qat_bit_widths(model);
  if (widths.empty()) return "float";
  int kept = 0;
  for_each_layer(model, [&](const Module& m) {
    if (auto* q = dynamic_cast<const QatWeights*>(&m); q && q->inner().keep_float()) ++kept;
  });
  const std::string islands = kept == 0 ? "" : fmt::format(", {} layer{} in float", kept, kept == 1 ? "" : "s");
  if (widths.size() == 1) return fmt::format("{}-bit{}", *widths.begin(), islands);
  return fmt::format("mixed {}-bit{}", fmt::join(widths, "/"), islands);
}

void set_calibration(Sequential& model, const QatObservedActivation::Sink& sink) {
  model.set_fusion(!sink);  // the sinks want each activation's whole output, not a pooled one
  for_each_layer(model, [&](Module& m) {
    if (auto* w = dynamic_cast<QatWeights*>(&m)) w->set_float(static_cast<bool>(sink));
    if (auto* a = dynamic_cast<QatObservedActivation*>(&m)) a->set_sink(sink);
    if (auto* c = dynamic_cast<Container*>(&m))
      for (Sequential* branch : c->branches()) branch->set_fusion(!sink);
  });
}

// --- QAT files -----------------------------------------------------------------------------

Sequential load_any_model(const std::string& path, const ObserverOptions& observer) {
  const qbin::Model file = qbin::load(path);
  try {
    // The float layers; prepare_qat puts the Quantize records back.
    Sequential model = from_qbin(file, [](const qbin::LayerRecord& r) { return r.kind == "Quantize"; });
    // Each layer with weights has its weight_bits (from_qbin made them its quant_bits); a grid of a
    // layer without weights (average pooling, a residual add) has its "bits" since per-layer bit
    // widths exist, and before, every width was the one of the weights.
    int bits = 0;
    bool quantize_records = false;
    for (const auto& r : file.layers) {
      bits = std::max(bits, r.get_int(key::kWeightBits, 0));  // 2..8 (io/record_schema.cpp)
      quantize_records = quantize_records || r.kind == "Quantize";
    }
    if (bits == 0) {
      if (quantize_records) throw qbin::FormatError("a Quantize record in a float model (no weight_bits)");
      return model;
    }
    prepare_qat(model, {.bits = bits, .observer = observer});
    // The prepared model writes exactly the file's records, kind by kind, if the file is its QAT form.
    const qbin::Model expected = to_qbin(model);
    if (expected.layers.size() != file.layers.size())
      throw qbin::FormatError(fmt::format("{} layer records (expected {} for the QAT form of its layers: a Quantize record after each layer "
                                          "that gives codes and no ReLU follows)", file.layers.size() - 1, expected.layers.size() - 1));
    for (size_t i = 1; i < file.layers.size(); ++i)
      if (file.layers[i].kind != expected.layers[i].kind)
        throw qbin::FormatError(fmt::format("layer '{}' ({}): expected {} here", qbin::shown(file.layers[i].name),
                                            qbin::shown(file.layers[i].kind), expected.layers[i].kind));
    std::vector<QatObservedActivation*> observed;
    for_each_layer(model, [&](Module& m) {
      if (auto* a = dynamic_cast<QatObservedActivation*>(&m)) observed.push_back(a);
    });
    size_t next = 0;
    for (size_t i = 1; i < file.layers.size(); ++i) {
      const qbin::LayerRecord& r = file.layers[i];
      if (r.get_int(key::kOutputBits, 0) == 0 && r.kind != "Quantize") continue;
      if (next >= observed.size())
        throw qbin::FormatError(fmt::format("layer '{}': a quantized activation where the model has none", qbin::shown(r.name)));
      QatObservedActivation& a = *observed[next++];
      const bool relu = dynamic_cast<QatReLU*>(&a) != nullptr;
      if (relu != (r.kind == "ReLU"))
        throw qbin::FormatError(fmt::format("layer '{}' ({}): expected {} here", qbin::shown(r.name), qbin::shown(r.kind), relu ? "ReLU" : "Quantize"));
      a.set_name(r.name);
      // Its own width (2..8, io/record_schema.cpp): its layer's, or narrower (--int8-target avx2).
      a.set_bits(r.get_int(key::kOutputBits, 0));
      const float lo = r.get_float(key::kOutputMin), hi = r.get_float(key::kOutputMax);
      // A Quantize range of one value ([0, 0]) has no grid: before, it loaded and the model scored 0.14.
      const bool ok = std::isfinite(lo) && std::isfinite(hi) && (relu ? lo <= hi : lo < hi) && hi <= 0x1p40f && lo >= -0x1p40f &&
                      (!relu || lo >= 0.f);
      if (!ok)
        throw qbin::FormatError(fmt::format("layer '{}': activation range [{}, {}] (expected finite {}min {} max, within 2^40{})",
                                            qbin::shown(r.name), lo, hi, relu ? "0 <= " : "", relu ? "<=" : "<",
                                            relu ? ": a ReLU's output starts at 0" : ""));
      a.observer().set_range(lo, hi);
    }
    if (next != observed.size())
      throw qbin::FormatError(fmt::format("{} quantized activation records (expected {})", next, observed.size()));
    Accumulators{}.chain(model, 255, true, false);  // with the file's own activation widths
    return model;
  } catch (const std::invalid_argument& e) {
    throw qbin::FormatError(fmt::format("{}: {}", path, e.what()));
  } catch (const qbin::FormatError& e) {
    throw qbin::FormatError(fmt::format("{}: {}", path, e.what()));
  }
}

}  // namespace qnet
