// The Quantize record: QAT's range for a Conv2D or Dense that no ReLU follows (quant/qat.h). In an
// int8 file that layer's StageKind consumes it as its activation (StageReader::activation), so
// one found here follows no such layer; a QAT file run in f32 passes through it.
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace {

size_t read(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  if (rd.int8()) StageReader::fail(r, "a quantized activation that follows no Conv2D or Dense");
  return 1;
}

}  // namespace

const StageKind& quantize_stage_kind() {
  static const StageKind kind{"Quantize", read};
  return kind;
}

}  // namespace qnet
