// Reading a .qbin model into stages: the Input record, then each record through its kind's
// StageKind::read (quant/runtime/stages/), with the checks every kind shares (StageReader).
#include "quant/runtime/inference_model.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "core/ops.h"
#include "io/record_keys.h"
#include "io/record_schema.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace key = qbin::key;

const char* precision_name(Precision p) { return p == Precision::kInt8 ? "int8" : "f32"; }

using qbin::DType;
using qbin::FormatError;
using qbin::LayerRecord;
using qbin::TensorRecord;

void StageReader::fail(const LayerRecord& r, const std::string& what) {
  throw FormatError(fmt::format("layer '{}' ({}): {}", qbin::shown(r.name), qbin::shown(r.kind), what));
}

int StageReader::attr(const LayerRecord& r, const char* key, int lo, int hi) {
  const int v = r.get_int(key);
  if (v < lo || v > hi) fail(r, fmt::format("{} = {} (expected {}..{})", key, v, lo, hi));
  return v;
}

Geometry StageReader::window(const LayerRecord& r, int KH, int KW, int SH, int SW, bool same, int& OH, int& OW) const {
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

Geometry StageReader::window(const LayerRecord& r, const char* height_key, const char* width_key, int& OH, int& OW) const {
  return window(r, attr(r, height_key, 1, 64), attr(r, width_key, 1, 64), attr(r, key::kStrideH, 1, 64), attr(r, key::kStrideW, 1, 64),
                r.get_int(key::kPaddingSame) != 0, OH, OW);
}

std::vector<float> StageReader::weight_scales(const LayerRecord& r, const TensorRecord& t, int axis, int channels) const {
  const qbin::QuantParams& q = t.quant;
  const int weight_bits = r.get_int(key::kWeightBits, q.bits);
  if (q.bits < 2 || q.bits > 8 || q.bits != weight_bits || q.axis != axis || q.scales.size() != static_cast<size_t>(channels))
    fail(r, fmt::format("kernel quantization: {} bits, axis {}, {} scales (expected 2..8 bits, the layer's weight_bits {}, axis {}, {} scales)",
                        q.bits, q.axis, q.scales.size(), weight_bits, axis, channels));
  for (size_t c = 0; c < q.scales.size(); ++c)
    if (!sane_scale(q.scales[c]) || q.zero_points[c] != 0)
      fail(r, fmt::format("kernel channel {}: scale {} zero point {} (expected {} and zero point 0)", c, q.scales[c],
                          q.zero_points[c], kScaleRange));
  return q.scales;
}

void StageReader::check_kernel_codes(const LayerRecord& r, const TensorRecord& t, const std::vector<int8_t>& k) const {
  const int bits = t.quant.bits, qmax = (1 << (bits - 1)) - 1;  // narrow range (eq. 6); bits checked by weight_scales
  for (int8_t v : k)
    if (v < -qmax || v > qmax) fail(r, fmt::format("kernel code {} outside [-{}, {}] for {} bits", v, qmax, qmax, bits));
}

// Per output channel (the codes' last axis, bias.size() of them): the worst input codes give
// |sum x w| <= code_max S_c; the runtime folds -zero S_c into the bias (PlanBuilder::folded_bias),
// and oneDNN adds the bias in int32. The true bound of this file's weights, not K times the
// widest code: a model deploys unless its own accumulators can overflow.
void StageReader::check_accumulator(const LayerRecord& r, const std::vector<int8_t>& codes, const std::vector<int32_t>& bias) const {
  const size_t outputs = bias.size();
  std::vector<int64_t> sum(outputs, 0);
  for (size_t i = 0; i < codes.size(); ++i) sum[i % outputs] += std::abs(int64_t{codes[i]});
  for (size_t c = 0; c < outputs; ++c) {
    const int64_t bound = sum[c] * code_max + sum[c] * zero + std::abs(int64_t{bias[c]});
    if (bound > std::numeric_limits<int32_t>::max())
      fail(r, fmt::format("output channel {}: its {} weight codes (sum of magnitudes {}) on input codes up to {}{} and a bias of {} can "
                          "reach {}, beyond the int32 accumulator's 2147483647",
                          c, codes.size() / outputs, sum[c], code_max, zero ? fmt::format(" with zero point {}", zero) : "", bias[c], bound));
  }
}

FusedActivation StageReader::activation(const LayerRecord& r, const LayerRecord* next) const {
  FusedActivation a;
  const bool quantized = next && next->get_int(key::kOutputBits, 0) != 0;
  if (!int8()) {
    a.relu = a.took_next = next && next->kind == "ReLU";
    return a;
  }
  if (f32) fail(r, "follows the layer that gives the float logits (in an int8 model only the last Conv2D or Dense gives floats)");
  if (next && quantized && (next->kind == "ReLU" || next->kind == "Quantize")) {
    a.relu = next->kind == "ReLU";
    a.f32 = false, a.took_next = true;
    a.scale = next->get_float(key::kOutputScale);
    a.zero_point = next->get_int(key::kOutputZeroPoint);
    a.bits = next->get_int(key::kOutputBits);  // 2..8 (io/record_schema.cpp)
    const int32_t qmax = (1 << a.bits) - 1;
    const int32_t zero_max = a.relu ? 0 : qmax;
    if (!sane_scale(a.scale) || a.zero_point < 0 || a.zero_point > zero_max)
      fail(*next, fmt::format("output scale {}, zero point {} for {} bits (expected {}, zero point {})", a.scale, a.zero_point, a.bits,
                              kScaleRange, a.relu ? "0" : fmt::format("0..{}", qmax)));
    return a;
  }
  a.relu = a.took_next = next && next->kind == "ReLU" && !quantized;  // a float ReLU on the logits
  return a;
}

std::vector<float> StageReader::output_scales(const std::vector<float>& sw, const FusedActivation& a) const {
  std::vector<float> out;
  for (float w : sw) out.push_back(a.f32 ? scale * w : scale * w / a.scale);
  return out;
}

void StageReader::push(const LayerRecord& r, std::shared_ptr<const StageOp> op, int oh, int ow, int oc, const FusedActivation& a) {
  Stage st{r.name, r.kind, std::move(op), oh, ow, oc, true, 0};
  if (int8()) {
    st.f32_output = a.f32, st.zero_point = a.zero_point;
    f32 = a.f32, zero = a.zero_point;
    if (!a.f32) scale = a.scale, bits = a.bits, code_max = (1 << a.bits) - 1;
    st.scale = scale, st.bits = bits;
  }
  H = oh, W = ow, C = oc;
  m.stages.push_back(std::move(st));
}

void StageReader::push_same_grid(const LayerRecord& r, std::shared_ptr<const StageOp> op, int oh, int ow, int oc) {
  H = oh, W = ow, C = oc;
  m.stages.push_back({r.name, r.kind, std::move(op), H, W, C, f32, zero, scale, bits});
}

std::vector<Stage> StageReader::read_chain(std::span<const LayerRecord> records) {
  std::vector<Stage> outer = std::move(m.stages);
  m.stages.clear();
  for (size_t i = 0; i < records.size();) {
    const LayerRecord& r = records[i];
    if (qbin::training_only_kind(r.kind)) {  // the identity at inference
      ++i;
      continue;
    }
    const StageKind* kind = find_stage_kind(r.kind);
    if (!kind) fail(r, "unknown layer kind");
    i += kind->read(*this, records.subspan(i));
  }
  std::vector<Stage> chain = std::move(m.stages);
  m.stages = std::move(outer);
  return chain;
}

StageReader::Fused StageReader::fused(std::span<const LayerRecord> records, size_t at, bool folds_batch_norm) const {
  Fused f;
  f.taken = at;
  if (folds_batch_norm && records.size() > f.taken && records[f.taken].kind == "BatchNormalization") {
    if (int8()) fail(records[f.taken], "a BatchNormalization in an int8 model (export folds it into the layer before it)");
    f.batch_norm = &records[f.taken++];
  }
  f.activation = activation(records[0], records.size() > f.taken ? &records[f.taken] : nullptr);
  f.taken += f.activation.took_next ? 1 : 0;
  return f;
}

namespace {

// int8: integer tensors, or the Input record's input_bits (a model whose every layer with weights
// is kept in float still runs on codes). f32 tensors in an int8 model belong to the layers kept in
// float (attribute "float": float islands) and nowhere else.
Precision precision_of(const qbin::Model& file) {
  bool any_s8 = false, any_f32 = false;
  for (const auto& r : file.layers)
    for (const auto& t : r.tensors)
      if (t.dtype != DType::kF32)
        any_s8 = true;
      else if (r.get_int(key::kKeepFloat, 0) != 1)
        any_f32 = true;
  const bool int8 = any_s8 || file.layers.front().get_int(key::kInputBits, 0) != 0;
  if (int8 && any_f32)
    throw FormatError("the model mixes f32 and integer tensors (expected all f32, or int8/int32 except in the layers kept in float)");
  return int8 ? Precision::kInt8 : Precision::kF32;
}

}  // namespace

InferenceModel inference_model(const qbin::Model& file) {
  if (file.layers.empty() || file.layers[0].kind != "Input") throw FormatError("the first layer record is not 'Input'");
  for (const LayerRecord& r : file.layers) qbin::check_record(r);  // what every loader checks (io/record_schema.h)
  StageReader b;
  const LayerRecord& in = file.layers[0];
  b.m.precision = precision_of(file);
  b.H = b.m.H = StageReader::attr(in, key::kHeight, 1, 16384);
  b.W = b.m.W = StageReader::attr(in, key::kWidth, 1, 16384);
  b.C = b.m.C = StageReader::attr(in, key::kChannels, 1, 4);
  if (b.int8()) {
    StageReader::attr(in, key::kInputBits, 8, 8);  // the input codes are the uint8 pixels
    b.scale = b.m.input_scale = in.get_float(key::kInputScale);
    if (!sane_scale(b.scale)) StageReader::fail(in, fmt::format("input_scale {} (expected {})", b.scale, kScaleRange));
  }
  b.f32 = !b.int8();
  b.m.stages = b.read_chain(std::span<const LayerRecord>(file.layers).subspan(1));
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
