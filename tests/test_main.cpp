// The suite's main: Catch2's, except that with QNET_ISA naming a kernel path this CPU cannot
// run, the suite reports itself skipped (exit 77, ctest's SKIP_RETURN_CODE) instead of failing
// or silently testing another path.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <optional>

#include "core/cpu.h"

int main(int argc, char** argv) {
  if (const char* env = std::getenv("QNET_ISA"); env != nullptr && *env != '\0') {
    const std::optional<qnet::Isa> isa = qnet::parse_isa(env);
    if (isa && *isa > qnet::cpu_isa()) {
      std::printf("QNET_ISA=%s: this CPU runs at most the %s path; skipped\n", env, qnet::isa_name(qnet::cpu_isa()));
      return 77;
    }
  }
  return Catch::Session().run(argc, argv);
}
