// Whole-file reads with a size bound, and atomic writes (temp file, fsync, rename), so a
// crash or a full disk never leaves a truncated file under the final name.
//
//   std::vector<uint8_t> b = qnet::read_file("model.qbin", 1 << 30);
//   qnet::write_file_atomic("metrics.json", std::string_view(json));
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace qnet {

class IoError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws IoError ("PATH: no such file", "PATH: N bytes, more than the M allowed", ...).
std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes);
void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);
void write_file_atomic(const std::string& path, std::string_view text);

}  // namespace qnet
