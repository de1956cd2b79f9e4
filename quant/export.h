// Export to the int8 model file, from a QAT model or by post-training quantization (PTQ).
//
//   prepare_qat(model, {.bits = 8});  fit(...);  freeze_observers(model);
//   qbin::save(export_int8(model), "model.qbin");            // weights eq. 6, bias eq. 10
//
//   Sequential f = load_model("model_float.qbin");
//   calibrate_ptq(f, mnist.train.slice(0, 1000), {.method = CalibrationMethod::kMinMax});
//   qbin::save(export_int8(f), "model_ptq.qbin");             // f is now a QAT-form model
#pragma once

#include "io/qbin.h"
#include "data/dataset.h"
#include "layers/sequential.h"
#include "quant/qat.h"

namespace qnet {

// The int8 file of a QAT model (docs/qbin-format.md, "int8 models"): s8 kernels with per-channel
// scales, s32 biases in accumulator units, each ReLU's uint8 output scale. Throws
// std::invalid_argument if the model is not in QAT form or an activation range was never observed.
qbin::Model export_int8(const Sequential& qat_model);

enum class CalibrationMethod { kMinMax, kPercentile };

struct PtqOptions {
  int bits = 8;
  Int8Target target = Int8Target::kVnni;  // QatOptions::target
  CalibrationMethod method = CalibrationMethod::kMinMax;
  double percentile = 99.99;  // kPercentile: the range's top is this percentile of the activations (its bottom, after no ReLU, 100 - p)
  int64_t batch_size = 256;
};

// Static full-integer PTQ (TFLite's): runs the float model on the calibration images, records the
// range of every Conv2D+ReLU output, and turns the model into its QAT form with those ranges frozen.
void calibrate_ptq(Sequential& float_model, const ImageSet& calibration, const PtqOptions& options);

}  // namespace qnet
