// libFuzzer target: PNG decoding and the MNIST-style preparation that `infer` applies.
// Expected outcome for bad input: qnet::ImageError.
#include <cstddef>
#include <cstdint>

#include "data/digit.h"
#include "data/png.h"
#include "tests/fuzz/fix_crc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const std::vector<uint8_t> b = qnet::fuzz::with_png_crcs(data, size);
    const qnet::GrayImage img = qnet::decode_png_gray(b.data(), b.size());
    const qnet::Digit d = qnet::prepare_digit(img);
    (void)d;
    if (img.width == 28 && img.height == 28) (void)qnet::raw_digit(img);
  } catch (const qnet::ImageError&) {
  }
  return 0;
}
