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
// than the second thread gives. Write the clause as `if (parallel : n > kMinParallelElements)`:
// on a combined `parallel for simd`, a bare `if` also switches off the simd part, and the loop
// turns scalar below the threshold (measured: relu's backward ran with a branch per element).
constexpr int64_t kMinParallelElements = 65536;

}  // namespace qnet
