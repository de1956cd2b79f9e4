// IDX files (the MNIST format): big-endian header, magic 0x0000 08 RANK, RANK u32 dims, u8 data.
//
//   IdxArray a = read_idx("train-images-idx3-ubyte", 3);   // dims {60000, 28, 28}
//
// Everything is validated before use: magic, type code, rank, dimensions and the exact
// file size. Failures throw DataError with the path and what was expected.
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

}  // namespace qnet
