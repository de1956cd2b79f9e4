// The integer reference interpreter: an int8 model in plain loops, the source of truth that the
// oneDNN runtime is tested against bit for bit.
//
//   InferenceModel m = load_inference_model("model.qbin");
//   std::vector<float> logits = reference_forward(m, pixels, n);   // [n][classes]
//
// Each kernel states its arithmetic (docs/quantization.md, eq. 11-12); the int32 accumulator
// cannot overflow: inference_model() refuses reductions where K * 255 * 127 + |b_q| >= 2^31.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/runtime/inference_model.h"

namespace qnet {

// images: n x (H*W*C) uint8 pixels, NHWC. Int8 models only (throws std::invalid_argument).
std::vector<float> reference_forward(const InferenceModel& model, const uint8_t* images, int64_t n);

// A stage of the model or of a branch inside a container stage (a residual block's body or
// shortcut, nested to any depth), in the order the reference computes them: a container's
// branches, body then shortcut, come right before the container's own point (its output).
struct StagePoint {
  const Stage* stage = nullptr;
  int depth = 0;    // 0: one of model.stages
  int parent = -1;  // the index of the container's point (depth > 0)
  int branch = 0;   // which of the container's branches (StageOp::branches) it is in
};
std::vector<StagePoint> stage_points(const InferenceModel& model);

// The output at every point of stage_points(model) for one image, in real numbers: u8 codes as
// scale * (q - zero_point) (eq. 1), floats as they are; the last entry is the logits. What the
// quantization debugger (quant/debugger.h) compares layer by layer.
std::vector<std::vector<float>> reference_trace(const InferenceModel& model, const uint8_t* image);

}  // namespace qnet
