#include "quant/export.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "core/autograd.h"
#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "quant/observer.h"
#include "quant/qat.h"
#include "quant/quantization.h"

namespace qnet {

namespace key = qbin::key;

namespace {

template <typename T>
qbin::TensorRecord int_tensor(std::string name, qbin::DType dtype, const Shape& shape, const std::vector<T>& v) {
  qbin::TensorRecord t{std::move(name), dtype, shape, {}, std::vector<uint8_t>(v.size() * sizeof(T))};
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

// A QAT Conv2D or Dense record with its kernel in b-bit codes (eq. 6-7) and its bias in
// accumulator units (eq. 10); s_in is the scale of the layer's input codes.
qbin::LayerRecord quantize_layer(const QatWeights& q, float s_in) {
  qbin::LayerRecord r = q.to_record();
  const Tensor kernel = qbin::to_f32(r.tensor("kernel"));
  const qbin::TensorRecord* bias_record = r.find_tensor("bias");
  const Tensor bias = bias_record ? qbin::to_f32(*bias_record) : Tensor();
  const std::vector<QParams> w = choose_weight_qparams(kernel, q.bits());
  const int64_t OC = static_cast<int64_t>(w.size()), axis = kernel.rank() - 1;

  std::vector<int8_t> codes(kernel.numel());
  for (int64_t i = 0; i < kernel.numel(); ++i) codes[i] = static_cast<int8_t>(quantize(kernel[i], w[i % OC]));
  qbin::TensorRecord k = int_tensor("kernel", qbin::DType::kS8, kernel.shape(), codes);
  k.quant = {q.bits(), static_cast<int>(axis), {}, std::vector<int32_t>(OC, 0)};
  for (const QParams& p : w) k.quant.scales.push_back(p.scale);
  r.tensors = {std::move(k)};

  if (!bias.empty()) {
    std::vector<int32_t> b_q(OC);
    for (int64_t c = 0; c < OC; ++c) {
      const double acc_unit = static_cast<double>(s_in) * w[c].scale;  // eq. 10
      const double v = std::nearbyint(bias[c] / acc_unit);
      if (!(std::abs(v) <= (1 << 30)))
        throw std::invalid_argument(fmt::format("export: layer '{}' bias {} is {} accumulator units (more than 2^30)", q.name(), bias[c], v));
      b_q[c] = static_cast<int32_t>(v);
    }
    r.tensors.push_back(int_tensor("bias", qbin::DType::kS32, {OC}, b_q));
  }
  return r;
}

QParams observed_qparams(const std::string& name, const MovingAverageObserver& observer, int bits) {
  if (!observer.initialized()) throw std::invalid_argument(fmt::format("export: layer '{}' has no observed activation range", name));
  return observer.qparams(bits);
}

}  // namespace

qbin::Model export_int8(const Sequential& model) {
  const int bits = qat_bits(model);
  if (bits == 0) throw std::invalid_argument("export: the model is not in QAT form (train with --qat or quantize it with PTQ)");
  const Shape& in = model.input_shape();
  float scale = 1.f / 255.f;  // uint8 pixels are the input codes
  qbin::Model m;
  m.layers.push_back({"Input", "input",
                      {{key::kHeight, static_cast<int32_t>(in[0])}, {key::kWidth, static_cast<int32_t>(in[1])},
                       {key::kChannels, static_cast<int32_t>(in[2])}, {key::kInputBits, 8}},
                      {{key::kInputScale, scale}}, {}});
  for (size_t i = 0; i < model.size(); ++i) {
    const Module& layer = model.layer(i);
    if (const auto* q = dynamic_cast<const QatWeights*>(&layer)) {
      m.layers.push_back(quantize_layer(*q, scale));
    } else if (const auto* relu = dynamic_cast<const QatReLU*>(&layer)) {
      const QParams p = observed_qparams(relu->name(), relu->observer(), relu->bits());
      if (p.zero_point != 0)
        throw std::invalid_argument(fmt::format("export: layer '{}' has zero point {} (expected 0 after ReLU)", relu->name(), p.zero_point));
      m.layers.push_back({"ReLU", relu->name(), {{key::kOutputBits, relu->bits()}, {key::kOutputZeroPoint, 0}}, {{key::kOutputScale, p.scale}}, {}});
      scale = p.scale;
    } else if (const auto* quantize = dynamic_cast<const QatQuantize*>(&layer)) {
      const QParams p = observed_qparams(quantize->name(), quantize->observer(), quantize->bits());
      m.layers.push_back({"Quantize", quantize->name(), {{key::kOutputBits, quantize->bits()}, {key::kOutputZeroPoint, p.zero_point}},
                          {{key::kOutputScale, p.scale}}, {}});
      scale = p.scale;
    } else if (const LayerKind* kind = find_layer_kind(layer.type_name()); !kind || kind->role != Int8Role::kTrainingOnly) {
      m.layers.push_back(record_of(layer));  // pass-through kinds (MaxPool2D, Flatten) and plain ReLUs keep their records
    }
  }
  return m;
}

void calibrate_ptq(Sequential& model, const ImageSet& calibration, const PtqOptions& o) {
  check_bits(o.bits);
  if (calibration.size() < 1) throw std::invalid_argument("calibrate_ptq: no calibration images");
  if (!(o.percentile > 0 && o.percentile <= 100))
    throw std::invalid_argument(fmt::format("calibrate_ptq: percentile {} (expected 0 < p <= 100)", o.percentile));
  prepare_qat(model, {.bits = o.bits, .observer = {}});  // checks the graph; float forward below ignores it
  std::vector<std::vector<float>> seen(model.size());    // kPercentile: every activation
  std::vector<MinMaxObserver> ranges(model.size());
  NoGradGuard no_grad;
  model.set_training(false);
  for (int64_t begin = 0; begin < calibration.size(); begin += o.batch_size) {
    Variable x(calibration.batch(begin, std::min(o.batch_size, calibration.size() - begin)).x, false);
    for (size_t i = 0; i < model.size(); ++i) {
      Module& layer = model.layer(i);
      const bool observed = dynamic_cast<QatObservedActivation*>(&layer) != nullptr;
      if (auto* q = dynamic_cast<QatWeights*>(&layer)) x = q->inner().forward(x);  // the float layer: PTQ calibrates the float model
      else if (dynamic_cast<QatReLU*>(&layer)) x = relu(x);
      else if (!observed) x = layer.forward(x);  // a QatQuantize is the identity in the float model
      if (!observed) continue;
      ranges[i].observe(x.value());
      if (o.method == CalibrationMethod::kPercentile) seen[i].insert(seen[i].end(), x.value().data(), x.value().data() + x.value().numel());
    }
  }
  for (size_t i = 0; i < model.size(); ++i) {
    auto* observed = dynamic_cast<QatObservedActivation*>(&model.layer(i));
    if (!observed) continue;
    const bool after_relu = dynamic_cast<QatReLU*>(observed) != nullptr;
    float bottom = after_relu ? 0.f : ranges[i].min(), top = ranges[i].max();
    if (o.method == CalibrationMethod::kPercentile && !seen[i].empty()) {  // the top p% (and for signed values the bottom p%)
      std::vector<float>& v = seen[i];
      const auto nth = [&](double fraction) {
        const size_t k = std::min(v.size() - 1, static_cast<size_t>(fraction * static_cast<double>(v.size() - 1)));
        std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
        return v[k];
      };
      top = nth(o.percentile / 100.0);
      if (!after_relu) bottom = std::min(nth(1.0 - o.percentile / 100.0), 0.f);
    }
    observed->observer().set_range(bottom, top);
    observed->observer().freeze();
  }
}

}  // namespace qnet
