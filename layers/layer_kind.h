// Layer kinds, each defined once beside its Module (docs/architecture.md, "Adding a layer kind"):
// its names, how a spec and a model file build it, and its part in QAT and the int8 graph.
// model_from_spec, from_qbin, prepare_qat and export_int8 read this table instead of naming
// kinds themselves.
//
//   const LayerKind* k = find_layer_kind("Conv2D");        // or by spec name: "conv2d"
//   std::unique_ptr<Module> layer = k->from_record(record);
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/qbin.h"
#include "layers/module.h"
#include "layers/sequential.h"
#include "layers/spec_args.h"

namespace qnet {

class Rng;

// What QAT and the int8 graph do with a layer of the kind (docs/quantization.md):
enum class Int8Role {
  kWeights,      // fake-quantized kernel; u8 codes out unless it is the last one (float logits)
  kRequantize,   // no weights, but its output gets a grid of its own as a kWeights layer's does:
                 // average pooling, a residual block's add
  kNormalize,    // BatchNormalization: folded into the Conv2D, DepthwiseConv2D or Dense before it
  kActivation,   // ReLU: after a kWeights or kRequantize layer it sets the codes' range; elsewhere max(code, z)
  kPassThrough,  // keeps its input's grid: max pooling, flatten
  kTrainingOnly, // the identity at inference, left out of int8 files: dropout
};

// Whether a layer of the role has a bit width of its own (Module::quant_bits, a spec's bits=N):
// its weights and output codes, or the grid of its output.
inline bool takes_bits(Int8Role role) { return role == Int8Role::kWeights || role == Int8Role::kRequantize; }

struct LayerKind {
  std::string type;                          // type_name() and the record kind: "Conv2D"
  std::string spec_name;                     // in specs: "conv2d"
  std::vector<std::string> positional = {};  // spec arguments: positional names
  std::vector<std::string> keys = {};        // and all names
  Int8Role role = Int8Role::kPassThrough;
  // The layer (and a ReLU if the spec asks for activation=relu) for an input of `input` (per
  // example); a SpecError for arguments or inputs it cannot take.
  std::function<std::vector<std::unique_ptr<Module>>(const SpecArgs& args, const Shape& input, Rng& rng)> from_spec;
  // The layer from its float record; a qbin::FormatError naming the record if it is malformed.
  std::function<std::unique_ptr<Module>(const qbin::LayerRecord& record)> from_record;
  // kWeights: the kernel variable QAT fake-quantizes per output channel (its last axis), and the
  // bias variable (undefined if the layer has none) that a folded BatchNormalization absorbs.
  std::function<Variable&(Module& layer)> kernel = nullptr;
  std::function<Variable&(Module& layer)> bias = nullptr;
  // A container (Residual): the int attributes of its record that count the records of each
  // branch, which follow it in a file, and how its record and its branches (read first, as
  // chains) build it; from_record is not used for it.
  std::vector<std::string> branch_counts = {};
  std::function<std::unique_ptr<Module>(const qbin::LayerRecord& record, std::vector<Sequential> branches)> from_branches = nullptr;
};

// Every kind (each defined once, in its layer's source file), in the order the docs list them.
const std::vector<const LayerKind*>& layer_kinds();
const LayerKind* find_layer_kind(std::string_view type);          // by type; nullptr if none
const LayerKind* find_layer_kind_in_specs(std::string_view name);  // by spec name, any case

}  // namespace qnet
