// Row-major products for the Dense layer, shaped for its small sides (a batch of 32, a few
// classes): one vector of output columns at a time, the weights copied once into blocks of kLanes columns.
// The three products each sum over their inner dimension in plain order, so every element is
// computed the same way on any thread count.
#include <omp.h>

#include "core/kernels.h"
#include "core/simd.h"

namespace qnet::QNET_ISA_NS {

namespace {

// Rows [begin, end) of `rows` for this thread when `parallel` (a static split), else all rows.
template <typename F>
void for_row_range(int64_t rows, bool parallel, F&& f) {
#pragma omp parallel if (parallel)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    if (end > begin) f(begin, end);
  }
}

// b [K, M] as [blocks][K] vectors of kLanes columns, zero-padded.
void block_columns(int64_t K, int64_t M, const float* b, vf* out) {
  const int64_t blocks = (M + kLanes - 1) / kLanes;
  for (int64_t j = 0; j < blocks; ++j)
    for (int64_t k = 0; k < K; ++k) out[j * K + k] = load(b + k * M + j * kLanes, lanes_in_block(M, j));
}

}  // namespace

// y[n, :] = sum_k x[n, k] w[k, :], four independent partial sums over k (k mod 4) added at the
// end, in a fixed order.
void matmul(int64_t N, int64_t K, int64_t M, const float* x, const float* w, float* y) {
  const int64_t blocks = (M + kLanes - 1) / kLanes;
  VecBuffer wb(blocks * K);
  block_columns(K, M, w, wb.data());
  for_row_range(N, N * K * M >= (1 << 16), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      for (int64_t j = 0; j < blocks; ++j) {
        const float* xn = x + n * K;
        const vf* wj = wb.data() + j * K;
        vf a0 = {}, a1 = {}, a2 = {}, a3 = {};
        int64_t k = 0;
        for (; k + 4 <= K; k += 4) a0 += xn[k] * wj[k], a1 += xn[k + 1] * wj[k + 1], a2 += xn[k + 2] * wj[k + 2], a3 += xn[k + 3] * wj[k + 3];
        for (; k < K; ++k) a0 += xn[k] * wj[k];
        store(y + n * M + j * kLanes, (a0 + a1) + (a2 + a3), lanes_in_block(M, j));
      }
  });
}

// dx[n, k] = sum_m dy[n, m] w[k, m]: per row of dx, the weights' rows (contiguous in w) dotted
// with dy's row, vectorised over k by transposing w once into [M][K].
void matmul_dx(int64_t N, int64_t K, int64_t M, const float* dy, const float* w, float* dx) {
  float* wt = new float[K * M];
  for (int64_t k = 0; k < K; ++k)
    for (int64_t m = 0; m < M; ++m) wt[m * K + k] = w[k * M + m];
  for_row_range(N, N * K * M >= (1 << 16), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      float* __restrict out = dx + n * K;
      const float* g = dy + n * M;
      for (int64_t k = 0; k < K; ++k) out[k] = 0.f;
      for (int64_t m = 0; m < M; ++m) {
        const float gm = g[m];
        const float* __restrict row = wt + m * K;
#pragma omp simd
        for (int64_t k = 0; k < K; ++k) out[k] += gm * row[k];
      }
    }
  });
  delete[] wt;
}

// dw[k, :] = sum_n x[n, k] dy[n, :], n in order; rows of dw split over threads.
void matmul_dw(int64_t N, int64_t K, int64_t M, const float* x, const float* dy, float* dw) {
  const int64_t blocks = (M + kLanes - 1) / kLanes;
  VecBuffer gb(blocks * N);  // dy as [blocks][N] vectors
  block_columns(N, M, dy, gb.data());
  for_row_range(K, N * K * M >= (1 << 16), [&](int64_t begin, int64_t end) {
    for (int64_t j = 0; j < blocks; ++j) {
      const vf* gj = gb.data() + j * N;
      const int lanes = lanes_in_block(M, j);
      int64_t k = begin;
      for (; k + 4 <= end; k += 4) {  // four rows of dw at a time share each dy vector
        vf a0 = {}, a1 = {}, a2 = {}, a3 = {};
        for (int64_t n = 0; n < N; ++n) {
          const float* xn = x + n * K + k;
          a0 += xn[0] * gj[n], a1 += xn[1] * gj[n], a2 += xn[2] * gj[n], a3 += xn[3] * gj[n];
        }
        store(dw + k * M + j * kLanes, a0, lanes), store(dw + (k + 1) * M + j * kLanes, a1, lanes);
        store(dw + (k + 2) * M + j * kLanes, a2, lanes), store(dw + (k + 3) * M + j * kLanes, a3, lanes);
      }
      for (; k < end; ++k) {
        vf a = {};
        for (int64_t n = 0; n < N; ++n) a += x[n * K + k] * gj[n];
        store(dw + k * M + j * kLanes, a, lanes);
      }
    }
  });
}

}  // namespace qnet::QNET_ISA_NS
