#include "core/qbin.h"

#include <zlib.h>

#include <cstring>

#include <fmt/format.h>

#include "core/file_io.h"

namespace qnet::qbin {

size_t dtype_bytes(DType t) {
  switch (t) {
    case DType::kF32: case DType::kS32: return 4;
    case DType::kS8: case DType::kU8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kS8: return "s8";
    case DType::kS32: return "s32";
    case DType::kU8: return "u8";
  }
  return "?";
}

int32_t LayerRecord::get_int(const std::string& key) const {
  for (const auto& [k, v] : ints)
    if (k == key) return v;
  throw FormatError(fmt::format("layer '{}' ({}) has no attribute '{}'", name, kind, key));
}
int32_t LayerRecord::get_int(const std::string& key, int32_t fallback) const {
  for (const auto& [k, v] : ints)
    if (k == key) return v;
  return fallback;
}
float LayerRecord::get_float(const std::string& key) const {
  for (const auto& [k, v] : floats)
    if (k == key) return v;
  throw FormatError(fmt::format("layer '{}' ({}) has no attribute '{}'", name, kind, key));
}
bool LayerRecord::has_float(const std::string& key) const {
  for (const auto& [k, v] : floats)
    if (k == key) return true;
  return false;
}
const TensorRecord* LayerRecord::find_tensor(const std::string& tname) const {
  for (const auto& t : tensors)
    if (t.name == tname) return &t;
  return nullptr;
}
const TensorRecord& LayerRecord::tensor(const std::string& tname) const {
  if (const TensorRecord* t = find_tensor(tname)) return *t;
  throw FormatError(fmt::format("layer '{}' ({}) has no tensor '{}'", name, kind, tname));
}

TensorRecord f32_tensor(std::string name, const Tensor& t) {
  TensorRecord r{std::move(name), DType::kF32, t.shape(), {}, std::vector<uint8_t>(t.numel() * 4)};
  std::memcpy(r.bytes.data(), t.data(), r.bytes.size());  // x86-64 is little-endian
  return r;
}

Tensor to_f32(const TensorRecord& r) {
  if (r.dtype != DType::kF32)
    throw FormatError(fmt::format("tensor '{}' is {} (expected f32)", r.name, dtype_name(r.dtype)));
  Tensor t(r.shape);
  std::memcpy(t.data(), r.bytes.data(), r.bytes.size());
  return t;
}

namespace {

class Writer {
 public:
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void str(const std::string& s) {
    if (s.size() > 255) throw std::invalid_argument(fmt::format("qbin: name '{}' longer than 255 bytes", s));
    put<uint8_t>(static_cast<uint8_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void raw(const std::vector<uint8_t>& b) { out_.insert(out_.end(), b.begin(), b.end()); }
  std::vector<uint8_t>& bytes() { return out_; }

 private:
  std::vector<uint8_t> out_;
};

// Every read is bounds-checked; a failure names what was being read and where.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str(const char* what) {
    const uint8_t len = get<uint8_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return s;
  }
  void need(size_t bytes, const char* what) const {
    if (bytes > n_ - pos_)
      throw FormatError(fmt::format("truncated payload reading {} at payload offset {} ({} bytes needed, {} left)", what,
                                    pos_, bytes, n_ - pos_));
  }
  const uint8_t* take(size_t bytes, const char* what) {
    need(bytes, what);
    const uint8_t* p = p_ + pos_;
    pos_ += bytes;
    return p;
  }
  size_t left() const { return n_ - pos_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

void write_tensor(Writer& w, const TensorRecord& t) {
  w.str(t.name);
  w.put<uint8_t>(static_cast<uint8_t>(t.dtype));
  w.put<uint8_t>(static_cast<uint8_t>(t.shape.size()));
  for (int64_t d : t.shape) w.put<uint32_t>(static_cast<uint32_t>(d));
  w.put<uint8_t>(static_cast<uint8_t>(t.quant.bits));
  w.put<int8_t>(static_cast<int8_t>(t.quant.axis));
  w.put<uint32_t>(static_cast<uint32_t>(t.quant.scales.size()));
  for (float s : t.quant.scales) w.put<float>(s);
  for (int32_t z : t.quant.zero_points) w.put<int32_t>(z);
  if (t.bytes.size() != static_cast<size_t>(shape_numel(t.shape)) * dtype_bytes(t.dtype))
    throw std::logic_error(fmt::format("qbin: tensor '{}' has {} bytes for shape {} of {}", t.name, t.bytes.size(),
                                       shape_str(t.shape), dtype_name(t.dtype)));
  w.raw(t.bytes);
}

TensorRecord read_tensor(Reader& r) {
  TensorRecord t;
  t.name = r.str("tensor name");
  const uint8_t dtype = r.get<uint8_t>("tensor dtype");
  if (dtype < 1 || dtype > 4) throw FormatError(fmt::format("tensor '{}': unknown dtype code {} (expected 1..4)", t.name, dtype));
  t.dtype = static_cast<DType>(dtype);
  const uint8_t rank = r.get<uint8_t>("tensor rank");
  if (rank > 8) throw FormatError(fmt::format("tensor '{}': rank {} (expected at most 8)", t.name, rank));
  uint64_t numel = 1;
  for (int i = 0; i < rank; ++i) {
    const uint32_t d = r.get<uint32_t>("tensor dimension");
    numel *= d;
    if (numel > kMaxFileBytes)
      throw FormatError(fmt::format("tensor '{}': {} elements cannot fit in the file", t.name, numel));
    t.shape.push_back(d);
  }
  t.quant.bits = r.get<uint8_t>("quantization bits");
  t.quant.axis = r.get<int8_t>("quantization axis");
  if (t.quant.bits > 32 || t.quant.axis < -1 || t.quant.axis >= static_cast<int>(rank))  // a channel axis needs rank >= 1
    throw FormatError(fmt::format("tensor '{}': quantization bits {} axis {} (expected bits 0..32, axis -1..rank-1)",
                                  t.name, t.quant.bits, t.quant.axis));
  const uint32_t nscales = r.get<uint32_t>("scale count");
  const uint64_t expected_scales = t.quant.bits == 0 ? 0 : (t.quant.axis < 0 ? 1 : t.shape[t.quant.axis]);
  if (nscales != expected_scales)
    throw FormatError(fmt::format("tensor '{}': {} scales (expected {})", t.name, nscales, expected_scales));
  r.need(uint64_t{nscales} * 8, "scales and zero points");
  for (uint32_t i = 0; i < nscales; ++i) t.quant.scales.push_back(r.get<float>("scale"));
  for (uint32_t i = 0; i < nscales; ++i) t.quant.zero_points.push_back(r.get<int32_t>("zero point"));
  const uint64_t bytes = numel * dtype_bytes(t.dtype);
  const uint8_t* p = r.take(bytes, "tensor data");
  t.bytes.assign(p, p + bytes);
  return t;
}

}  // namespace

std::vector<uint8_t> serialize(const Model& m) {
  Writer payload;
  for (const LayerRecord& l : m.layers) {
    payload.str(l.kind);
    payload.str(l.name);
    payload.put<uint8_t>(static_cast<uint8_t>(l.ints.size()));
    for (const auto& [k, v] : l.ints) payload.str(k), payload.put<int32_t>(v);
    payload.put<uint8_t>(static_cast<uint8_t>(l.floats.size()));
    for (const auto& [k, v] : l.floats) payload.str(k), payload.put<float>(v);
    payload.put<uint8_t>(static_cast<uint8_t>(l.tensors.size()));
    for (const TensorRecord& t : l.tensors) write_tensor(payload, t);
  }
  const std::vector<uint8_t>& body = payload.bytes();
  Writer file;
  for (char c : kMagic) file.put<char>(c);
  file.put<uint16_t>(kVersion);
  file.put<uint16_t>(kHeaderBytes);
  file.put<uint32_t>(static_cast<uint32_t>(m.layers.size()));
  file.put<uint32_t>(static_cast<uint32_t>(body.size()));
  file.put<uint32_t>(static_cast<uint32_t>(crc32(0L, body.data(), static_cast<uInt>(body.size()))));
  file.raw(body);
  return std::move(file.bytes());
}

Model parse(const uint8_t* data, size_t size) {
  if (size < kHeaderBytes)
    throw FormatError(fmt::format("file is {} bytes, shorter than the {}-byte header", size, kHeaderBytes));
  if (std::memcmp(data, kMagic, 4) != 0) throw FormatError("not a qbin model (magic is not 'QBIN')");
  Reader h(data + 4, kHeaderBytes - 4);
  const uint16_t version = h.get<uint16_t>("version");
  const uint16_t header = h.get<uint16_t>("header size");
  const uint32_t layers = h.get<uint32_t>("layer count");
  const uint32_t payload = h.get<uint32_t>("payload size");
  const uint32_t crc = h.get<uint32_t>("crc");
  if (version != kVersion)
    throw FormatError(fmt::format("format version {} (this build reads version {})", version, kVersion));
  if (header != kHeaderBytes) throw FormatError(fmt::format("header size {} (expected {})", header, kHeaderBytes));
  if (payload != size - kHeaderBytes)
    throw FormatError(fmt::format("header says {} payload bytes, file has {}", payload, size - kHeaderBytes));
  const uint8_t* body = data + kHeaderBytes;
  const uint32_t actual = static_cast<uint32_t>(crc32(0L, body, payload));
  if (actual != crc) throw FormatError(fmt::format("CRC-32 mismatch (stored {:08x}, computed {:08x}): the file is corrupt", crc, actual));
  // Each layer record takes at least 6 bytes, so the count is checked before reserving.
  if (uint64_t{layers} * 6 > payload) throw FormatError(fmt::format("{} layers cannot fit in {} payload bytes", layers, payload));
  Reader r(body, payload);
  Model m;
  m.layers.reserve(layers);
  for (uint32_t i = 0; i < layers; ++i) {
    LayerRecord l;
    l.kind = r.str("layer kind");
    l.name = r.str("layer name");
    const uint8_t ni = r.get<uint8_t>("int attribute count");
    for (int k = 0; k < ni; ++k) {
      std::string key = r.str("attribute name");
      l.ints.emplace_back(std::move(key), r.get<int32_t>("int attribute"));
    }
    const uint8_t nf = r.get<uint8_t>("float attribute count");
    for (int k = 0; k < nf; ++k) {
      std::string key = r.str("attribute name");
      l.floats.emplace_back(std::move(key), r.get<float>("float attribute"));
    }
    const uint8_t nt = r.get<uint8_t>("tensor count");
    for (int k = 0; k < nt; ++k) l.tensors.push_back(read_tensor(r));
    m.layers.push_back(std::move(l));
  }
  if (r.left() != 0) throw FormatError(fmt::format("{} unexpected bytes after the last layer", r.left()));
  return m;
}

void save(const Model& m, const std::string& path) { write_file_atomic(path, serialize(m)); }

Model load(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path, kMaxFileBytes);
  try {
    return parse(bytes.data(), bytes.size());
  } catch (const FormatError& e) {
    throw FormatError(fmt::format("{}: {}", path, e.what()));
  }
}

}  // namespace qnet::qbin
