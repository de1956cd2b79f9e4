#include "data/digit.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/format.h>

namespace qnet {

namespace {

constexpr int kBox = 20, kSide = 28;
constexpr int kInkThreshold = 24;  // of 255 after stretching: fainter pixels do not extend the box

uint8_t border_median(const GrayImage& img) {
  std::vector<uint8_t> border;
  for (int x = 0; x < img.width; ++x) border.push_back(img.at(x, 0)), border.push_back(img.at(x, img.height - 1));
  for (int y = 1; y + 1 < img.height; ++y) border.push_back(img.at(0, y)), border.push_back(img.at(img.width - 1, y));
  std::nth_element(border.begin(), border.begin() + border.size() / 2, border.end());
  return border[border.size() / 2];
}

// The ink, white on black, its contrast stretched so that the background is 0 and the brightest
// ink 255. One byte per pixel: images up to kMaxImagePixels stay affordable.
std::vector<uint8_t> ink(const GrayImage& img) {
  const int median = border_median(img);
  const bool invert = median > 127;
  const int background = invert ? 255 - median : median;
  std::vector<uint8_t> v(img.pixels);
  if (invert)
    for (uint8_t& p : v) p = static_cast<uint8_t>(255 - p);
  const int top = *std::max_element(v.begin(), v.end());
  if (top - background < 32) throw ImageError(fmt::format("no digit found: the image is blank (contrast {} of 255)", top - background));
  const float gain = 255.f / static_cast<float>(top - background);
  for (uint8_t& p : v) p = static_cast<uint8_t>(std::lround(std::clamp(static_cast<float>(p - background) * gain, 0.f, 255.f)));
  return v;
}

// Area-averaging resample of a w x h region to nw x nh: every output pixel is the mean of the
// input area it covers (exact fractional coverage), so thin strokes are not lost when shrinking.
std::vector<float> resample(const std::vector<uint8_t>& src, int stride, int x0, int y0, int w, int h, int nw, int nh) {
  std::vector<float> out(static_cast<size_t>(nw) * nh, 0.f);
  const double sx = static_cast<double>(w) / nw, sy = static_cast<double>(h) / nh;
  for (int oy = 0; oy < nh; ++oy)
    for (int ox = 0; ox < nw; ++ox) {
      const double fx0 = ox * sx, fx1 = fx0 + sx, fy0 = oy * sy, fy1 = fy0 + sy;
      double sum = 0;
      for (int y = static_cast<int>(fy0); y < std::min(h, static_cast<int>(std::ceil(fy1))); ++y) {
        const double cy = std::min<double>(fy1, y + 1) - std::max<double>(fy0, y);
        for (int x = static_cast<int>(fx0); x < std::min(w, static_cast<int>(std::ceil(fx1))); ++x) {
          const double cx = std::min<double>(fx1, x + 1) - std::max<double>(fx0, x);
          sum += cx * cy * src[static_cast<size_t>(y0 + y) * stride + x0 + x];
        }
      }
      out[static_cast<size_t>(oy) * nw + ox] = static_cast<float>(sum / (sx * sy * 255.0));  // in [0, 1]
    }
  return out;
}

}  // namespace

Digit prepare_digit(const GrayImage& img) {
  if (img.width < 1 || img.height < 1 || img.pixels.size() != static_cast<size_t>(img.width) * img.height)
    throw ImageError("prepare_digit: empty image");
  const std::vector<uint8_t> v = ink(img);
  int x0 = img.width, y0 = img.height, x1 = -1, y1 = -1;  // the ink's bounding box
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      if (v[static_cast<size_t>(y) * img.width + x] > kInkThreshold)
        x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
  const int w = x1 - x0 + 1, h = y1 - y0 + 1;
  const double scale = static_cast<double>(kBox) / std::max(w, h);
  const int nw = std::clamp(static_cast<int>(std::lround(w * scale)), 1, kBox), nh = std::clamp(static_cast<int>(std::lround(h * scale)), 1, kBox);
  const std::vector<float> box = resample(v, img.width, x0, y0, w, h, nw, nh);

  double mass = 0, mx = 0, my = 0;  // centre of mass of the box, in its own pixel indices
  for (int y = 0; y < nh; ++y)
    for (int x = 0; x < nw; ++x) {
      const double m = box[static_cast<size_t>(y) * nw + x];
      mass += m, mx += m * x, my += m * y;
    }
  const int dx = std::clamp(static_cast<int>(std::lround(kSide / 2.0 - mx / mass)), 0, kSide - nw);
  const int dy = std::clamp(static_cast<int>(std::lround(kSide / 2.0 - my / mass)), 0, kSide - nh);
  Digit out{};
  for (int y = 0; y < nh; ++y)
    for (int x = 0; x < nw; ++x)
      out[static_cast<size_t>(y + dy) * kSide + x + dx] = static_cast<uint8_t>(std::lround(std::clamp(box[static_cast<size_t>(y) * nw + x], 0.f, 1.f) * 255.f));
  return out;
}

std::vector<uint8_t> ink_on_canvas(const uint8_t* digit, int width, int height) {
  constexpr int kZoom = 3;
  if (width < kSide * kZoom || height < kSide * kZoom)
    throw ImageError(fmt::format("ink_on_canvas: a {}x{} canvas cannot hold the digit at 3x ({} a side)", width, height, kSide * kZoom));
  std::vector<uint8_t> rgb(static_cast<size_t>(width) * height * 3, 255);
  const int left = (width - kSide * kZoom) / 3, top = (height - kSide * kZoom) / 2;  // off centre on purpose
  for (int y = 0; y < kSide * kZoom; ++y)
    for (int x = 0; x < kSide * kZoom; ++x) {
      const uint8_t v = static_cast<uint8_t>(255 - digit[(y / kZoom) * kSide + x / kZoom]);
      uint8_t* p = &rgb[(static_cast<size_t>(top + y) * width + left + x) * 3];
      p[0] = p[1] = p[2] = v;
    }
  return rgb;
}

std::vector<uint8_t> resize_gray(const GrayImage& img, int width, int height) {
  if (img.width < 1 || img.height < 1 || img.pixels.size() != static_cast<size_t>(img.width) * img.height || width < 1 || height < 1)
    throw ImageError("resize_gray: empty image or size");
  const std::vector<float> r = resample(img.pixels, img.width, 0, 0, img.width, img.height, width, height);
  std::vector<uint8_t> out(r.size());
  for (size_t i = 0; i < r.size(); ++i) out[i] = static_cast<uint8_t>(std::lround(std::clamp(r[i], 0.f, 1.f) * 255.f));
  return out;
}

std::vector<uint8_t> resize_image(const Image& img, int width, int height) {
  const size_t pixels = static_cast<size_t>(img.width) * img.height;
  if (img.channels < 1 || img.pixels.size() != pixels * img.channels) throw ImageError("resize_image: empty image or size");
  std::vector<uint8_t> out(static_cast<size_t>(width) * height * img.channels);
  for (int c = 0; c < img.channels; ++c) {
    GrayImage plane{img.width, img.height, std::vector<uint8_t>(pixels)};
    for (size_t i = 0; i < pixels; ++i) plane.pixels[i] = img.pixels[i * img.channels + c];
    const std::vector<uint8_t> r = resize_gray(plane, width, height);
    for (size_t i = 0; i < r.size(); ++i) out[i * img.channels + c] = r[i];
  }
  return out;
}

Digit raw_digit(const GrayImage& img) {
  if (img.width != kSide || img.height != kSide)
    throw ImageError(fmt::format("--raw needs a 28x28 image in MNIST form, this one is {}x{}", img.width, img.height));
  Digit out{};
  std::copy(img.pixels.begin(), img.pixels.end(), out.begin());
  return out;
}

}  // namespace qnet
