// bench_train: seconds per epoch of the reference recipe, float and QAT, median of repeats.
//
//   build/bin/bench_train --epochs 2 --repeats 5 [--threads 2] [--isa avx512,avx2] [--data-dir DIR]
//
// Each repeat trains a float model and then a QAT model (8 bits) on each kernel path of --isa
// in turn (default: the active one, core/cpu.h), so all see the same machine conditions; the
// ratios are computed from the medians of one run.
#include <sys/resource.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "apps/common.h"
#include "core/cpu.h"
#include "core/parallel.h"
#include "data/mnist.h"
#include "layers/sequential.h"
#include "optim/trainer.h"
#include "quant/qat.h"

using namespace qnet;

int main(int argc, char** argv) {
  return run_app("bench_train", [&] {
    cxxopts::Options options("bench_train", "Time epochs of the reference training recipe");
    options.add_options()
        ("epochs", "Epochs per repeat", number_value("3"))
        ("repeats", "Independent runs", number_value("1"))
        ("isa", "Kernel paths to time, comma-separated: avx512, avx2, baseline (default: the active one)",
         cxxopts::value<std::string>()->default_value(""))
        ("data-dir", "MNIST folder", cxxopts::value<std::string>()->default_value(""));
    add_threads_option(options);
    const auto args = options.parse(argc, argv);
    const int epochs = static_cast<int>(int_option(args, "epochs", 1, 1000));
    const int64_t repeats = int_option(args, "repeats", 1, 1000);
    use_threads_option(args);
    const Mnist mnist = load_mnist(mnist_dir(args["data-dir"].as<std::string>()));
    const Split data = split_validation(mnist.train, 0.1);
    std::vector<Isa> paths;
    std::string list = args["isa"].as<std::string>();
    for (size_t at = 0; !list.empty() && at <= list.size();) {
      const size_t comma = std::min(list.find(',', at), list.size());
      const std::string name = list.substr(at, comma - at);
      const std::optional<Isa> isa = parse_isa(name);
      if (!isa) throw UsageError(fmt::format("--isa '{}' (expected avx512, avx2 or baseline, comma-separated)", name));
      if (*isa > cpu_isa()) throw UsageError(fmt::format("--isa {}: this CPU can run at most {}", name, isa_name(cpu_isa())));
      paths.push_back(*isa);
      at = comma + 1;
    }
    if (paths.empty()) paths.push_back(active_isa());
    std::vector<std::vector<double>> seconds(2 * paths.size());  // [path][float, QAT]
    for (int64_t r = 0; r < repeats; ++r)
      for (size_t path = 0; path < paths.size(); ++path)
        for (int mode = 0; mode < 2; ++mode) {
          set_isa(paths[path]);
          Rng rng(static_cast<uint64_t>(r + 1));
          Sequential model = mnist_reference_model(rng);
          if (mode == 1) prepare_qat(model, {.bits = 8, .observer = tfmot_observer()});  // train --qat's default
          Adam adam(model.parameters());
          FitOptions fo;
          fo.epochs = epochs;
          for (const EpochStats& e : fit(model, adam, data.train, data.validation, fo, rng)) {
            fmt::print("repeat {} {} {} epoch {}: {:.3f} s (loss {:.4f}, val_accuracy {:.4f})\n", r + 1, isa_name(paths[path]),
                       mode ? "qat" : "float", e.epoch, e.seconds, e.loss, e.val_accuracy);
            seconds[2 * path + mode].push_back(e.seconds);
          }
        }
    std::vector<double> median(seconds.size());
    for (size_t path = 0; path < paths.size(); ++path) {
      for (int mode = 0; mode < 2; ++mode) {
        std::vector<double>& s = seconds[2 * path + mode];
        std::sort(s.begin(), s.end());
        median[2 * path + mode] = s[s.size() / 2];
        fmt::print("{} {} epoch: median {:.3f} s, min {:.3f} s, max {:.3f} s over {} epochs\n", isa_name(paths[path]),
                   mode ? "qat  " : "float", median[2 * path + mode], s.front(), s.back(), s.size());
      }
      fmt::print("{} qat/float ratio {:.2f}", isa_name(paths[path]), median[2 * path + 1] / median[2 * path]);
      if (path > 0) fmt::print("; float epoch {:.2f}x the {} path's", median[2 * path] / median[0], isa_name(paths[0]));
      fmt::print("\n");
    }
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    fmt::print("{} threads; CPU can run {}; peak RSS {:.1f} MB\n", num_threads(), isa_name(cpu_isa()), ru.ru_maxrss / 1024.0);
    return 0;
  });
}
