// The Dense layer's products, shaped for its sides: a batch of 32, thousands of inputs, a few
// outputs. The input gradient runs on Eigen (core/kernels/products.h); the forward and the weight
// gradient on the tiles below, which measured as fast or faster (docs/dependencies.md). The output
// columns go kLanes at a time in one vector, read straight from the row-major operand with a
// masked load (no packed copy), and several rows of the result run side by side so that
// independent FMA chains hide the FMA latency and share each load. Each element sums its inner
// dimension in a fixed order, so the result is the same on any thread count.
#include "core/kernels.h"
#include "core/kernels/products.h"
#include "core/parallel_for.h"
#include "core/simd.h"

namespace qnet::QNET_ISA_NS {

namespace {

// f(begin, end) over `rows` in blocks of a multiple of 8 rows (about 16 blocks), handed to the
// threads as they come free when `parallel` (a thread that the VM slowed does less), else all
// rows at once. Each row's result is the same whichever thread computes it.
template <typename F>
void for_row_range(int64_t rows, bool parallel, F&& f) {
  if (!parallel) return f(0, rows);
  int64_t block = (rows / 16 + 7) / 8 * 8;
  if (block < 8) block = 8;
  const int64_t blocks = (rows + block - 1) / block;
  parallel_for_dynamic(blocks, true, [&](int64_t i) { f(i * block, min_i(rows, (i + 1) * block)); });
}

constexpr int64_t kParallelWork = 1 << 16;  // multiply-adds below which one thread is faster

// A matrix operand read in place: element (r, i) at p[r * row + i * step].
struct Strided {
  const float* p;
  int64_t row, step;
};

// out[r][c..] = sum_i a(r, i) * b[i][c..] for R rows of a at once, over `inner` values of i,
// b's columns [c, c + lanes) (row stride ldb). Chunk > 0: the sum is made of partial sums over
// `Chunk` values of i at a time, added in order (a weight gradient's chunks of images, which
// data-parallel training sums across processes: core/distributed.h).
template <int R, int Chunk>
inline void rows_times_block(Strided a, const float* b, int64_t ldb, int64_t inner, int lanes, float* out, int64_t ldo) {
  vf acc[R] = {};
  if constexpr (Chunk == 0) {
    for (int64_t i = 0; i < inner; ++i) {
      const vf bi = load(b + i * ldb, lanes);
      for (int r = 0; r < R; ++r) acc[r] += a.p[r * a.row + i * a.step] * bi;
    }
  } else {
    for (int64_t i0 = 0; i0 < inner; i0 += Chunk) {
      vf part[R] = {};
      for (int64_t i = i0; i < min_i(inner, i0 + Chunk); ++i) {
        const vf bi = load(b + i * ldb, lanes);
        for (int r = 0; r < R; ++r) part[r] += a.p[r * a.row + i * a.step] * bi;
      }
      for (int r = 0; r < R; ++r) acc[r] = i0 == 0 ? part[r] : acc[r] + part[r];
    }
  }
  for (int r = 0; r < R; ++r) store(out + r * ldo, acc[r], lanes);
}

// rows_times_block with Chunk = kReductionChunk over an inner dimension held in `parts` pieces
// (the rows of a batch split over the threads of a team): piece q is a[q] x b[q] over inner[q]
// values, and the chunks of all pieces are added in order, as if they were one operand.
template <int R>
inline void rows_times_block_parts(int parts, const Strided* a, const float* const* b, const int64_t* inner, int64_t ldb, int lanes,
                                   float* out, int64_t ldo) {
  vf acc[R] = {};
  bool first = true;
  for (int q = 0; q < parts; ++q)
    for (int64_t i0 = 0; i0 < inner[q]; i0 += kReductionChunk) {
      vf part[R] = {};
      for (int64_t i = i0; i < min_i(inner[q], i0 + kReductionChunk); ++i) {
        const vf bi = load(b[q] + i * ldb, lanes);
        for (int r = 0; r < R; ++r) part[r] += a[q].p[r * a[q].row + i * a[q].step] * bi;
      }
      for (int r = 0; r < R; ++r) acc[r] = first ? part[r] : acc[r] + part[r];
      first = false;
    }
  for (int r = 0; r < R; ++r) store(out + r * ldo, acc[r], lanes);
}

// Rows of the result side by side where there are registers for them: AVX-512's 32 hold 16
// accumulators with room to spare, twice the 8 independent FMA chains that two FMA units of
// latency 4 need to stay busy; AVX2's and SSE's 16 registers hold 8.
constexpr int kWideRows = kLanes == 16 ? 16 : 8;

// rows_times_block over rows [row_begin, row_end) and columns [col_begin, col_end) of out,
// kWideRows rows at a time, then 8, then one at a time.
template <int Chunk>
inline void rows_times_columns(Strided a, const float* b, int64_t ldb, int64_t inner, float* out, int64_t ldo, int64_t row_begin,
                               int64_t row_end, int64_t col_begin, int64_t col_end) {
  for (int64_t c = col_begin; c < col_end; c += kLanes) {
    const int lanes = static_cast<int>(min_i(kLanes, col_end - c));
    int64_t r = row_begin;
    for (; r + kWideRows <= row_end; r += kWideRows)
      rows_times_block<kWideRows, Chunk>({a.p + r * a.row, a.row, a.step}, b + c, ldb, inner, lanes, out + r * ldo + c, ldo);
    for (; r + 8 <= row_end; r += 8)
      rows_times_block<8, Chunk>({a.p + r * a.row, a.row, a.step}, b + c, ldb, inner, lanes, out + r * ldo + c, ldo);
    for (; r < row_end; ++r) rows_times_block<1, Chunk>({a.p + r * a.row, a.row, a.step}, b + c, ldb, inner, lanes, out + r * ldo + c, ldo);
  }
}

}  // namespace

// y[n, :] = sum_k x[n, k] w[k, :]; rows split over threads. As fast as Eigen on a classifier's
// 10 outputs, 1.3x faster on 128 (Eigen packs all of w for each block of rows).
void matmul(int64_t N, int64_t K, int64_t M, const float* x, const float* w, float* y) {
  for_row_range(N, N * K * M >= kParallelWork,
                [&](int64_t begin, int64_t end) { rows_times_columns<0>({x, K, 1}, w, M, K, y, M, begin, end, 0, M); });
}

// dx = dy w^T on Eigen: 1.35 - 1.8x faster at batch 32 than these tiles, which had to transpose w
// first, and a tie at batch 128 (docs/dependencies.md).
void matmul_dx(int64_t N, int64_t K, int64_t M, const float* dy, const float* w, float* dx) {
  QNET_PRODUCTS_NS::product_nt(N, M, K, dy, w, dx);
}

// dw[k, :] = sum_n x[n, k] dy[n, :] in chunks of kReductionChunk rows (images) added in order:
// x read in place as x^T (row k = column k of x); rows of dw split over threads. As fast as Eigen
// (which packs all of x first) on every shape measured.
void matmul_dw(int64_t N, int64_t K, int64_t M, const float* x, const float* dy, float* dw) {
  for_row_range(K, N * K * M >= kParallelWork,
                [&](int64_t begin, int64_t end) { rows_times_columns<kReductionChunk>({x, 1, K}, dy, M, N, dw, M, begin, end, 0, M); });
}

// The parts' rows read in place, as matmul_dw reads x; kWideRows rows of dw at a time, then 8, then one.
// The parts' views live on the stack: at most kMaxProductParts (the caller's contract).
void matmul_dw_parts(int parts, const int64_t* rows, const float* const* x, const float* const* dy, int64_t K, int64_t M, int64_t k_begin,
                     int64_t k_end, float* dw) {
  if (parts < 1 || parts > kMaxProductParts) __builtin_trap();
  Strided a[kMaxProductParts];
  for (int64_t c = 0; c < M; c += kLanes) {
    const int lanes = static_cast<int>(min_i(kLanes, M - c));
    const float* b[kMaxProductParts];
    for (int q = 0; q < parts; ++q) b[q] = dy[q] + c;
    int64_t r = k_begin;
    for (; r + kWideRows <= k_end; r += kWideRows) {
      for (int q = 0; q < parts; ++q) a[q] = {x[q] + r, 1, K};
      rows_times_block_parts<kWideRows>(parts, a, b, rows, M, lanes, dw + r * M + c, M);
    }
    for (; r + 8 <= k_end; r += 8) {
      for (int q = 0; q < parts; ++q) a[q] = {x[q] + r, 1, K};
      rows_times_block_parts<8>(parts, a, b, rows, M, lanes, dw + r * M + c, M);
    }
    for (; r < k_end; ++r) {
      for (int q = 0; q < parts; ++q) a[q] = {x[q] + r, 1, K};
      rows_times_block_parts<1>(parts, a, b, rows, M, lanes, dw + r * M + c, M);
    }
  }
}

}  // namespace qnet::QNET_ISA_NS
