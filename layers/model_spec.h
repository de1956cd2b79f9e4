// Sequential models from a one-line spec (or a file holding one; docs/tutorial.md has the
// grammar and examples):
//
//   Sequential m = model_from_spec("conv2d(32, 3, relu) maxpool2d(2) conv2d(64, 3, relu) maxpool2d(2) "
//                                  "flatten dropout(0.5) dense(10)", {28, 28, 1}, rng);
//
// Layers: conv2d(filters, kernel[, stride=S][, padding=valid|same][, relu]),
// maxpool2d(size[, stride=S][, padding=valid|same]), zeropadding2d(P[, top=T, ...]), relu, flatten,
// dropout(rate), gaussiannoise(stddev), dense(units[, relu]) (the kinds: layers/layer_kind.h).
// Sizes are N or NxM; `relu` is short for activation=relu. Layers are
// separated by spaces, commas or new lines; '#' starts a comment. A mistake is a SpecError whose
// message points at the offending token: "at character 9 ('conv2x'): unknown layer (expected ...)".
#pragma once

#include <stdexcept>
#include <string>

#include "layers/sequential.h"
#include "layers/spec_args.h"

namespace qnet {

Sequential model_from_spec(const std::string& spec, const Shape& input, Rng& rng);

// The chain of already parsed layers (a residual block's branch: names_layers = false, its layers
// are named when the block joins the model).
Sequential model_from_layer_specs(const std::vector<LayerSpec>& layers, const Shape& input, Rng& rng, bool names_layers);

// The article's model as a spec: what `train` builds without --model (Dense sized to `classes`).
std::string reference_spec(int64_t classes);

}  // namespace qnet
