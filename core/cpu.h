// Which of qnet's kernel builds runs (core/kernels.h): the best one this CPU has, unless the
// environment variable QNET_ISA (avx512, avx2 or baseline) asks for a lower one.
//
//   qnet::Isa isa = qnet::active_isa();        // e.g. Isa::kAvx2 on an AMD Zen 3
//   fmt::print("{}\n", qnet::isa_name(isa));   // "avx2"
//   qnet::set_isa(qnet::Isa::kBaseline);       // tests and benchmarks: force a lower path
#pragma once

#include <optional>
#include <string_view>

namespace qnet {

enum class Isa { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };  // x86-64-v2, x86-64-v3, x86-64-v4

const char* isa_name(Isa isa);                        // "baseline", "avx2", "avx512"
std::optional<Isa> parse_isa(std::string_view name);  // the inverse; nullopt for other names
Isa cpu_isa();     // the best path this CPU (and its OS) can run
Isa active_isa();  // the path in use: QNET_ISA if set (checked), else cpu_isa()
void set_isa(Isa isa);  // throws std::runtime_error if the CPU cannot run it

}  // namespace qnet
