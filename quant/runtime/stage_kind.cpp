#include "quant/runtime/stage_kind.h"

namespace qnet {

// The kinds, each defined in its file under quant/runtime/stages/ (see zero_padding2d.cpp). A kind that
// computes at inference: its StageKind and StageOp in one file there, its line here and in the
// table below.
const StageKind& conv2d_stage_kind();
const StageKind& depthwise_conv2d_stage_kind();
const StageKind& maxpool2d_stage_kind();
const StageKind& average_pooling2d_stage_kind();
const StageKind& global_average_pooling2d_stage_kind();
const StageKind& zero_padding2d_stage_kind();
const StageKind& batch_norm_stage_kind();
const StageKind& relu_stage_kind();
const StageKind& flatten_stage_kind();
const StageKind& dense_stage_kind();
const StageKind& residual_stage_kind();
const StageKind& quantize_stage_kind();

const std::vector<const StageKind*>& stage_kinds() {
  static const std::vector<const StageKind*> kinds{
      &conv2d_stage_kind(),     &depthwise_conv2d_stage_kind(), &maxpool2d_stage_kind(), &average_pooling2d_stage_kind(),
      &global_average_pooling2d_stage_kind(), &zero_padding2d_stage_kind(), &batch_norm_stage_kind(), &relu_stage_kind(),
      &flatten_stage_kind(),    &dense_stage_kind(),     &residual_stage_kind(),
      &quantize_stage_kind()};
  return kinds;
}

const StageKind* find_stage_kind(std::string_view record_kind) {
  for (const StageKind* k : stage_kinds())
    if (k->record_kind == record_kind) return k;
  return nullptr;
}

}  // namespace qnet
