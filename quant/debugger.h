// The quantization debugger: a float model, its fake-quantized (QAT-form) twin and the int8 model
// exported from that twin, run side by side on the same images and compared stage by stage, the
// way TFLite's QuantizationDebugger and PyTorch's Numeric Suite do (docs/quantization.md,
// "Reading the inspect report"). apps/inspect.cpp writes it as report.md, SVG charts and JSON.
//
//   Sequential qat = load_any_model("model_qat.qbin");     // or a float model after calibrate_ptq()
//   Sequential ref = float_twin("model_qat.qbin");          // its weights without quantization, or load_model(float file)
//   Inspection r = inspect(ref, qat, data.test.slice(0, 1000));
//   for (const LayerInspection& l : r.layers) fmt::print("{}: {:.1f} dB\n", l.name, l.sqnr_int8);
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"
#include "layers/sequential.h"

namespace qnet {

// Counts of values in bins of equal width; values outside [lo, lo + width * bins) are counted apart.
struct Histogram {
  double lo = 0, width = 1;
  std::vector<int64_t> counts;
  int64_t below = 0, above = 0;
  void add(double v);
};

inline constexpr double kNoFigure = std::numeric_limits<double>::quiet_NaN();

// One stage of the int8 model (a Conv2D with its folded BatchNormalization and ReLU, a pooling
// layer, a whole residual block, or a stage inside a block's body or shortcut) and the same point
// of the float and fake-quantized models.
struct LayerInspection {
  std::string name, kind;  // the stage's first record: "conv2d", "Conv2D"
  int depth = 0;           // 0: a stage of the model; 1, 2, ...: inside residual blocks
  std::string in;          // inside a block: the block and its branch, "residual_1 body"
  Shape shape;             // its output per image
  bool codes = false;      // u8 codes; false for the float logits and what follows them
  float scale = 1.f;       // codes: q stands for scale * (q - zero_point)
  int32_t zero_point = 0, qmax = 255;
  int bits = 8;            // codes: their bit width (qmax = 2^bits - 1)
  bool compared = false;   // the float model has this point (same name, same shape); else no float figures

  // Against the float model's output: signal-to-quantization-noise ratio 10 log10(sum f^2 / sum (x - f)^2)
  // in dB (infinite when equal), and the int8 output's absolute error.
  double sqnr_fake_quant = kNoFigure, sqnr_int8 = kNoFigure;
  double max_abs_error = kNoFigure, mean_abs_error = kNoFigure;
  // int8 against the fake-quantized model: the largest difference in output steps (scale; in
  // absolute value for floats), and how many of the values differ by half a step or more.
  double max_step_difference = 0;
  int64_t values_differing = 0, values = 0;

  // The activation grid (codes only): the float output's observed range, the share of the grid's
  // real range [scale * -zero_point, scale * (qmax - zero_point)] it spans, the share of values
  // outside it (clipped), and the float output on the code axis (bins of one code).
  double float_min = kNoFigure, float_max = kNoFigure;
  double range_used = kNoFigure, clipped = kNoFigure;
  Histogram activation;

  // Weights (Conv2D, DepthwiseConv2D, Dense; folded with their BatchNormalization as deployed):
  // the SQNR of the quantized kernel per output channel, and the kernel in units of each
  // channel's step (w / scale_c: the codes are the integers).
  int weight_bits = 0;
  std::vector<double> weight_sqnr;
  Histogram weights;

  // How oneDNN runs the stage's products on this CPU: "one pass (VNNI)", "one pass (pair sums
  // within int16)", "split weights" (docs/runtime.md), or "" for a stage without such products.
  std::string int8_path;
  // Sensitivity: the fake-quantized model's accuracy with only this stage's layers in float
  // (weights and output not quantized); NaN for a stage with nothing quantized.
  double accuracy_with_float = kNoFigure;
};

// One step of the suggestion: the stage whose layers were given wider codes (or kept in float),
// the layers to name (`--layer-bits NAME=bits`, a residual block naming each layer inside it; or
// `--keep-float NAME`, its layers with weights), and the fake-quantized accuracy with this and
// every earlier step applied.
struct WidthStep {
  std::string stage;
  std::vector<std::string> layers;
  double accuracy = 0;
};

struct Inspection {
  int64_t images = 0;
  std::string bits;  // the widths of weights and grids: "8-bit", "mixed 4/8-bit"
  double accuracy_float = 0, accuracy_fake_quant = 0, accuracy_int8 = 0, accuracy_runtime = 0;
  bool runtime_matches_reference = false;  // oneDNN's logits bit-identical to the integer reference's
  std::string onednn_isa;
  std::vector<LayerInspection> layers;
  // The suggestion (with sensitivity): the most sensitive stages, in the order of their gain, given
  // `suggested_bits` one after another until the fake-quantized accuracy reaches the target.
  double target_accuracy = kNoFigure;
  int suggested_bits = 8;
  bool suggested_float = false;  // the steps keep layers in float instead of widening them
  std::vector<WidthStep> suggestion;  // empty if the model already meets the target
  bool target_met = false;
};

struct InspectOptions {
  int64_t batch_size = 100;
  bool sensitivity = true;  // one evaluation of the fake-quantized model per quantized stage
  // The suggestion: the accuracy to reach (NaN: the float model's less 0.01) and the width to give
  // the sensitive layers; one more evaluation per step.
  double target_accuracy = kNoFigure;
  int suggested_bits = 8;
  // Keep the sensitive stages' layers with weights in float (float islands) instead of widening
  // them; stages without weights (pooling, a residual add) are passed over.
  bool suggest_float = false;
};

// qat_model: a QAT-form model (prepare_qat or calibrate_ptq, ranges observed); float_model: the
// float model to compare with (its layers named as qat_model's, as models from one spec are).
// Throws std::invalid_argument if qat_model is not in QAT form, the input shapes differ, or the
// images do not fit the models.
Inspection inspect(Sequential& float_model, Sequential& qat_model, const ImageSet& images, const InspectOptions& options = {});

// The model of a QAT or float file as float: a QAT checkpoint's own weights (BatchNormalization
// unfolded) with every quantizer off, or the float model itself.
Sequential float_twin(const std::string& path);

}  // namespace qnet
