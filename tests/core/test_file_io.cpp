// Atomic writes: a failed write never leaves a truncated file under the final name.
#include <sys/resource.h>
#include <sys/stat.h>

#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "core/file_io.h"
#include "core/qbin.h"

using namespace qnet;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path();
  d /= fmt::format("qnet-test-{}-{}", name, ::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Files larger than `bytes` cannot be written while this lives (a full disk, as the kernel sees it).
struct FileSizeLimit {
  rlimit saved{};
  explicit FileSizeLimit(rlim_t bytes) {
    std::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG instead of killing the process
    getrlimit(RLIMIT_FSIZE, &saved);
    rlimit r = saved;
    r.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &r);
  }
  ~FileSizeLimit() { setrlimit(RLIMIT_FSIZE, &saved); }
};

}  // namespace

TEST_CASE("a write that fails half-way leaves the previous file and no temporary", "[core][io]") {
  const fs::path dir = fresh_dir("atomic");
  const fs::path path = dir / "metrics.json";
  write_file_atomic(path.string(), std::string_view("{\"old\": true}\n"));
  {
    FileSizeLimit limit(4096);
    const std::string big(100000, 'x');
    CHECK_THROWS_WITH(write_file_atomic(path.string(), std::string_view(big)),
                      Catch::Contains("write failed") && Catch::Contains("left unchanged"));
  }
  CHECK(slurp(path) == "{\"old\": true}\n");
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);  // no temporary left behind
  fs::remove_all(dir);
}

TEST_CASE("a model save that fails keeps the model saved before", "[core][io]") {
  const fs::path dir = fresh_dir("model");
  const std::string path = (dir / "model.qbin").string();
  qbin::Model small;
  small.layers.push_back({"Input", "input", {{"height", 1}}, {}, {}});
  qbin::save(small, path);
  const std::string before = slurp(path);
  qbin::Model big = small;
  big.layers[0].tensors.push_back(qbin::f32_tensor("kernel", Tensor::zeros({100000})));
  {
    FileSizeLimit limit(8192);
    CHECK_THROWS_AS(qbin::save(big, path), IoError);
  }
  CHECK(slurp(path) == before);
  CHECK(qbin::load(path).layers.size() == 1);
  fs::remove_all(dir);
}

TEST_CASE("a FIFO is refused at once instead of waiting for a writer", "[core][io]") {
  const std::string fifo = (std::filesystem::temp_directory_path() / fmt::format("qnet-fifo-{}", ::getpid())).string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(read_file(fifo, 1 << 20), Catch::Contains("not a regular file"));  // before the fix: blocked in open()
  CHECK_THROWS_WITH(read_file("/dev/null", 1 << 20), Catch::Contains("not a regular file"));
  std::filesystem::remove(fifo);
}

TEST_CASE("a write into a missing folder names the path", "[core][io]") {
  CHECK_THROWS_WITH(write_file_atomic("/nonexistent-qnet-dir/m.json", std::string_view("x")), Catch::Contains("/nonexistent-qnet-dir/m.json"));
}
