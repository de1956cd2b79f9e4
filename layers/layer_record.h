// A layer's record in a .qbin model file (io/qbin.h). Module knows nothing of files: a layer
// with attributes or tensors to save implements Recorded (its LayerKind's from_record reads them
// back, layers/layer_kind.h); any other layer is saved as its kind and name only.
//
//   qbin::LayerRecord r = record_of(model.layer(i));
#pragma once

#include "io/qbin.h"
#include "layers/module.h"

namespace qnet {

class Recorded {
 public:
  virtual ~Recorded() = default;
  // The layer's record: bare_record(*this) plus its attributes and float tensors.
  virtual qbin::LayerRecord to_record() const = 0;
};

qbin::LayerRecord bare_record(const Module& layer);  // kind = type_name(), and the layer's name
qbin::LayerRecord record_of(const Module& layer);    // Recorded::to_record(), or bare_record()

// The optional "bias" tensor of a layer record, checked to be [channels]; undefined if absent.
Variable bias_from_record(const qbin::LayerRecord& r, int64_t channels);

}  // namespace qnet
