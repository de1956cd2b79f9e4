// The hot loops of training, built once per instruction set and chosen at start-up.
//
//   const qnet::Kernels& k = qnet::kernels();        // the active ISA's table (core/cpu.h)
//   k.relu_forward(n, x, y);
//
// Each core/kernels/*.cpp is compiled three times (CMakeLists.txt): for x86-64-v4 (AVX-512),
// x86-64-v3 (AVX2 + FMA) and the x86-64-v2 baseline, each copy in its own namespace
// (qnet::isa_avx512, isa_avx2, isa_baseline) and each filling one Kernels table, the way
// PyTorch's ATen builds its CPU_CAPABILITY kernels. The ops (core/ops_*.cpp, quant/, optim/)
// check shapes, build the autograd closures and call these through kernels(). Kernels take
// raw pointers and plain shape structs, so every path computes the same thing from the same
// arguments; tests run them under each QNET_ISA the CPU has.
//
// Rule for core/kernels/: no code outside the ISA namespace and no std templates that the
// compiler may emit out of line (containers, algorithms, fmt): an out-of-line copy would be
// shared by all three builds at link time, and the AVX-512 one could run on an AVX2 CPU.
// tests/core/kernel_symbols.sh checks the object files for it. Eigen is included only through
// core/kernels/products.cpp, which renames its namespace into the ISA's.
#pragma once

#include <cstdint>

namespace qnet {

struct ConvShape {  // NHWC input [N, H, W, IC], HWIO kernel [KH, KW, IC, OC], output [N, OH, OW, OC]
  int64_t N, H, W, IC, KH, KW, OC, OH, OW, SH, SW, PT, PL;  // PT, PL: padding before (top, left)
};

struct PoolShape {  // NHWC input [N, H, W, C], output [N, OH, OW, C]; a KH x KW window per channel (pools, depthwise conv)
  int64_t N, H, W, C, OH, OW, KH, KW, SH, SW, PT, PL;
};

enum class GradientWalk { kEither, kAll, kNonZeros };  // Kernels::conv_backward_input_walk, _weights_walk

constexpr int kMaxProductParts = 256;  // Kernels::matmul_dw_parts' most parts
constexpr uint8_t kClipped = 4;        // Kernels::pooled_conv_forward's window index where a fused ReLU gave 0

struct Kernels {
  int lanes;  // floats per vector of this build: 16 (AVX-512), 8 (AVX2), 4 (baseline)

  // conv2d: y = bias + patches x w; dw, db summed over the batch in fixed chunks of images
  // (kReductionChunk) added in chunk order, so the result does not depend on the thread count.
  void (*conv_forward)(const ConvShape& s, const float* x, const float* w, const float* bias, float* y);
  void (*conv_backward_weights)(const ConvShape& s, const float* x, const float* dy, float* dw, float* db);  // db may be null
  void (*conv_backward_input)(const ConvShape& s, const float* w, const float* dy, float* dx);
  // The same bits by either of two walks of a stride-1 conv's dy: all of it (the tiles), or only
  // its nonzero values (a max-pool's gradient is mostly zeros). conv_backward_input takes kEither:
  // the one its cost estimate says is faster; tests and bench_ops compare the two.
  void (*conv_backward_input_walk)(const ConvShape& s, const float* w, const float* dy, float* dx, GradientWalk walk);
  // The same for the kernel gradient (the walk needs the input's channels to fill whole vectors).
  void (*conv_backward_weights_walk)(const ConvShape& s, const float* x, const float* dy, float* dw, float* db, GradientWalk walk);

  // The fused 3x3, 1-channel conv with a 2x2 / stride 2 max-pool (ops_conv.cpp's fast path):
  // y = window maxima [N, OH/2, OW/2, OC] (with relu: relu of them); which[pixel][block of `lanes`
  // channels][lanes] = window index (0..3) of each first maximum, or kClipped where relu gave 0 (no
  // gradient flows there); range (if not null) = {min, max} of the conv output, before any relu.
  void (*pooled_conv_forward)(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                              uint8_t* which, float* range);
  void (*pooled_conv_backward_weights)(const ConvShape& s, const float* x, const float* dy, const uint8_t* which, float* dw,
                                       float* db);
  // A QAT ReLU's fake quantization of that relu'd output, in place, on `pixels` pixels of C
  // channels: y = min(round(y / scale), hi) * scale, as relu_fake_quant_forward computes it;
  // which = kClipped where y was above real_hi (its gradient, eq. 8, is then 0 as well). No y is
  // above `largest` (the op passes its range's max: when that is within real_hi, nothing to mark).
  void (*pooled_fake_quant)(int64_t pixels, int64_t C, float scale, float hi, float real_hi, float largest, float* y,
                            uint8_t* which);

  // max_pool2d; the backward sends each gradient to its window's first maximum and writes every
  // element of gx (which need not be initialised).
  void (*max_pool_forward)(const PoolShape& s, const float* x, float* y);
  void (*max_pool_backward)(const PoolShape& s, const float* x, const float* y, const float* gy, float* gx);

  // avg_pool2d: the mean of the window's taps inside the input; the backward spreads each
  // gradient evenly over them (gx need not be initialised).
  void (*avg_pool_forward)(const PoolShape& s, const float* x, float* y);
  void (*avg_pool_backward)(const PoolShape& s, const float* gy, float* gx);

  // Depthwise conv (core/kernels/depthwise.cpp): PoolShape's window per channel, kernel [KH, KW, C],
  // bias [C] or null. dw, db summed in chunks of kReductionChunk images in chunk order; db may be null.
  void (*depthwise_forward)(const PoolShape& s, const float* x, const float* w, const float* bias, float* y);
  void (*depthwise_backward_input)(const PoolShape& s, const float* w, const float* dy, float* dx);
  void (*depthwise_backward_weights)(const PoolShape& s, const float* x, const float* dy, float* dw, float* db);

  // Per-channel kernels on rows x C floats (core/kernels/channel.cpp; BatchNorm, per-channel scales).
  // Sums run over rows in chunks of chunk_rows rows added in chunk order:
  // sum[c] = sum x; out[c] = sum (x - mean[c])^2; out[c] = sum a * (x - mean[c]) (mean may be null: 0).
  void (*channel_sum)(int64_t rows, int64_t C, int64_t chunk_rows, const float* x, float* sum);
  void (*channel_sq_dev)(int64_t rows, int64_t C, int64_t chunk_rows, const float* x, const float* mean, float* out);
  void (*channel_dot_dev)(int64_t rows, int64_t C, int64_t chunk_rows, const float* a, const float* x, const float* mean, float* out);
  // y = (x - center[c]) * scale[c] + shift[c] (center, shift may be null: 0);
  // out = (x - center[c]) * a[c] + y * b[c] + shift[c].
  void (*channel_affine)(int64_t rows, int64_t C, const float* x, const float* center, const float* scale, const float* shift, float* y);
  void (*channel_affine2)(int64_t rows, int64_t C, const float* x, const float* center, const float* a, const float* y, const float* b,
                          const float* shift, float* out);

  // Row-major products: y[N,M] = x[N,K] w[K,M]; dx[N,K] = dy[N,M] w[K,M]^T; dw[K,M] = x[N,K]^T dy[N,M]
  // (dw sums over N in chunks of kReductionChunk rows added in chunk order: the same on any thread
  // or process count).
  void (*matmul)(int64_t N, int64_t K, int64_t M, const float* x, const float* w, float* y);
  void (*matmul_dx)(int64_t N, int64_t K, int64_t M, const float* dy, const float* w, float* dx);
  void (*matmul_dw)(int64_t N, int64_t K, int64_t M, const float* x, const float* dy, float* dw);
  // Rows [k_begin, k_end) of that dw for a batch held in `parts` pieces (1..kMaxProductParts),
  // part q of rows[q] rows at x[q] and dy[q] (each but the last a whole number of chunks): the
  // chunks of all parts added in order, the bits matmul_dw gives for the parts as one batch. On
  // the calling thread alone.
  void (*matmul_dw_parts)(int parts, const int64_t* rows, const float* const* x, const float* const* dy, int64_t K, int64_t M,
                          int64_t k_begin, int64_t k_end, float* dw);

  void (*relu_forward)(int64_t n, const float* x, float* y);
  void (*relu_backward)(int64_t n, const float* y, const float* gy, float* gx);  // gx = y > 0 ? gy : 0

  // Fake quantization (eq. 7) with codes clamped to [lo, hi] (qmin - z, qmax - z), and its
  // straight-through gradient (eq. 8) inside [real_lo, real_hi]. Per tensor (C = 1) or per
  // channel of the last axis (arrays of C).
  void (*fake_quant_forward)(int64_t n, int64_t C, const float* x, const float* scale, const float* lo, const float* hi, float* y);
  void (*fake_quant_backward)(int64_t n, int64_t C, const float* x, const float* real_lo, const float* real_hi, const float* gy,
                              float* gx);
  // relu then fake-quant with z = qmin: y = min(round(relu(x) / scale), hi) * scale; gradient
  // where 0 < x <= real_hi.
  void (*relu_fake_quant_forward)(int64_t n, const float* x, float scale, float hi, float* y);
  void (*relu_fake_quant_backward)(int64_t n, const float* x, float real_hi, const float* gy, float* gx);

  void (*min_max)(int64_t n, const float* x, float* lo, float* hi);  // n >= 1
  // Per channel of the last axis (C of them, n / C rows): amax[c] = the largest |x| of channel c,
  // 0 for none (a NaN is passed over, as std::max(amax, |x|) does). The weight scales (eq. 6).
  // Returns false if some x is NaN.
  bool (*channel_abs_max)(int64_t n, int64_t C, const float* x, float* amax);

  // One Adam step on n parameters: m, v moments; a = lr * sqrt(1 - b2^t) / (1 - b1^t).
  void (*adam_update)(int64_t n, float a, float b1, float b2, float eps, float* w, const float* g, float* m, float* v);
};

// Images per partial sum in the kernel-gradient reductions: fixed, so weights are bit-identical
// on 1, 2 or 8 threads.
constexpr int64_t kReductionChunk = 4;

const Kernels& kernels();  // the table of the active ISA (core/cpu.h)

}  // namespace qnet
