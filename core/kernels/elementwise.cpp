// Elementwise kernels: ReLU, fake quantization (eq. 7, 8), min/max for observers, Adam.
//
// Loops go parallel above kMinParallelElements, vectorised either way (core/parallel_for.h).
// Masks use & on bools, not &&: a short-circuit becomes a branch per element, which kept these
// loops scalar (measured 20x slower than relu's backward).
#include "core/kernels.h"
#include "core/parallel.h"
#include "core/parallel_for.h"
#include "core/simd.h"

namespace qnet::QNET_ISA_NS {

void relu_forward(int64_t n, const float* x, float* y) {
  parallel_for_ranges(n, n > kMinParallelElements, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) y[i] = x[i] > 0.f ? x[i] : 0.f;
  });
}

void relu_backward(int64_t n, const float* y, const float* gy, float* gx) {
  parallel_for_ranges(n, n > kMinParallelElements, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) gx[i] = y[i] > 0.f ? gy[i] : 0.f;
  });
}

// Per-channel loops over rows of C values: with fewer channels than lanes (a classifier's 10),
// a row fills part of one vector and the rest runs scalar. period_rows(C) rows make a run of
// lcm(C, kLanes) values, whole vectors, whose j-th value is channel j % C: the kernels below take
// such runs with the channels' constants repeated to that length (the same operations on every
// value), then the leftover rows one at a time. 1 where a row is already whole vectors or the run
// would be longer than kMaxPeriod.
constexpr int64_t kMaxPeriod = 256;
inline int64_t period_rows(int64_t C) {
  if (C % kLanes == 0) return 1;
  int64_t a = C, b = kLanes;
  while (b) {  // a = gcd(C, kLanes)
    const int64_t t = a % b;
    a = b, b = t;
  }
  const int64_t run = C / a * kLanes;
  return run <= kMaxPeriod ? run / C : 1;
}

// Same as dequantize(quantize(x)) (z is an integer), in one vectorisable line (eq. 7).
void fake_quant_forward(int64_t n, int64_t C, const float* x, const float* scale, const float* lo, const float* hi, float* y) {
  if (C == 1) {
    const float s = scale[0], l = lo[0], h = hi[0];
    parallel_for_ranges(n, n > kMinParallelElements, [=](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) {
        const float q = __builtin_nearbyintf(x[i] / s);
        y[i] = (q < l ? l : (q > h ? h : q)) * s;
      }
    });
    return;
  }
  // Per channel of the last axis: whole periods of rows as one run, then row by row.
  const int64_t rows = n / C, period = period_rows(C), P = period * C;
  int64_t r = 0;
  if (period > 1) {
    float s[kMaxPeriod], l[kMaxPeriod], h[kMaxPeriod];
    for (int64_t j = 0; j < P; ++j) s[j] = scale[j % C], l[j] = lo[j % C], h[j] = hi[j % C];
    for (; r + period <= rows; r += period) {
      const float* xr = x + r * C;
      float* yr = y + r * C;
#pragma omp simd
      for (int64_t j = 0; j < P; ++j) {
        const float q = __builtin_nearbyintf(xr[j] / s[j]);
        yr[j] = (q < l[j] ? l[j] : (q > h[j] ? h[j] : q)) * s[j];
      }
    }
  }
  for (; r < rows; ++r)
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float q = __builtin_nearbyintf(x[r * C + c] / scale[c]);
      y[r * C + c] = (q < lo[c] ? lo[c] : (q > hi[c] ? hi[c] : q)) * scale[c];
    }
}

void fake_quant_backward(int64_t n, int64_t C, const float* x, const float* real_lo, const float* real_hi, const float* gy,
                         float* gx) {
  if (C == 1) {
    const float lo = real_lo[0], hi = real_hi[0];
    parallel_for_ranges(n, n > kMinParallelElements, [=](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) gx[i] = ((x[i] >= lo) & (x[i] <= hi)) ? gy[i] : 0.f;  // eq. 8
    });
    return;
  }
  const int64_t rows = n / C, period = period_rows(C), P = period * C;
  int64_t r = 0;
  if (period > 1) {
    float l[kMaxPeriod], h[kMaxPeriod];
    for (int64_t j = 0; j < P; ++j) l[j] = real_lo[j % C], h[j] = real_hi[j % C];
    for (; r + period <= rows; r += period) {
      const int64_t at = r * C;
#pragma omp simd
      for (int64_t j = 0; j < P; ++j) gx[at + j] = ((x[at + j] >= l[j]) & (x[at + j] <= h[j])) ? gy[at + j] : 0.f;  // eq. 8
    }
  }
  for (; r < rows; ++r)
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      gx[i] = ((x[i] >= real_lo[c]) & (x[i] <= real_hi[c])) ? gy[i] : 0.f;  // eq. 8
    }
}

void relu_fake_quant_forward(int64_t n, const float* x, float scale, float hi, float* y) {
  parallel_for_ranges(n, n > kMinParallelElements, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float q = __builtin_nearbyintf((x[i] > 0.f ? x[i] : 0.f) / scale);  // eq. 7 on relu(x)
      y[i] = (q > hi ? hi : q) * scale;
    }
  });
}

void relu_fake_quant_backward(int64_t n, const float* x, float real_hi, const float* gy, float* gx) {
  parallel_for_ranges(n, n > kMinParallelElements, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) gx[i] = ((x[i] > 0.f) & (x[i] <= real_hi)) ? gy[i] : 0.f;  // relu' x eq. 8
  });
}

void min_max(int64_t n, const float* x, float* lo_out, float* hi_out) {
  float lo = x[0], hi = x[0];
  if (go_parallel(n, n > kMinParallelElements)) {
#pragma omp parallel for simd reduction(min : lo) reduction(max : hi) schedule(static)
    for (int64_t i = 0; i < n; ++i) lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
  } else {
#pragma omp simd reduction(min : lo) reduction(max : hi)
    for (int64_t i = 0; i < n; ++i) lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
  }
  *lo_out = lo, *hi_out = hi;
}

// Rows of C as runs of period_rows(C) rows (whole vectors), each run's values kept in a run-long
// array of maxima, folded into the C channels at the end: max is exact, so any order gives the same.
bool channel_abs_max(int64_t n, int64_t C, const float* x, float* amax) {
  const int64_t rows = n / C, period = period_rows(C), P = period * C;
  for (int64_t c = 0; c < C; ++c) amax[c] = 0.f;
  int64_t r = 0, nans = 0;
  if (P <= kMaxPeriod) {
    float m[kMaxPeriod] = {};
    for (; r + period <= rows; r += period) {
      const float* xr = x + r * C;
#pragma omp simd reduction(+ : nans)
      for (int64_t j = 0; j < P; ++j) {
        const float a = __builtin_fabsf(xr[j]);
        m[j] = m[j] < a ? a : m[j];
        nans += a != a;
      }
    }
    for (int64_t j = 0; j < P; ++j) amax[j % C] = amax[j % C] < m[j] ? m[j] : amax[j % C];
  }
  for (; r < rows; ++r)
#pragma omp simd reduction(+ : nans)
    for (int64_t c = 0; c < C; ++c) {
      const float a = __builtin_fabsf(x[r * C + c]);
      amax[c] = amax[c] < a ? a : amax[c];
      nans += a != a;
    }
  return nans == 0;
}

void adam_update(int64_t n, float a, float b1, float b2, float eps, float* __restrict w, const float* __restrict g,
                 float* __restrict m, float* __restrict v) {
  parallel_for_ranges(n, n > 4096, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t k = begin; k < end; ++k) {
      m[k] = b1 * m[k] + (1.f - b1) * g[k];
      v[k] = b2 * v[k] + (1.f - b2) * g[k] * g[k];
      w[k] -= a * m[k] / (__builtin_sqrtf(v[k]) + eps);
    }
  });
}

}  // namespace qnet::QNET_ISA_NS
