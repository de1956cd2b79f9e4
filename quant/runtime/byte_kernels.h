// qnet's own uint8 kernels of the int8 runtime (quant/runtime/runtime.h runs them between oneDNN
// primitives), each beside a plain reference with the same signature: tests/quant/
// test_byte_kernels.cpp runs both on the same cases and wants the same bytes (the style of
// TFLite's optimized and reference kernels). Images are NHWC bytes; rows are split over the
// OpenMP team above a size threshold and run on the calling thread below it.
//
//   u8::max_pool_tiled(in, out, N, H, W, C, 2, 2, H / 2, W / 2);   // 2x2 max pooling of codes
#pragma once

#include <cstdint>

namespace qnet::u8 {

// Max pooling with windows that tile the input (stride = window, no padding): out[n][P][Q][c] =
// the largest in[n][KH P + i][KW Q + j][c] over i < KH, j < KW. Codes order like the reals.
void max_pool_tiled(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, int KH, int KW, int64_t OH, int64_t OW);

// One row per pooled pixel of a 1-channel image: the BH x BW block that the pixel's a x b
// pooling window of conv outputs reads, out[(n PH + P) PW + Q][copy K + i BW + j] =
// in[n][a P + i][b Q + j] (K = BH BW), written `copies` times side by side.
void window_blocks(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t PH, int64_t PW, int a, int b, int BH,
                   int BW, int copies);

// out[r] = [in[r], in[r]]: each row of `width` bytes twice.
void duplicate_rows(const uint8_t* in, uint8_t* out, int64_t rows, int64_t width);

// out[r][q][c] = the max over g < phases of in[r][q][g][c] (rows x cols x phases x C bytes in).
void max_of_phases(const uint8_t* in, uint8_t* out, int64_t rows, int64_t cols, int64_t C, int phases);

// The image in a frame of `value`: top, left, bottom and right rows and columns around it.
void pad(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, int top, int left, int bottom, int right, uint8_t value);

// out[i] = max(in[i], zero_point): ReLU on codes whose real 0 is zero_point.
void relu(const uint8_t* in, uint8_t* out, int64_t count, uint8_t zero_point);

// out[p][c * M + m] = in[p][c]: each of the C channels of each pixel M times in a row.
void repeat_channels(const uint8_t* in, uint8_t* out, int64_t pixels, int64_t C, int64_t M);

// Average pooling of codes onto another grid (docs/quantization.md, eq. 17): for each window of
// output (P, Q) (KH x KW, strides SH, SW, pad_top / pad_left rows and columns of padding before,
// which are not counted), acc = the sum of (code - z_in) over its `count` taps inside the input,
// then out = clamp(round_half_even(float(acc) / count * multiplier + z_out), 0, qmax), each float
// operation rounded on its own (no fused multiply-add).
struct AvgPoolWindow {
  int KH, KW, SH, SW, pad_top, pad_left;
  int64_t OH, OW;
};
struct Requantize {
  int32_t z_in;
  float multiplier;  // s_in / s_out
  int32_t z_out, qmax;
};
void avg_pool(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, const AvgPoolWindow& w, const Requantize& q);
// One pooled value: what avg_pool writes for a window with sum `acc` over `count` taps.
uint8_t avg_pool_code(int32_t acc, int32_t count, const Requantize& q);

// A float island (a Conv2D, DepthwiseConv2D or Dense kept in float, docs/quantization.md): the
// input codes dequantized, x = float(q - in_zero) * in_scale; per output o at pixel (P, Q),
// acc = 0 then acc += x * w over the taps inside the input in (kh, kw, ic) order (the padding
// taps stand for real 0 and are skipped), y = acc + bias[o], max(y, 0) if relu; then u8 codes
// clamp(round_half_even(y / out_scale) + out_zero, 0, qmax), or the float y. Each float
// operation is rounded on its own (no fused multiply-add, no reordering): the same bits on every
// CPU. A conv reads the IC channels of each tap, kernel [KH][KW][IC][OC]; a depthwise conv
// (depth_multiplier M > 0, IC = OC / M) reads channel o / M, kernel [KH][KW][1][OC]; a Dense is
// the conv of a 1x1 image.
struct FloatIsland {
  int64_t H, W, IC, OH, OW, OC;
  int KH, KW, SH, SW, pad_top, pad_left;
  int depth_multiplier;  // 0: a conv over all IC channels
  const float* kernel;
  const float* bias;
  float in_scale;
  int32_t in_zero;
  bool relu, codes;  // codes: u8 output; else f32
  float out_scale;
  int32_t out_zero, qmax;
};
// in: N images of H x W x IC codes; out: N x OH x OW x OC codes (uint8_t) or floats.
void float_island(const uint8_t* in, void* out, int64_t N, const FloatIsland& p);
// The output value of one island output from its y (before the ReLU): the code or the float.
uint8_t float_island_code(float y, const FloatIsland& p);

// The same kernels in plain loops: what the ones above must equal byte for byte.
namespace reference {
void float_island(const uint8_t* in, void* out, int64_t N, const FloatIsland& p);
void max_pool_tiled(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, int KH, int KW, int64_t OH, int64_t OW);
void window_blocks(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t PH, int64_t PW, int a, int b, int BH,
                   int BW, int copies);
void duplicate_rows(const uint8_t* in, uint8_t* out, int64_t rows, int64_t width);
void max_of_phases(const uint8_t* in, uint8_t* out, int64_t rows, int64_t cols, int64_t C, int phases);
void pad(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, int top, int left, int bottom, int right, uint8_t value);
void relu(const uint8_t* in, uint8_t* out, int64_t count, uint8_t zero_point);
void repeat_channels(const uint8_t* in, uint8_t* out, int64_t pixels, int64_t C, int64_t M);
void avg_pool(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, const AvgPoolWindow& w, const Requantize& q);
}  // namespace reference

}  // namespace qnet::u8

// The f32 runtime's one kernel of qnet's own.
namespace qnet::f32 {

// Max pooling of floats with windows that tile the input (stride = window, no padding), N images
// of H x W pixels of C floats (nhwc; a blocked layout nChw8c / nChw16c is N x C/8 such images of
// 8 channels): out[n][P][Q][c] = the largest in[n][KH P + i][KW Q + j][c]. oneDNN 2.6's
// jit:avx2 pooling took 14 - 17 us for the reference layer's 12 x 26 x 26 output on AMD Zen 3, this
// 2.8 - 3 us (docs/runtime.md).
void max_pool_tiled(const float* in, float* out, int64_t N, int64_t H, int64_t W, int64_t C, int KH, int KW, int64_t OH, int64_t OW);

namespace reference {
void max_pool_tiled(const float* in, float* out, int64_t N, int64_t H, int64_t W, int64_t C, int KH, int KW, int64_t OH, int64_t OW);
}  // namespace reference

}  // namespace qnet::f32
