// What the command-line programs share: one-line errors, option checks, small JSON output.
//
//   int main(int argc, char** argv) {
//     return run_app("train", [&] { ... parse with cxxopts, do the work ...; return 0; });
//   }
//
// run_app turns every exception into "NAME: error: WHAT" on stderr and a non-zero exit:
// 2 for bad usage (UsageError, cxxopts' parse errors), 1 for everything else.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <cxxopts.hpp>

namespace qnet {

class UsageError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

int run_app(const char* name, const std::function<int()>& body);
// For a program that is one rank of several (apps/distributed.h): errors name the rank (prefix)
// and end the whole job (exit, e.g. MPI_Abort) instead of returning.
void set_error_prefix(std::string prefix);
void set_error_exit(void (*exit)(int code));

// Numeric options are declared as text, `number_value("10")`, and read with int_option or
// real_option. These parse the whole value ("3abc", " 3", "1e999" and "0x10" are refused) and
// check the range in the option's own type before any narrowing, so no value is cut or
// half-read: a UsageError "--NAME 'VALUE' (expected an integer in MIN..MAX)" otherwise.
std::shared_ptr<const cxxopts::Value> number_value(const std::string& default_value);
int64_t int_option(const cxxopts::ParseResult& r, const std::string& name, int64_t min, int64_t max);
// A finite number in [min, max]; open_min / open_max exclude that end.
struct RealRange {
  double min, max;
  bool open_min = false, open_max = false;
};
double real_option(const cxxopts::ParseResult& r, const std::string& name, RealRange range);

// options.parse with what every program does next: prints --help (and returns nullopt: exit 0)
// and refuses stray arguments with a UsageError.
std::optional<cxxopts::ParseResult> parse_args(cxxopts::Options& options, int argc, char** argv);

// The --data-dir option of the programs that read image data (any IDX data set; MNIST by default).
void add_data_dir_option(cxxopts::Options& options);

// --threads N (0 = all cores): add_threads_option declares it, use_threads_option checks the
// value and sets the thread count (core/parallel.h). At most kMaxThreadsPerCore threads per
// hardware thread: beyond that OpenMP and oneDNN only fail (out of memory, crashes in libgomp).
inline constexpr int kMaxThreadsPerCore = 4;
int max_threads_option();
void add_threads_option(cxxopts::Options& options);
void use_threads_option(const cxxopts::ParseResult& args);

// An output folder (reproduce --out, samples --out): created if missing, refused unless it is
// a folder a file can be created in. Call it before the work.
void prepare_output_folder(const std::string& dir, const std::string& what);

bool stdout_is_terminal();

// The memory this process can still take: the machine's available memory (/proc/meminfo), or less
// under a cgroup limit (memory.max) or an address-space limit (ulimit -v); nullopt if unknown.
std::optional<int64_t> available_memory();
// Before any training: refuses (a UsageError with the figures and a way out) a model whose
// training at `batch` would need more memory than is available (optim/trainer.h's estimate).
class Module;
void check_training_memory(Module& model, const std::vector<int64_t>& input, int64_t batch);

// The message of a library error without the name of the function that threw it
// ("prepare_qat: ...", "calibrate_ptq: ..."): what a program's user reads.
std::string without_function_name(const std::string& what);

// The text of a --model option: the file it names if there is one (at most 1 MiB), else the
// option itself, a spec (layers/model_spec.h).
std::string spec_option_text(const std::string& value);

// A test hook: throws std::runtime_error("failpoint NAME") when the environment variable
// QNET_FAILPOINT equals NAME, so tests can prove that a failure at that point loses nothing
// (docs/hardening.md lists the points).
void failpoint(const char* name);

// A JSON value written by hand: objects keep insertion order.
class Json {
 public:
  static Json number(double v);
  static Json integer(int64_t v);
  static Json string(const std::string& v);
  static Json object();
  static Json array();
  Json& set(const std::string& key, Json value);  // objects
  Json& push(Json value);                         // arrays
  std::string dump(int indent = 2) const;

 private:
  enum class Kind { kNumber, kInteger, kString, kObject, kArray } kind_ = Kind::kObject;
  double number_ = 0;
  int64_t integer_ = 0;
  std::string string_;
  std::vector<std::pair<std::string, Json>> members_;
  std::vector<Json> items_;
  void dump_to(std::string& out, int indent, int depth) const;
};

}  // namespace qnet
