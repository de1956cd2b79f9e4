// libFuzzer target: the IDX reader (MNIST files), ranks 1 and 3, on the bytes as given and, when
// they start with the gzip magic, decompressed first (bounded at 16 MB). Expected for bad input:
// DataError.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes;
  try {
    bytes = qnet::gunzip_if_compressed(std::vector<uint8_t>(data, data + size), uint64_t{1} << 24, "fuzz");
  } catch (const qnet::DataError&) {
    return 0;
  }
  for (int rank : {1, 3}) {
    try {
      const qnet::IdxArray a = qnet::parse_idx(bytes.data(), bytes.size(), rank, "fuzz");
      (void)a;
    } catch (const qnet::DataError&) {
    }
  }
  return 0;
}
