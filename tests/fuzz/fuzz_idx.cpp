// libFuzzer target: the IDX reader (MNIST files), ranks 1 and 3. Expected for bad input: DataError.
#include <cstddef>
#include <cstdint>

#include "data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (int rank : {1, 3}) {
    try {
      const qnet::IdxArray a = qnet::parse_idx(data, size, rank, "fuzz");
      (void)a;
    } catch (const qnet::DataError&) {
    }
  }
  return 0;
}
