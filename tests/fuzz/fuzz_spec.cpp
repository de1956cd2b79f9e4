// libFuzzer target: the model spec grammar (layers/model_spec.h) on any text, built for a small
// input shape. Expected outcome for bad input: a SpecError (or std::invalid_argument from a layer)
// whose message is printable ASCII, at most 1,000 bytes; for good input, a model. Anything else
// (a crash, another exception, a sanitizer report, a hang past libFuzzer's -timeout) is a bug.
// Specs longer than 4 KB are cut: the grammar's cost is linear, and big ones only slow the search.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "core/random.h"
#include "layers/model_spec.h"

namespace {
void check_message(const char* what) {
  for (const char* p = what; *p; ++p)
    if (static_cast<unsigned char>(*p) < 0x20 || static_cast<unsigned char>(*p) > 0x7e) {
      std::fprintf(stderr, "spec error message with byte 0x%02x at %zu: %s\n", static_cast<unsigned char>(*p), static_cast<size_t>(p - what),
                   what);
      std::abort();
    }
  if (std::strlen(what) > 1000) std::fprintf(stderr, "spec error message of %zu bytes\n", std::strlen(what)), std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string spec(reinterpret_cast<const char*>(data), std::min<size_t>(size, 4096));
  qnet::Rng rng(1);
  try {
    qnet::Sequential m = qnet::model_from_spec(spec, {12, 10, 2}, rng);
    (void)m.summary();
  } catch (const std::invalid_argument& e) {  // SpecError is one
    check_message(e.what());
  }
  return 0;
}
