// libFuzzer target: the .qbin loader and both model builders (training and runtime) on any bytes.
// Expected outcome for bad input: qbin::FormatError with a message of printable ASCII (no byte of
// the file reaches a terminal raw; issue 13, item 8). Anything else (a crash, another exception,
// a sanitizer report, a message with control bytes) is a bug. docs/hardening.md says how to run it.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "io/qbin.h"
#include "quant/runtime/inference_model.h"
#include "tests/fuzz/fix_crc.h"

namespace {
void check_message(const char* what) {
  for (const char* p = what; *p; ++p)
    if (static_cast<unsigned char>(*p) < 0x20 || static_cast<unsigned char>(*p) > 0x7e) {
      std::fprintf(stderr, "FormatError message with byte 0x%02x at %zu\n", static_cast<unsigned char>(*p), static_cast<size_t>(p - what));
      std::abort();
    }
  if (std::strlen(what) > 1000) std::fprintf(stderr, "FormatError message of %zu bytes\n", std::strlen(what)), std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> b = qnet::fuzz::with_qbin_crc(data, size);
  qnet::qbin::Model m;
  try {
    m = qnet::qbin::parse(b.data(), b.size());
  } catch (const qnet::qbin::FormatError& e) {
    check_message(e.what());
    return 0;
  }
  try {
    const qnet::InferenceModel im = qnet::inference_model(m);
    (void)im;
  } catch (const qnet::qbin::FormatError& e) {
    check_message(e.what());
  }
  return 0;
}
