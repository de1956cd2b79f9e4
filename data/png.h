// PNG files through libpng: any PNG decoded to 8-bit grayscale, and 8-bit PNG writing.
//
//   GrayImage img = read_png_gray("digit.png");        // gray, gray+alpha, RGB(A), palette; 1-16 bit
//   write_png("out.png", {.width = 28, .height = 28, .channels = 1}, pixels);   // atomic
//
// Images wider or taller than kMaxImageSide, or of more than kMaxImagePixels, are refused from the header, before any pixel is
// decoded or allocated. Every failure is an ImageError naming the file and the problem.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace qnet {

inline constexpr uint32_t kMaxImageSide = 16384;
inline constexpr uint64_t kMaxImagePixels = 1ull << 26;  // 64 Mpixel, e.g. 8192 x 8192
inline constexpr uint64_t kMaxPngFileBytes = 256ull << 20;

class ImageError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct GrayImage {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;  // row-major, 0 = black
  uint8_t at(int x, int y) const { return pixels[static_cast<size_t>(y) * width + x]; }
};

// Colour becomes luma (Rec. 601: 0.299 R + 0.587 G + 0.114 B). Transparent pixels are composited
// over a background that contrasts with the opaque ones (white behind dark ink, black behind light).
GrayImage decode_png_gray(const uint8_t* data, size_t size);  // messages do not name a file
GrayImage read_png_gray(const std::string& path);              // messages start with the path

// Any PNG as `channels` interleaved 8-bit channels per pixel, for models of that many: 1 gray (as
// decode_png_gray), 2 gray + alpha, 3 RGB, 4 RGBA. Gray becomes R = G = B, colour becomes luma for
// 1 and 2 channels, a missing alpha is opaque (255), an alpha the model does not take is dropped
// (for 3 channels the colour is composited over black, where transparent pixels carry none).
struct Image {
  int width = 0, height = 0, channels = 1;
  std::vector<uint8_t> pixels;  // row-major, channels interleaved
};
Image decode_png(const uint8_t* data, size_t size, int channels);
Image read_png(const std::string& path, int channels);

struct PngFormat {
  int width = 0, height = 0;
  int channels = 1;  // 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA
};
std::vector<uint8_t> encode_png(const PngFormat& format, const uint8_t* pixels);
void write_png(const std::string& path, const PngFormat& format, const uint8_t* pixels);  // temp file + rename

}  // namespace qnet
