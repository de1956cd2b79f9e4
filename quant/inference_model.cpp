#include "quant/inference_model.h"

#include <cmath>
#include <type_traits>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "core/ops.h"
#include "io/record_keys.h"

namespace qnet {

namespace key = qbin::key;

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

// |acc| <= K * 255 * 127 + |b_q| must fit int32: the accumulator cannot overflow. With an input
// zero point the runtime folds -z_in * sum w into the bias (quant/lowering.cpp), which can add
// as much again.
void check_accumulator(const LayerRecord& r, int64_t K, const std::vector<int32_t>& bias, int32_t input_zero_point) {
  int64_t max_bias = 0;
  for (int32_t b : bias) max_bias = std::max<int64_t>(max_bias, std::abs(static_cast<int64_t>(b)));
  if (K * 255 * 127 * (input_zero_point ? 2 : 1) + max_bias > std::numeric_limits<int32_t>::max())
    fail(r, fmt::format("a {}-term int8 dot product with bias up to {} can overflow the int32 accumulator", K, max_bias));
}

// What follows a Conv2D or Dense in the file, fused into its stage.
struct Activation {
  bool relu = false;
  bool f32 = true;             // int8 models: the float logits rather than u8 codes
  float scale = 1.f;           // u8 output
  int32_t zero_point = 0;      // u8 output
  const LayerRecord* record = nullptr;  // the record consumed with the layer, if any
};

struct Builder {
  InferenceModel m;
  float scale = 1.f / 255.f;  // the current activation scale (int8 models)
  int32_t zero = 0;           // the current activation zero point (int8 models, u8 codes)
  bool f32 = true;            // the current activation is floats (f32 models; int8 after the logits layer)
  int H = 0, W = 0, C = 0;

  // The activation of the weighted layer r, from the record after it (or none). int8: a ReLU
  // with output_bits or a Quantize record gives u8 codes; anything else makes r the layer that
  // gives the float logits.
  Activation activation(const LayerRecord& r, const LayerRecord* next) const {
    Activation a;
    const bool quantized = next && next->get_int(key::kOutputBits, 0) != 0;
    if (m.precision == Precision::kF32) {
      a.relu = next && next->kind == "ReLU";
      a.record = a.relu ? next : nullptr;
      return a;
    }
    if (f32) fail(r, "follows the layer that gives the float logits (in an int8 model only the last Conv2D or Dense gives floats)");
    if (next && quantized && (next->kind == "ReLU" || next->kind == "Quantize")) {
      a.relu = next->kind == "ReLU";
      a.f32 = false, a.record = next;
      a.scale = next->get_float(key::kOutputScale);
      a.zero_point = next->get_int(key::kOutputZeroPoint);
      const int32_t qmax = (1 << m.bits) - 1;
      const int32_t zero_max = a.relu ? 0 : qmax;
      if (!sane_scale(a.scale) || a.zero_point < 0 || a.zero_point > zero_max || next->get_int(key::kOutputBits) != m.bits)
        fail(*next, fmt::format("output scale {}, zero point {}, {} bits (expected {}, zero point {}, {} bits)", a.scale, a.zero_point,
                                next->get_int(key::kOutputBits), kScaleRange, a.relu ? "0" : fmt::format("0..{}", qmax), m.bits));
      return a;
    }
    a.relu = next && next->kind == "ReLU" && !quantized;  // a float ReLU on the logits
    a.record = a.relu ? next : nullptr;
    return a;
  }

  // Appends the stage; in an int8 model its activation becomes the current one.
  void push(const LayerRecord& r, StageOp op, const Activation& a) {
    Stage st{r.name, std::move(op), H, W, C, true, 0};
    if (m.precision == Precision::kInt8) {
      st.f32_output = a.f32, st.zero_point = a.zero_point;
      f32 = a.f32, zero = a.zero_point;
      if (!a.f32) scale = a.scale;
    }
    m.stages.push_back(std::move(st));
  }

  // int8 output scales of a layer with weight scales sw (eq. 11, or eq. 12 for the logits).
  std::vector<float> output_scales(const std::vector<float>& sw, const Activation& a) const {
    std::vector<float> out;
    for (float w : sw) out.push_back(a.f32 ? scale * w : scale * w / a.scale);
    return out;
  }

  void conv(const LayerRecord& r, const Activation& a) {
    ConvStage s;
    s.IC = attr(r, key::kInChannels, 1, 1 << 16);
    s.OC = attr(r, key::kFilters, 1, 1 << 16);
    if (s.IC != C) fail(r, fmt::format("in_channels {} but its input has {} channels", s.IC, C));
    int OH = 0, OW = 0;
    s.g = window(r, H, W, attr(r, key::kKernelH, 1, 64), attr(r, key::kKernelW, 1, 64), attr(r, key::kStrideH, 1, 64),
                 attr(r, key::kStrideW, 1, 64), r.get_int(key::kPaddingSame) != 0, OH, OW);
    const Shape kshape{s.g.KH, s.g.KW, s.IC, s.OC};
    const TensorRecord& k = r.tensor("kernel");
    const TensorRecord* b = r.find_tensor("bias");
    s.relu = a.relu;
    if (m.precision == Precision::kF32) {
      s.kernel = values<float>(r, k, DType::kF32, kshape);
      s.bias = b ? values<float>(r, *b, DType::kF32, {s.OC}) : std::vector<float>(s.OC, 0.f);
    } else {
      s.qkernel = values<int8_t>(r, k, DType::kS8, kshape);
      check_kernel_codes(r, s.qkernel, m.bits);
      const std::vector<float> sw = weight_scales(r, k, 3, s.OC, m.bits);
      s.qbias = b ? values<int32_t>(r, *b, DType::kS32, {s.OC}) : std::vector<int32_t>(s.OC, 0);
      s.input_zero_point = zero;
      check_accumulator(r, int64_t{s.g.KH} * s.g.KW * s.IC, s.qbias, zero);
      s.qmax = (1 << m.bits) - 1;
      s.output_scale = output_scales(sw, a);
      s.output_zero_point = a.zero_point;
    }
    H = OH, W = OW, C = s.OC;
    push(r, std::move(s), a);
  }

  void pool(const LayerRecord& r) {
    PoolStage s;
    int OH = 0, OW = 0;
    s.g = window(r, H, W, attr(r, key::kWindowH, 1, 64), attr(r, key::kWindowW, 1, 64), attr(r, key::kStrideH, 1, 64),
                 attr(r, key::kStrideW, 1, 64), r.get_int(key::kPaddingSame) != 0, OH, OW);
    H = OH, W = OW;
    m.stages.push_back({r.name, s, H, W, C, f32, zero});
  }

  void dense(const LayerRecord& r, const Activation& a) {
    DenseStage s;
    s.IN = attr(r, key::kInFeatures, 1, 1 << 24);
    s.OUT = attr(r, key::kUnits, 1, 1 << 16);
    if (H != 1 || W != 1 || s.IN != C)
      fail(r, fmt::format("in_features {} but its input is {}x{}x{} (expected a Flatten of {} features before it)", s.IN, H, W, C, s.IN));
    const TensorRecord& k = r.tensor("kernel");
    const TensorRecord* b = r.find_tensor("bias");
    s.relu = a.relu;
    if (m.precision == Precision::kF32) {
      s.kernel = values<float>(r, k, DType::kF32, {s.IN, s.OUT});
      s.bias = b ? values<float>(r, *b, DType::kF32, {s.OUT}) : std::vector<float>(s.OUT, 0.f);
    } else {
      s.qkernel = values<int8_t>(r, k, DType::kS8, {s.IN, s.OUT});
      check_kernel_codes(r, s.qkernel, m.bits);
      const std::vector<float> sw = weight_scales(r, k, 1, s.OUT, m.bits);
      s.qbias = b ? values<int32_t>(r, *b, DType::kS32, {s.OUT}) : std::vector<int32_t>(s.OUT, 0);
      s.input_zero_point = zero;
      check_accumulator(r, s.IN, s.qbias, zero);
      s.qmax = (1 << m.bits) - 1;
      s.output_scale = output_scales(sw, a);
      s.output_zero_point = a.zero_point;
    }
    C = s.OUT;
    push(r, std::move(s), a);
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
  b.H = b.m.H = attr(in, key::kHeight, 1, 16384);
  b.W = b.m.W = attr(in, key::kWidth, 1, 16384);
  b.C = b.m.C = attr(in, key::kChannels, 1, 4);
  if (b.m.precision == Precision::kInt8) {
    attr(in, key::kInputBits, 8, 8);  // the input codes are the uint8 pixels
    for (size_t i = file.layers.size(); i-- > 1;)  // the first kernel's width; every layer is checked against it
      if (const TensorRecord* k = file.layers[i].find_tensor("kernel")) b.m.bits = k->quant.bits;
    if (b.m.bits < 2 || b.m.bits > 8) throw FormatError(fmt::format("kernels of {} bits (expected 2..8)", b.m.bits));
    b.scale = b.m.input_scale = in.get_float(key::kInputScale);
    if (!sane_scale(b.scale)) fail(in, fmt::format("input_scale {} (expected {})", b.scale, kScaleRange));
  }
  b.f32 = b.m.precision == Precision::kF32;
  for (size_t i = 1; i < file.layers.size(); ++i) {
    const LayerRecord& r = file.layers[i];
    const LayerRecord* next = i + 1 < file.layers.size() ? &file.layers[i + 1] : nullptr;
    if (r.kind == "Conv2D" || r.kind == "Dense") {
      const Activation a = b.activation(r, next);
      if (r.kind == "Conv2D") b.conv(r, a);
      else b.dense(r, a);
      i += a.record ? 1 : 0;
    } else if (r.kind == "MaxPool2D") {
      b.pool(r);
    } else if (r.kind == "Flatten") {
      b.C = b.H * b.W * b.C, b.H = b.W = 1;
      b.m.stages.push_back({r.name, FlattenStage{}, 1, 1, b.C, b.f32, b.zero});
    } else if (r.kind == "Dropout" || r.get_int(key::kTrainingOnly, 0) == 1 || (r.kind == "Quantize" && b.m.precision == Precision::kF32)) {
      continue;  // the identity at inference (training-only layers; a QAT file's Quantize record, run in f32)
    } else if (r.kind == "ReLU" && (b.m.precision == Precision::kF32 || r.get_int(key::kOutputBits, 0) == 0)) {
      b.m.stages.push_back({r.name, ReluStage{b.f32 ? 0 : b.zero}, b.H, b.W, b.C, b.f32, b.f32 ? 0 : b.zero});
    } else if (r.kind == "ReLU" || r.kind == "Quantize") {
      fail(r, "a quantized activation that follows no Conv2D or Dense");
    } else {
      fail(r, "unknown layer kind");
    }
  }
  if (b.m.stages.empty()) throw FormatError("the model has no layers");
  const Stage& last = b.m.stages.back();
  if (!last.f32_output)
    throw FormatError(fmt::format("the model ends with u8 codes (layer '{}'): expected its last Conv2D or Dense to give the float logits, "
                                  "with no quantized activation after it", qbin::shown(last.name)));
  if (last.H != 1 || last.W != 1)
    throw FormatError(fmt::format("the model's output is {}x{}x{} per image (expected 1x1xclasses: end with Dense or Flatten)", last.H,
                                  last.W, last.C));
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
