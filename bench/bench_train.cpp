// bench_train: seconds per epoch of the reference recipe, float and QAT, median of repeats.
//
//   build/bin/bench_train --epochs 2 --repeats 5 [--threads 2] [--isa avx512,avx2] [--data-dir DIR]
//                         [--model SPEC|FILE] [--batch-size 32] [--train-images N] [--mode both|float|qat]
//
// Each repeat trains a float model and then a QAT model (8 bits) on each kernel path of --isa
// in turn (default: the active one, core/cpu.h), so all see the same machine conditions; the
// ratios are computed from the medians of one run. --model times any spec (default: the
// article's model), --data-dir any IDX data set; --train-images N trains on the first N images
// of the training split only (a quicker measure of a slow model: epoch times scale with N).
// It also prints the model's multiply-adds per image and the GFLOP/s each median epoch reaches
// (docs/performance.md compares them with the machine's peak).
#include <sys/resource.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "apps/common.h"
#include "core/cpu.h"
#include "core/parallel.h"
#include "data/image_data.h"
#include "data/mnist.h"
#include "layers/container.h"
#include "layers/model_spec.h"
#include "layers/sequential.h"
#include "optim/trainer.h"
#include "quant/qat.h"

using namespace qnet;

namespace {

// FLOPs (2 per multiply-add) of one image through the products of `chain`: each layer with a
// kernel of shape [..., OUT] (Conv2D, DepthwiseConv2D, Dense) does kernel.numel() multiply-adds
// per output pixel. A training step does each product three times (forward, input gradient,
// kernel gradient), but the first layer needs no input gradient: `first` counts that layer apart.
struct Flops {
  double forward = 0, first_layer = 0;
  double training() const { return 3 * forward - first_layer; }
};

Shape add_flops(Sequential& chain, Shape shape, Flops& f) {
  for (size_t i = 0; i < chain.size(); ++i) {
    Module& layer = chain.layer(i);
    const Shape out = layer.output_shape(shape);
    if (auto* c = dynamic_cast<Container*>(&layer)) {  // its parameters are its branches' layers'
      for (Sequential* branch : c->branches()) add_flops(*branch, shape, f);
      shape = out;
      continue;
    }
    for (Variable* p : layer.parameters()) {
      const Tensor& k = p->value();
      if (k.rank() < 2) continue;  // biases, BatchNormalization's vectors
      const double flops = 2.0 * static_cast<double>(k.numel()) * static_cast<double>(shape_numel(out) / k.dim(-1));
      if (f.forward == 0) f.first_layer = flops;
      f.forward += flops;
    }
    shape = out;
  }
  return shape;
}

}  // namespace

int main(int argc, char** argv) {
  return run_app("bench_train", [&] {
    cxxopts::Options options("bench_train", "Time epochs of the reference training recipe");
    options.add_options()
        ("epochs", "Epochs per repeat", number_value("3"))
        ("repeats", "Independent runs", number_value("1"))
        ("isa", "Kernel paths to time, comma-separated: avx512, avx2, baseline (default: the active one)",
         cxxopts::value<std::string>()->default_value(""))
        ("data-dir", "IDX data set folder (default: MNIST)", cxxopts::value<std::string>()->default_value(""))
        ("model", "A model spec or a file holding one (default: the article's model)", cxxopts::value<std::string>()->default_value(""))
        ("batch-size", "Images per step", number_value("32"))
        ("train-images", "Train on the first N images of the training split (0 = all)", number_value("0"))
        ("mode", "float, qat or both", cxxopts::value<std::string>()->default_value("both"))
        ("thread-split", "How the threads share a step: batch (each its images, on a copy of the model) or ops (each op split)",
         cxxopts::value<std::string>()->default_value("batch"));
    add_threads_option(options);
    const auto args = options.parse(argc, argv);
    const int epochs = static_cast<int>(int_option(args, "epochs", 1, 1000));
    const int64_t repeats = int_option(args, "repeats", 1, 1000);
    const int64_t batch_size = int_option(args, "batch-size", 1, 65536), train_images = int_option(args, "train-images", 0, INT64_MAX);
    const std::string mode_option = args["mode"].as<std::string>();
    if (mode_option != "both" && mode_option != "float" && mode_option != "qat")
      throw UsageError(fmt::format("--mode '{}' (expected both, float or qat)", mode_option));
    const std::string split = args["thread-split"].as<std::string>();
    if (split != "batch" && split != "ops") throw UsageError(fmt::format("--thread-split '{}' (expected batch or ops)", split));
    const std::string spec = spec_option_text(args["model"].as<std::string>());
    use_threads_option(args);
    const ImageData data_set = load_image_data(mnist_dir(args["data-dir"].as<std::string>()));
    Split data = split_validation(data_set.train, 0.1);
    if (train_images > 0) data.train = data.train.slice(0, std::min(train_images, data.train.size()));
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
          if ((mode == 0 && mode_option == "qat") || (mode == 1 && mode_option == "float")) continue;
          set_isa(paths[path]);
          Rng rng(static_cast<uint64_t>(r + 1));
          Sequential model = spec.empty() ? reference_model(data_set.train.image_shape(), data_set.classes, rng)
                                          : model_from_spec(spec, data_set.train.image_shape(), rng);
          if (mode == 1) prepare_qat(model, {.bits = 8, .observer = tfmot_observer()});  // train --qat's default
          Adam adam(model.parameters());
          FitOptions fo;
          fo.epochs = epochs;
          fo.batch_size = batch_size;
          fo.threads_split_batch = split == "batch";
          for (const EpochStats& e : fit(model, adam, data.train, data.validation, fo, rng)) {
            fmt::print("repeat {} {} {} epoch {}: {:.3f} s (loss {:.4f}, val_accuracy {:.4f})\n", r + 1, isa_name(paths[path]),
                       mode ? "qat" : "float", e.epoch, e.seconds, e.loss, e.val_accuracy);
            seconds[2 * path + mode].push_back(e.seconds);
          }
        }
    Flops flops;
    {
      Rng rng(1);
      Sequential model = spec.empty() ? reference_model(data_set.train.image_shape(), data_set.classes, rng)
                                      : model_from_spec(spec, data_set.train.image_shape(), rng);
      add_flops(model, model.input_shape(), flops);
    }
    const double step_flops = flops.training() * static_cast<double>(data.train.size());  // an epoch
    fmt::print("model: {:.2f} MFLOP per image forward, {:.2f} MFLOP per image per training step; batch {}\n", flops.forward / 1e6,
               flops.training() / 1e6, batch_size);
    std::vector<double> median(seconds.size());
    for (size_t path = 0; path < paths.size(); ++path) {
      for (int mode = 0; mode < 2; ++mode) {
        std::vector<double>& s = seconds[2 * path + mode];
        if (s.empty()) continue;
        std::sort(s.begin(), s.end());
        median[2 * path + mode] = s[s.size() / 2];
        fmt::print("{} {} epoch: median {:.3f} s, min {:.3f} s, max {:.3f} s over {} epochs; {:.1f} GFLOP/s in the products\n",
                   isa_name(paths[path]), mode ? "qat  " : "float", median[2 * path + mode], s.front(), s.back(), s.size(),
                   step_flops / median[2 * path + mode] / 1e9);
      }
      if (mode_option == "both") fmt::print("{} qat/float ratio {:.2f}", isa_name(paths[path]), median[2 * path + 1] / median[2 * path]);
      const int m = mode_option == "qat" ? 1 : 0;
      if (path > 0) fmt::print("{}{} epoch {:.2f}x the {} path's", mode_option == "both" ? "; " : "", m ? "qat" : "float",
                               median[2 * path + m] / median[m], isa_name(paths[0]));
      if (mode_option == "both" || path > 0) fmt::print("\n");
    }
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    fmt::print("{} threads; CPU can run {}; peak RSS {:.1f} MB\n", num_threads(), isa_name(cpu_isa()), ru.ru_maxrss / 1024.0);
    return 0;
  });
}
