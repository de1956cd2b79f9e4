// IDX files (the MNIST format): big-endian header, magic 0x0000 08 RANK, RANK u32 dims, u8 data.
//
//   IdxArray a = read_idx("train-images-idx3-ubyte", 3);   // dims {60000, 28, 28}
//
// Everything is validated before use: magic, type code, rank, dimensions and the exact
// file size. Failures throw DataError with the path and what was expected. A gzip-compressed
// file (the usual .gz downloads) is recognised by its magic 1f8b, whatever its name, and
// decompressed first.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace qnet {

class DataError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct IdxArray {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};

IdxArray parse_idx(const uint8_t* bytes, size_t size, int expected_rank, const std::string& name);
IdxArray read_idx(const std::string& path, int expected_rank);
// The bytes of an IDX file, read whole (at most kMaxIdxBytes) and, if gzip-compressed, decompressed
// to no more than the size its header claims.
std::vector<uint8_t> read_idx_bytes(const std::string& path);

// `bytes` itself, or its gzip decompression when it starts with the gzip magic 1f8b: every member
// of a multi-member file (as gzip -c a >> f, bgzip and pigz write), in order. Refuses damaged or
// truncated gzip data, bytes after the last member that are not another member, and results over
// `max_bytes` (a zip bomb), naming `name`.
std::vector<uint8_t> gunzip_if_compressed(std::vector<uint8_t> bytes, uint64_t max_bytes, const std::string& name);

// The size an IDX file's header says it has (header plus data), from its first bytes; 0 while
// fewer than the header's bytes are given. Throws DataError for a header that is not IDX.
uint64_t idx_size_from_header(const uint8_t* bytes, size_t size, const std::string& name);

// The most bytes an IDX file (decompressed) may have: 2 GiB (EMNIST's largest is 0.55 GB).
inline constexpr uint64_t kMaxIdxBytes = uint64_t{1} << 31;

}  // namespace qnet
