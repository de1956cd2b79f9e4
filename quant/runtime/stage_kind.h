// The runtime side of a layer kind (internal to qnet_runtime, not installed). Each kind that
// computes at inference defines, in ONE file, quant/runtime/stages/<kind>.cpp:
//   - a StageKind: the record kind it reads and how a record becomes a checked stage;
//   - its StageOp: the integer reference arithmetic and the lowering to oneDNN.
// inference_model(), reference_forward() and build_plan() only walk the records and stages and
// call these; none of them names a kind. The training side of the same kind (its Module, spec
// and QAT form) is its LayerKind in layers/ (layers/layer_kind.h): the runtime library holds no
// training code, so a kind has one file per library (docs/architecture.md, "Adding a layer kind").
//
//   const StageKind* k = find_stage_kind("Conv2D");
//   const size_t taken = k->read(reader, records);   // records[0] and what belongs to its stage
#pragma once

#include <cmath>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "core/tensor.h"
#include "quant/runtime/inference_model.h"
#include "quant/runtime/plan.h"

namespace qnet {

// ---------------------------------------------------------------------------------------------
// Reading records into stages (the shared checks; quant/runtime/inference_model.cpp defines them).

// Every scale in an int8 model lies in [2^-40, 2^40]: a requantization multiplier (eq. 11, a
// product of three scales) stays a normal float, and the logits (scale x up to 2^31 accumulator
// units) stay finite. Trained models are far inside (weights ~1e-3, activations ~1e-2).
constexpr float kMinScale = 0x1p-40f, kMaxScale = 0x1p40f;
inline bool sane_scale(float s) { return s >= kMinScale && s <= kMaxScale; }
inline constexpr const char* kScaleRange = "a scale in [2^-40, 2^40]";

// What follows a Conv2D or Dense in the file, fused into its stage.
struct FusedActivation {
  bool relu = false;
  bool f32 = true;             // int8 models: the float logits rather than u8 codes
  float scale = 1.f;           // u8 output
  int32_t zero_point = 0;      // u8 output
  int bits = 8;                // u8 output: codes 0..2^bits - 1 (output_bits)
  bool took_next = false;      // the record after the layer was consumed with it
};

// The model being read and the activation the next stage receives.
struct StageReader {
  InferenceModel m;
  float scale = 1.f / 255.f;  // the current activation scale (int8 models)
  int32_t zero = 0;           // the current activation zero point (int8 models, u8 codes)
  int32_t code_max = 255;     // the current activation's largest code: 255 for the pixels, 2^bits - 1 after
                              // a layer's own grid of `bits`
  int bits = 8;               // the current activation's bit width (the pixels: 8)
  bool f32 = true;            // the current activation is floats (f32 models; int8 after the logits layer)
  int H = 0, W = 0, C = 0;    // the current activation's shape per image

  bool int8() const { return m.precision == Precision::kInt8; }

  [[noreturn]] static void fail(const qbin::LayerRecord& r, const std::string& what);  // a FormatError naming r
  static int attr(const qbin::LayerRecord& r, const char* key, int lo, int hi);        // an int attribute in lo..hi

  // Window geometry and output size of a KHxKW window over the current HxW (TensorFlow's
  // padding rules); fails if the window does not fit.
  Geometry window(const qbin::LayerRecord& r, int KH, int KW, int SH, int SW, bool same, int& OH, int& OW) const;
  // The same for the record's window: sizes from the ints `height_key` and `width_key` (1..64),
  // stride_h, stride_w (1..64) and padding_same.
  Geometry window(const qbin::LayerRecord& r, const char* height_key, const char* width_key, int& OH, int& OW) const;

  // A tensor's values, checked for dtype, shape and (floats) finiteness.
  template <typename T>
  static std::vector<T> values(const qbin::LayerRecord& r, const qbin::TensorRecord& t, qbin::DType dtype, const Shape& shape);

  // int8 weights: per-output-channel scales along `axis` (eq. 6: b bits, 2..8, zero points 0),
  // codes within the narrow range of the tensor's b bits, and accumulators that cannot overflow
  // int32: for each output c, with S_c = sum |w_c| over its codes, code_max S_c + zero S_c + |b_c|
  // (the products over the input codes, the input zero point folded into the bias, the bias) is at
  // most 2^31 - 1.
  std::vector<float> weight_scales(const qbin::LayerRecord& r, const qbin::TensorRecord& t, int axis, int channels) const;
  void check_kernel_codes(const qbin::LayerRecord& r, const qbin::TensorRecord& t, const std::vector<int8_t>& codes) const;
  void check_accumulator(const qbin::LayerRecord& r, const std::vector<int8_t>& codes, const std::vector<int32_t>& bias) const;

  // The activation of the weighted layer r from the record after it (or none). int8: a ReLU
  // with output_bits or a Quantize record gives u8 codes; anything else makes r the layer that
  // gives the float logits.
  FusedActivation activation(const qbin::LayerRecord& r, const qbin::LayerRecord* next) const;
  // int8 output scales of a layer with weight scales sw (eq. 11, or eq. 12 for the logits).
  std::vector<float> output_scales(const std::vector<float>& sw, const FusedActivation& a) const;

  // Appends a weighted stage with output shape H x W x C; its activation becomes the current one.
  void push(const qbin::LayerRecord& r, std::shared_ptr<const StageOp> op, int H, int W, int C, const FusedActivation& a);
  // Appends a stage that keeps its input's grid (pooling, Flatten, ReLU), output H x W x C.
  void push_same_grid(const qbin::LayerRecord& r, std::shared_ptr<const StageOp> op, int H, int W, int C);

  // Reads records as a chain of stages (each through its kind), from the current activation to
  // the chain's output, which becomes the current one; returns the stages (a container's branch,
  // or the model itself).
  std::vector<Stage> read_chain(std::span<const qbin::LayerRecord> records);
  // What follows the record of a layer that sets its own output (Conv2D, DepthwiseConv2D, Dense;
  // average pooling and a residual block's add without the BatchNormalization): a folded
  // BatchNormalization (float files, eq. 13-14; int8 files hold none), then the activation; and
  // how many records the stage takes with them.
  struct Fused {
    const qbin::LayerRecord* batch_norm = nullptr;
    FusedActivation activation;
    size_t taken = 1;
  };
  Fused fused(std::span<const qbin::LayerRecord> records, size_t at, bool folds_batch_norm) const;
};

template <typename T>
std::vector<T> StageReader::values(const qbin::LayerRecord& r, const qbin::TensorRecord& t, qbin::DType dtype, const Shape& shape) {
  if (t.dtype != dtype)
    fail(r, fmt::format("tensor '{}' is {} (expected {})", qbin::shown(t.name), qbin::dtype_name(t.dtype), qbin::dtype_name(dtype)));
  if (t.shape != shape)
    fail(r, fmt::format("tensor '{}' has shape {} (expected {})", qbin::shown(t.name), shape_str(t.shape), shape_str(shape)));
  std::vector<T> v(static_cast<size_t>(shape_numel(shape)));
  std::memcpy(v.data(), t.bytes.data(), v.size() * sizeof(T));
  if constexpr (std::is_floating_point_v<T>)
    for (size_t i = 0; i < v.size(); ++i)
      if (!std::isfinite(v[i]))
        fail(r, fmt::format("tensor '{}': element {} is {} (expected finite numbers)", qbin::shown(t.name), i, v[i]));
  return v;
}

// ---------------------------------------------------------------------------------------------
// The integer reference (quant/runtime/reference.cpp defines the shared part).

// One image's activation, HWC: u8 codes, or floats once the logits layer has run.
struct RefActivation {
  int H = 0, W = 0, C = 0;
  bool real = false;
  std::vector<uint8_t> q;
  std::vector<float> f;
  size_t at(int h, int w, int c) const { return (static_cast<size_t>(h) * W + w) * C + c; }
};

// An empty activation of the stage's output shape and type.
RefActivation reference_output(const Stage& st);
// A Conv2D or Dense output from its accumulator (quant/runtime/inference_model.h): u8 codes
// clamp(round(float(acc) * scale + z_out), 0, qmax), or floats float(acc) * scale, ReLU if fused.
void write_accumulator(RefActivation& y, size_t i, int32_t acc, float scale, const Stage& st, bool relu, int32_t z_out, int32_t qmax);

// ---------------------------------------------------------------------------------------------
// A stage's computation.

class StageOp {
 public:
  virtual ~StageOp() = default;

  // The integer reference on one image (int8 models): x becomes the stage's output.
  virtual void reference(RefActivation& x, const Stage& st) const = 0;

  // Adds the stage's steps to the plan, reading buffer `cur` (shape b.H x b.W x b.C per image),
  // and returns its output buffer. `next` is the following stage, if any; a lowering that
  // computes it too (conv + pool as one matmul) sets took_next.
  virtual int lower(PlanBuilder& b, int cur, const Stage& st, const Stage* next, bool& took_next) const = 0;

  // int8: the largest |x w1 + x w2| two of its u8 x s8 products can reach, x up to the input's
  // largest code: above 32,767 they saturate oneDNN's vpmaddubsw on CPUs without VNNI, and the
  // layer runs on the split-weights path (docs/runtime.md). 0 without such products.
  virtual int64_t widest_pair_sum() const { return 0; }
  // A max-pooling stage's window, for a lowering that fuses with the pool after it; else nullptr.
  virtual const Geometry* max_pool_window() const { return nullptr; }
  // A container's chains of stages (a residual block: body, then shortcut), each reading the
  // stage's input; empty for other stages. What tools that look inside a stage walk (stage_points).
  virtual std::vector<const std::vector<Stage>*> branches() const { return {}; }
  // A layer kept in float in an int8 model (a float island between codes, docs/quantization.md).
  virtual bool float_island() const { return false; }
};

// What Conv2D and Dense stages share: their weights (f32, or b-bit codes with an s32 bias in
// accumulator units, eq. 10), the output's scales, largest code and zero points (eq. 11-12),
// and a fused ReLU.
class WeightedStage : public StageOp {
 public:
  bool relu = false;               // a fused ReLU
  std::vector<float> kernel;       // f32: [..., outputs], the record's layout
  std::vector<float> bias;         // f32: [outputs] (zeros if the layer has none)
  std::vector<int8_t> qkernel;     // int8: [..., outputs]
  std::vector<int32_t> qbias;      // int8: [outputs] in accumulator units
  std::vector<float> output_scale; // int8: [outputs] = s_in * s_w[o] / s_out (u8 output, eq. 11), or s_in * s_w[o] (floats, eq. 12)
  int32_t qmax = 255;              // int8: 2^output_bits - 1, the largest output code
  int32_t input_zero_point = 0;    // int8: the input code of real 0
  int32_t input_code_max = 255;    // int8: the input's largest code (255 for the pixels, 2^bits - 1 after a grid)
  int32_t output_zero_point = 0;   // int8, u8 output: the output code of real 0
  // int8, a layer kept in float (record attribute "float"): f32 `kernel` and `bias` between the
  // input's codes (input_scale, input_zero_point) and the output's (island_output_scale,
  // output_zero_point, qmax) or the float logits; qkernel, qbias and output_scale stay empty.
  bool island = false;
  float input_scale = 1.f, island_output_scale = 1.f;

  int64_t widest_pair_sum() const override;  // 2 input_code_max max |w|
  bool float_island() const override { return island; }

  // Reads the record's "kernel" (of kernel_shape, outputs on the last axis) and optional "bias",
  // checked; f32: a BatchNormalization record `bn` after it folded in (eq. 13-14); int8: the
  // codes' range, scales and accumulator bound, and the output scales for a.
  void read_weights(const StageReader& rd, const qbin::LayerRecord& r, const Shape& kernel_shape, const FusedActivation& a,
                    const qbin::LayerRecord* bn);
  // The output's oneDNN attributes: scales, then the zero point and clip to qmax for u8 codes,
  // or the ReLU on floats (PlanBuilder::attributes).
  dnnl::primitive_attr output_attributes(const PlanBuilder& b, const Stage& st) const;
  // The bias the primitive adds: f32, or the int8 bias with the input zero point folded in,
  // kept in `folded` (which must outlive its use).
  const void* bias_for(const PlanBuilder& b, std::vector<int32_t>& folded) const;
  // A convolution step (Conv2D, DepthwiseConv2D) reading buffer `cur` with window g (its padding
  // done by oneDNN): weights of dims `wdims` (4-D, or 5-D grouped) at `weights` in layout
  // `weights_tag`, this stage's bias and output attributes; `src_any` lets oneDNN choose the
  // source layout (a reorder then brings `cur` to it). Returns the output buffer.
  // A float island's arithmetic (u8::FloatIsland): the reference on one image x, and the
  // lowering to qnet's kernel, for window g over the stage's input (a Dense: 1x1) and a
  // depthwise conv's depth multiplier (0: a conv over all input channels).
  void island_reference(RefActivation& x, const Stage& st, const Geometry& g, int depth_multiplier) const;
  int lower_island(PlanBuilder& b, int cur, const Stage& st, const Geometry& g, int depth_multiplier, const char* what) const;
  int lower_convolution(PlanBuilder& b, int cur, const Stage& st, const Geometry& g, const dnnl::memory::dims& wdims,
                        dnnl::memory::format_tag weights_tag, const void* weights, const char* what, bool src_any) const;
};

struct StageKind {
  std::string_view record_kind;  // the record's kind, the LayerKind's type: "Conv2D"
  // Reads records[0] (checked) and the records after it that belong to its stage (a folded
  // BatchNormalization, a fused activation, a container's branches), and appends the stage, or
  // nothing for the identity at inference; returns how many records it took (>= 1).
  size_t (*read)(StageReader& reader, std::span<const qbin::LayerRecord> records);
};

// Every kind the runtime runs (one line each in quant/runtime/stage_kind.cpp), and a lookup by record kind.
const std::vector<const StageKind*>& stage_kinds();
const StageKind* find_stage_kind(std::string_view record_kind);

}  // namespace qnet
