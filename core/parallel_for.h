// Loops over the OpenMP threads that stay out of OpenMP when they would run on one thread.
//
//   parallel_for_ranges(n, n > kMinParallelElements, [&](int64_t begin, int64_t end) {
//   #pragma omp simd
//     for (int64_t i = begin; i < end; ++i) y[i] = x[i] > 0.f ? x[i] : 0.f;
//   });
//   parallel_for_dynamic(images, true, [&](int64_t n) { ... });
//
// Entering `#pragma omp parallel` costs ~1.5 us even when an `if` clause keeps it on one thread,
// and ~3 us inside another region (libgomp builds a team of one each time; measured on Zen 5,
// docs/performance.md). A training step runs dozens of such loops, and inside the training team
// (core/thread_team.h) every one of them: so a loop opens a region only when it has more than one
// iteration, more than one thread may run, and no region is active. The results are the same
// either way (each iteration's work does not depend on which thread does it).
#pragma once

#include <omp.h>

#include <cstdint>

#ifdef QNET_ISA_NS  // the per-ISA kernels get their own copies (core/kernels.h)
namespace qnet::QNET_ISA_NS {
#else
namespace qnet {
#endif

inline bool go_parallel(int64_t iterations, bool big_enough) {
  return big_enough && iterations > 1 && !omp_in_parallel() && omp_get_max_threads() > 1;
}

// f(i) for i in [0, n), handed to the threads as they come free.
template <typename F>
inline void parallel_for_dynamic(int64_t n, bool big_enough, const F& f) {
  if (go_parallel(n, big_enough)) {
#pragma omp parallel
    {
      F run = f;  // each thread's own copy (parallel_for_ranges says why)
#pragma omp for schedule(dynamic)
      for (int64_t i = 0; i < n; ++i) run(i);
    }
  } else {
    F run = f;
    for (int64_t i = 0; i < n; ++i) run(i);
  }
}

// f(begin, end) on one contiguous range of [0, n) per thread (all of it on one thread): for
// elementwise loops, which put `#pragma omp simd` on their own loop over the range (through a
// lambda called per element, GCC left relu's backward scalar: 8x slower).
template <typename F>
inline void parallel_for_ranges(int64_t n, bool big_enough, const F& f) {
  // Each thread runs its own copy of f: the copy's captured scalars become registers, where a
  // shared closure's could be changed by the loop's stores as far as GCC knows (which left
  // Adam's update scalar).
  if (!go_parallel(n, big_enough)) {
    F run = f;
    return run(int64_t{0}, n);
  }
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
    const int64_t per = (n + threads - 1) / threads;
    const int64_t begin = t * per < n ? t * per : n, end = (t + 1) * per < n ? (t + 1) * per : n;
    F run = f;
    run(begin, end);
  }
}

// f(i) for i in [0, n), in one contiguous range per thread.
template <typename F>
inline void parallel_for_static(int64_t n, bool big_enough, const F& f) {
  parallel_for_ranges(n, big_enough, [&f](int64_t begin, int64_t end) {
    F run = f;
    for (int64_t i = begin; i < end; ++i) run(i);
  });
}

}  // namespace qnet (or qnet::QNET_ISA_NS)
