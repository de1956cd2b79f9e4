#include "data/png.h"

#include <png.h>

#include <csetjmp>
#include <cstring>

#include <fmt/format.h>

#include "core/file_io.h"

namespace qnet {

namespace {

constexpr uint64_t kMaxDeflateRatio = 1100;  // zlib's worst case is 1032:1 (its technical notes)

// libpng reports errors by longjmp: everything that must survive one lives in this struct,
// owned by the caller, and the functions that call setjmp hold no C++ objects of their own.
struct PngContext {
  const uint8_t* data = nullptr;
  size_t size = 0, offset = 0;
  char message[200] = "";
  png_uint_32 width = 0, height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;    // decoded, 8 bits per channel
  std::vector<png_bytep> rows;
  std::vector<uint8_t> encoded;   // encode_png's output
};

void on_error(png_structp png, png_const_charp msg) {
  auto* ctx = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(ctx->message, sizeof ctx->message, "%s", msg);
  png_longjmp(png, 1);
}
void on_warning(png_structp, png_const_charp) {}

void read_bytes(png_structp png, png_bytep out, png_size_t n) {
  auto* ctx = static_cast<PngContext*>(png_get_io_ptr(png));
  if (n > ctx->size - ctx->offset) png_error(png, "the file ends in the middle of the image (truncated)");
  std::memcpy(out, ctx->data + ctx->offset, n);
  ctx->offset += n;
}

// Returns false with ctx->message set on failure.
bool decode(PngContext* ctx) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(ctx->message, sizeof ctx->message, "out of memory");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, ctx, read_bytes);
  // Ancillary chunks other than tRNS (transparency) are skipped unread: libpng 1.6 allocates a
  // text chunk's declared length (up to 2 GB from a 49-byte file, found by fuzzing) and would
  // inflate compressed profiles and text. A digit needs none of them (colour is reduced to gray).
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, nullptr, -1);
  static const png_byte kTrns[5] = {'t', 'R', 'N', 'S', '\0'};
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_AS_DEFAULT, kTrns, 1);
  png_set_chunk_malloc_max(png, 8u << 20);
  png_read_info(png, info);
  ctx->width = png_get_image_width(png, info);
  ctx->height = png_get_image_height(png, info);
  if (ctx->width > kMaxImageSide || ctx->height > kMaxImageSide || uint64_t{ctx->width} * ctx->height > kMaxImagePixels) {
    std::snprintf(ctx->message, sizeof ctx->message, "%ux%u pixels is more than the %u a side / %llu in total allowed",
                  ctx->width, ctx->height, kMaxImageSide, static_cast<unsigned long long>(kMaxImagePixels));
    png_longjmp(png, 1);
  }
  png_set_expand(png);    // palette -> RGB, gray < 8 bit -> 8 bit, tRNS -> alpha
  png_set_scale_16(png);  // 16 -> 8 bit, rounded
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  ctx->channels = png_get_channels(png, info);
  const size_t stride = png_get_rowbytes(png, info);
  if (stride != static_cast<size_t>(ctx->width) * ctx->channels) png_error(png, "unexpected row layout");
  // zlib expands at most ~1032:1, so a short file cannot hold a big image: refuse it before
  // allocating what its header claims.
  if (static_cast<uint64_t>(stride) * ctx->height > kMaxDeflateRatio * ctx->size + 65536) {
    std::snprintf(ctx->message, sizeof ctx->message, "a %ux%u image cannot fit in a %zu-byte file (truncated or forged header)",
                  ctx->width, ctx->height, ctx->size);
    png_longjmp(png, 1);
  }
  ctx->pixels.resize(stride * ctx->height);
  ctx->rows.resize(ctx->height);
  for (png_uint_32 y = 0; y < ctx->height; ++y) ctx->rows[y] = ctx->pixels.data() + y * stride;
  png_read_image(png, ctx->rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

void write_bytes(png_structp png, png_bytep in, png_size_t n) {
  auto* ctx = static_cast<PngContext*>(png_get_io_ptr(png));
  ctx->encoded.insert(ctx->encoded.end(), in, in + n);
}
void flush_nothing(png_structp) {}

bool encode(PngContext* ctx) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, ctx, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_set_write_fn(png, ctx, write_bytes, flush_nothing);
  const int types[] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
  png_set_IHDR(png, info, ctx->width, ctx->height, 8, types[ctx->channels - 1],
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, ctx->rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

uint8_t luma(const uint8_t* p) {  // Rec. 601, rounded
  return static_cast<uint8_t>((299 * p[0] + 587 * p[1] + 114 * p[2] + 500) / 1000);
}

}  // namespace

GrayImage decode_png_gray(const uint8_t* data, size_t size) {
  if (size < 8 || png_sig_cmp(data, 0, 8) != 0) throw ImageError("not a PNG file (bad signature)");
  PngContext ctx;
  ctx.data = data, ctx.size = size;
  if (!decode(&ctx)) throw ImageError(fmt::format("cannot decode the PNG: {}", ctx.message));
  GrayImage img{static_cast<int>(ctx.width), static_cast<int>(ctx.height), std::vector<uint8_t>(size_t{ctx.width} * ctx.height)};
  const int ch = ctx.channels;
  const bool alpha = ch == 2 || ch == 4;
  // Background for transparent pixels: white if the opaque pixels are dark (ink), else black.
  uint64_t opaque = 0, opaque_sum = 0;
  for (size_t i = 0; i < img.pixels.size(); ++i) {
    const uint8_t* p = &ctx.pixels[i * ch];
    img.pixels[i] = ch <= 2 ? p[0] : luma(p);
    if (alpha && p[ch - 1] >= 128) ++opaque, opaque_sum += img.pixels[i];
  }
  if (alpha) {
    const int bg = opaque && opaque_sum / opaque < 128 ? 255 : 0;
    for (size_t i = 0; i < img.pixels.size(); ++i) {
      const int a = ctx.pixels[i * ch + ch - 1];
      img.pixels[i] = static_cast<uint8_t>((img.pixels[i] * a + bg * (255 - a) + 127) / 255);
    }
  }
  return img;
}

Image decode_png(const uint8_t* data, size_t size, int channels) {
  if (channels < 1 || channels > 4) throw ImageError(fmt::format("decode_png: {} channels (expected 1 to 4)", channels));
  if (channels == 1) {
    GrayImage g = decode_png_gray(data, size);
    return {g.width, g.height, 1, std::move(g.pixels)};
  }
  if (size < 8 || png_sig_cmp(data, 0, 8) != 0) throw ImageError("not a PNG file (bad signature)");
  PngContext ctx;
  ctx.data = data, ctx.size = size;
  if (!decode(&ctx)) throw ImageError(fmt::format("cannot decode the PNG: {}", ctx.message));
  const int ch = ctx.channels;  // what the file holds: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA
  const bool has_alpha = ch == 2 || ch == 4, colour = ch >= 3;
  Image img{static_cast<int>(ctx.width), static_cast<int>(ctx.height), channels, std::vector<uint8_t>(size_t{ctx.width} * ctx.height * channels)};
  for (size_t i = 0; i < size_t{ctx.width} * ctx.height; ++i) {
    const uint8_t* p = &ctx.pixels[i * ch];
    uint8_t* o = &img.pixels[i * channels];
    const uint8_t alpha = has_alpha ? p[ch - 1] : 255;
    if (channels == 2) {
      o[0] = colour ? luma(p) : p[0], o[1] = alpha;
    } else {
      for (int c = 0; c < 3; ++c) o[c] = colour ? p[c] : p[0];
      if (channels == 4) o[3] = alpha;
      else if (has_alpha)
        for (int c = 0; c < 3; ++c) o[c] = static_cast<uint8_t>((o[c] * alpha + 127) / 255);  // over black
    }
  }
  return img;
}

Image read_png(const std::string& path, int channels) {
  std::vector<uint8_t> bytes;
  try {
    bytes = read_file(path, kMaxPngFileBytes);
  } catch (const IoError& e) {
    throw ImageError(e.what());
  }
  try {
    return decode_png(bytes.data(), bytes.size(), channels);
  } catch (const ImageError& e) {
    throw ImageError(fmt::format("{}: {}", path, e.what()));
  }
}

GrayImage read_png_gray(const std::string& path) {
  std::vector<uint8_t> bytes;
  try {
    bytes = read_file(path, kMaxPngFileBytes);
  } catch (const IoError& e) {
    throw ImageError(e.what());
  }
  try {
    return decode_png_gray(bytes.data(), bytes.size());
  } catch (const ImageError& e) {
    throw ImageError(fmt::format("{}: {}", path, e.what()));
  }
}

std::vector<uint8_t> encode_png(const PngFormat& f, const uint8_t* pixels) {
  if (f.width < 1 || f.height < 1 || static_cast<uint32_t>(f.width) > kMaxImageSide || static_cast<uint32_t>(f.height) > kMaxImageSide ||
      f.channels < 1 || f.channels > 4)
    throw ImageError(fmt::format("encode_png: {}x{}x{} (expected 1..{} pixels a side, 1 to 4 channels)", f.width, f.height, f.channels,
                                 kMaxImageSide));
  PngContext ctx;
  ctx.width = f.width, ctx.height = f.height, ctx.channels = f.channels;
  for (int y = 0; y < f.height; ++y) ctx.rows.push_back(const_cast<uint8_t*>(pixels) + static_cast<size_t>(y) * f.width * f.channels);
  if (!encode(&ctx)) throw ImageError(fmt::format("cannot encode the PNG: {}", ctx.message));
  return std::move(ctx.encoded);
}

void write_png(const std::string& path, const PngFormat& f, const uint8_t* pixels) { write_file_atomic(path, encode_png(f, pixels)); }

}  // namespace qnet
