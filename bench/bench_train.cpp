// bench_train: seconds per epoch of the reference recipe, float and QAT, median of repeats.
//
//   build/bin/bench_train --epochs 2 --repeats 5 [--threads 2] [--data-dir DIR]
//
// Each repeat trains a float model and then a QAT model (8 bits), so both see the same
// machine conditions; the QAT/float ratio is computed from the medians of one run.
#include <sys/resource.h>

#include <algorithm>

#include <fmt/format.h>

#include "apps/common.h"
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
        ("epochs", "Epochs per repeat", cxxopts::value<int64_t>()->default_value("3"))
        ("repeats", "Independent runs", cxxopts::value<int64_t>()->default_value("1"))
        ("data-dir", "MNIST folder", cxxopts::value<std::string>()->default_value(""));
    add_threads_option(options);
    const auto args = options.parse(argc, argv);
    require_int_at_least(args, "epochs", 1);
    require_int_at_least(args, "repeats", 1);
    use_threads_option(args);
    const Mnist mnist = load_mnist(mnist_dir(args["data-dir"].as<std::string>()));
    const Split data = split_validation(mnist.train, 0.1);
    std::vector<double> seconds[2];  // float, QAT
    for (int64_t r = 0; r < args["repeats"].as<int64_t>(); ++r)
      for (int mode = 0; mode < 2; ++mode) {
        Rng rng(static_cast<uint64_t>(r + 1));
        Sequential model = mnist_reference_model(rng);
        if (mode == 1) prepare_qat(model, {.bits = 8, .observer = tfmot_observer()});  // train --qat's default
        Adam adam(model.parameters());
        FitOptions fo;
        fo.epochs = static_cast<int>(args["epochs"].as<int64_t>());
        for (const EpochStats& e : fit(model, adam, data.train, data.validation, fo, rng)) {
          fmt::print("repeat {} {} epoch {}: {:.3f} s (loss {:.4f}, val_accuracy {:.4f})\n", r + 1, mode ? "qat" : "float",
                     e.epoch, e.seconds, e.loss, e.val_accuracy);
          seconds[mode].push_back(e.seconds);
        }
      }
    double median[2];
    for (int mode = 0; mode < 2; ++mode) {
      std::sort(seconds[mode].begin(), seconds[mode].end());
      median[mode] = seconds[mode][seconds[mode].size() / 2];
      fmt::print("{} epoch: median {:.3f} s, min {:.3f} s, max {:.3f} s over {} epochs\n", mode ? "qat  " : "float", median[mode],
                 seconds[mode].front(), seconds[mode].back(), seconds[mode].size());
    }
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    fmt::print("qat/float ratio {:.2f}; {} threads; peak RSS {:.1f} MB\n", median[1] / median[0], num_threads(),
               ru.ru_maxrss / 1024.0);
    return 0;
  });
}
