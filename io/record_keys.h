// The attribute keys of .qbin layer records (docs/qbin-format.md), spelled once: the layers that
// write and read them (layers/), QAT and export (quant/) and the runtime's loader
// (quant/runtime/inference_model.cpp) all use these names.
#pragma once

namespace qnet::qbin::key {

// Input
inline constexpr char kHeight[] = "height";
inline constexpr char kWidth[] = "width";
inline constexpr char kChannels[] = "channels";
inline constexpr char kInputBits[] = "bits";            // int8 files: 8, the pixels are the codes
inline constexpr char kInputScale[] = "input_scale";    // int8 files: 1/255

// Conv2D
inline constexpr char kFilters[] = "filters";
inline constexpr char kInChannels[] = "in_channels";
inline constexpr char kKernelH[] = "kernel_h";
inline constexpr char kKernelW[] = "kernel_w";
// Conv2D, DepthwiseConv2D, MaxPool2D, AveragePooling2D
inline constexpr char kStrideH[] = "stride_h";
inline constexpr char kStrideW[] = "stride_w";
inline constexpr char kPaddingSame[] = "padding_same";
// MaxPool2D, AveragePooling2D
inline constexpr char kWindowH[] = "window_h";
inline constexpr char kWindowW[] = "window_w";
// ZeroPadding2D
inline constexpr char kPadTop[] = "pad_top";
inline constexpr char kPadBottom[] = "pad_bottom";
inline constexpr char kPadLeft[] = "pad_left";
inline constexpr char kPadRight[] = "pad_right";
// Dense
inline constexpr char kUnits[] = "units";
inline constexpr char kInFeatures[] = "in_features";
// Residual: how many records of the body, then of the shortcut (0: the identity), follow it
inline constexpr char kBodyRecords[] = "body_records";
inline constexpr char kShortcutRecords[] = "shortcut_records";
// BatchNormalization (float files)
inline constexpr char kMomentum[] = "momentum";
inline constexpr char kEpsilon[] = "epsilon";
// DepthwiseConv2D
inline constexpr char kDepthMultiplier[] = "depth_multiplier";
// Dropout, GaussianNoise
inline constexpr char kRate[] = "rate";
inline constexpr char kStddev[] = "stddev";
inline constexpr char kTrainingOnly[] = "training_only";  // 1: the identity at inference

// QAT and int8 files: the weights' bit width on Conv2D and Dense; the activation's codes on the
// ReLU or Quantize record after them (QAT: the observed range; int8: scale and zero point).
inline constexpr char kWeightBits[] = "weight_bits";
// Float and QAT files: a layer's own bit width for QAT and PTQ (spec `bits=N`; Module::quant_bits)
// on the kinds that have weights or give a grid of their own.
inline constexpr char kBits[] = "bits";
// Every file: 1 on a Conv2D, DepthwiseConv2D or Dense kept in float (spec `float=true`, --keep-float;
// Module::keep_float). In an int8 file its kernel and bias are f32: a float island between codes.
inline constexpr char kKeepFloat[] = "float";
inline constexpr char kOutputBits[] = "output_bits";
inline constexpr char kOutputMin[] = "output_min";
inline constexpr char kOutputMax[] = "output_max";
inline constexpr char kOutputScale[] = "output_scale";
inline constexpr char kOutputZeroPoint[] = "output_zero_point";

}  // namespace qnet::qbin::key
