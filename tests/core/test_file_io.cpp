// Atomic writes: a failed write never leaves a truncated file under the final name.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "core/file_io.h"
#include "io/qbin.h"

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

namespace {
bool is_temporary_of(const fs::path& p, const std::string& name) {
  return p.filename().string().rfind(name + ".tmp.", 0) == 0;
}
int count_temporaries(const fs::path& dir, const std::string& name) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += is_temporary_of(e.path(), name);
  return n;
}
pid_t dead_pid() {  // a child that has exited and been reaped
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}
}  // namespace

TEST_CASE("a FIFO, a device or a folder as an output is refused and left as it was", "[core][io]") {
  const fs::path dir = fresh_dir("special");
  const std::string fifo = (dir / "out.fifo").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(write_file_atomic(fifo, std::string_view("x")), Catch::Contains("not a regular file"));
  CHECK_THROWS_WITH(check_output_path(fifo, "-o"), Catch::Contains("-o " + fifo + ": not a regular file"));
  CHECK(fs::is_fifo(fifo));  // before the fix: renamed over, a regular file
  CHECK_THROWS_WITH(write_file_atomic(dir.string(), std::string_view("x")), Catch::Contains("a folder"));
  CHECK(fs::is_directory(dir));
  if (::geteuid() == 0) {  // mknod needs root; the FIFO above covers the same rule without it
    const std::string dev = (dir / "null").string();
    REQUIRE(::mknod(dev.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0);
    CHECK_THROWS_WITH(write_file_atomic(dev, std::string_view("x")), Catch::Contains("never replaced"));
    CHECK(fs::is_character_file(dev));
  }
  CHECK(count_temporaries(dir, "out.fifo") == 0);
  fs::remove_all(dir);
}

TEST_CASE("an output that is a symbolic link is written through to its target", "[core][io]") {
  const fs::path dir = fresh_dir("symlink");
  fs::create_directories(dir / "real");
  write_file_atomic((dir / "real" / "m.qbin").string(), std::string_view("old"));
  fs::create_symlink("real/m.qbin", dir / "link1");
  fs::create_symlink(dir / "link1", dir / "link2");  // a chain, absolute then relative
  write_file_atomic((dir / "link2").string(), std::string_view("new"));
  CHECK(fs::is_symlink(dir / "link1"));
  CHECK(fs::is_symlink(dir / "link2"));
  CHECK(slurp(dir / "real" / "m.qbin") == "new");
  CHECK(output_target((dir / "link2").string()) == (dir / "real/m.qbin").string());
  fs::create_symlink("real/new.qbin", dir / "dangling");  // a link to a file yet to be made
  write_file_atomic((dir / "dangling").string(), std::string_view("made"));
  CHECK(slurp(dir / "real" / "new.qbin") == "made");
  CHECK(fs::is_symlink(dir / "dangling"));
  fs::create_symlink("loop", dir / "loop");
  CHECK_THROWS_WITH(write_file_atomic((dir / "loop").string(), std::string_view("x")), Catch::Contains("symbolic links"));
  fs::remove_all(dir);
}

TEST_CASE("paths are compared as files, whether they exist or not", "[core][io]") {
  const fs::path dir = fresh_dir("same");
  const std::string a = (dir / "a.qbin").string();
  CHECK(same_file(a, (dir / "." / "a.qbin").string()));  // neither exists yet
  fs::create_directories(dir / "x");
  CHECK(same_file(a, (dir / "x" / ".." / "a.qbin").string()));
  CHECK_FALSE(same_file(a, (dir / "b.qbin").string()));
  write_file_atomic(a, std::string_view("x"));
  fs::create_symlink("a.qbin", dir / "link");
  fs::create_hard_link(a, dir / "hard");
  CHECK(same_file(a, (dir / "link").string()));
  CHECK(same_file((dir / "hard").string(), (dir / "link").string()));
  CHECK_FALSE(same_file(a, (dir / "b.qbin").string()));
  const fs::path cwd = fs::current_path();
  fs::current_path(dir);
  CHECK(same_file("a.qbin", a));
  CHECK(same_file("./a.qbin", "a.qbin"));
  fs::current_path(cwd);
  fs::remove_all(dir);
}

TEST_CASE("check_output_path fails before the work for every output that cannot be written", "[core][io]") {
  const fs::path dir = fresh_dir("check");
  CHECK_THROWS_WITH(check_output_path("", "-o"), Catch::Contains("-o '': an empty path"));
  CHECK_THROWS_WITH(check_output_path((dir / "missing" / "m.qbin").string(), "--metrics"), Catch::Contains("does not exist"));
  write_file_atomic((dir / "file").string(), std::string_view("x"));
  CHECK_THROWS_WITH(check_output_path((dir / "file" / "m.qbin").string(), "-o"), Catch::Contains("is not a folder"));
  CHECK_THROWS_WITH(check_output_path("/proc/qnet-m.qbin", "-o"), Catch::Contains("cannot create a file in folder /proc"));
  CHECK_NOTHROW(check_output_path((dir / "m.qbin").string(), "-o"));
  CHECK_NOTHROW(check_output_path((dir / "file").string(), "-o"));
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);  // the probe left nothing
  CHECK(slurp(dir / "file") == "x");
  fs::remove_all(dir);
}

TEST_CASE("a save removes the temporaries of its own file that a killed process left", "[core][io]") {
  const fs::path dir = fresh_dir("stale");
  const pid_t gone = dead_pid();
  const std::string stale = (dir / fmt::format("m.qbin.tmp.{}.0", gone)).string();
  const std::string live = (dir / fmt::format("m.qbin.tmp.{}.7", ::getppid())).string();  // a process that exists
  const std::string other = (dir / fmt::format("n.qbin.tmp.{}.0", gone)).string();      // another file's
  const std::string odd = (dir / "m.qbin.tmp.notapid.0").string();
  for (const std::string& p : {stale, live, other, odd}) write_file_atomic(p, std::string_view("82 KB of a model"));
  write_file_atomic((dir / "m.qbin").string(), std::string_view("model"));
  CHECK_FALSE(fs::exists(stale));
  CHECK(fs::exists(live));
  CHECK(fs::exists(other));
  CHECK(fs::exists(odd));
  CHECK(slurp(dir / "m.qbin") == "model");
  fs::remove_all(dir);
}

TEST_CASE("SIGINT during a save removes the temporary and still stops the process", "[core][io]") {
  const fs::path dir = fresh_dir("sigint");
  const std::string path = (dir / "m.qbin").string();
  const pid_t child = ::fork();
  if (child == 0) {
    remove_temporaries_on_signal();
    const std::string big(64 << 20, 'x');  // long enough that the temporary is there most of the time
    for (;;) write_file_atomic(path, std::string_view(big));
  }
  bool seen = false;
  for (int i = 0; i < 20000 && !seen; ++i) {  // up to 20 s
    for (const auto& e : fs::directory_iterator(dir)) seen = seen || is_temporary_of(e.path(), "m.qbin");
    if (!seen) ::usleep(1000);
  }
  ::kill(child, SIGINT);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(seen);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGINT);  // the default action still runs after the clean-up
  CHECK(count_temporaries(dir, "m.qbin") == 0);  // before the fix: m.qbin.tmp.PID.N stayed
  if (fs::exists(path)) CHECK(fs::file_size(path) == (64u << 20));  // whole or absent, never torn
  fs::remove_all(dir);
}
