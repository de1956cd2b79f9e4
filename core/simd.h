// A 16-float vector (GCC/Clang vector extension): one AVX-512 register, two AVX ones.
//
//   f32x16 a = load16(p, 12);       // lanes 12..15 are zero
//   store16(q, a * b + c, 12);      // writes 12 floats
#pragma once

#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace qnet {

using f32x16 = float __attribute__((vector_size(64), aligned(64)));
using f32x16u = float __attribute__((vector_size(64), aligned(4)));  // unaligned access

inline f32x16 load16(const float* p, int n) {
  if (n >= 16) return *reinterpret_cast<const f32x16u*>(p);
#if defined(__AVX512F__)
  return reinterpret_cast<f32x16>(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p));
#else
  f32x16 v = {};
  std::memcpy(&v, p, n * sizeof(float));
  return v;
#endif
}

inline void store16(float* p, f32x16 v, int n) {
  if (n >= 16) {
    *reinterpret_cast<f32x16u*>(p) = v;
    return;
  }
#if defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), reinterpret_cast<__m512>(v));
#else
  std::memcpy(p, &v, n * sizeof(float));
#endif
}

inline f32x16 splat16(float x) { return f32x16{} + x; }

}  // namespace qnet
