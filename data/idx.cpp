#include "data/idx.h"

#include <sys/mman.h>
#include <zlib.h>

#include <fmt/format.h>

#include "core/file_io.h"

namespace qnet {

namespace {
// Training reads an image set at random, one image (a few hundred bytes) at a time, so on 4 KB
// pages nearly every image costs a TLB miss, and on this project's VMs the first read of each page
// after loading costs ~4 us (a 47 MB MNIST set: 11,500 pages, ~50 ms of the first epoch;
// docs/performance.md). Before the copy faults the pages in, ask for transparent 2 MB pages over
// the part of the buffer that holds whole ones. A hint: where the kernel gives none (THP set to
// never, or no THP at all), madvise fails and nothing changes.
void reserve_on_huge_pages(std::vector<uint8_t>& v, size_t bytes) {
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  v.reserve(bytes);  // allocated, not yet touched beyond malloc's header
  if (bytes < 2 * kHugePage) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(v.data());
  const uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1), last = (begin + bytes) & ~(kHugePage - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
}
}  // namespace

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
  reserve_on_huge_pages(a.data, count);
  a.data.assign(b + header, b + size);
  return a;
}

std::vector<uint8_t> gunzip_if_compressed(std::vector<uint8_t> bytes, uint64_t max_bytes, const std::string& name) {
  if (bytes.size() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b) return bytes;
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) throw DataError(fmt::format("{}: cannot start gzip decompression", name));
  std::vector<uint8_t> out;
  z.next_in = bytes.data();
  z.avail_in = static_cast<uInt>(bytes.size());
  const auto fail = [&](const std::string& what) {
    inflateEnd(&z);
    throw DataError(fmt::format("{}: {}", name, what));
  };
  for (int members = 1;; ++members) {
    int rc = Z_OK;
    while (rc == Z_OK) {
      if (out.size() >= max_bytes) fail(fmt::format("gzip data expands past {} bytes (expected an IDX file)", max_bytes));
      const size_t done = out.size();
      out.resize(std::min<uint64_t>(max_bytes, std::max<size_t>(2 * done, size_t{1} << 20)));
      z.next_out = out.data() + done;
      z.avail_out = static_cast<uInt>(out.size() - done);
      rc = inflate(&z, Z_NO_FLUSH);
      out.resize(out.size() - z.avail_out);
      if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // the input ended before the stream did
    }
    if (rc != Z_STREAM_END)
      fail(fmt::format("damaged gzip data in member {} ({})", members, z.msg ? z.msg : rc == Z_BUF_ERROR ? "truncated" : fmt::format("zlib error {}", rc)));
    if (z.avail_in == 0) break;
    if (z.avail_in < 2 || z.next_in[0] != 0x1f || z.next_in[1] != 0x8b)
      fail(fmt::format("{} bytes after the gzip data (expected nothing, or another gzip member)", z.avail_in));
    inflateReset(&z);  // the next member
  }
  inflateEnd(&z);
  return out;
}

uint64_t idx_size_from_header(const uint8_t* b, size_t size, const std::string& name) {
  if (size < 4) return 0;
  if (b[0] != 0 || b[1] != 0 || b[2] != 0x08 || b[3] < 1 || b[3] > 4) return parse_idx(b, size, b[3], name), 0;  // its error
  const size_t header = 4 + 4 * size_t{b[3]};
  if (size < header) return 0;
  uint64_t count = 1;
  for (int i = 0; i < b[3]; ++i) {
    const uint8_t* p = b + 4 + 4 * i;
    count *= (uint64_t{p[0]} << 24) | (uint64_t{p[1]} << 16) | (uint64_t{p[2]} << 8) | p[3];
    if (count > kMaxIdxBytes) throw DataError(fmt::format("{}: its header says more than {} bytes of data (dimensions too large)", name, kMaxIdxBytes));
  }
  return header + count;
}

namespace {
// The first (at most) n bytes of gzip data, or fewer if it is damaged or shorter: the full
// decompression says what is wrong with it.
std::vector<uint8_t> gunzip_head(const std::vector<uint8_t>& bytes, size_t n) {
  std::vector<uint8_t> out(n);
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return {};
  z.next_in = const_cast<uint8_t*>(bytes.data());
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(n);
  int rc = Z_OK;
  while (rc == Z_OK && z.avail_out > 0) rc = inflate(&z, Z_NO_FLUSH);
  out.resize(n - z.avail_out);
  inflateEnd(&z);
  return out;
}
}  // namespace

std::vector<uint8_t> read_idx_bytes(const std::string& path) {
  std::vector<uint8_t> bytes;
  try {
    bytes = read_file(path, kMaxIdxBytes);
  } catch (const IoError& e) {
    throw DataError(e.what());
  }
  if (bytes.size() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b) return bytes;
  // The decompressed file's size is its header's: decompress the header alone first, then allow
  // exactly that size (one byte more shows any excess), so a bomb stops at its claim.
  const std::vector<uint8_t> head = gunzip_head(bytes, 4 + 4 * 4);
  const uint64_t expected = idx_size_from_header(head.data(), head.size(), path);
  try {
    return gunzip_if_compressed(std::move(bytes), expected ? expected + 1 : kMaxIdxBytes, path);
  } catch (const DataError& e) {
    if (expected && std::string(e.what()).find("expands past") != std::string::npos)
      throw DataError(fmt::format("{}: its gzip data holds more than the {} bytes its IDX header says (corrupt, or more than one file)",
                                  path, expected));
    throw;
  }
}

IdxArray read_idx(const std::string& path, int expected_rank) {
  const std::vector<uint8_t> bytes = read_idx_bytes(path);
  return parse_idx(bytes.data(), bytes.size(), expected_rank, path);
}

}  // namespace qnet
