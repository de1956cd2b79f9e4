// bench_train: seconds per epoch of the reference recipe (float), median of repeats.
//
//   build/bin/bench_train --epochs 3 --repeats 3 [--threads 2] [--data-dir DIR]
//
// Prints one line per epoch and a summary with the median; peak RSS comes from getrusage.
#include <sys/resource.h>

#include <algorithm>

#include <fmt/format.h>

#include "apps/common.h"
#include "core/parallel.h"
#include "data/mnist.h"
#include "layers/sequential.h"
#include "optim/trainer.h"

using namespace qnet;

int main(int argc, char** argv) {
  return run_app("bench_train", [&] {
    cxxopts::Options options("bench_train", "Time epochs of the reference training recipe");
    options.add_options()
        ("epochs", "Epochs per repeat", cxxopts::value<int64_t>()->default_value("3"))
        ("repeats", "Independent runs", cxxopts::value<int64_t>()->default_value("1"))
        ("threads", "Threads (0 = all)", cxxopts::value<int64_t>()->default_value("0"))
        ("data-dir", "MNIST folder", cxxopts::value<std::string>()->default_value(""));
    const auto args = options.parse(argc, argv);
    require_int_at_least(args, "epochs", 1);
    require_int_at_least(args, "repeats", 1);
    set_num_threads(static_cast<int>(args["threads"].as<int64_t>()));
    const Mnist mnist = load_mnist(mnist_dir(args["data-dir"].as<std::string>()));
    const Split data = split_validation(mnist.train, 0.1);
    std::vector<double> epoch_seconds;
    for (int64_t r = 0; r < args["repeats"].as<int64_t>(); ++r) {
      Rng rng(static_cast<uint64_t>(r + 1));
      Sequential model = mnist_reference_model(rng);
      Adam adam(model.parameters());
      FitOptions fo;
      fo.epochs = static_cast<int>(args["epochs"].as<int64_t>());
      for (const EpochStats& e : fit(model, adam, data.train, data.validation, fo, rng)) {
        fmt::print("repeat {} epoch {}: {:.3f} s (loss {:.4f}, val_accuracy {:.4f})\n", r + 1, e.epoch, e.seconds, e.loss,
                   e.val_accuracy);
        epoch_seconds.push_back(e.seconds);
      }
    }
    std::sort(epoch_seconds.begin(), epoch_seconds.end());
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    fmt::print("float epoch: median {:.3f} s, min {:.3f} s, max {:.3f} s over {} epochs; {} threads; peak RSS {:.1f} MB\n",
               epoch_seconds[epoch_seconds.size() / 2], epoch_seconds.front(), epoch_seconds.back(), epoch_seconds.size(),
               num_threads(), ru.ru_maxrss / 1024.0);
    return 0;
  });
}
