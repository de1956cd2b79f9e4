// Matrix products on Eigen 3.4 (core/kernels/products.h).
//
// Eigen is a header-only template library, and this file is compiled once per kernel path: every
// Eigen function it instantiates out of line would be a weak symbol `Eigen::...` that the linker
// shares between the builds, so the baseline path could end up running the AVX2 copy (SIGILL on
// an SSE-only CPU). The `Eigen` macro below renames Eigen's namespace to qnet::isa_X::Eigen in
// each build: every instantiation then belongs to its own path, which tests/core/kernel_symbols.sh
// checks like the rest of core/kernels/. The standard headers Eigen uses are included first, so
// the rename touches Eigen's own code only.
#include <omp.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iosfwd>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#define EIGEN_DONT_PARALLELIZE  // the threads are qnet's (fixed row blocks), not Eigen's
#define EIGEN_NO_IO             // no iostream operators in the kernels
#define Eigen qnet::QNET_ISA_NS::Eigen
#include <Eigen/Core>

#include "core/kernels/products.h"
#include "core/parallel_for.h"

namespace qnet::QNET_ISA_NS {

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using In = Eigen::Map<const RowMajor>;
using Out = Eigen::Map<RowMajor>;

// Eigen sizes its blocks from the caches it detects: the L1 size decides the blocks of the inner
// dimension (the order of the sums), the L2 and L3 sizes the blocks of rows and columns (which of
// its kernels, full panels or leftovers, adds each element, in different orders). With the
// detected sizes one CPU's bits would differ from another's; pinned here, once per path, to a
// typical x86-64 core's 32 KB / 512 KB / 8 MB.
void pin_blocking() {
  static const bool pinned = (Eigen::setCpuCacheSizes(32 * 1024, 512 * 1024, 8 * 1024 * 1024), true);
  (void)pinned;
}

// Rows of the result per Eigen call: about 2^18 multiply-adds, a multiple of 8, from the shape
// alone. Which rows share a call decides Eigen's kernels for them (full panels or leftovers, which
// add in different orders), so a fixed split keeps the bits the same on any thread count.
int64_t block_rows(int64_t inner, int64_t cols) {
  const int64_t per_row = std::max<int64_t>(1, inner * cols);
  return std::max<int64_t>(8, ((int64_t{1} << 18) / per_row + 7) / 8 * 8);
}

// f(first row, rows) over [0, rows) in blocks of `block`, spread over the threads.
template <typename F>
void for_row_blocks(int64_t rows, int64_t block, F&& f) {
  const int64_t blocks = (rows + block - 1) / block;
  parallel_for_static(blocks, blocks > 1, [&](int64_t i) { f(i * block, std::min(block, rows - i * block)); });
}

}  // namespace

void product_nt(int64_t N, int64_t M, int64_t K, const float* a, const float* b, float* c) {
  pin_blocking();
  const In B(b, K, M);
  for_row_blocks(N, block_rows(M, K), [&](int64_t r0, int64_t rows) {
    Out(c + r0 * K, rows, K).noalias() = In(a + r0 * M, rows, M) * B.transpose();
  });
}

}  // namespace qnet::QNET_ISA_NS
