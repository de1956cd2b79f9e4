// libFuzzer target: the .qbin loader and both model builders (training and runtime) on any bytes.
// Expected outcome for bad input: qbin::FormatError. Anything else (a crash, another exception,
// a sanitizer report) is a bug. docs/hardening.md says how to run it.
#include <cstddef>
#include <cstdint>

#include "core/qbin.h"
#include "quant/inference_model.h"
#include "tests/fuzz/fix_crc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> b = qnet::fuzz::with_qbin_crc(data, size);
  qnet::qbin::Model m;
  try {
    m = qnet::qbin::parse(b.data(), b.size());
  } catch (const qnet::qbin::FormatError&) {
    return 0;
  }
  try {
    const qnet::InferenceModel im = qnet::inference_model(m);
    (void)im;
  } catch (const qnet::qbin::FormatError&) {
  }
  return 0;
}
