// The quantization options the programs share: the bit widths (quantize, inspect, train --qat)
// and post-training quantization of a float model (quantize, inspect).
//
//   --bits N                          the model's width, 2..8, for every layer without its own
//   --layer-bits NAME=N[,NAME=N...]   layers' own widths: what `bits=N` in a spec gives a layer
//   --keep-float NAME[,NAME...]       layers kept in float: what `float=true` in a spec gives a layer
//   --int8-target vnni|avx2           the CPUs the int8 model is for (Int8Target, quant/qat.h)
//   --method minmax|percentile, --calibration-images N   PTQ's calibration
#pragma once

#include <cstdint>
#include <string>

#include <cxxopts.hpp>

#include "data/image_data.h"
#include "layers/sequential.h"
#include "quant/qat.h"

namespace qnet {

// Declares --bits, --layer-bits and --int8-target; `when` starts their help ("A float MODEL: ", or ""),
// `target_when` --int8-target's if it differs.
void add_bits_options(cxxopts::Options& options, const std::string& when, const std::string& target_when = "");
// Declares --method and --calibration-images (PTQ).
void add_ptq_options(cxxopts::Options& options, const std::string& when);

// Gives the layers named in --layer-bits their widths (Module::quant_bits). A UsageError names
// what is wrong: no such layer (the names that take bits are listed), a layer without weights or
// a grid of its own, a width outside 2..8, a malformed list.
void apply_layer_bits(Sequential& model, const cxxopts::ParseResult& args);
// Keeps the layers named in --keep-float in float (Module::keep_float; a QAT model's too: its
// export then holds their kernels in f32). A UsageError names what is wrong: no such layer, or a
// layer without weights (the layers with weights are listed).
void apply_keep_float(Sequential& model, const cxxopts::ParseResult& args);
// --int8-target, checked (a UsageError names the values it takes).
Int8Target read_int8_target(const cxxopts::ParseResult& args);

// The PTQ and bit options, checked (a UsageError) before any work.
struct PtqRequest {
  int bits = 8;
  Int8Target target = Int8Target::kVnni;
  int64_t calibration_images = 1000;
  std::string method = "minmax";
};
PtqRequest read_ptq_options(const cxxopts::ParseResult& args);

// quantize and inspect: a float model is calibrated on the first calibration_images of `train`
// and turned into its QAT form (PTQ, at `bits` with --layer-bits, for `target`); a QAT model, which has its
// trained ranges and widths, refuses the PTQ and bit options (UsageError), --int8-target too
// unless `qat_target_ok` (inspect: there it names the target the checkpoint was trained for).
// Returns what was done, in words ("" for a QAT model); errors name `path`.
std::string quantize_after_training(Sequential& model, const std::string& path, const ImageSet& train, const cxxopts::ParseResult& args,
                                    const PtqRequest& ptq, bool qat_target_ok = false);

}  // namespace qnet
