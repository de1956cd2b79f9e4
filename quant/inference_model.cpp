#include "quant/inference_model.h"

#include <cmath>
#include <type_traits>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "core/ops.h"

namespace qnet {

const char* precision_name(Precision p) { return p == Precision::kInt8 ? "int8" : "f32"; }

namespace {

using qbin::DType;
using qbin::FormatError;
using qbin::LayerRecord;
using qbin::TensorRecord;

[[noreturn]] void fail(const LayerRecord& r, const std::string& what) {
  throw FormatError(fmt::format("layer '{}' ({}): {}", qbin::shown(r.name), qbin::shown(r.kind), what));
}

// Every scale in an int8 model lies in [2^-40, 2^40]: a requantization multiplier (eq. 11, a
// product of three scales) stays a normal float, and the logits (scale x up to 2^31 accumulator
// units) stay finite. Trained models are far inside (weights ~1e-3, activations ~1e-2).
constexpr float kMinScale = 0x1p-40f, kMaxScale = 0x1p40f;
bool sane_scale(float s) { return s >= kMinScale && s <= kMaxScale; }
const char* const kScaleRange = "a scale in [2^-40, 2^40]";

int attr(const LayerRecord& r, const char* key, int lo, int hi) {
  const int v = r.get_int(key);
  if (v < lo || v > hi) fail(r, fmt::format("{} = {} (expected {}..{})", key, v, lo, hi));
  return v;
}

// Window geometry and output size of a KHxKW window over HxW (TensorFlow's padding rules).
Geometry window(const LayerRecord& r, int H, int W, int KH, int KW, int SH, int SW, bool same, int& OH, int& OW) {
  const Padding p = same ? Padding::kSame : Padding::kValid;
  const AxisGeometry gh = axis_geometry(H, KH, SH, p), gw = axis_geometry(W, KW, SW, p);
  if (gh.out < 1 || gw.out < 1) fail(r, fmt::format("window {}x{} does not fit its {}x{} input", KH, KW, H, W));
  OH = static_cast<int>(gh.out), OW = static_cast<int>(gw.out);
  Geometry g{KH, KW, SH, SW, static_cast<int>(gh.pad_before), static_cast<int>(gw.pad_before), 0, 0};
  g.pad_bottom = static_cast<int>((gh.out - 1) * SH + KH - H - gh.pad_before);
  g.pad_right = static_cast<int>((gw.out - 1) * SW + KW - W - gw.pad_before);
  g.pad_bottom = std::max(g.pad_bottom, 0), g.pad_right = std::max(g.pad_right, 0);
  return g;
}

template <typename T>
std::vector<T> values(const LayerRecord& r, const TensorRecord& t, DType dtype, const Shape& shape) {
  if (t.dtype != dtype) fail(r, fmt::format("tensor '{}' is {} (expected {})", qbin::shown(t.name), qbin::dtype_name(t.dtype), qbin::dtype_name(dtype)));
  if (t.shape != shape) fail(r, fmt::format("tensor '{}' has shape {} (expected {})", qbin::shown(t.name), shape_str(t.shape), shape_str(shape)));
  std::vector<T> v(static_cast<size_t>(shape_numel(shape)));
  std::memcpy(v.data(), t.bytes.data(), v.size() * sizeof(T));
  if constexpr (std::is_floating_point_v<T>)
    for (size_t i = 0; i < v.size(); ++i)
      if (!std::isfinite(v[i]))
        fail(r, fmt::format("tensor '{}': element {} is {} (expected finite numbers)", qbin::shown(t.name), i, v[i]));
  return v;
}

// Per-output-channel weight scales of an int8 kernel (eq. 6): b bits, zero points 0.
std::vector<float> weight_scales(const LayerRecord& r, const TensorRecord& t, int axis, int channels, int bits) {
  const qbin::QuantParams& q = t.quant;
  if (q.bits != bits || q.axis != axis || q.scales.size() != static_cast<size_t>(channels))
    fail(r, fmt::format("kernel quantization: {} bits, axis {}, {} scales (expected {} bits, axis {}, {} scales)", q.bits, q.axis,
                        q.scales.size(), bits, axis, channels));
  for (size_t c = 0; c < q.scales.size(); ++c)
    if (!sane_scale(q.scales[c]) || q.zero_points[c] != 0)
      fail(r, fmt::format("kernel channel {}: scale {} zero point {} (expected {} and zero point 0)", c, q.scales[c],
                          q.zero_points[c], kScaleRange));
  return q.scales;
}

void check_kernel_codes(const LayerRecord& r, const std::vector<int8_t>& k, int bits) {
  const int qmax = (1 << (bits - 1)) - 1;  // narrow range (eq. 6)
  for (int8_t v : k)
    if (v < -qmax || v > qmax) fail(r, fmt::format("kernel code {} outside [-{}, {}] for {} bits", v, qmax, qmax, bits));
}

// |acc| <= K * 255 * 127 + |b_q| must fit int32: the accumulator cannot overflow.
void check_accumulator(const LayerRecord& r, int64_t K, const std::vector<int32_t>& bias) {
  int64_t max_bias = 0;
  for (int32_t b : bias) max_bias = std::max<int64_t>(max_bias, std::abs(static_cast<int64_t>(b)));
  if (K * 255 * 127 + max_bias > std::numeric_limits<int32_t>::max())
    fail(r, fmt::format("a {}-term int8 dot product with bias up to {} can overflow the int32 accumulator", K, max_bias));
}

struct Builder {
  InferenceModel m;
  float scale = 1.f / 255.f;  // the current activation scale (int8 models)
  int H = 0, W = 0, C = 0;

  void conv(const LayerRecord& r, const LayerRecord* relu) {
    ConvStage s;
    s.IC = attr(r, "in_channels", 1, 1 << 16);
    s.OC = attr(r, "filters", 1, 1 << 16);
    if (s.IC != C) fail(r, fmt::format("in_channels {} but its input has {} channels", s.IC, C));
    int OH = 0, OW = 0;
    s.g = window(r, H, W, attr(r, "kernel_h", 1, 64), attr(r, "kernel_w", 1, 64), attr(r, "stride_h", 1, 64),
                 attr(r, "stride_w", 1, 64), r.get_int("padding_same") != 0, OH, OW);
    const Shape kshape{s.g.KH, s.g.KW, s.IC, s.OC};
    const TensorRecord& k = r.tensor("kernel");
    const TensorRecord* b = r.find_tensor("bias");
    s.relu = relu != nullptr;
    if (m.precision == Precision::kF32) {
      s.kernel = values<float>(r, k, DType::kF32, kshape);
      s.bias = b ? values<float>(r, *b, DType::kF32, {s.OC}) : std::vector<float>(s.OC, 0.f);
    } else {
      if (!relu) fail(r, "an int8 Conv2D must be followed by ReLU (its uint8 output starts at 0)");
      s.qkernel = values<int8_t>(r, k, DType::kS8, kshape);
      check_kernel_codes(r, s.qkernel, m.bits);
      const std::vector<float> sw = weight_scales(r, k, 3, s.OC, m.bits);
      s.qbias = b ? values<int32_t>(r, *b, DType::kS32, {s.OC}) : std::vector<int32_t>(s.OC, 0);
      check_accumulator(r, int64_t{s.g.KH} * s.g.KW * s.IC, s.qbias);
      const float out_scale = relu->get_float("output_scale");
      if (!sane_scale(out_scale) || relu->get_int("output_zero_point") != 0 || relu->get_int("output_bits") != m.bits)
        fail(*relu, fmt::format("output scale {}, zero point {}, {} bits (expected {}, zero point 0, {} bits)", out_scale,
                                relu->get_int("output_zero_point"), relu->get_int("output_bits"), kScaleRange, m.bits));
      s.qmax = (1 << m.bits) - 1;
      for (int oc = 0; oc < s.OC; ++oc) s.output_scale.push_back(scale * sw[oc] / out_scale);  // eq. 11
      scale = out_scale;
    }
    H = OH, W = OW, C = s.OC;
    m.stages.push_back({r.name, std::move(s), H, W, C});
  }

  void pool(const LayerRecord& r) {
    PoolStage s;
    int OH = 0, OW = 0;
    s.g = window(r, H, W, attr(r, "window_h", 1, 64), attr(r, "window_w", 1, 64), attr(r, "stride_h", 1, 64),
                 attr(r, "stride_w", 1, 64), r.get_int("padding_same") != 0, OH, OW);
    H = OH, W = OW;
    m.stages.push_back({r.name, s, H, W, C});
  }

  void dense(const LayerRecord& r) {
    DenseStage s;
    s.IN = attr(r, "in_features", 1, 1 << 24);
    s.OUT = attr(r, "units", 1, 1 << 16);
    if (H != 1 || W != 1 || s.IN != C)
      fail(r, fmt::format("in_features {} but its input is {}x{}x{} (expected a Flatten of {} features before it)", s.IN, H, W, C, s.IN));
    const TensorRecord& k = r.tensor("kernel");
    const TensorRecord* b = r.find_tensor("bias");
    if (m.precision == Precision::kF32) {
      s.kernel = values<float>(r, k, DType::kF32, {s.IN, s.OUT});
      s.bias = b ? values<float>(r, *b, DType::kF32, {s.OUT}) : std::vector<float>(s.OUT, 0.f);
    } else {
      s.qkernel = values<int8_t>(r, k, DType::kS8, {s.IN, s.OUT});
      check_kernel_codes(r, s.qkernel, m.bits);
      const std::vector<float> sw = weight_scales(r, k, 1, s.OUT, m.bits);
      s.qbias = b ? values<int32_t>(r, *b, DType::kS32, {s.OUT}) : std::vector<int32_t>(s.OUT, 0);
      check_accumulator(r, s.IN, s.qbias);
      for (int o = 0; o < s.OUT; ++o) s.output_scale.push_back(scale * sw[o]);  // eq. 12
    }
    C = s.OUT;
    m.stages.push_back({r.name, std::move(s), 1, 1, C});
  }
};

Precision precision_of(const qbin::Model& file) {
  bool any_s8 = false, any_f32 = false;
  for (const auto& r : file.layers)
    for (const auto& t : r.tensors) (t.dtype == DType::kF32 ? any_f32 : any_s8) = true;
  if (any_s8 && any_f32) throw FormatError("the model mixes f32 and integer tensors (expected all f32 or all int8/int32)");
  return any_s8 ? Precision::kInt8 : Precision::kF32;
}

}  // namespace

InferenceModel inference_model(const qbin::Model& file) {
  if (file.layers.empty() || file.layers[0].kind != "Input") throw FormatError("the first layer record is not 'Input'");
  Builder b;
  const LayerRecord& in = file.layers[0];
  b.m.precision = precision_of(file);
  b.H = b.m.H = attr(in, "height", 1, 16384);
  b.W = b.m.W = attr(in, "width", 1, 16384);
  b.C = b.m.C = attr(in, "channels", 1, 4);
  if (b.m.precision == Precision::kInt8) {
    attr(in, "bits", 8, 8);  // the input codes are the uint8 pixels
    for (size_t i = file.layers.size(); i-- > 1;)  // the first kernel's width; every layer is checked against it
      if (const TensorRecord* k = file.layers[i].find_tensor("kernel")) b.m.bits = k->quant.bits;
    if (b.m.bits < 2 || b.m.bits > 8) throw FormatError(fmt::format("kernels of {} bits (expected 2..8)", b.m.bits));
    b.scale = b.m.input_scale = in.get_float("input_scale");
    if (!sane_scale(b.scale)) fail(in, fmt::format("input_scale {} (expected {})", b.scale, kScaleRange));
  }
  for (size_t i = 1; i < file.layers.size(); ++i) {
    const LayerRecord& r = file.layers[i];
    if (!b.m.stages.empty() && std::holds_alternative<DenseStage>(b.m.stages.back().op))
      fail(r, "layers after the final Dense are not supported by the runtime");
    if (r.kind == "Conv2D") {
      const bool relu = i + 1 < file.layers.size() && file.layers[i + 1].kind == "ReLU";
      b.conv(r, relu ? &file.layers[i + 1] : nullptr);
      i += relu ? 1 : 0;
    } else if (r.kind == "MaxPool2D") {
      b.pool(r);
    } else if (r.kind == "Flatten") {
      b.C = b.H * b.W * b.C, b.H = b.W = 1;
      b.m.stages.push_back({r.name, FlattenStage{}, 1, 1, b.C});
    } else if (r.kind == "Dense") {
      b.dense(r);
    } else if (r.kind == "Dropout" && b.m.precision == Precision::kF32) {
      continue;  // a float model's Dropout: the identity at inference
    } else if (r.kind == "ReLU") {
      fail(r, "the runtime runs ReLU fused into the Conv2D before it; this one follows no Conv2D");
    } else {
      fail(r, "unknown layer kind");
    }
  }
  if (b.m.stages.empty() || !std::holds_alternative<DenseStage>(b.m.stages.back().op))
    throw FormatError("the model does not end with a Dense layer (the runtime returns its logits)");
  return b.m;
}

InferenceModel load_inference_model(const std::string& path) {
  const qbin::Model file = qbin::load(path);
  try {
    return inference_model(file);
  } catch (const FormatError& e) {
    throw FormatError(fmt::format("{}: {}", path, e.what()));
  }
}

}  // namespace qnet
