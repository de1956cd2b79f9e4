// The deployed graph: what the oneDNN runtime and the integer reference interpreter execute.
//
//   InferenceModel m = load_inference_model("model.qbin");   // f32 or int8, checked
//   // m.stages: Conv2D / Dense (activation fused) / MaxPool2D / Flatten / ReLU, ending 1x1xclasses
//   std::vector<float> logits = reference_forward(m, pixels, n);   // quant/runtime/reference.h
//
// An int8 model holds exactly the integers and scales both executors use, so they agree bit for
// bit. A Conv2D or Dense computes acc = b_q + sum (x - z_in) * w over its input codes x (s8
// weights w, zero point z_in of its input: 0 for pixels and after ReLU) and then either
//   u8 codes   out = clamp(round(float(acc) * output_scale[oc] + z_out), 0, qmax)      (eq. 11)
//              (z_out = 0 with a fused ReLU; otherwise the code of real 0, docs/quantization.md)
//   or floats  out = float(acc) * output_scale[oc], then ReLU if fused                (eq. 12)
// Every Conv2D and Dense but the last gives u8 codes; the last gives the float logits, and what
// follows it (max-pool, ReLU, Flatten) works on floats.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/qbin.h"

namespace qnet {

enum class Precision { kF32, kInt8 };
const char* precision_name(Precision p);  // "f32", "int8"

struct Geometry {  // one spatial window: TensorFlow's "valid" or "same" rules
  int KH = 1, KW = 1, SH = 1, SW = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
};

// A stage's computation: its integer reference arithmetic and its lowering to oneDNN, defined
// with the record it reads in one file per kind (quant/runtime/stage_kind.h, quant/runtime/stages/).
class StageOp;

struct Stage {
  std::string name;
  std::string kind;         // the record kind it was read from: "Conv2D"
  std::shared_ptr<const StageOp> op;
  int H = 1, W = 1, C = 1;  // output shape per image (Flatten and Dense: H = W = 1)
  bool f32_output = true;   // int8 models: false while the stage gives u8 codes
  int32_t zero_point = 0;   // u8 output: the code of real 0
  float scale = 1.f;        // u8 output: code q stands for scale * (q - zero_point) (eq. 1)
  int bits = 8;             // u8 output: codes 0..2^bits - 1 (each layer has its own width)
};

struct InferenceModel {
  Precision precision = Precision::kF32;
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
