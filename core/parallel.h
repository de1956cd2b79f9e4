// Thread count for every parallel kernel (OpenMP loops in the kernels, oneDNN).
//
//   qnet::set_num_threads(2);   // 0 = all hardware threads
//   int t = qnet::num_threads();
//
// Results do not depend on the thread count: reductions split work into fixed chunks
// (core/kernels.h, kReductionChunk) and combine them in chunk order.
#pragma once

#include <cstdint>

namespace qnet {

void set_num_threads(int threads);
int num_threads();
int max_hardware_threads();

// Elementwise loops go parallel above this many elements; below it a team's start-up costs more
// than the second thread gives. The loops pass it to core/parallel_for.h's helpers, which do not
// enter OpenMP at all below it (an `if` clause still pays for a team of one).
constexpr int64_t kMinParallelElements = 65536;

}  // namespace qnet
