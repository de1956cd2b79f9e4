// Thread count for every parallel kernel (OpenMP loops in ops, Eigen's GEMM, oneDNN).
//
//   qnet::set_num_threads(2);   // 0 = all hardware threads
//   int t = qnet::num_threads();
//
// Results are deterministic for a given thread count: reductions split work into
// fixed per-thread slices and combine them in thread order.
#pragma once

namespace qnet {

void set_num_threads(int threads);
int num_threads();
int max_hardware_threads();

}  // namespace qnet
