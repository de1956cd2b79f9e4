// Flatten at inference (quant/runtime/stage_kind.h): H x W x C per image as 1 x 1 x HWC, in Keras' H, W, C
// order, which is already the order of the HWC bytes. Its training side is layers/simple_layers.cpp.
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace {

class FlattenStage final : public StageOp {
 public:
  void reference(RefActivation& x, const Stage& st) const override { x.H = 1, x.W = 1, x.C = st.C; }
  int lower(PlanBuilder& b, int cur, const Stage&, const Stage*, bool&) const override { return b.flatten(cur, b.H, b.W, b.C); }
};

size_t read(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  rd.push_same_grid(r, std::make_shared<FlattenStage>(), 1, 1, rd.H * rd.W * rd.C);
  return 1;
}

}  // namespace

const StageKind& flatten_stage_kind() {
  static const StageKind kind{"Flatten", read};
  return kind;
}

}  // namespace qnet
