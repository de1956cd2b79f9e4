#include "quant/export.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <stdexcept>

#include <fmt/format.h>

#include "core/autograd.h"
#include "io/record_keys.h"
#include "layers/container.h"
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

// A QAT Conv2D, DepthwiseConv2D or Dense record with its kernel in b-bit codes (eq. 6-7) and its
// bias in accumulator units (eq. 10), a folded BatchNormalization in both (eq. 13-14); s_in is
// the scale of the layer's input codes.
qbin::LayerRecord quantize_layer(const QatWeights& q, float s_in) {
  qbin::LayerRecord r = q.to_record();
  const Tensor kernel = q.deployed_kernel(), bias = q.deployed_bias();
  std::vector<QParams> w = choose_weight_qparams(kernel, q.bits());
  const int64_t OC = static_cast<int64_t>(w.size()), axis = kernel.rank() - 1;
  // A channel whose weights are tiny next to its bias (a folded BatchNormalization with gamma near
  // 0) would need a bias beyond 2^30 accumulator units: its weight scale grows until the bias
  // fits (TFLite's AdjustWeightsForBiasScale). Its weights then move it by less than 1% of the bias.
  constexpr double kMaxBias = double{1 << 30};
  for (int64_t c = 0; c < OC && !bias.empty(); ++c) {
    const double needed = std::abs(static_cast<double>(bias[c])) / (static_cast<double>(s_in) * kMaxBias);
    if (w[c].scale < needed) w[c].scale = std::nextafter(static_cast<float>(needed), std::numeric_limits<float>::infinity());
  }

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

// A QAT layer kept in float (Module::keep_float): its record with the deployed f32 kernel and bias
// (a folded BatchNormalization in both) and no weight width: the runtime runs it as a float island.
qbin::LayerRecord float_layer(const QatWeights& q) {
  qbin::LayerRecord r = q.to_record();
  std::erase_if(r.ints, [](const auto& kv) { return kv.first == key::kWeightBits; });
  const Tensor kernel = q.deployed_kernel(), bias = q.deployed_bias();
  r.tensors = {{"kernel", qbin::DType::kF32, kernel.shape(), {}, std::vector<uint8_t>(static_cast<size_t>(kernel.numel()) * 4)}};
  std::memcpy(r.tensors[0].bytes.data(), kernel.data(), r.tensors[0].bytes.size());
  if (!bias.empty()) {
    r.tensors.push_back({"bias", qbin::DType::kF32, bias.shape(), {}, std::vector<uint8_t>(static_cast<size_t>(bias.numel()) * 4)});
    std::memcpy(r.tensors[1].bytes.data(), bias.data(), r.tensors[1].bytes.size());
  }
  return r;
}

QParams observed_qparams(const std::string& name, const MovingAverageObserver& observer, int bits) {
  if (!observer.initialized()) throw std::invalid_argument(fmt::format("export: layer '{}' has no observed activation range", name));
  return observer.qparams(bits);
}

// The int8 records of a chain whose input codes have scale `scale`; returns the scale of its output.
float export_chain(const Sequential& chain, float scale, std::vector<qbin::LayerRecord>& out) {
  for (size_t i = 0; i < chain.size(); ++i) {
    const Module& layer = chain.layer(i);
    if (const auto* q = dynamic_cast<const QatWeights*>(&layer)) {
      out.push_back(q->inner().keep_float() ? float_layer(*q) : quantize_layer(*q, scale));
    } else if (dynamic_cast<const QatBatchNorm*>(&layer)) {
      continue;  // folded into the layer before it
    } else if (const auto* relu = dynamic_cast<const QatReLU*>(&layer)) {
      const QParams p = observed_qparams(relu->name(), relu->observer(), relu->bits());
      if (p.zero_point != 0)
        throw std::invalid_argument(fmt::format("export: layer '{}' has zero point {} (expected 0 after ReLU)", relu->name(), p.zero_point));
      out.push_back({"ReLU", relu->name(), {{key::kOutputBits, relu->bits()}, {key::kOutputZeroPoint, 0}}, {{key::kOutputScale, p.scale}}, {}});
      scale = p.scale;
    } else if (const auto* quantize = dynamic_cast<const QatQuantize*>(&layer)) {
      const QParams p = observed_qparams(quantize->name(), quantize->observer(), quantize->bits());
      out.push_back({"Quantize", quantize->name(), {{key::kOutputBits, quantize->bits()}, {key::kOutputZeroPoint, p.zero_point}},
                     {{key::kOutputScale, p.scale}}, {}});
      scale = p.scale;
    } else if (const auto* container = dynamic_cast<const Container*>(&layer)) {
      const LayerKind* kind = find_layer_kind(layer.type_name());
      const size_t at = out.size();
      out.push_back(record_of(layer));
      const std::vector<const Sequential*> branches = container->branches();
      for (size_t b = 0; b < branches.size(); ++b) {
        const size_t before = out.size();
        export_chain(*branches[b], scale, out);  // each branch reads the block's input codes
        out[at].ints.emplace_back(kind->branch_counts.at(b), static_cast<int32_t>(out.size() - before));
      }
    } else if (const LayerKind* kind = find_layer_kind(layer.type_name()); !kind || kind->role != Int8Role::kTrainingOnly) {
      out.push_back(record_of(layer));  // pass-through kinds (pooling, padding, Flatten) and plain ReLUs keep their records
    }
  }
  return scale;
}

}  // namespace

qbin::Model export_int8(const Sequential& model) {
  const int bits = qat_bits(model);
  if (bits == 0) throw std::invalid_argument("export: the model is not in QAT form (train with --qat or quantize it with PTQ)");
  const Shape& in = model.input_shape();
  const float scale = 1.f / 255.f;  // uint8 pixels are the input codes
  qbin::Model m;
  m.layers.push_back({"Input", "input",
                      {{key::kHeight, static_cast<int32_t>(in[0])}, {key::kWidth, static_cast<int32_t>(in[1])},
                       {key::kChannels, static_cast<int32_t>(in[2])}, {key::kInputBits, 8}},
                      {{key::kInputScale, scale}}, {}});
  export_chain(model, scale, m.layers);
  return m;
}

namespace {

// What calibration saw of one activation: its min and max, and (percentile) a sample of its
// values: every `stride`-th value, at most about kMaxSamples in all.
struct Seen {
  MinMaxObserver range;
  std::vector<float> values;
};
constexpr int64_t kMaxSamples = int64_t{1} << 22;

}  // namespace

void calibrate_ptq(Sequential& model, const ImageSet& calibration, const PtqOptions& o) {
  check_bits(o.bits);
  if (calibration.size() < 1) throw std::invalid_argument("calibrate_ptq: no calibration images");
  if (!(o.percentile > 0 && o.percentile <= 100))
    throw std::invalid_argument(fmt::format("calibrate_ptq: percentile {} (expected 0 < p <= 100)", o.percentile));
  // Calibration on one image repeated (all zeros, say) gives ranges no other input fits: before,
  // quantize then gave 0.085 where the float model gave 0.415, and said nothing.
  bool all_same = calibration.size() > 1;
  for (int64_t i = 1; i < calibration.size() && all_same; ++i)
    all_same = std::memcmp(calibration.image(i), calibration.image(0), static_cast<size_t>(calibration.image_bytes())) == 0;
  if (all_same)
    throw std::invalid_argument(fmt::format("calibrate_ptq: the {} calibration images are all the same image: activation ranges calibrated on "
                                            "them would fit no other input (expected images like those the model will see)",
                                            calibration.size()));
  prepare_qat(model, {.bits = o.bits, .target = o.target, .observer = {}});  // checks the graph; calibration runs it in float
  std::map<const QatObservedActivation*, Seen> seen;
  set_calibration(model, [&](QatObservedActivation& where, const Tensor& v) {
    Seen& s = seen[&where];
    s.range.observe(v);
    if (o.method != CalibrationMethod::kPercentile || v.numel() == 0) return;
    const int64_t total = v.numel() / v.dim(0) * calibration.size(), stride = std::max<int64_t>(1, total / kMaxSamples);
    for (int64_t i = 0; i < v.numel(); i += stride) s.values.push_back(v[i]);
  });
  {
    NoGradGuard no_grad;
    model.set_training(false);
    for (int64_t begin = 0; begin < calibration.size(); begin += o.batch_size)
      model.forward(Variable(calibration.batch(begin, std::min(o.batch_size, calibration.size() - begin)).x, false));
  }
  set_calibration(model, nullptr);
  for_each_layer(model, [&](Module& m) {
    auto* observed = dynamic_cast<QatObservedActivation*>(&m);
    if (!observed) return;
    Seen& s = seen[observed];
    const bool after_relu = dynamic_cast<QatReLU*>(observed) != nullptr;
    float bottom = after_relu ? 0.f : s.range.min(), top = s.range.max();
    if (o.method == CalibrationMethod::kPercentile && !s.values.empty()) {  // the top p% (and for signed values the bottom p%)
      std::vector<float>& v = s.values;
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
  });
}

}  // namespace qnet
