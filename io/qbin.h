// The .qbin container: one file format for float and int8 models (docs/qbin-format.md).
//
//   qbin::Model m;                                   // layers with attributes and named tensors
//   m.layers.push_back({.kind = "Dense", .name = "dense", .tensors = {qbin::f32_tensor("kernel", w)}});
//   qbin::save(m, "model.qbin");                     // atomic: temp file + rename
//   qbin::Model back = qbin::load("model.qbin");     // throws qbin::FormatError naming the problem
//
// The loader trusts nothing: sizes, counts and the CRC-32 are checked before anything is
// allocated from what the file says.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace qnet::qbin {

inline constexpr char kMagic[4] = {'Q', 'B', 'I', 'N'};
inline constexpr uint16_t kVersion = 1;
inline constexpr uint16_t kHeaderBytes = 20;
inline constexpr uint64_t kMaxFileBytes = 1ull << 30;

enum class DType : uint8_t { kF32 = 1, kS8 = 2, kS32 = 3, kU8 = 4 };
size_t dtype_bytes(DType t);
const char* dtype_name(DType t);

// Quantization of a stored tensor: r = scale * (q - zero_point), per tensor (axis = -1)
// or per channel along `axis`. bits = 0: not quantized.
struct QuantParams {
  int bits = 0;
  int axis = -1;
  std::vector<float> scales;
  std::vector<int32_t> zero_points;
};

struct TensorRecord {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  QuantParams quant;
  std::vector<uint8_t> bytes;  // numel * dtype_bytes, little-endian
};

struct LayerRecord {
  std::string kind;  // "Input", "Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense"
  std::string name;
  std::vector<std::pair<std::string, int32_t>> ints;
  std::vector<std::pair<std::string, float>> floats;
  std::vector<TensorRecord> tensors;

  int32_t get_int(const std::string& key) const;  // throws FormatError when missing
  int32_t get_int(const std::string& key, int32_t fallback) const;
  float get_float(const std::string& key) const;
  bool has_float(const std::string& key) const;
  const TensorRecord& tensor(const std::string& name) const;
  const TensorRecord* find_tensor(const std::string& name) const;
};

struct Model {
  std::vector<LayerRecord> layers;
};

class FormatError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

TensorRecord f32_tensor(std::string name, const Tensor& t);
Tensor to_f32(const TensorRecord& t);  // f32 records only; refuses NaN and infinities, naming the element

// Names (layer kinds and names, attribute keys, tensor names) are valid UTF-8 without control
// characters, at most 255 bytes: the parser refuses anything else, so no byte from a file can
// reach a terminal as an escape sequence. name_problem is empty for a good name, else the reason.
// shown() is how a name is quoted in messages: at most 64 characters, bytes that are not
// printable ASCII as \xNN, "..." when cut.
std::string name_problem(std::string_view name);
std::string shown(std::string_view name);

std::vector<uint8_t> serialize(const Model& m);
Model parse(const uint8_t* data, size_t size);  // throws FormatError
void save(const Model& m, const std::string& path);
Model load(const std::string& path);  // FormatError messages start with the path

}  // namespace qnet::qbin
