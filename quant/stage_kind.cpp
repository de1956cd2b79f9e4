#include "quant/stage_kind.h"

namespace qnet {

// A kind that computes at inference: its StageKind and StageOp in one file under quant/stages/
// (see max_pool2d.cpp), one line here.
const std::vector<const StageKind*>& stage_kinds() {
  static const std::vector<const StageKind*> kinds{&conv2d_stage_kind(),  &maxpool2d_stage_kind(), &zero_padding2d_stage_kind(),
                                                   &relu_stage_kind(),    &flatten_stage_kind(),   &dropout_stage_kind(),
                                                   &dense_stage_kind(),   &quantize_stage_kind()};
  return kinds;
}

const StageKind* find_stage_kind(std::string_view record_kind) {
  for (const StageKind* k : stage_kinds())
    if (k->record_kind == record_kind) return k;
  return nullptr;
}

}  // namespace qnet
