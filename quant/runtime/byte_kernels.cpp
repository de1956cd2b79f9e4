#include "quant/runtime/byte_kernels.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/parallel.h"

namespace qnet::u8 {

namespace {

// Per-thread scratch bytes for the kernels below, kept between calls (no allocation per batch).
uint8_t* scratch_bytes(size_t n) {
  thread_local std::vector<uint8_t> bytes;
  if (bytes.size() < n) bytes.resize(n);
  return bytes.data();
}

// The kernels below split rows over the OpenMP team; a batch of one image has too few rows to
// pay for starting it.
constexpr int64_t kRowsPerTeam = 64;

// body(begin, end) over rows [0, rows): split over the OpenMP team when `parallel`, else called
// once on this thread. Not `#pragma omp parallel if (...)`: a false `if` still enters libgomp and
// builds a team of one, which cost 1-1.5 us per kernel at batch 1 (more than the kernels' work:
// the duplicate of 2,028 bytes took 1.5 us).
template <typename Body>
void for_rows(int64_t rows, bool parallel, const Body& body) {
  if (!parallel || omp_get_max_threads() == 1) return body(int64_t{0}, rows);
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
    body(rows * t / n, rows * (t + 1) / n);
  }
}

// max_of_groups_u8 for C <= 16: one 16-byte vector per group. KG > 0: G == KG, known when
// compiled, which unrolls the loop over g and halved the time (the 2x2 pooling of the
// reference model's window matmul, G = 4, with max_of_phases reading rows in place: 85 -> 37 us
// at batch 256 on Zen 5).
template <int KG>
void max_of_groups_u8_16(const uint8_t* in, uint8_t* out, int64_t cols, int64_t C, int runtime_G) {
  const int G = KG > 0 ? KG : runtime_G;
  for (int64_t q = 0; q < cols; ++q) {
    const uint8_t* p = in + q * G * C;
    __m128i m = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    for (int g = 1; g < G; ++g) m = _mm_max_epu8(m, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + g * C)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + q * C), m);
  }
}

// out[q * C + c] = the max over g < G of in[(q * G + g) * C + c], for q < cols: the max over
// each run of G consecutive C-byte groups. 16 bytes at a time when C <= 16, so `in` and `out`
// need 16 bytes of slack past their ends; each store's tail is overwritten by the next.
void max_of_groups_u8(const uint8_t* in, uint8_t* out, int64_t cols, int64_t C, int G) {
  if (C <= 16) {
    if (G == 2) return max_of_groups_u8_16<2>(in, out, cols, C, G);
    if (G == 4) return max_of_groups_u8_16<4>(in, out, cols, C, G);
    return max_of_groups_u8_16<0>(in, out, cols, C, G);
  }
  for (int64_t q = 0; q < cols; ++q)
    for (int64_t c = 0; c < C; ++c) {
      uint8_t m = in[q * G * C + c];
      for (int g = 1; g < G; ++g) m = std::max(m, in[(q * G + g) * C + c]);
      out[q * C + c] = m;
    }
}

}  // namespace

// Max pooling of u8 codes in nhwc with windows that tile the input (stride = window, no
// padding): each window's largest code, exact because codes order like the reals.
// Per output row: a byte-wise max over the window's input rows, then over each window's
// columns, 16 bytes at a time when a pixel has at most 16 channels. oneDNN 2.6's u8 pooling
// took 7.8x its f32 pooling's time on the reference layer's output (docs/runtime.md).
void max_pool_tiled(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, int KH, int KW,
                       int64_t OH, int64_t OW) {
  const int64_t span = OW * KW * C;  // the bytes of an input row that the windows cover
  for_rows(N * OH, N * OH >= kRowsPerTeam, [&](int64_t begin, int64_t end) {
    uint8_t* const acc = scratch_bytes(static_cast<size_t>(span + 16 + OW * C + 16));  // +16: vector slack
    uint8_t* const pooled = acc + span + 16;
    for (int64_t r = begin; r < end; ++r) {
      const uint8_t* top = in + ((r / OH * H) + r % OH * KH) * W * C;
      std::memcpy(acc, top, static_cast<size_t>(span));
      for (int kh = 1; kh < KH; ++kh) {
        const uint8_t* row = top + kh * W * C;
#pragma omp simd
        for (int64_t i = 0; i < span; ++i) acc[i] = acc[i] > row[i] ? acc[i] : row[i];
      }
      max_of_groups_u8(acc, pooled, OW, C, KW);
      std::memcpy(out + r * OW * C, pooled, static_cast<size_t>(OW * C));
    }
  });
}

// One row per pooled pixel: the BH x BW block of a 1-channel u8 image that the pixel's a x b
// pooling window of conv outputs reads, out[((n PH + P) PW + Q)][i BW + j] = in[n][a P + i][b Q + j],
// written `copies` times side by side (2 on the split-weights path, see duplicate_rows).
void window_blocks(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t PH, int64_t PW, int a, int b,
                      int BH, int BW, int copies) {
  const int K = BH * BW;
  if (BH == 4 && BW == 4) {  // the reference layer (3x3 conv, 2x2 pool): a block is one 16-byte vector
    for_rows(N * PH, N * PH >= kRowsPerTeam, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const uint8_t* top = in + (row / PH * H + row % PH * a) * W;
        uint8_t* o = out + row * PW * 16 * copies;
        for (int64_t Q = 0; Q < PW; ++Q, o += 16 * copies) {
          const uint8_t* src = top + b * Q;
          int32_t r[4];
          for (int i = 0; i < 4; ++i) std::memcpy(&r[i], src + i * W, 4);
          const __m128i block = _mm_set_epi32(r[3], r[2], r[1], r[0]);
          for (int c = 0; c < copies; ++c) _mm_storeu_si128(reinterpret_cast<__m128i*>(o + c * 16), block);
        }
      }
    });
    return;  // 0.15 us per image, against 0.93 us for the general loop below
  }
  for_rows(N * PH, N * PH >= kRowsPerTeam, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const uint8_t* top = in + (row / PH * H + row % PH * a) * W;
      uint8_t* o = out + row * PW * K * copies;
      for (int64_t Q = 0; Q < PW; ++Q, o += K * copies) {
        for (int i = 0; i < BH; ++i) std::copy(top + i * W + b * Q, top + i * W + b * Q + BW, o + i * BW);
        for (int c = 1; c < copies; ++c) std::memcpy(o + c * K, o, static_cast<size_t>(K));
      }
    }
  });
}

// out[r] = [in[r], in[r]]: each row of `width` bytes twice. The split-weights path's input: a
// product over the doubled row with the weights' two halves stacked is the product with the
// whole weights (quant/runtime/lowering.cpp, needs_split).
void duplicate_rows(const uint8_t* in, uint8_t* out, int64_t rows, int64_t width) {
  for_rows(rows, rows * width >= kMinParallelElements, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      std::memcpy(out + 2 * r * width, in + r * width, static_cast<size_t>(width));
      std::memcpy(out + (2 * r + 1) * width, in + r * width, static_cast<size_t>(width));
    }
  });
}

// out[n][P][Q][oc] = max over the `phases` groups of in[n][P][Q][phase * C + oc]: the max-pool
// of the window matmul's output (each phase is one position of the pooling window).
void max_of_phases(const uint8_t* in, uint8_t* out, int64_t rows, int64_t cols, int64_t C, int phases) {
  const int64_t in_row = cols * phases * C, out_row = cols * C;
  // The first `direct` columns of a row are read and written in place: their 16-byte loads and
  // stores stay inside the row (a store's tail is overwritten by the next column's). The rest
  // go through scratch with slack (before: whole rows did, which took twice the time).
  int64_t direct = 0;
  if (C <= 16)
    while (direct < cols && (direct * phases + phases - 1) * C + 16 <= in_row && direct * C + 16 <= out_row) ++direct;
  const int64_t rest = cols - direct;
  for_rows(rows, rows >= kRowsPerTeam, [&](int64_t begin, int64_t end) {
    uint8_t* const src = scratch_bytes(static_cast<size_t>(rest * phases * C + 16 + rest * C + 16));  // +16: vector slack
    uint8_t* const dst = src + rest * phases * C + 16;
    for (int64_t r = begin; r < end; ++r) {
      max_of_groups_u8(in + r * in_row, out + r * out_row, direct, C, phases);
      std::memcpy(src, in + r * in_row + direct * phases * C, static_cast<size_t>(rest * phases * C));
      max_of_groups_u8(src, dst, rest, C, phases);
      std::memcpy(out + r * out_row + direct * C, dst, static_cast<size_t>(rest * C));
    }
  });
}

// out = the nhwc u8 image `in` with `top`, `left`, `bottom` and `right` rows and columns of the
// code `value` around it: the padding of a conv whose input codes have a zero point (real 0 is
// `value`, and oneDNN pads with code 0).
void pad(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, int top, int left, int bottom, int right,
            uint8_t value) {
  const int64_t OW = W + left + right, OH = H + top + bottom;
  for_rows(N * OH, N * OH * OW * C >= kMinParallelElements, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      uint8_t* o = out + r * OW * C;
      const int64_t n = r / OH, h = r % OH - top;
      if (h < 0 || h >= H) {
        std::memset(o, value, static_cast<size_t>(OW * C));
        continue;
      }
      std::memset(o, value, static_cast<size_t>(left * C));
      std::memcpy(o + left * C, in + (n * H + h) * W * C, static_cast<size_t>(W * C));
      std::memset(o + (left + W) * C, value, static_cast<size_t>(right * C));
    }
  });
}

// out[i] = max(in[i], zero_point): ReLU on u8 codes whose real 0 is zero_point.
void relu(const uint8_t* in, uint8_t* out, int64_t count, uint8_t zero_point) {
  for_rows(count, count >= kMinParallelElements, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) out[i] = in[i] > zero_point ? in[i] : zero_point;
  });
}

void repeat_channels(const uint8_t* in, uint8_t* out, int64_t pixels, int64_t C, int64_t M) {
  for_rows(pixels, pixels * C * M >= kMinParallelElements, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const uint8_t* i = in + p * C;
      uint8_t* o = out + p * C * M;
      for (int64_t c = 0; c < C; ++c) std::memset(o + c * M, i[c], static_cast<size_t>(M));
    }
  });
}

uint8_t avg_pool_code(int32_t acc, int32_t count, const Requantize& q) {
  float v = static_cast<float>(acc) / static_cast<float>(count);
  v = v * q.multiplier;
  v = v + static_cast<float>(q.z_out);
  v = std::min(std::max(v, 0.f), static_cast<float>(q.qmax));
  return static_cast<uint8_t>(std::nearbyint(v));
}

// Rows of output pixels over the team; per pixel, the window's rows and columns inside the input
// summed into int32 per channel (vectorised over channels), then requantized.
void avg_pool(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, const AvgPoolWindow& w, const Requantize& q) {
  for_rows(N * w.OH, N * w.OH * w.OW * C * w.KH * w.KW >= kMinParallelElements, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> acc(static_cast<size_t>(C));
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / w.OH, oh = r % w.OH;
      const int64_t h0 = std::max<int64_t>(0, oh * w.SH - w.pad_top), h1 = std::min<int64_t>(H, oh * w.SH - w.pad_top + w.KH);
      for (int64_t ow = 0; ow < w.OW; ++ow) {
        const int64_t w0 = std::max<int64_t>(0, ow * w.SW - w.pad_left), w1 = std::min<int64_t>(W, ow * w.SW - w.pad_left + w.KW);
        std::fill(acc.begin(), acc.end(), 0);
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) {
            const uint8_t* px = in + ((n * H + ih) * W + iw) * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) acc[c] += px[c];
          }
        const int32_t count = static_cast<int32_t>((h1 - h0) * (w1 - w0));
        uint8_t* o = out + (r * w.OW + ow) * C;
        for (int64_t c = 0; c < C; ++c) o[c] = avg_pool_code(acc[c] - count * q.z_in, count, q);
      }
    }
  });
}

uint8_t float_island_code(float y, const FloatIsland& p) {
  if (p.relu) y = std::max(y, 0.f);
  float v = std::nearbyint(y / p.out_scale) + static_cast<float>(p.out_zero);
  v = v >= 0.f ? v : 0.f;  // also NaN (an f32 kernel's sums can overflow to inf - inf)
  return static_cast<uint8_t>(std::min(v, static_cast<float>(p.qmax)));
}

namespace {
// Writes `pixels` output pixels' OC values from their sums: float_island_code's arithmetic, in a
// loop the compiler vectorizes (the same operations on each lane).
inline __attribute__((always_inline)) void island_outputs(const float* sums, void* out, size_t at, int64_t pixels, const FloatIsland& p) {
  const int64_t OC = p.OC;
  const float* __restrict bias = p.bias;
  const float zero = static_cast<float>(p.out_zero), top = static_cast<float>(p.qmax), floor = p.relu ? 0.f : -INFINITY;
  for (int64_t px = 0; px < pixels; ++px) {
    const float* __restrict a = sums + px * OC;
    if (p.codes) {
      uint8_t* __restrict o = static_cast<uint8_t*>(out) + at + px * OC;
#pragma omp simd
      for (int64_t c = 0; c < OC; ++c) {
        float y = a[c] + bias[c];
        y = y < floor ? floor : y;  // the ReLU: std::max(y, 0) of float_island_code (NaN stays NaN, then code 0)
        float v = std::nearbyint(y / p.out_scale) + zero;
        v = v >= 0.f ? v : 0.f;
        o[c] = static_cast<uint8_t>(static_cast<int32_t>(v < top ? v : top));
      }
    } else {
      float* __restrict o = static_cast<float*>(out) + at + px * OC;
      for (int64_t c = 0; c < OC; ++c) {
        const float y = a[c] + bias[c];
        o[c] = p.relu ? std::max(y, 0.f) : y;
      }
    }
  }
}

// One output row at a time: its OW x OC sums, output channels innermost (contiguous in the kernel
// and the sums, one SIMD loop); each output's terms still come in (kh, kw, ic) order with one
// rounding per operation: the reference's bits. Compiled twice (island_rows_avx2 and
// island_rows_baseline below, chosen per call by the CPU): for AVX2's 8-float vectors and for the
// x86-64-v2 baseline's 4; both do the same IEEE operations on every lane (no FMA:
// -ffp-contract=off), so they give the same bits. Not GCC's target_clones: its ifunc resolver runs
// while ld.so relocates, before ThreadSanitizer's runtime is up, and crashed the TSan build.
inline __attribute__((always_inline)) void island_rows(const uint8_t* in, void* out, const FloatIsland& p, const float* real, int64_t begin,
                                                       int64_t end) {
  const int64_t OC = p.OC, M = p.depth_multiplier;
  std::vector<float> sums(static_cast<size_t>(p.OW * OC));
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / p.OH, oh = r % p.OH;
    const uint8_t* image = in + n * p.H * p.W * p.IC;
    std::fill(sums.begin(), sums.end(), 0.f);
    for (int kh = 0; kh < p.KH; ++kh) {
      const int64_t ih = oh * p.SH - p.pad_top + kh;
      if (ih < 0 || ih >= p.H) continue;
      for (int kw = 0; kw < p.KW; ++kw) {
        const int64_t tap = int64_t{kh} * p.KW + kw;
        for (int64_t ow = 0; ow < p.OW; ++ow) {
          const int64_t iw = ow * p.SW - p.pad_left + kw;
          if (iw < 0 || iw >= p.W) continue;
          const uint8_t* px = image + (ih * p.W + iw) * p.IC;
          float* __restrict a = sums.data() + ow * OC;
          if (M == 1) {
            const float* __restrict w = p.kernel + tap * OC;
            for (int64_t o = 0; o < OC; ++o) a[o] += real[px[o]] * w[o];
          } else if (M > 1) {
            const float* __restrict w = p.kernel + tap * OC;
            for (int64_t o = 0; o < OC; ++o) a[o] += real[px[o / M]] * w[o];
          } else {
            for (int64_t ic = 0; ic < p.IC; ++ic) {
              const float x = real[px[ic]];
              const float* __restrict w = p.kernel + (tap * p.IC + ic) * OC;
#pragma omp simd
              for (int64_t o = 0; o < OC; ++o) a[o] += x * w[o];
            }
          }
        }
      }
    }
    island_outputs(sums.data(), out, static_cast<size_t>((n * p.OH + oh) * p.OW * OC), p.OW, p);
  }
}

__attribute__((target("avx2"))) void island_rows_avx2(const uint8_t* in, void* out, const FloatIsland& p, const float* real, int64_t begin,
                                                      int64_t end) {
  island_rows(in, out, p, real, begin, end);
}
void island_rows_baseline(const uint8_t* in, void* out, const FloatIsland& p, const float* real, int64_t begin, int64_t end) {
  island_rows(in, out, p, real, begin, end);
}
}  // namespace

// The input codes go through a 256-entry table of their real values.
void float_island(const uint8_t* in, void* out, int64_t N, const FloatIsland& p) {
  float real[256];
  for (int q = 0; q < 256; ++q) real[q] = static_cast<float>(q - p.in_zero) * p.in_scale;
  const int64_t rows = N * p.OH;
  const auto rows_of = __builtin_cpu_supports("avx2") ? island_rows_avx2 : island_rows_baseline;
  for_rows(rows, rows >= kRowsPerTeam, [&](int64_t begin, int64_t end) { rows_of(in, out, p, real, begin, end); });
}

namespace reference {

// The plain tiled max pooling of codes or floats: each window's first value, then v > m ? v : m.
template <typename T>
void max_pool_tiled_plain(const T* in, T* out, int64_t N, int64_t H, int64_t W, int64_t C, int KH, int KW, int64_t OH, int64_t OW) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t P = 0; P < OH; ++P)
      for (int64_t Q = 0; Q < OW; ++Q)
        for (int64_t c = 0; c < C; ++c) {
          T m = in[((n * H + KH * P) * W + KW * Q) * C + c];
          for (int i = 0; i < KH; ++i)
            for (int j = 0; j < KW; ++j) {
              const T v = in[((n * H + KH * P + i) * W + KW * Q + j) * C + c];
              m = v > m ? v : m;
            }
          out[((n * OH + P) * OW + Q) * C + c] = m;
        }
}

void max_pool_tiled(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, int KH, int KW, int64_t OH, int64_t OW) {
  max_pool_tiled_plain(in, out, N, H, W, C, KH, KW, OH, OW);
}

void window_blocks(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t PH, int64_t PW, int a, int b, int BH,
                   int BW, int copies) {
  const int64_t K = int64_t{BH} * BW;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t P = 0; P < PH; ++P)
      for (int64_t Q = 0; Q < PW; ++Q)
        for (int copy = 0; copy < copies; ++copy)
          for (int i = 0; i < BH; ++i)
            for (int j = 0; j < BW; ++j)
              out[((n * PH + P) * PW + Q) * K * copies + copy * K + i * BW + j] = in[(n * H + a * P + i) * W + b * Q + j];
}

void duplicate_rows(const uint8_t* in, uint8_t* out, int64_t rows, int64_t width) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < 2 * width; ++i) out[r * 2 * width + i] = in[r * width + i % width];
}

void max_of_phases(const uint8_t* in, uint8_t* out, int64_t rows, int64_t cols, int64_t C, int phases) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t q = 0; q < cols; ++q)
      for (int64_t c = 0; c < C; ++c) {
        uint8_t m = 0;
        for (int g = 0; g < phases; ++g) m = std::max(m, in[((r * cols + q) * phases + g) * C + c]);
        out[(r * cols + q) * C + c] = m;
      }
}

void pad(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, int top, int left, int bottom, int right, uint8_t value) {
  const int64_t OH = H + top + bottom, OW = W + left + right;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < OH; ++h)
      for (int64_t w = 0; w < OW; ++w)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t ih = h - top, iw = w - left;
          const bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
          out[((n * OH + h) * OW + w) * C + c] = inside ? in[((n * H + ih) * W + iw) * C + c] : value;
        }
}

void relu(const uint8_t* in, uint8_t* out, int64_t count, uint8_t zero_point) {
  for (int64_t i = 0; i < count; ++i) out[i] = std::max(in[i], zero_point);
}

void repeat_channels(const uint8_t* in, uint8_t* out, int64_t pixels, int64_t C, int64_t M) {
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t m = 0; m < M; ++m) out[(p * C + c) * M + m] = in[p * C + c];
}

void avg_pool(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, const AvgPoolWindow& w, const Requantize& q) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < w.OH; ++oh)
      for (int64_t ow = 0; ow < w.OW; ++ow)
        for (int64_t c = 0; c < C; ++c) {
          int32_t acc = 0, count = 0;
          for (int kh = 0; kh < w.KH; ++kh)
            for (int kw = 0; kw < w.KW; ++kw) {
              const int64_t ih = oh * w.SH - w.pad_top + kh, iw = ow * w.SW - w.pad_left + kw;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              acc += int32_t{in[((n * H + ih) * W + iw) * C + c]} - q.z_in;
              ++count;
            }
          out[((n * w.OH + oh) * w.OW + ow) * C + c] = avg_pool_code(acc, count, q);
        }
}

// One output at a time, its taps in (kh, kw, ic) order.
void float_island(const uint8_t* in, void* out, int64_t N, const FloatIsland& p) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow)
        for (int64_t o = 0; o < p.OC; ++o) {
          float acc = 0.f;
          for (int kh = 0; kh < p.KH; ++kh)
            for (int kw = 0; kw < p.KW; ++kw) {
              const int64_t ih = oh * p.SH - p.pad_top + kh, iw = ow * p.SW - p.pad_left + kw;
              if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
              const uint8_t* px = in + ((n * p.H + ih) * p.W + iw) * p.IC;
              const int64_t tap = int64_t{kh} * p.KW + kw;
              if (p.depth_multiplier > 0) {
                acc += static_cast<float>(int32_t{px[o / p.depth_multiplier]} - p.in_zero) * p.in_scale * p.kernel[tap * p.OC + o];
              } else {
                for (int64_t ic = 0; ic < p.IC; ++ic)
                  acc += static_cast<float>(int32_t{px[ic]} - p.in_zero) * p.in_scale * p.kernel[(tap * p.IC + ic) * p.OC + o];
              }
            }
          const float y = acc + p.bias[o];
          const size_t at = static_cast<size_t>(((n * p.OH + oh) * p.OW + ow) * p.OC + o);
          if (p.codes)
            static_cast<uint8_t*>(out)[at] = float_island_code(y, p);
          else
            static_cast<float*>(out)[at] = p.relu ? std::max(y, 0.f) : y;
        }
}

}  // namespace reference

}  // namespace qnet::u8

namespace qnet::f32 {

namespace {

// One output row of max_pool_tiled: `top` is its windows' first input row. CB > 0: C == CB, known
// when compiled (the blocked layouts' 8 or 16): each pixel's channels are 4-float SSE vectors.
// (GCC 12 vectorised neither the plain loop nor a vector_size type well here: 17 us and 3 us for
// what this does in under 1 us, docs/runtime.md.)
template <int CB>
void max_pool_row(const float* top, float* out, int64_t W, int64_t C, int KH, int KW, int64_t OW) {
  const int64_t channels = CB > 0 ? CB : C;
  for (int64_t q = 0; q < OW; ++q) {
    const float* window = top + q * KW * channels;
    float* o = out + q * channels;
    if constexpr (CB > 0) {
      for (int c = 0; c < CB; c += 4) {  // _mm_max_ps(p, m) is p > m ? p : m, as below
        __m128 m = _mm_loadu_ps(window + c);
        for (int i = 0; i < KH; ++i)
          for (int j = i == 0 ? 1 : 0; j < KW; ++j) m = _mm_max_ps(_mm_loadu_ps(window + (i * W + j) * CB + c), m);
        _mm_storeu_ps(o + c, m);
      }
    } else {
      for (int64_t c = 0; c < channels; ++c) o[c] = window[c];
      for (int i = 0; i < KH; ++i)
        for (int j = i == 0 ? 1 : 0; j < KW; ++j) {
          const float* p = window + (i * W + j) * channels;
          for (int64_t c = 0; c < channels; ++c) o[c] = p[c] > o[c] ? p[c] : o[c];
        }
    }
  }
}

}  // namespace

void max_pool_tiled(const float* in, float* out, int64_t N, int64_t H, int64_t W, int64_t C, int KH, int KW, int64_t OH, int64_t OW) {
  const auto row = C == 8 ? max_pool_row<8> : C == 16 ? max_pool_row<16> : max_pool_row<0>;
  u8::for_rows(N * OH, N * OH >= u8::kRowsPerTeam, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) row(in + ((r / OH) * H + (r % OH) * KH) * W * C, out + r * OW * C, W, C, KH, KW, OW);
  });
}

namespace reference {
void max_pool_tiled(const float* in, float* out, int64_t N, int64_t H, int64_t W, int64_t C, int KH, int KW, int64_t OH, int64_t OW) {
  u8::reference::max_pool_tiled_plain(in, out, N, H, W, C, KH, KW, OH, OW);
}
}  // namespace reference

}  // namespace qnet::f32
