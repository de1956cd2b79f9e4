// Dropout at inference: the identity. Files written since training-only records carry
// `training_only` = 1 are skipped before any kind is looked up (inference_model()); this reads the
// Dropout records of older files the same way.
#include "quant/runtime/stage_kind.h"

namespace qnet {

const StageKind& dropout_stage_kind() {
  static const StageKind kind{"Dropout", [](StageReader&, std::span<const qbin::LayerRecord>) -> size_t { return 1; }};
  return kind;
}

}  // namespace qnet
