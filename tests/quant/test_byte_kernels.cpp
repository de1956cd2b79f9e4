// qnet's uint8 kernels (quant/runtime/byte_kernels.h) against their plain references, byte for byte, on
// the same cases: channel counts below, at and above one 16-byte vector, and batches below and
// above the size at which the kernels split their rows over threads.
#include <algorithm>
#include <vector>

#include <catch2/catch.hpp>

#include "core/random.h"
#include "quant/runtime/byte_kernels.h"

using namespace qnet;

namespace {

std::vector<uint8_t> random_bytes(int64_t n, Rng& rng) {
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (auto& b : v) b = static_cast<uint8_t>(rng.uniform(0.f, 256.f));
  return v;
}

// Runs `kernel` with u8:: and u8::reference:: on the same input; the outputs (with a canary
// byte past the end that neither may touch) must be equal.
template <typename Run>
void same_bytes(int64_t out_size, const Run& run) {
  std::vector<uint8_t> fast(static_cast<size_t>(out_size) + 1, 0xA5), plain(static_cast<size_t>(out_size) + 1, 0xA5);
  run(fast.data(), false);
  run(plain.data(), true);
  CHECK(fast == plain);
  CHECK(fast.back() == 0xA5);
}

}  // namespace

TEST_CASE("the runtime's byte kernels equal their plain references", "[quant]") {
  Rng rng(21);
  for (int64_t N : {1, 70}) {  // 70 images: more rows than one thread takes
    for (int64_t C : {1, 12, 16, 20}) {
      INFO(N << " images, " << C << " channels");
      const int64_t H = 11, W = 9;
      const std::vector<uint8_t> img = random_bytes(N * H * W * C, rng);
      for (auto [KH, KW] : {std::pair{2, 2}, std::pair{3, 2}}) {
        const int64_t OH = H / KH, OW = W / KW;
        same_bytes(N * OH * OW * C, [&](uint8_t* out, bool ref) {
          (ref ? u8::reference::max_pool_tiled : u8::max_pool_tiled)(img.data(), out, N, H, W, C, KH, KW, OH, OW);
        });
      }
      same_bytes(N * (H + 3) * (W + 2) * C, [&](uint8_t* out, bool ref) {
        (ref ? u8::reference::pad : u8::pad)(img.data(), out, N, H, W, C, 1, 0, 2, 2, 117);
      });
      same_bytes(N * H * W * C, [&](uint8_t* out, bool ref) {
        (ref ? u8::reference::relu : u8::relu)(img.data(), out, N * H * W * C, 131);
      });
      same_bytes(2 * N * H * W * C, [&](uint8_t* out, bool ref) {
        (ref ? u8::reference::duplicate_rows : u8::duplicate_rows)(img.data(), out, N * H, W * C);
      });
      same_bytes(3 * N * H * W * C, [&](uint8_t* out, bool ref) {
        (ref ? u8::reference::repeat_channels : u8::repeat_channels)(img.data(), out, N * H * W, C, 3);
      });
      // Average pooling onto another grid: windows that tile, overlap, and hang over the edges.
      for (const u8::AvgPoolWindow w : {u8::AvgPoolWindow{2, 2, 2, 2, 0, 0, H / 2, W / 2}, u8::AvgPoolWindow{3, 3, 2, 1, 1, 1, (H + 1) / 2, W},
                                        u8::AvgPoolWindow{int(H), int(W), 1, 1, 0, 0, 1, 1}})
        for (const u8::Requantize q : {u8::Requantize{0, 0.37f, 12, 255}, u8::Requantize{131, 1.9f, 100, 15}})
          same_bytes(N * w.OH * w.OW * C, [&](uint8_t* out, bool ref) {
            (ref ? u8::reference::avg_pool : u8::avg_pool)(img.data(), out, N, H, W, C, w, q);
          });
      // The pooling of a window matmul's output: 2x2 (compiled for 4 phases) and 3x2 windows, rows
      // of 4 and 13 columns. No slack past the input: the kernel reads rows in place (ASan).
      for (int phases : {4, 6})
        for (int64_t cols : {4, 13}) {
          const std::vector<uint8_t> grouped = random_bytes(N * 5 * cols * phases * C, rng);
          same_bytes(N * 5 * cols * C, [&](uint8_t* out, bool ref) {
            (ref ? u8::reference::max_of_phases : u8::max_of_phases)(grouped.data(), out, N * 5, cols, C, phases);
          });
        }
    }
    // Blocks of a 1-channel image for a 3x3 conv and a 2x2 pool (4x4: the 16-byte path) and for a
    // 3x3 conv and a 3x2 pool (5x4), once and twice (the split-weights path).
    const int64_t H = 14, W = 13;
    const std::vector<uint8_t> img = random_bytes(N * H * W + 16, rng);
    for (auto [a, b] : {std::pair{2, 2}, std::pair{3, 2}})
      for (int copies : {1, 2}) {
        INFO(N << " images, " << a << "x" << b << " pool, " << copies << " copies");
        const int BH = a + 2, BW = b + 2;
        const int64_t PH = (H - 2) / a, PW = (W - 2) / b;
        same_bytes(N * PH * PW * BH * BW * copies, [&](uint8_t* out, bool ref) {
          (ref ? u8::reference::window_blocks : u8::window_blocks)(img.data(), out, N, H, W, PH, PW, a, b, BH, BW, copies);
        });
      }
  }
}

TEST_CASE("the f32 runtime's tiled max pooling equals its plain reference", "[quant]") {
  Rng rng(22);
  for (int64_t N : {1, 70})
    for (int64_t C : {3, 8, 16, 20})  // 8 and 16: the blocked layouts' compiled widths
      for (auto [KH, KW] : {std::pair{2, 2}, std::pair{3, 2}, std::pair{1, 3}}) {
        INFO(N << " images, " << C << " channels, " << KH << "x" << KW << " windows");
        const int64_t H = 11, W = 9, OH = H / KH, OW = W / KW;
        std::vector<float> img(static_cast<size_t>(N * H * W * C));
        for (float& v : img) v = rng.uniform(-3.f, 3.f);
        std::vector<float> fast(static_cast<size_t>(N * OH * OW * C) + 1, 7.f), plain = fast;
        f32::max_pool_tiled(img.data(), fast.data(), N, H, W, C, KH, KW, OH, OW);
        f32::reference::max_pool_tiled(img.data(), plain.data(), N, H, W, C, KH, KW, OH, OW);
        CHECK(fast == plain);
        CHECK(fast.back() == 7.f);  // nothing written past the end
        const float top = *std::max_element(img.begin(), img.begin() + static_cast<int64_t>(KH * W * C));  // image 0's first window row
        CHECK(*std::max_element(plain.begin(), plain.begin() + OW * C) <= top);
      }
}
