#include "core/file_io.h"

#include <atomic>
#include <charconv>
#include <filesystem>
#include <mutex>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>

#include <fmt/format.h>

namespace qnet {

std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO for reading would wait for a writer forever; this way the open
  // returns and fstat refuses it like any other file that is not regular (no effect on files).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw IoError(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(fmt::format("{}: not a regular file (expected a file, not a FIFO, device or folder)", path));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    throw IoError(fmt::format("{}: {} bytes, more than the {} allowed", path, st.st_size, max_bytes));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      throw IoError(fmt::format("{}: read failed after {} of {} bytes", path, done, bytes.size()));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return bytes;
}

namespace {

namespace fs = std::filesystem;

// Temporaries in flight, for the signal handler: fixed slots, no allocation, only atomics and
// unlink(2) (async-signal-safe) in the handler.
constexpr int kSlots = 16;
struct TempSlot {
  std::atomic<bool> used{false};
  std::atomic<bool> armed{false};
  char path[4096];
};
TempSlot g_slots[kSlots];

class TempRegistration {
 public:
  explicit TempRegistration(const std::string& path) {
    if (path.size() >= sizeof(g_slots[0].path)) return;
    for (TempSlot& s : g_slots) {
      bool expected = false;
      if (!s.used.compare_exchange_strong(expected, true)) continue;
      std::memcpy(s.path, path.c_str(), path.size() + 1);
      s.armed.store(true, std::memory_order_release);
      slot_ = &s;
      return;
    }
  }
  ~TempRegistration() {
    if (!slot_) return;
    slot_->armed.store(false, std::memory_order_release);
    slot_->used.store(false, std::memory_order_release);
  }
  TempRegistration(const TempRegistration&) = delete;
  TempRegistration& operator=(const TempRegistration&) = delete;

 private:
  TempSlot* slot_ = nullptr;
};

void unlink_temporaries_and_die(int sig) {
  for (TempSlot& s : g_slots)
    if (s.armed.load(std::memory_order_acquire)) ::unlink(s.path);
  // SA_RESETHAND restored the default action; the signal is blocked while this runs and is
  // delivered again, with that default action, when the handler returns.
  ::raise(sig);
}

fs::path folder_of(const std::string& target) {
  const fs::path parent = fs::path(target).parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

// "NAME.tmp.PID.N" for target NAME -> PID, or -1 when `entry` is not one of its temporaries.
long temporary_pid(const std::string& entry, const std::string& name) {
  const std::string prefix = name + ".tmp.";
  if (entry.size() <= prefix.size() || entry.compare(0, prefix.size(), prefix) != 0) return -1;
  long pid = 0;
  const char* p = entry.c_str() + prefix.size();
  const auto [dot, ec] = std::from_chars(p, entry.c_str() + entry.size(), pid);
  if (ec != std::errc() || dot == p || *dot != '.' || dot[1] == '\0' || pid <= 0) return -1;
  for (const char* q = dot + 1; *q; ++q)
    if (*q < '0' || *q > '9') return -1;
  return pid;
}

// Removes the temporaries of `target` whose writing process no longer exists (a save killed by
// SIGKILL or a crash). Best effort: a folder that cannot be listed is left as it is.
void remove_stale_temporaries(const std::string& target) {
  const std::string name = fs::path(target).filename().string();
  std::error_code ec;
  for (fs::directory_iterator it(folder_of(target), ec), end; !ec && it != end; it.increment(ec)) {
    const long pid = temporary_pid(it->path().filename().string(), name);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) ::unlink(it->path().c_str());
  }
}

// A fresh temporary's name beside `target`: unique per call, since threads may save at once.
std::string temporary_name(const std::string& target) {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}.tmp.{}.{}", target, ::getpid(), counter++);
}

// Creates `tmp`. Register it (TempRegistration) before: a signal between the creation and a
// later registration would leave the file behind.
int create_temporary(const std::string& tmp) { return ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644); }

std::string folder_problem(const std::string& target, int err) {
  const std::string folder = folder_of(target).string();
  std::error_code ec;
  if (err == ENOENT && !fs::exists(folder, ec)) return fmt::format("folder {} does not exist", folder);
  if (err == ENOTDIR) return fmt::format("{} is not a folder", folder);
  return fmt::format("cannot create a file in folder {} ({})", folder, std::strerror(err));
}

// Refuses an existing target that is not a regular file.
void require_regular_or_missing(const std::string& path, const std::string& target, const std::string& what) {
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw IoError(fmt::format("{}{}: not a regular file ({}; expected a path to a regular file or to a new one)", what, path,
                              S_ISDIR(st.st_mode) ? "a folder" : "a device, FIFO or socket is never replaced"));
}

}  // namespace

std::string output_target(const std::string& path) {
  fs::path p = path;
  for (int hops = 0; hops < 40; ++hops) {
    std::error_code ec;
    if (!fs::is_symlink(fs::symlink_status(p, ec)) || ec) return p.string();
    const fs::path link = fs::read_symlink(p, ec);
    if (ec) return p.string();
    p = link.is_absolute() ? link : p.parent_path() / link;
  }
  throw IoError(fmt::format("{}: too many levels of symbolic links", path));
}

void check_output_path(const std::string& path, const std::string& what) {
  if (path.empty()) throw IoError(fmt::format("{} '': an empty path (expected a file name)", what));
  const std::string target = output_target(path);
  require_regular_or_missing(path, target, what + " ");
  const std::string tmp = temporary_name(target);
  const TempRegistration registration(tmp);
  const int fd = create_temporary(tmp);
  if (fd < 0) throw IoError(fmt::format("{} {}: {}", what, path, folder_problem(target, errno)));
  ::close(fd);
  ::unlink(tmp.c_str());
}

bool same_file(const std::string& a, const std::string& b) {
  const fs::path ta = output_target(a), tb = output_target(b);
  std::error_code ea, eb;
  if (fs::exists(ta, ea) && fs::exists(tb, eb)) return fs::equivalent(ta, tb, ea);
  return fs::weakly_canonical(fs::absolute(ta), ea) == fs::weakly_canonical(fs::absolute(tb), eb);
}

void remove_temporaries_on_signal() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = unlink_temporaries_and_die;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM}) ::sigaction(sig, &sa, nullptr);
  });
}

void write_file_atomic(const std::string& path, std::string_view data) {
  if (path.empty()) throw IoError("an empty output path (expected a file name)");
  const std::string target = output_target(path);
  require_regular_or_missing(path, target, "");
  remove_stale_temporaries(target);
  const std::string tmp = temporary_name(target);
  const TempRegistration registration(tmp);
  const int fd = create_temporary(tmp);
  if (fd < 0) throw IoError(fmt::format("{}: {}", path, folder_problem(target, errno)));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw IoError(fmt::format("{}: write failed ({}); {} left unchanged", tmp, std::strerror(err), path));
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const int sync_err = errno;
  if (::close(fd) != 0 || !synced) {
    const int err = synced ? errno : sync_err;
    ::unlink(tmp.c_str());
    throw IoError(fmt::format("{}: cannot flush ({}); {} left unchanged", tmp, std::strerror(err), path));
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw IoError(fmt::format("{}: cannot rename into place ({})", path, std::strerror(err)));
  }
}

void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace qnet
