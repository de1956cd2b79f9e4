#include "data/image_data.h"

#include "io/qbin.h"

#include <algorithm>
#include <filesystem>
#include <vector>

#include <fmt/format.h>

#include "core/file_io.h"

namespace qnet {

namespace {

namespace fs = std::filesystem;

struct Role {
  const char* what;                 // "training images"
  std::vector<const char*> names;   // substrings of the file name
};
const Role kTrainImages{"training images", {"train-images"}};
const Role kTrainLabels{"training labels", {"train-labels"}};
const Role kTestImages{"test images", {"t10k-images", "test-images"}};
const Role kTestLabels{"test labels", {"t10k-labels", "test-labels"}};

// What to do about a missing or damaged data set: fetch MNIST where MNIST is expected (a folder
// named mnist, as the default ~/.cache/qnet/mnist), else what an IDX data set's folder holds.
std::string hint(const std::string& dir) {
  if (fs::path(dir).lexically_normal().filename() == "mnist" || fs::path(dir).lexically_normal().parent_path().filename() == "mnist")
    return fmt::format("for MNIST run scripts/fetch_mnist {}; any data set in the IDX format works (pass --data-dir or set "
                       "QNET_DATA_DIR to its folder)", qbin::shown(dir));
  return "a data set's folder holds four IDX files, plain or .gz: train-images, train-labels, t10k-images (or test-images) and "
         "t10k-labels (docs/tutorial.md)";
}

bool ends_with(const std::string& s, const std::string& end) {
  return s.size() >= end.size() && s.compare(s.size() - end.size(), end.size(), end) == 0;
}

std::string find_file(const std::string& dir, const Role& role) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw DataError(fmt::format("data folder {} does not exist: {}", dir, hint(dir)));
  if (!fs::is_directory(dir, ec))
    throw DataError(fmt::format("data folder {} is not a folder (expected the folder holding the four IDX files; see --data-dir)", dir));
  std::vector<std::string> found;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!ends_with(name, "-ubyte") && !ends_with(name, "-ubyte.gz")) continue;
    for (const char* n : role.names)
      if (name.find(n) != std::string::npos) {
        found.push_back(it->path().string());
        break;
      }
  }
  if (found.empty())
    throw DataError(fmt::format("no {} file in {} (expected a name containing '{}' and ending in -ubyte or -ubyte.gz): {}", role.what, dir,
                                role.names[0], hint(dir)));
  if (found.size() > 1) {
    std::sort(found.begin(), found.end());
    throw DataError(fmt::format("{} {} files in {}: {} (expected one)", found.size(), role.what, dir, fmt::join(found, ", ")));
  }
  return found[0];
}

IdxArray read(const std::string& dir, const std::string& path, bool images) {
  const std::vector<uint8_t> bytes = read_idx_bytes(path);
  const int rank = images && bytes.size() >= 4 && bytes[3] == 4 ? 4 : images ? 3 : 1;
  IdxArray a;
  try {
    a = parse_idx(bytes.data(), bytes.size(), rank, path);
  } catch (const DataError& e) {
    throw DataError(fmt::format("{}; {}", e.what(), hint(dir)));  // a damaged download: fetching again helps
  }
  if (images && (a.dims[1] < 1 || a.dims[2] < 1 || a.dims[1] > 16384 || a.dims[2] > 16384))
    throw DataError(fmt::format("{}: images of {}x{} (expected 1..16384 a side)", path, a.dims[1], a.dims[2]));
  if (images && rank == 4 && (a.dims[3] < 1 || a.dims[3] > kMaxImageChannels))
    throw DataError(fmt::format("{}: {} channels (expected 1..{})", path, a.dims[3], kMaxImageChannels));
  return a;
}

struct Loaded {
  ImageSet set;
  int max_label = -1;
  std::vector<bool> seen = std::vector<bool>(256, false);  // which labels occur
};

Loaded load_set(const std::string& dir, const Role& images_role, const Role& labels_role) {
  const std::string images_path = find_file(dir, images_role), labels_path = find_file(dir, labels_role);
  IdxArray im = read(dir, images_path, true), lb = read(dir, labels_path, false);
  if (im.dims[0] != lb.dims[0])
    throw DataError(fmt::format("{} holds {} images but {} holds {} labels (expected one label per image)", images_path, im.dims[0],
                                labels_path, lb.dims[0]));
  if (im.dims[0] == 0) throw DataError(fmt::format("{}: no images", images_path));
  const int64_t channels = im.dims.size() == 4 ? im.dims[3] : 1;
  Loaded out;
  out.max_label = *std::max_element(lb.data.begin(), lb.data.end());
  for (uint8_t l : lb.data) out.seen[l] = true;
  auto pixels = std::make_shared<const std::vector<uint8_t>>(std::move(im.data));
  auto labels = std::make_shared<const std::vector<int32_t>>(lb.data.begin(), lb.data.end());
  out.set = ImageSet(pixels, labels, im.dims[1], im.dims[2], channels);
  return out;
}

int check_classes(int classes, int max_label, const std::vector<bool>& seen, const std::string& dir) {
  if (classes == 0) {
    if (max_label < 1) throw DataError(fmt::format("{}: every label is {} (expected at least two classes)", dir, max_label));
    // Classes from the labels: most of 0..max must occur, or one stray label (255, say) would
    // silently make a model of 256 classes.
    const int64_t present = std::count(seen.begin(), seen.begin() + max_label + 1, true);
    if (2 * present < max_label + 1)
      throw DataError(fmt::format("{}: the labels go up to {} but only {} of 0..{} occur (expected labels 0..classes-1; pass --classes {} "
                                  "if that many classes are meant)", dir, max_label, present, max_label, max_label + 1));
    return max_label + 1;
  }
  if (max_label >= classes)
    throw DataError(fmt::format("{}: a label is {}, not below --classes {} (expected labels 0..{})", dir, max_label, classes, classes - 1));
  return classes;
}

}  // namespace

ImageData load_image_data(const std::string& dir, int classes) {
  Loaded train = load_set(dir, kTrainImages, kTrainLabels), test = load_set(dir, kTestImages, kTestLabels);
  if (train.set.image_shape() != test.set.image_shape())
    throw DataError(fmt::format("{}: training images are {}, test images {} (expected the same shape)", dir,
                                shape_str(train.set.image_shape()), shape_str(test.set.image_shape())));
  std::vector<bool> seen(256);
  for (int l = 0; l < 256; ++l) seen[l] = train.seen[l] || test.seen[l];
  return {train.set, test.set, check_classes(classes, std::max(train.max_label, test.max_label), seen, dir)};
}

ImageSet load_test_images(const std::string& dir, int classes) {
  Loaded test = load_set(dir, kTestImages, kTestLabels);
  check_classes(classes, test.max_label, test.seen, dir);
  return test.set;
}

}  // namespace qnet
