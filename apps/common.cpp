#include "apps/common.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include <sys/resource.h>

#include "apps/distributed.h"
#include "core/file_io.h"
#include "io/qbin.h"
#include "layers/module.h"
#include "optim/trainer.h"
#include "core/parallel.h"

namespace qnet {

namespace {
std::string g_error_prefix;
void (*g_error_exit)(int code) = nullptr;

int failed(const char* name, const std::string& what, const char* help, int code) {
  fmt::print(stderr, "{}: error: {}{}{}\n", name, g_error_prefix, what, help ? fmt::format(" (see {} --help)", help) : "");
  std::fflush(stderr);
  if (g_error_exit) g_error_exit(code);
  return code;
}
}  // namespace

void set_error_prefix(std::string prefix) { g_error_prefix = std::move(prefix); }
void set_error_exit(void (*exit)(int code)) { g_error_exit = exit; }

int run_app(const char* name, const std::function<int()>& body) {
  remove_temporaries_on_signal();
  try {
    return body();
  } catch (const UsageError& e) {
    return failed(name, e.what(), name, 2);
  } catch (const cxxopts::exceptions::exception& e) {
    return failed(name, e.what(), name, 2);
  } catch (const std::exception& e) {
    return failed(name, e.what(), nullptr, 1);
  }
}

std::shared_ptr<const cxxopts::Value> number_value(const std::string& default_value) {
  return cxxopts::value<std::string>()->default_value(default_value);
}

int64_t int_option(const cxxopts::ParseResult& r, const std::string& name, int64_t min, int64_t max) {
  const std::string text = r[name].as<std::string>();
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v < min || v > max)
    throw UsageError(fmt::format("--{} '{}' (expected an integer in {}..{})", name, text, min, max));
  return v;
}

double real_option(const cxxopts::ParseResult& r, const std::string& name, RealRange range) {
  const std::string text = r[name].as<std::string>();
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  const bool above_min = range.open_min ? v > range.min : v >= range.min;
  const bool below_max = range.open_max ? v < range.max : v <= range.max;
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v) || !above_min || !below_max)
    throw UsageError(fmt::format("--{} '{}' (expected a number in {}{}, {}{})", name, text, range.open_min ? "(" : "[", range.min,
                                 range.max, range.open_max ? ")" : "]"));
  return v;
}

std::optional<cxxopts::ParseResult> parse_args(cxxopts::Options& options, int argc, char** argv) {
  cxxopts::ParseResult args = options.parse(argc, argv);
  if (args.count("help")) {
    fmt::print("{}\n", options.help());
    return std::nullopt;
  }
  if (!args.unmatched().empty()) throw UsageError(fmt::format("unexpected argument '{}'", args.unmatched()[0]));
  return args;
}

void add_data_dir_option(cxxopts::Options& options) {
  options.add_options()("data-dir", "Folder with the four IDX files of a data set, plain or .gz (default $QNET_DATA_DIR or "
                        "~/.cache/qnet/mnist: MNIST)",
                        cxxopts::value<std::string>()->default_value(""));
}

int max_threads_option() { return kMaxThreadsPerCore * max_hardware_threads(); }

void add_threads_option(cxxopts::Options& options) {
  options.add_options()("threads", fmt::format("Threads (0 = all cores; at most {} per core)", kMaxThreadsPerCore),
                        number_value("0"));
}

void use_threads_option(const cxxopts::ParseResult& args) {
  set_num_threads(static_cast<int>(int_option(args, "threads", 0, max_threads_option())));
  // Left out under mpirun: the machine's cores shared among its ranks (apps/distributed.h).
  if (!args.count("threads") && local_ranks() > 1) set_num_threads(std::max(1, max_hardware_threads() / local_ranks()));
}

void prepare_output_folder(const std::string& dir, const std::string& what) {
  namespace fs = std::filesystem;
  if (dir.empty()) throw IoError(fmt::format("{} '': an empty path (expected a folder)", what));
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) throw IoError(fmt::format("{} {}: not a folder", what, dir));
  fs::create_directories(dir, ec);
  if (ec) throw IoError(fmt::format("{} {}: cannot create the folder ({})", what, dir, ec.message()));
  check_output_path((fs::path(dir) / ".qnet-write-check").string(), what);
}

bool stdout_is_terminal() { return ::isatty(STDOUT_FILENO) == 1; }

void failpoint(const char* name) {
  const char* armed = std::getenv("QNET_FAILPOINT");
  if (armed && std::strcmp(armed, name) == 0) throw std::runtime_error(fmt::format("failpoint {}", name));
}

Json Json::number(double v) {
  Json j;
  j.kind_ = Kind::kNumber, j.number_ = v;
  return j;
}
Json Json::integer(int64_t v) {
  Json j;
  j.kind_ = Kind::kInteger, j.integer_ = v;
  return j;
}
Json Json::string(const std::string& v) {
  Json j;
  j.kind_ = Kind::kString, j.string_ = v;
  return j;
}
Json Json::object() { return Json(); }
Json Json::array() {
  Json j;
  j.kind_ = Kind::kArray;
  return j;
}
Json& Json::set(const std::string& key, Json value) {
  members_.emplace_back(key, std::move(value));
  return *this;
}
Json& Json::push(Json value) {
  items_.push_back(std::move(value));
  return *this;
}

namespace {
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += static_cast<char>(c);
    else if (c < 0x20) out += fmt::format("\\u{:04x}", c);
    else out += static_cast<char>(c);
  }
  return out + "\"";
}
}  // namespace

void Json::dump_to(std::string& out, int indent, int depth) const {
  const std::string pad = indent > 0 ? "\n" + std::string(indent * (depth + 1), ' ') : "";
  const std::string end_pad = indent > 0 ? "\n" + std::string(indent * depth, ' ') : "";
  const char* sep = indent > 0 ? "," : ", ";
  switch (kind_) {
    case Kind::kNumber: out += std::isfinite(number_) ? fmt::format("{}", number_) : "null"; break;
    case Kind::kInteger: out += std::to_string(integer_); break;
    case Kind::kString: out += quote(string_); break;
    case Kind::kObject:
      out += '{';
      for (size_t i = 0; i < members_.size(); ++i) {
        out += (i ? sep : "") + pad + quote(members_[i].first) + ": ";
        members_[i].second.dump_to(out, indent, depth + 1);
      }
      out += (members_.empty() ? "" : end_pad) + "}";
      break;
    case Kind::kArray:
      out += '[';
      for (size_t i = 0; i < items_.size(); ++i) {
        out += (i ? sep : "") + pad;
        items_[i].dump_to(out, indent, depth + 1);
      }
      out += (items_.empty() ? "" : end_pad) + "]";
      break;
  }
}

std::string Json::dump(int indent) const {
  std::string out;
  dump_to(out, indent, 0);
  return out;
}

std::optional<int64_t> available_memory() {
  std::optional<int64_t> best;
  auto take = [&](int64_t v) { best = best ? std::min(*best, v) : v; };
  if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    long long kb = 0;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "MemAvailable: %lld kB", &kb) == 1) take(kb * 1024);
    std::fclose(f);
  }
  auto read_number = [](const char* path) -> std::optional<int64_t> {
    std::FILE* f = std::fopen(path, "r");
    if (!f) return std::nullopt;
    long long v = 0;
    const bool ok = std::fscanf(f, "%lld", &v) == 1;  // "max" reads as no number
    std::fclose(f);
    return ok ? std::optional<int64_t>(v) : std::nullopt;
  };
  const auto limit = read_number("/sys/fs/cgroup/memory.max"), used = read_number("/sys/fs/cgroup/memory.current");
  if (limit && used) take(*limit - *used);
  struct rlimit rl {};
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    take(static_cast<int64_t>(rl.rlim_cur) - int64_t{ru.ru_maxrss} * 1024);
  }
  return best;
}

void check_training_memory(Module& model, const std::vector<int64_t>& input, int64_t batch) {
  const MemoryEstimate e = estimate_training_memory(model, input, batch);
  const std::optional<int64_t> free = available_memory();
  if (!free || e.total() <= *free) return;
  const auto gb = [](int64_t bytes) { return static_cast<double>(bytes) / 1e9; };
  throw UsageError(fmt::format(
      "training this model at batch {} needs about {:.1f} GB (parameters with their gradients and Adam's state {:.1f} GB, each step's "
      "activations {:.1f} GB, evaluation {:.1f} GB), more than the {:.1f} GB available: use fewer or smaller layers{}",
      batch, gb(e.total()), gb(e.parameters), gb(e.step), gb(e.evaluation), gb(*free), e.step > e.evaluation ? ", or a smaller --batch-size" : ""));
}

std::string without_function_name(const std::string& what) {
  for (const char* name : {"prepare_qat: ", "calibrate_ptq: ", "export: "})
    if (what.rfind(name, 0) == 0) return what.substr(std::char_traits<char>::length(name));
  return what;
}

std::string spec_option_text(const std::string& value) {
  std::error_code ec;
  if (value.empty()) return value;
  if (std::filesystem::is_directory(value, ec))
    throw UsageError(fmt::format("--model {} is a folder (expected a model spec or a file holding one)", qbin::shown(value)));
  if (!std::filesystem::is_regular_file(value, ec)) {
    // A spec has no '/' and does not end in ".spec": such a value names a file, which is missing.
    const bool path_like = value.find('/') != std::string::npos ||
                           (value.size() > 5 && value.compare(value.size() - 5, 5, ".spec") == 0 && value.find('(') == std::string::npos);
    if (path_like)
      throw UsageError(fmt::format("--model {}: no such file (expected a model spec, or a file holding one: docs/tutorial.md)",
                                   qbin::shown(value)));
    return value;
  }
  const std::vector<uint8_t> text = read_file(value, 1 << 20);
  return std::string(text.begin(), text.end());
}

}  // namespace qnet
