#include "layers/layer_record.h"

#include <fmt/format.h>

namespace qnet {

qbin::LayerRecord bare_record(const Module& layer) { return {layer.type_name(), layer.name(), {}, {}, {}}; }

qbin::LayerRecord record_of(const Module& layer) {
  const auto* recorded = dynamic_cast<const Recorded*>(&layer);
  return recorded ? recorded->to_record() : bare_record(layer);
}

Variable bias_from_record(const qbin::LayerRecord& r, int64_t channels) {
  const qbin::TensorRecord* b = r.find_tensor("bias");
  if (!b) return Variable();
  if (b->shape != Shape{channels})
    throw qbin::FormatError(
        fmt::format("layer '{}' ({}): bias {} (expected [{}])", qbin::shown(r.name), qbin::shown(r.kind), shape_str(b->shape), channels));
  return Variable(qbin::to_f32(*b), true);
}

}  // namespace qnet
