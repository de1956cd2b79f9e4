#include "data/idx.h"

#include <fmt/format.h>

#include "core/file_io.h"

namespace qnet {

IdxArray parse_idx(const uint8_t* b, size_t size, int expected_rank, const std::string& name) {
  if (size < 4) throw DataError(fmt::format("{}: {} bytes, too short for an IDX header", name, size));
  if (b[0] != 0 || b[1] != 0)
    throw DataError(fmt::format("{}: bad magic {:02x}{:02x} (expected 0000: not an IDX file)", name, b[0], b[1]));
  if (b[2] != 0x08)
    throw DataError(fmt::format("{}: element type 0x{:02x} (expected 0x08, unsigned bytes)", name, b[2]));
  if (b[3] != expected_rank)
    throw DataError(fmt::format("{}: rank {} (expected {})", name, b[3], expected_rank));
  const size_t header = 4 + 4 * size_t{b[3]};
  if (size < header) throw DataError(fmt::format("{}: truncated header ({} of {} bytes)", name, size, header));
  IdxArray a;
  uint64_t count = 1;
  for (int i = 0; i < b[3]; ++i) {
    const uint8_t* p = b + 4 + 4 * i;
    const uint32_t d = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    a.dims.push_back(d);
    count *= d;
    if (count > (uint64_t{1} << 34)) throw DataError(fmt::format("{}: dimensions too large", name));
  }
  if (size - header != count)
    throw DataError(fmt::format("{}: {} data bytes for dimensions [{}] (expected {}): truncated or corrupt", name,
                                size - header, fmt::join(a.dims, ", "), count));
  a.data.assign(b + header, b + size);
  return a;
}

IdxArray read_idx(const std::string& path, int expected_rank) {
  std::vector<uint8_t> bytes;
  try {
    bytes = read_file(path, uint64_t{1} << 32);
  } catch (const IoError& e) {
    throw DataError(e.what());
  }
  return parse_idx(bytes.data(), bytes.size(), expected_rank, path);
}

}  // namespace qnet
