#include "data/mnist.h"

#include <zlib.h>

#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>

#include "core/file_io.h"

namespace qnet {

namespace {
struct KnownFile {
  const char* name;
  int rank;
  uint32_t count;
  uint32_t crc32;  // zlib CRC-32 of the whole file; md5 sums are in scripts/fetch_mnist
};
constexpr KnownFile kTrainImages{"train-images-idx3-ubyte", 3, 60000, 0xe9f4d8b3};
constexpr KnownFile kTrainLabels{"train-labels-idx1-ubyte", 1, 60000, 0xe0cb4ad2};
constexpr KnownFile kTestImages{"t10k-images-idx3-ubyte", 3, 10000, 0x91373bdf};
constexpr KnownFile kTestLabels{"t10k-labels-idx1-ubyte", 1, 10000, 0x4ab9eff9};

std::string fetch_hint(const std::string& dir) {
  return fmt::format("run scripts/fetch_mnist {} (or pass --data-dir / set QNET_DATA_DIR to a folder with the MNIST IDX files)", dir);
}

IdxArray load_checked(const std::string& dir, const KnownFile& f) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw DataError(fmt::format("data folder {} is not a folder (expected the folder holding the four MNIST IDX files; see --data-dir)", dir));
  std::string path = (fs::path(dir) / f.name).string();
  if (!fs::exists(path, ec) && fs::exists(path + ".gz", ec)) path += ".gz";
  if (!fs::exists(path, ec))
    throw DataError(fmt::format("MNIST file {} (or {}.gz) is missing: {}", path, path, fetch_hint(dir)));
  constexpr uint64_t kMaxBytes = uint64_t{1} << 28;
  std::vector<uint8_t> bytes;
  try {
    bytes = gunzip_if_compressed(read_file(path, kMaxBytes), kMaxBytes, path);
  } catch (const IoError& e) {
    throw DataError(fmt::format("{}; {}", e.what(), fetch_hint(dir)));
  } catch (const DataError& e) {
    throw DataError(fmt::format("{}; {}", e.what(), fetch_hint(dir)));
  }
  const uint32_t crc = static_cast<uint32_t>(crc32(0L, bytes.data(), static_cast<uInt>(bytes.size())));
  IdxArray a;
  try {
    a = parse_idx(bytes.data(), bytes.size(), f.rank, path);
  } catch (const DataError& e) {
    throw DataError(fmt::format("{}; {}", e.what(), fetch_hint(dir)));
  }
  if (a.dims[0] != f.count || crc != f.crc32)
    throw DataError(fmt::format("MNIST file {} is corrupt (CRC-32 {:08x}, expected {:08x}): {}", path, crc, f.crc32,
                                fetch_hint(dir)));
  return a;
}

ImageSet make_set(const std::string& dir, const KnownFile& images, const KnownFile& labels) {
  IdxArray im = load_checked(dir, images), lb = load_checked(dir, labels);
  auto pixels = std::make_shared<const std::vector<uint8_t>>(std::move(im.data));
  auto ys = std::make_shared<std::vector<int32_t>>(lb.data.begin(), lb.data.end());
  return ImageSet(pixels, ys, im.dims[1], im.dims[2]);
}
}  // namespace

std::string mnist_dir(const std::string& option) {
  if (!option.empty()) return option;
  if (const char* env = std::getenv("QNET_DATA_DIR"); env && *env) return env;
  const char* home = std::getenv("HOME");
  return fmt::format("{}/.cache/qnet/mnist", home && *home ? home : ".");
}

Mnist load_mnist(const std::string& dir) {
  return {make_set(dir, kTrainImages, kTrainLabels), make_set(dir, kTestImages, kTestLabels)};
}

ImageSet load_mnist_test(const std::string& dir) { return make_set(dir, kTestImages, kTestLabels); }

}  // namespace qnet
