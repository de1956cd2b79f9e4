#include <zlib.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "core/random.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "data/image_data.h"

#include <filesystem>

#include <unistd.h>

#include "core/file_io.h"

using namespace qnet;

namespace {
std::vector<uint8_t> idx_bytes(std::vector<uint32_t> dims, size_t data_bytes) {
  std::vector<uint8_t> b{0, 0, 8, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
  for (size_t i = 0; i < data_bytes; ++i) b.push_back(static_cast<uint8_t>(i * 7));
  return b;
}

std::vector<uint8_t> gzip(const std::vector<uint8_t>& in) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::vector<uint8_t> out(deflateBound(&z, static_cast<uLong>(in.size())) + 32);
  z.next_in = const_cast<uint8_t*>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

ImageSet tiny_set(int64_t count) {
  auto pixels = std::make_shared<std::vector<uint8_t>>(count * 4);
  auto labels = std::make_shared<std::vector<int32_t>>(count);
  for (int64_t i = 0; i < count; ++i) {
    for (int p = 0; p < 4; ++p) (*pixels)[i * 4 + p] = static_cast<uint8_t>(i * 4 + p);
    (*labels)[i] = static_cast<int32_t>(i % 10);
  }
  return ImageSet(pixels, labels, 2, 2);
}
}  // namespace

TEST_CASE("the IDX reader accepts a valid file", "[data]") {
  const auto b = idx_bytes({3, 2, 2}, 12);
  const IdxArray a = parse_idx(b.data(), b.size(), 3, "test");
  CHECK(a.dims == std::vector<uint32_t>{3, 2, 2});
  REQUIRE(a.data.size() == 12);
  CHECK(a.data[5] == 35);
}

TEST_CASE("the IDX reader refuses malformed files", "[data]") {
  auto truncated = idx_bytes({3, 2, 2}, 11);
  CHECK_THROWS_WITH(parse_idx(truncated.data(), truncated.size(), 3, "t"), Catch::Contains("truncated or corrupt"));
  auto bad_magic = idx_bytes({3, 2, 2}, 12);
  bad_magic[0] = 0x1f;
  CHECK_THROWS_WITH(parse_idx(bad_magic.data(), bad_magic.size(), 3, "t"), Catch::Contains("bad magic"));
  auto bad_type = idx_bytes({3}, 3);
  bad_type[2] = 0x0d;
  CHECK_THROWS_WITH(parse_idx(bad_type.data(), bad_type.size(), 1, "t"), Catch::Contains("element type"));
  auto wrong_count = idx_bytes({4, 2, 2}, 12);  // header promises 16 bytes
  CHECK_THROWS_WITH(parse_idx(wrong_count.data(), wrong_count.size(), 3, "t"), Catch::Contains("expected 16"));
  auto wrong_rank = idx_bytes({12}, 12);
  CHECK_THROWS_WITH(parse_idx(wrong_rank.data(), wrong_rank.size(), 3, "t"), Catch::Contains("rank 1 (expected 3)"));
  auto short_header = idx_bytes({3, 2, 2}, 0);
  short_header.resize(9);
  CHECK_THROWS_WITH(parse_idx(short_header.data(), short_header.size(), 3, "t"), Catch::Contains("truncated header"));
  CHECK_THROWS(read_idx("/nonexistent/qnet-file", 1));
}

TEST_CASE("gzip-compressed IDX bytes are read as the canonical downloads come", "[data]") {
  const auto plain = idx_bytes({3, 2, 2}, 12);
  const auto gz = gzip(plain);
  REQUIRE(gz[0] == 0x1f);
  CHECK(gunzip_if_compressed(gz, 1 << 20, "t.gz") == plain);  // before: "bad magic 1f8b"
  CHECK(gunzip_if_compressed(plain, 1 << 20, "t") == plain);  // uncompressed bytes pass through
  auto truncated = gz;
  truncated.resize(gz.size() - 6);
  CHECK_THROWS_WITH(gunzip_if_compressed(truncated, 1 << 20, "t.gz"), Catch::Contains("t.gz: damaged gzip data"));
  auto flipped = gz;
  flipped[gz.size() - 5] ^= 0xff;  // the stored CRC-32
  CHECK_THROWS_WITH(gunzip_if_compressed(flipped, 1 << 20, "t.gz"), Catch::Contains("damaged gzip data"));
  const auto bomb = gzip(std::vector<uint8_t>(3 << 20, 0));  // 3 MB of zeros in a few KB
  CHECK_THROWS_WITH(gunzip_if_compressed(bomb, 1 << 20, "b.gz"), Catch::Contains("expands past 1048576 bytes"));
  CHECK(gunzip_if_compressed(bomb, 3 << 20, "b.gz").size() == (3u << 20));  // exactly at the bound is fine
}

TEST_CASE("gzip: every member of a multi-member file, nothing after the last, no more than the IDX header says (issue 22, item 10)", "[data]") {
  const auto plain = idx_bytes({3, 2, 2}, 12);
  // gzip -c head > f; gzip -c data >> f (as bgzip and pigz write): before, refused as truncated.
  auto multi = gzip(std::vector<uint8_t>(plain.begin(), plain.begin() + 10));
  const auto second = gzip(std::vector<uint8_t>(plain.begin() + 10, plain.end()));
  multi.insert(multi.end(), second.begin(), second.end());
  CHECK(gunzip_if_compressed(multi, 1 << 20, "m.gz") == plain);
  // Bytes after the last member: before, silently ignored.
  auto trailing = gzip(plain);
  trailing.push_back('x');
  CHECK_THROWS_WITH(gunzip_if_compressed(trailing, 1 << 20, "t.gz"), Catch::Contains("t.gz: 1 bytes after the gzip data"));
  // A file whose header claims 12 images of 28x28 but whose gzip data expands to 2 GB of zeros is
  // stopped at the header's size: before, refused only past 2 GiB (22 s, a 3.1 GB peak).
  auto claim = idx_bytes({12, 28, 28}, 12 * 784);
  claim.resize(claim.size() + (64 << 20), 0);  // 64 MB more zeros than the header says
  const std::string path = "/tmp/qnet_test_bomb_idx.gz";
  write_file_atomic(path, gzip(claim));
  CHECK_THROWS_WITH(read_idx(path, 3), Catch::Contains("its gzip data holds more than the 9424 bytes its IDX header says"));
  write_file_atomic(path, multi);
  CHECK(read_idx(path, 3).dims == std::vector<uint32_t>{3, 2, 2});
  std::remove(path.c_str());
}

TEST_CASE("shuffling is determined by the seed", "[data]") {
  std::vector<int64_t> a(1000), b(1000), c(1000);
  for (int i = 0; i < 1000; ++i) a[i] = b[i] = c[i] = i;
  Rng r1(42), r2(42), r3(43);
  r1.shuffle(a), r2.shuffle(b), r3.shuffle(c);
  CHECK(a == b);
  CHECK(a != c);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 1000; ++i) REQUIRE(sorted[i] == i);  // a permutation
}

TEST_CASE("the validation split takes the end of the set, as Keras does", "[data]") {
  const ImageSet all = tiny_set(60);
  const Split s = split_validation(all, 0.1);
  CHECK(s.train.size() == 54);
  CHECK(s.validation.size() == 6);
  CHECK(s.validation.label(0) == all.label(54));
  CHECK(s.validation.image(5)[3] == all.image(59)[3]);
  CHECK_THROWS(split_validation(all, 1.0));
  CHECK_THROWS(split_validation(all, -0.1));
}

TEST_CASE("batches are normalised to [0, 1] from the uint8 pixels", "[data]") {
  const ImageSet all = tiny_set(10);
  const std::vector<int64_t> idx{3, 0};
  const Batch b = all.batch(idx);
  CHECK(b.x.shape() == Shape{2, 2, 2, 1});
  CHECK(b.x[0] == 12.f / 255.f);
  CHECK(b.x[7] == 3.f / 255.f);
  CHECK(b.labels == std::vector<int32_t>{3, 0});
}

namespace {
// A data set folder with the given image dims (first = count) and label count per split.
std::string idx_folder(const std::string& name, std::vector<uint32_t> train_dims, uint32_t train_labels, std::vector<uint32_t> test_dims,
                       uint32_t test_labels) {
  const std::string dir = (std::filesystem::temp_directory_path() / fmt::format("qnet-idx-{}-{}", name, ::getpid())).string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto images = [](std::vector<uint32_t> dims) {
    size_t n = 1;
    for (uint32_t d : dims) n *= d;
    return idx_bytes(dims, n);
  };
  auto labels = [](uint32_t n) {
    auto b = idx_bytes({n}, n);
    for (uint32_t i = 0; i < n; ++i) b[8 + i] = static_cast<uint8_t>(i % 3);  // classes 0..2
    return b;
  };
  const auto rank = [](const std::vector<uint32_t>& d) { return std::to_string(d.size()); };
  write_file_atomic(dir + "/train-images-idx" + rank(train_dims) + "-ubyte", images(train_dims));
  write_file_atomic(dir + "/train-labels-idx1-ubyte", labels(train_labels));
  write_file_atomic(dir + "/t10k-images-idx" + rank(test_dims) + "-ubyte.gz", gzip(images(test_dims)));
  write_file_atomic(dir + "/t10k-labels-idx1-ubyte", labels(test_labels));
  return dir;
}
}  // namespace

TEST_CASE("any IDX data set loads with its own shape and class count, and inconsistent ones are refused", "[data]") {
  const std::string ok = idx_folder("ok", {6, 5, 4, 3}, 6, {4, 5, 4, 3}, 4);
  const ImageData d = load_image_data(ok);
  CHECK(d.train.image_shape() == Shape{5, 4, 3});
  CHECK(d.test.size() == 4);
  CHECK(d.classes == 3);
  CHECK(load_image_data(ok, 7).classes == 7);
  CHECK(d.train.batch(0, 2).x.shape() == Shape{2, 5, 4, 3});
  CHECK(d.train.image(1)[0] == static_cast<uint8_t>(60 * 7));  // image 1 starts 5*4*3 bytes in
  CHECK_THROWS_WITH(load_image_data(ok, 2), Catch::Contains("a label is 2, not below --classes 2"));
  const std::string counts = idx_folder("counts", {6, 5, 4}, 5, {4, 5, 4}, 4);
  CHECK_THROWS_WITH(load_image_data(counts), Catch::Contains("holds 6 images but") && Catch::Contains("holds 5 labels"));
  const std::string shapes = idx_folder("shapes", {6, 5, 4}, 6, {4, 4, 5}, 4);
  CHECK_THROWS_WITH(load_image_data(shapes), Catch::Contains("training images are [5, 4, 1], test images [4, 5, 1]"));
  const std::string channels = idx_folder("channels", {6, 5, 4, 5}, 6, {4, 5, 4, 5}, 4);
  CHECK_THROWS_WITH(load_image_data(channels), Catch::Contains("5 channels (expected 1..4)"));
  const std::string rank2 = idx_folder("rank2", {6, 20}, 6, {4, 20}, 4);
  CHECK_THROWS_WITH(load_image_data(rank2), Catch::Contains("rank 2 (expected 3)"));
  CHECK(load_test_images(ok).size() == 4);  // the training files are not read
  std::filesystem::remove(ok + "/train-images-idx4-ubyte");
  CHECK(load_test_images(ok).size() == 4);
  CHECK_THROWS_WITH(load_image_data(ok), Catch::Contains("no training images file"));
  for (const std::string& dir : {ok, counts, shapes, channels, rank2}) std::filesystem::remove_all(dir);
}

TEST_CASE("classes come from the labels only when most of them occur: one stray 255 is refused (issue 22, item 12)", "[data]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "qnet_test_stray_label";
  fs::create_directories(dir);
  std::vector<uint8_t> labels(40);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<uint8_t>(i % 10);
  labels.back() = 255;  // one label far outside 0..9
  const auto images = idx_bytes({40, 2, 2}, 160);
  std::vector<uint8_t> label_file = {0, 0, 8, 1, 0, 0, 0, 40};
  label_file.insert(label_file.end(), labels.begin(), labels.end());
  for (const char* role : {"train", "t10k"}) {
    write_file_atomic((dir / fmt::format("{}-images-idx3-ubyte", role)).string(), images);
    write_file_atomic((dir / fmt::format("{}-labels-idx1-ubyte", role)).string(), label_file);
  }
  CHECK_THROWS_WITH(load_image_data(dir.string()), Catch::Contains("the labels go up to 255 but only 11 of 0..255 occur") &&
                                                       Catch::Contains("pass --classes 256 if that many classes are meant"));
  CHECK(load_image_data(dir.string(), 256).classes == 256);  // asked for: taken
  fs::remove_all(dir);
}
