#include "io/qbin.h"

#include <zlib.h>

#include <cmath>
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
  throw FormatError(fmt::format("layer '{}' ({}) has no attribute '{}'", shown(name), shown(kind), key));
}
int32_t LayerRecord::get_int(const std::string& key, int32_t fallback) const {
  for (const auto& [k, v] : ints)
    if (k == key) return v;
  return fallback;
}
float LayerRecord::get_float(const std::string& key) const {
  for (const auto& [k, v] : floats)
    if (k == key) return v;
  throw FormatError(fmt::format("layer '{}' ({}) has no attribute '{}'", shown(name), shown(kind), key));
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
  throw FormatError(fmt::format("layer '{}' ({}) has no tensor '{}'", shown(name), shown(kind), tname));
}

TensorRecord f32_tensor(std::string name, const Tensor& t) {
  TensorRecord r{std::move(name), DType::kF32, t.shape(), {}, std::vector<uint8_t>(t.numel() * 4)};
  std::memcpy(r.bytes.data(), t.data(), r.bytes.size());  // x86-64 is little-endian
  return r;
}

Tensor to_f32(const TensorRecord& r) {
  if (r.dtype != DType::kF32)
    throw FormatError(fmt::format("tensor '{}' is {} (expected f32)", shown(r.name), dtype_name(r.dtype)));
  Tensor t(r.shape);
  std::memcpy(t.data(), r.bytes.data(), r.bytes.size());
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(t[i]))
      throw FormatError(fmt::format("tensor '{}': element {} is {} (expected finite numbers)", shown(r.name), i, t[i]));
  return t;
}

std::string name_problem(std::string_view s) {
  if (s.size() > 255) return fmt::format("{} bytes (expected at most 255)", s.size());
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    // The length of the UTF-8 sequence starting here, and the smallest code point it may encode.
    const int len = b < 0x80 ? 1 : (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return fmt::format("byte 0x{:02x} at position {} is not UTF-8", b, i);
    uint32_t cp = len == 1 ? b : b & (0x7f >> len);
    for (int k = 1; k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xc0) != 0x80) return fmt::format("byte 0x{:02x} at position {} is not UTF-8", c, i + k);
      cp = (cp << 6) | (c & 0x3f);
    }
    static constexpr uint32_t kMinCodePoint[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinCodePoint[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return fmt::format("bytes at position {} are not UTF-8", i);
    if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) return fmt::format("control character 0x{:02x} at position {}", cp, i);
    i += static_cast<size_t>(len);
  }
  return "";
}

std::string shown(std::string_view s) {
  constexpr size_t kMaxShown = 64;
  std::string out;
  size_t chars = 0, i = 0;
  for (; i < s.size() && chars < kMaxShown; ++i, ++chars) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b >= 0x20 && b < 0x7f && b != '\\') out += static_cast<char>(b);
    else out += fmt::format("\\x{:02x}", b);
  }
  return i < s.size() ? out + "..." : out;
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
    if (const std::string bad = name_problem(s); !bad.empty())
      throw std::invalid_argument(fmt::format("qbin: name '{}': {}", shown(s), bad));
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
    if (const std::string bad = name_problem(s); !bad.empty())
      throw FormatError(fmt::format("{} '{}' at payload offset {}: {} (expected printable UTF-8 text; a damaged length field "
                                    "reads other bytes as a name)", what, shown(s), pos_, bad));
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
  if (dtype < 1 || dtype > 4) throw FormatError(fmt::format("tensor '{}': unknown dtype code {} (expected 1..4)", shown(t.name), dtype));
  t.dtype = static_cast<DType>(dtype);
  const uint8_t rank = r.get<uint8_t>("tensor rank");
  if (rank > 8) throw FormatError(fmt::format("tensor '{}': rank {} (expected at most 8)", shown(t.name), rank));
  uint64_t numel = 1;
  for (int i = 0; i < rank; ++i) {
    const uint32_t d = r.get<uint32_t>("tensor dimension");
    numel *= d;
    if (numel > kMaxFileBytes)
      throw FormatError(fmt::format("tensor '{}': {} elements cannot fit in the file", shown(t.name), numel));
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
    throw FormatError(fmt::format("tensor '{}': {} scales (expected {})", shown(t.name), nscales, expected_scales));
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
