// The deployed graph: what the oneDNN runtime and the integer reference interpreter execute.
//
//   InferenceModel m = load_inference_model("model.qbin");   // f32 or int8, checked
//   // m.stages: Conv (ReLU fused) / MaxPool / Flatten / Dense (last, f32 logits)
//   std::vector<float> logits = reference_forward(m, pixels, n);   // quant/reference.h
//
// An int8 model holds exactly the integers and scales both executors use, so they agree bit for
// bit: conv   out_u8 = clamp(round(max(float(acc + b_q) * output_scale[oc], 0)), 0, qmax)  (eq. 11)
//       dense  logit  = float(acc + b_q) * output_scale[oc]                                (eq. 12)
// where acc is the int32 sum of u8 activations times s8 weights (docs/quantization.md).
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "core/qbin.h"

namespace qnet {

enum class Precision { kF32, kInt8 };
const char* precision_name(Precision p);  // "f32", "int8"

struct Geometry {  // one spatial window: TensorFlow's "valid" or "same" rules
  int KH = 1, KW = 1, SH = 1, SW = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
};

struct ConvStage {
  int IC = 0, OC = 0;
  Geometry g;
  bool relu = false;               // int8 convs always have the ReLU fused
  std::vector<float> kernel;       // f32: [KH][KW][IC][OC]
  std::vector<float> bias;         // f32: [OC] (zeros if the layer has none)
  std::vector<int8_t> qkernel;     // int8: [KH][KW][IC][OC]
  std::vector<int32_t> qbias;      // int8: [OC] in accumulator units (eq. 10)
  std::vector<float> output_scale; // int8: [OC] = s_in * s_w[oc] / s_out (eq. 11)
  int32_t qmax = 255;              // int8: 2^bits - 1, the largest output code
};

struct PoolStage {
  Geometry g;
};

struct FlattenStage {};

struct DenseStage {
  int IN = 0, OUT = 0;
  std::vector<float> kernel;       // f32: [IN][OUT]
  std::vector<float> bias;         // f32: [OUT]
  std::vector<int8_t> qkernel;     // int8: [IN][OUT]
  std::vector<int32_t> qbias;      // int8: [OUT], accumulator units
  std::vector<float> output_scale; // int8: [OUT] = s_in * s_w[o] (eq. 12)
};

using StageOp = std::variant<ConvStage, PoolStage, FlattenStage, DenseStage>;

struct Stage {
  std::string name;
  StageOp op;
  int H = 1, W = 1, C = 1;  // output shape per image (Flatten and Dense: H = W = 1)
};

struct InferenceModel {
  Precision precision = Precision::kF32;
  int bits = 8;              // int8 models: the weight and activation bit width
  int H = 0, W = 0, C = 0;   // input per image, uint8 pixels
  float input_scale = 1.f / 255.f;  // pixel p stands for p * input_scale (f32 models divide by 255)
  std::vector<Stage> stages;
  int classes() const { return stages.empty() ? 0 : stages.back().C; }
  size_t input_size() const { return static_cast<size_t>(H) * W * C; }
};

// Checks every attribute, dtype, shape and scale and that the stages chain; throws
// qbin::FormatError naming the layer and what was expected.
InferenceModel inference_model(const qbin::Model& file);
InferenceModel load_inference_model(const std::string& path);  // errors start with the path

}  // namespace qnet
