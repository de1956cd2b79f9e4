#include "core/cpu.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include <fmt/format.h>

#include "core/kernels.h"
#include "io/qbin.h"

namespace qnet {

// One table per build of core/kernels/ (core/kernels/table.cpp).
namespace isa_baseline { extern const Kernels kKernels; }
namespace isa_avx2 { extern const Kernels kKernels; }
namespace isa_avx512 { extern const Kernels kKernels; }

namespace {

std::atomic<const Kernels*> g_kernels{nullptr};
std::atomic<int> g_isa{-1};

const Kernels& table(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return isa_avx512::kKernels;
    case Isa::kAvx2: return isa_avx2::kKernels;
    default: return isa_baseline::kKernels;
  }
}

// QNET_ISA if set, else the best the CPU has. A name qnet does not know, or a path the CPU
// cannot run, is an error rather than a silent fallback: the user asked for something exact.
Isa chosen_isa() {
  const char* env = std::getenv("QNET_ISA");
  if (env == nullptr || *env == '\0') return cpu_isa();
  const std::optional<Isa> isa = parse_isa(env);
  if (!isa) throw std::runtime_error(fmt::format("QNET_ISA={} (expected avx512, avx2 or baseline)", qbin::shown(env)));
  if (*isa > cpu_isa())
    throw std::runtime_error(fmt::format("QNET_ISA={}: this CPU can run at most {}", qbin::shown(env), isa_name(cpu_isa())));
  return *isa;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "baseline";
  }
}

std::optional<Isa> parse_isa(std::string_view name) {
  for (Isa isa : {Isa::kBaseline, Isa::kAvx2, Isa::kAvx512})
    if (name == isa_name(isa)) return isa;
  return std::nullopt;
}

// GCC 12's __builtin_cpu_supports knows the x86-64 levels and checks that the OS saves the
// AVX and AVX-512 registers (XCR0), not only the CPUID bits. Clang 14 (the fuzz build) knows only
// single features: there, the levels' vector and bit-manipulation features.
Isa cpu_isa() {
  __builtin_cpu_init();
#if defined(__clang__)
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
                  __builtin_cpu_supports("bmi2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd");
#else
  const bool v3 = __builtin_cpu_supports("x86-64-v3"), v4 = __builtin_cpu_supports("x86-64-v4");
#endif
  if (v4) return Isa::kAvx512;
  if (v3) return Isa::kAvx2;
  return Isa::kBaseline;
}

Isa active_isa() {
  int isa = g_isa.load(std::memory_order_acquire);
  if (isa < 0) {
    set_isa(chosen_isa());
    isa = g_isa.load(std::memory_order_acquire);
  }
  return static_cast<Isa>(isa);
}

void set_isa(Isa isa) {
  if (isa > cpu_isa())
    throw std::runtime_error(fmt::format("ISA path {}: this CPU can run at most {}", isa_name(isa), isa_name(cpu_isa())));
  g_kernels.store(&table(isa), std::memory_order_release);
  g_isa.store(static_cast<int>(isa), std::memory_order_release);
}

const Kernels& kernels() {
  const Kernels* k = g_kernels.load(std::memory_order_acquire);
  if (k == nullptr) {
    active_isa();
    k = g_kernels.load(std::memory_order_acquire);
  }
  return *k;
}

}  // namespace qnet
