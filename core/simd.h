// The float vector of the per-ISA kernels (core/kernels/), one native register wide: 16 lanes
// with AVX-512, 8 with AVX2, 4 with SSE (GCC lowers wider generic vectors through the stack, so
// each build uses its own width). Everything here lives in the ISA's namespace, so each build of
// the kernels gets its own copy (core/kernels.h says why).
//
//   vf a = load(p, 3);          // lanes 3.. are zero
//   store(q, a * b + c, 3);     // writes 3 floats
#pragma once

#ifndef QNET_ISA_NS
#error "core/simd.h is for the per-ISA kernels in core/kernels/ (built with QNET_ISA_NS defined)"
#endif

#include <cstdint>

#include <immintrin.h>  // what the build's -march allows: SSE4.2 at least (x86-64-v2)

namespace qnet::QNET_ISA_NS {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX2__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif

using vf = float __attribute__((vector_size(kLanes * 4)));
using vfu = float __attribute__((vector_size(kLanes * 4), aligned(4)));  // unaligned access
using vi = int32_t __attribute__((vector_size(kLanes * 4)));
using vu8u = uint8_t __attribute__((vector_size(kLanes), aligned(1)));   // one byte per lane, unaligned

// The first n lanes from p (n < kLanes: the rest are zero, nothing past p + n is read).
inline vf load(const float* p, int n) {
  if (n >= kLanes) return *reinterpret_cast<const vfu*>(p);
#if defined(__AVX512F__)
  return reinterpret_cast<vf>(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p));
#elif defined(__AVX2__)
  const __m256i below = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return reinterpret_cast<vf>(_mm256_maskload_ps(p, below));
#else
  vf v = {};
  for (int i = 0; i < n; ++i) v[i] = p[i];
  return v;
#endif
}

// Writes the first n lanes of v to p (nothing past p + n).
inline void store(float* p, vf v, int n) {
  if (n >= kLanes) {
    *reinterpret_cast<vfu*>(p) = v;
    return;
  }
#if defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), reinterpret_cast<__m512>(v));
#elif defined(__AVX2__)
  // Plain stores of 4, 2 and 1 floats (AVX2's masked stores are slow on AMD cores).
  __m128 q = _mm256_castps256_ps128(reinterpret_cast<__m256>(v));
  if (n >= 4) _mm_storeu_ps(p, q), q = _mm256_extractf128_ps(reinterpret_cast<__m256>(v), 1), p += 4, n -= 4;
  if (n >= 2) _mm_storel_pi(reinterpret_cast<__m64*>(p), q), q = _mm_movehl_ps(q, q), p += 2, n -= 2;
  if (n >= 1) _mm_store_ss(p, q);
#else
  for (int i = 0; i < n; ++i) p[i] = v[i];
#endif
}

inline vf splat(float x) { return vf{} + x; }

// To the nearest integer, ties to even, as __builtin_nearbyintf in the default rounding mode.
inline vf round_even(vf v) {
  constexpr int kMode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
#if defined(__AVX512F__)
  return reinterpret_cast<vf>(_mm512_roundscale_ps(reinterpret_cast<__m512>(v), kMode));
#elif defined(__AVX2__)
  return reinterpret_cast<vf>(_mm256_round_ps(reinterpret_cast<__m256>(v), kMode));
#else
  return reinterpret_cast<vf>(_mm_round_ps(reinterpret_cast<__m128>(v), kMode));
#endif
}

// Bit i set where lane i of v is not zero (as v[i] != 0.f: +0 and -0 are zero, NaN is not).
inline uint32_t nonzero_lanes(vf v) {
#if defined(__AVX512F__)
  return _mm512_cmp_ps_mask(reinterpret_cast<__m512>(v), _mm512_setzero_ps(), _CMP_NEQ_UQ);
#elif defined(__AVX2__)
  return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(reinterpret_cast<__m256>(v), _mm256_setzero_ps(), _CMP_NEQ_UQ)));
#else
  return static_cast<uint32_t>(_mm_movemask_ps(_mm_cmpneq_ps(reinterpret_cast<__m128>(v), _mm_setzero_ps())));
#endif
}

// Bit i set where lane i of a comparison's result is true.
inline uint32_t true_lanes(vi m) {
#if defined(__AVX512F__)
  return _mm512_movepi32_mask(reinterpret_cast<__m512i>(m));
#elif defined(__AVX2__)
  return static_cast<uint32_t>(_mm256_movemask_ps(reinterpret_cast<__m256>(m)));
#else
  return static_cast<uint32_t>(_mm_movemask_ps(reinterpret_cast<__m128>(m)));
#endif
}

inline float min_f(float a, float b) { return b < a ? b : a; }
inline float max_f(float a, float b) { return a < b ? b : a; }
inline int64_t min_i(int64_t a, int64_t b) { return b < a ? b : a; }
inline int lanes_in_block(int64_t C, int64_t b) { return static_cast<int>(min_i(kLanes, C - b * kLanes)); }

// This thread's scratch floats, kept between calls and grown as needed (never freed: a few
// hundred KB at most). A fresh 80 KB buffer per call cost more than the product it served
// (malloc returned it to the OS and the next call faulted its pages in again).
// One such buffer per element type and thread: scratch<int32_t> does not overwrite scratch_floats.
template <typename T>
inline T* scratch(int64_t n) {
  static thread_local T* buffer = nullptr;
  static thread_local int64_t size = 0;
  if (size < n) {
    delete[] buffer;
    buffer = new T[n];
    size = n;
  }
  return buffer;
}
inline float* scratch_floats(int64_t n) { return scratch<float>(n); }

// n zero-initialised vectors on the heap, freed at scope exit (no std::vector: see core/kernels.h).
class VecBuffer {
 public:
  explicit VecBuffer(int64_t n) : p_(new vf[n > 0 ? n : 1]()) {}
  ~VecBuffer() { delete[] p_; }
  VecBuffer(const VecBuffer&) = delete;
  VecBuffer& operator=(const VecBuffer&) = delete;
  vf* data() { return p_; }
  vf& operator[](int64_t i) { return p_[i]; }

 private:
  vf* p_;
};

}  // namespace qnet::QNET_ISA_NS
