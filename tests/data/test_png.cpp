// PNG decoding (every colour type and bit depth), damaged and oversized files, and the
// MNIST-style preparation that infer applies.
#include <png.h>
#include <zlib.h>

#include <cstring>

#include <catch2/catch.hpp>

#include "data/digit.h"
#include "data/mnist.h"
#include "data/png.h"
#include "layers/sequential.h"
#include "optim/trainer.h"
#include "quant/runtime/runtime.h"
#include "tests/fuzz/fix_crc.h"

using namespace qnet;

namespace {

// A PNG written with libpng's own writer in any colour type / bit depth (rows as given).
std::vector<uint8_t> png_bytes(int w, int h, int color_type, int depth, const std::vector<std::vector<uint8_t>>& rows,
                               const std::vector<png_color>& palette = {}) {
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(png, &out, [](png_structp p, png_bytep d, png_size_t n) {
    auto* o = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(p));
    o->insert(o->end(), d, d + n);
  }, nullptr);
  png_set_IHDR(png, info, w, h, depth, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  png_write_info(png, info);
  for (const auto& r : rows) png_write_row(png, r.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

const std::vector<uint8_t> kGray = {0, 40, 128, 200, 255, 7};  // a 3x2 image

std::vector<std::vector<uint8_t>> rows_of(int channels, const std::function<std::vector<uint8_t>(uint8_t)>& pixel) {
  std::vector<std::vector<uint8_t>> rows(2);
  for (int i = 0; i < 6; ++i)
    for (uint8_t b : pixel(kGray[i])) rows[i / 3].push_back(b);
  return rows;
}

GrayImage decode(const std::vector<uint8_t>& b) { return decode_png_gray(b.data(), b.size()); }

// The PNG with its header claiming width x height, chunk CRCs made valid again.
std::vector<uint8_t> claiming(std::vector<uint8_t> png, uint32_t width, uint32_t height) {
  fuzz::put_be32(&png[16], width);
  fuzz::put_be32(&png[20], height);
  return fuzz::with_png_crcs(png.data(), png.size());
}

}  // namespace

TEST_CASE("every PNG colour type and bit depth decodes to the same grayscale", "[data][png]") {
  using V = std::vector<uint8_t>;
  CHECK(decode(png_bytes(3, 2, PNG_COLOR_TYPE_GRAY, 8, rows_of(1, [](uint8_t v) { return V{v}; }))).pixels == kGray);
  CHECK(decode(png_bytes(3, 2, PNG_COLOR_TYPE_GRAY, 16, rows_of(2, [](uint8_t v) { return V{v, v}; }))).pixels == kGray);  // v * 257
  CHECK(decode(png_bytes(3, 2, PNG_COLOR_TYPE_RGB, 8, rows_of(3, [](uint8_t v) { return V{v, v, v}; }))).pixels == kGray);
  CHECK(decode(png_bytes(3, 2, PNG_COLOR_TYPE_RGB, 16, rows_of(6, [](uint8_t v) { return V{v, v, v, v, v, v}; }))).pixels == kGray);
  CHECK(decode(png_bytes(3, 2, PNG_COLOR_TYPE_GRAY_ALPHA, 8, rows_of(2, [](uint8_t v) { return V{v, 255}; }))).pixels == kGray);
  CHECK(decode(png_bytes(3, 2, PNG_COLOR_TYPE_RGB_ALPHA, 8, rows_of(4, [](uint8_t v) { return V{v, v, v, 255}; }))).pixels == kGray);
  std::vector<png_color> palette;
  for (uint8_t v : kGray) palette.push_back({v, v, v});
  CHECK(decode(png_bytes(3, 2, PNG_COLOR_TYPE_PALETTE, 8, {{0, 1, 2}, {3, 4, 5}}, palette)).pixels == kGray);
  // 1-bit gray: 0 -> 0, 1 -> 255 (one byte holds a row of 3 pixels, high bits first).
  CHECK(decode(png_bytes(3, 2, PNG_COLOR_TYPE_GRAY, 1, {{0b10100000}, {0b01000000}})).pixels == V{255, 0, 255, 0, 255, 0});
  // Colour becomes luma: pure red, green, blue.
  CHECK(decode(png_bytes(3, 1, PNG_COLOR_TYPE_RGB, 8, {{255, 0, 0, 0, 255, 0, 0, 0, 255}})).pixels == V{76, 150, 29});
}

TEST_CASE("transparent pixels become a background that contrasts with the ink", "[data][png]") {
  using V = std::vector<uint8_t>;
  // Dark ink on a transparent background: the background turns white.
  CHECK(decode(png_bytes(3, 1, PNG_COLOR_TYPE_RGB_ALPHA, 8, {{0, 0, 0, 255, 0, 0, 0, 0, 10, 10, 10, 0}})).pixels == V{0, 255, 255});
  // A palette whose entry 0 is transparent (tRNS): the transparent pixels turn white behind black ink.
  {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png_create_info_struct(png);
    std::vector<uint8_t> out;
    png_set_write_fn(png, &out, [](png_structp p, png_bytep d, png_size_t n) {
      auto* o = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(p));
      o->insert(o->end(), d, d + n);
    }, nullptr);
    png_set_IHDR(png, info, 3, 1, 8, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    const png_color palette[2] = {{200, 200, 200}, {0, 0, 0}};
    const png_byte alpha[1] = {0};
    png_set_PLTE(png, info, palette, 2);
    png_set_tRNS(png, info, alpha, 1, nullptr);
    png_write_info(png, info);
    const uint8_t row[3] = {1, 0, 0};
    png_write_row(png, row);
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    CHECK(decode(out).pixels == V{0, 255, 255});
  }
  // Light ink on a transparent background: the background turns black. Half transparency blends.
  CHECK(decode(png_bytes(3, 1, PNG_COLOR_TYPE_GRAY_ALPHA, 8, {{250, 255, 250, 0, 200, 128}})).pixels == V{250, 0, 100});
}

TEST_CASE("damaged, truncated and oversized PNGs are refused before decoding", "[data][png]") {
  const std::vector<uint8_t> good = png_bytes(3, 2, PNG_COLOR_TYPE_GRAY, 8, rows_of(1, [](uint8_t v) { return std::vector<uint8_t>{v}; }));
  REQUIRE(decode(good).pixels == kGray);
  std::vector<uint8_t> b = good;
  b[0] = 'X';
  CHECK_THROWS_WITH(decode(b), Catch::Contains("not a PNG"));
  b = good;
  b.resize(b.size() - 20);
  CHECK_THROWS_AS(decode(b), ImageError);
  b = good;
  b[b.size() - 20] ^= 0x55;  // inside IDAT: its CRC no longer matches
  CHECK_THROWS_AS(decode(b), ImageError);
  CHECK_THROWS_AS(decode(std::vector<uint8_t>(good.begin(), good.begin() + 8)), ImageError);
  // Headers claiming other sizes (with valid CRCs): each refused from the header alone.
  CHECK_THROWS_WITH(decode(claiming(good, 20000, 20000)), Catch::Contains("20000"));
  CHECK_THROWS_WITH(decode(claiming(good, 9000, 9000)), Catch::Contains("in total allowed"));  // under the side bound
  CHECK_THROWS_WITH(decode(claiming(good, 3, 65032)), Catch::Contains("65032"));                // too tall
  // 4000 x 4000 is under both bounds, but a 100-byte file's compressed data cannot hold it.
  CHECK_THROWS_WITH(decode(claiming(good, 4000, 4000)), Catch::Contains("cannot fit in a"));
  CHECK_THROWS_WITH(read_png_gray("/nonexistent/digit.png"), Catch::Contains("/nonexistent/digit.png"));
}

TEST_CASE("written PNGs read back identically", "[data][png]") {
  std::vector<uint8_t> px(28 * 28);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 7);
  CHECK(decode(encode_png({.width = 28, .height = 28, .channels = 1}, px.data())).pixels == px);
  CHECK_THROWS_AS(encode_png({.width = 0, .height = 28, .channels = 1}, px.data()), ImageError);
}

TEST_CASE("preparation leaves an MNIST digit almost unchanged and undoes a canvas", "[data][png]") {
  const Mnist m = load_mnist(mnist_dir(""));
  const uint8_t* x = m.test.image(0);
  const GrayImage gray{28, 28, std::vector<uint8_t>(x, x + 784)};
  const Digit a = prepare_digit(gray);
  const std::vector<uint8_t> rgb = ink_on_canvas(x, 120, 100);
  const std::vector<uint8_t> png = encode_png({.width = 120, .height = 100, .channels = 3}, rgb.data());
  const Digit b = prepare_digit(decode(png));
  int64_t diff_a = 0, diff_b = 0;
  for (int i = 0; i < 784; ++i) diff_a += std::abs(a[i] - x[i]), diff_b += std::abs(b[i] - x[i]);
  CHECK(diff_a < 784 * 8);  // mean absolute difference under 8 of 255
  CHECK(diff_b < 784 * 8);
  CHECK_THROWS_WITH(prepare_digit(GrayImage{30, 30, std::vector<uint8_t>(900, 200)}), Catch::Contains("blank"));
  CHECK_THROWS_WITH(raw_digit(GrayImage{30, 30, std::vector<uint8_t>(900, 0)}), Catch::Contains("28x28"));
}

TEST_CASE("prepared PNGs (28x28 gray and ink on a white canvas) give the raw images' predictions", "[data][png][slow]") {
  const Mnist m = load_mnist(mnist_dir(""));
  Rng rng(1);
  Sequential model = mnist_reference_model(rng);
  Adam adam(model.parameters());
  fit(model, adam, m.train.slice(0, 15000), m.train.slice(54000, 500), {.epochs = 1}, rng);
  const Runtime rt(inference_model(to_qbin(model)));
  const int n = 1000;
  const std::vector<float> raw = rt.predict(m.test.image(0), n);
  int agree_gray = 0, agree_canvas = 0, correct_raw = 0, correct_canvas = 0;
  float y[10];
  for (int i = 0; i < n; ++i) {
    const uint8_t* x = m.test.image(i);
    const int expected = argmax(raw.data() + i * 10, 10);
    correct_raw += expected == m.test.label(i);
    rt.predict(prepare_digit(decode(encode_png({.width = 28, .height = 28, .channels = 1}, x))).data(), 1, y);
    agree_gray += argmax(y, 10) == expected;
    const std::vector<uint8_t> rgb = ink_on_canvas(x, 120, 100);
    rt.predict(prepare_digit(decode(encode_png({.width = 120, .height = 100, .channels = 3}, rgb.data()))).data(), 1, y);
    agree_canvas += argmax(y, 10) == expected;
    correct_canvas += argmax(y, 10) == m.test.label(i);
  }
  INFO("agree gray " << agree_gray << ", canvas " << agree_canvas << "; correct raw " << correct_raw << ", canvas " << correct_canvas);
  CHECK(agree_gray >= 0.98 * n);
  CHECK(agree_canvas >= 0.98 * n);
  CHECK(correct_canvas >= correct_raw - 0.01 * n);
}

TEST_CASE("PNGs of 1 to 4 channels round-trip, and any PNG reads in the channels a model takes (issue 22, item 11)", "[data]") {
  const int w = 3, h = 2;
  for (int channels = 1; channels <= 4; ++channels) {
    std::vector<uint8_t> px(static_cast<size_t>(w) * h * channels);
    for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(37 * i + 11);
    const std::vector<uint8_t> png = encode_png({.width = w, .height = h, .channels = channels}, px.data());
    const Image back = decode_png(png.data(), png.size(), channels);
    CHECK(back.width == w);
    CHECK(back.channels == channels);
    CHECK(back.pixels == px);
  }
  // An RGBA file read for models of 1, 2, 3 and 4 channels.
  const std::vector<uint8_t> rgba{200, 100, 50, 255, 10, 20, 30, 0};  // opaque orange, transparent dark
  const std::vector<uint8_t> png = encode_png({.width = 2, .height = 1, .channels = 4}, rgba.data());
  CHECK(decode_png(png.data(), png.size(), 4).pixels == rgba);
  CHECK(decode_png(png.data(), png.size(), 3).pixels == std::vector<uint8_t>{200, 100, 50, 0, 0, 0});  // over black
  const uint8_t luma = static_cast<uint8_t>((299 * 200 + 587 * 100 + 114 * 50 + 500) / 1000);
  CHECK(decode_png(png.data(), png.size(), 2).pixels[0] == luma);
  CHECK(decode_png(png.data(), png.size(), 2).pixels[3] == 0);  // its alpha kept
  CHECK(decode_png(png.data(), png.size(), 1).pixels.size() == 2);
  // A gray file read for an RGB model: R = G = B.
  const std::vector<uint8_t> gray{7, 250};
  const std::vector<uint8_t> g = encode_png({.width = 2, .height = 1, .channels = 1}, gray.data());
  CHECK(decode_png(g.data(), g.size(), 3).pixels == std::vector<uint8_t>{7, 7, 7, 250, 250, 250});
  CHECK_THROWS_WITH(decode_png(g.data(), g.size(), 5), Catch::Contains("5 channels (expected 1 to 4)"));
}
