// Fuzz helpers: inputs get valid checksums before they reach the loaders, so that mutations
// explore the parsers behind the CRC checks instead of stopping at them (the checks themselves
// are tested in the unit tests). Used by the fuzz targets in both the fuzz and replay builds.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace qnet::fuzz {

inline uint32_t get_be32(const uint8_t* p) { return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3]; }
inline void put_be32(uint8_t* p, uint32_t v) { p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = static_cast<uint8_t>(v); }

// .qbin: header bytes 16..19 hold the little-endian CRC-32 of the payload (bytes 20..).
inline std::vector<uint8_t> with_qbin_crc(const uint8_t* data, size_t size) {
  std::vector<uint8_t> b(data, data + size);
  if (b.size() >= 20) {
    const uint32_t crc = static_cast<uint32_t>(crc32(0, b.data() + 20, static_cast<uInt>(b.size() - 20)));
    std::memcpy(b.data() + 16, &crc, 4);
  }
  return b;
}

// PNG: every complete chunk (length, type, data, CRC over type + data) gets its correct CRC.
inline std::vector<uint8_t> with_png_crcs(const uint8_t* data, size_t size) {
  std::vector<uint8_t> b(data, data + size);
  size_t at = 8;
  while (at + 12 <= b.size()) {
    const uint32_t length = get_be32(&b[at]);
    if (length > b.size() - at - 12) break;
    put_be32(&b[at + 8 + length], static_cast<uint32_t>(crc32(0, &b[at + 4], length + 4)));
    at += 12 + length;
  }
  return b;
}

}  // namespace qnet::fuzz
