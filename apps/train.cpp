// train: trains the article's MNIST CNN and saves it as a .qbin model.
//
//   build/bin/train --epochs 10 --seed 1 --metrics m.json     # float, -> model_float.qbin
//   build/bin/train --qat --epochs 10 --bits 8                # QAT from scratch, -> model.qbin (int8)
//   build/bin/train --qat --init model_float.qbin --epochs 2  # QAT fine-tuning of a float model
//
// With --qat the QAT checkpoint (float weights and activation ranges, for --init) is saved to
// --checkpoint every epoch; at the end the int8 model is exported and evaluated on the runtime.
#include <algorithm>
#include <set>
#include <cmath>
#include <filesystem>
#include <optional>

#include <fmt/format.h>

#include "apps/common.h"
#include "apps/distributed.h"
#include "apps/quant_options.h"
#include "core/cpu.h"
#include "core/file_io.h"
#include "core/parallel.h"
#include "io/qbin.h"
#include "data/mnist.h"
#include "layers/model_spec.h"
#include "layers/sequential.h"
#include "optim/trainer.h"
#include "quant/export.h"
#include "quant/qat.h"
#include "quant/runtime/runtime.h"

using namespace qnet;

namespace {

struct Int8Result {
  std::optional<double> accuracy;  // none when the runtime failed (the metrics say null and why)
  std::string error;
  int64_t model_bytes = 0;
  std::string path;  // how this CPU runs it: "one-pass", "split-weights" (int8) or "f32"
};

// bits: the widest bit width of a QAT model (0: float); widths: all of them ("mixed 4/8-bit").
Json metrics_json(uint64_t seed, int bits, const std::string& widths, const std::vector<EpochStats>& history, const Evaluation& test,
                  const Int8Result& deployed) {
  Json epochs = Json::array();
  for (const EpochStats& e : history)
    epochs.push(Json::object()
                    .set("epoch", Json::integer(e.epoch))
                    .set("seconds", Json::number(e.seconds))
                    .set("loss", Json::number(e.loss))
                    .set("accuracy", Json::number(e.accuracy))
                    .set("val_loss", Json::number(e.val_loss))
                    .set("val_accuracy", Json::number(e.val_accuracy)));
  Json j = Json::object().set("mode", Json::string(bits ? "qat" : "float"));
  if (bits) j.set("bits", Json::integer(bits)).set("bit_widths", Json::string(widths));
  return j.set("seed", Json::integer(static_cast<int64_t>(seed)))
      .set("threads", Json::integer(num_threads()))
      .set("kernels", Json::string(isa_name(active_isa())))
      .set("test_accuracy", Json::number(test.accuracy))
      .set("test_loss", Json::number(test.loss))
      .set(bits ? "int8_test_accuracy" : "runtime_test_accuracy", Json::number(deployed.accuracy.value_or(NAN)))  // NaN: null
      .set("runtime_error", deployed.error.empty() ? Json::number(NAN) : Json::string(deployed.error))
      .set("onednn_isa", Json::string(onednn_isa()))
      .set("runtime_path", deployed.path.empty() ? Json::number(NAN) : Json::string(deployed.path))
      .set("model_bytes", Json::integer(deployed.model_bytes))
      .set("epochs", std::move(epochs));
}

int train_main(int argc, char** argv, const Ranks& ranks) {
  cxxopts::Options options("train", "Train the article's CNN (Conv2D 12 3x3 + ReLU, MaxPool 2x2, Dense) with Adam on MNIST or any "
                           "IDX data set (its image shape and class count).");
  options.add_options()
      ("epochs", "Number of epochs, 1..100000", number_value("10"))
      ("batch-size", "Images per training step, 1..65536", number_value("32"))
      ("lr", "Adam learning rate, in (0, 10]", number_value("0.001"))
      ("seed", "Seed of every random choice (init, shuffling), 0..2^63-1", number_value("1"))
      ("validation-split", "Fraction of the training set, taken from its end, held out for validation, in [0, 1)",
       number_value("0.1"))
      ("o,output", "Where to save the trained model (default model_float.qbin; with --qat the int8 model.qbin)",
       cxxopts::value<std::string>()->default_value(""))
      ("checkpoint", "With --qat: where the QAT model (float weights + ranges, for --init) is saved every epoch",
       cxxopts::value<std::string>()->default_value("model_qat.qbin"))
      ("qat", "Quantization-aware training (fake-quantized weights and activations)")
      ("init", "Start from this model file instead of a fresh model (with --qat: fine-tune a float model)",
       cxxopts::value<std::string>()->default_value(""))
      ("observer", "QAT activation ranges, moving averages of batch min/max: 'tfmot' (decay 0.999 from [0, 6], "
       "the article's tool) or 'ema' (PyTorch's: 0.01, from the first batch)", cxxopts::value<std::string>()->default_value("tfmot"))
      ("freeze-ranges-after", "QAT: stop updating activation ranges after this epoch (0 = never)",
       number_value("0"))
      ("freeze-bn-after", "QAT: from the epoch after this one, folded BatchNormalization layers use their moving statistics "
       "(PyTorch's freeze_bn_stats; 0 = never)", number_value("0"))
      ("metrics", "Write the metrics as JSON to this path", cxxopts::value<std::string>()->default_value(""))
      ("classes", "Number of classes (0 = the largest label + 1)", number_value("0"))
      ("model", "The layers, as a spec or a file holding one, e.g. 'conv2d(32, 3, relu) maxpool2d(2) flatten dropout(0.5) dense(10)' "
       "(docs/tutorial.md; default: the article's conv2d(12, 3, relu) maxpool2d(2) flatten dense(CLASSES))",
       cxxopts::value<std::string>()->default_value(""))
      ("h,help", "Show this help");
  add_bits_options(options, "QAT: ");
  add_data_dir_option(options);
  add_threads_option(options);
  const std::optional<cxxopts::ParseResult> parsed = parse_args(options, argc, argv);
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  const int epochs = static_cast<int>(int_option(args, "epochs", 1, 100000));
  const int64_t batch_size = int_option(args, "batch-size", 1, 65536);
  const auto seed = static_cast<uint64_t>(int_option(args, "seed", 0, INT64_MAX));
  const auto lr = static_cast<float>(real_option(args, "lr", {.min = 0, .max = 10, .open_min = true}));
  const double split = real_option(args, "validation-split", {.min = 0, .max = 1, .open_max = true});
  const bool qat = args.count("qat") > 0;
  const int bits = static_cast<int>(int_option(args, "bits", 2, 8));
  if (!qat && (args.count("bits") || args.count("layer-bits") || args.count("keep-float") || args.count("int8-target") ||
               args.count("observer") || args.count("freeze-ranges-after") || args.count("freeze-bn-after")))
    throw UsageError("--bits, --layer-bits, --keep-float, --int8-target, --observer, --freeze-ranges-after and --freeze-bn-after need --qat");
  const Int8Target target = read_int8_target(args);
  const std::string observer = args["observer"].as<std::string>();
  if (observer != "ema" && observer != "tfmot") throw UsageError(fmt::format("--observer '{}' (expected ema or tfmot)", observer));
  const int64_t freeze_after = int_option(args, "freeze-ranges-after", 0, 100000);
  const int64_t freeze_bn_after = int_option(args, "freeze-bn-after", 0, 100000);
  const int classes_option = static_cast<int>(int_option(args, "classes", 0, kMaxClasses));
  std::string output = args["output"].as<std::string>();
  if (output.empty()) output = qat ? "model.qbin" : "model_float.qbin";
  const std::string checkpoint = qat ? args["checkpoint"].as<std::string>() : output;
  if (!qat && args.count("checkpoint")) throw UsageError("--checkpoint needs --qat (a float model is saved to -o every epoch)");
  const std::string init = args["init"].as<std::string>(), metrics = args["metrics"].as<std::string>();
  // Every output is checked and told apart from the others before any work: paths are compared
  // as files, so "out/a.qbin" and "./out/a.qbin" are one.
  check_output_path(output, "-o");
  if (qat) check_output_path(checkpoint, "--checkpoint");
  if (!metrics.empty()) check_output_path(metrics, "--metrics");
  if (qat && same_file(checkpoint, output))
    throw UsageError(fmt::format("--checkpoint {} and -o {} are the same file (expected the QAT checkpoint and the int8 model apart)",
                                 checkpoint, output));
  if (!metrics.empty() && (same_file(metrics, output) || (qat && same_file(metrics, checkpoint))))
    throw UsageError(fmt::format("--metrics {} is also a model path (expected a file of its own)", metrics));
  if (qat && !init.empty() && same_file(init, output))
    throw UsageError(fmt::format("-o {} is the --init model: the int8 export would replace it (expected another path)", output));
  std::string spec = args["model"].as<std::string>();
  if (args.count("model") && !init.empty()) throw UsageError("--model and --init both give the layers (expected one of them)");
  if (args.count("model") && spec.empty()) throw UsageError("--model '' (expected a model spec or a file holding one)");
  spec = spec_option_text(spec);

  use_threads_option(args);
  Rng rng(seed);
  const ObserverOptions observer_options = observer == "tfmot" ? tfmot_observer() : pytorch_observer();
  std::optional<Sequential> loaded;  // --init first: its errors are cheaper than the data's
  if (!init.empty()) loaded = load_any_model(init, observer_options);
  const ImageData data_set = load_image_data(mnist_dir(args["data-dir"].as<std::string>()), classes_option);
  const Shape image_shape = data_set.train.image_shape();
  Sequential model = [&] {
    if (loaded) return std::move(*loaded);
    if (spec.empty()) {
      if (image_shape[0] < 4 || image_shape[1] < 4)  // its 3x3 conv and 2x2 pool need room
        throw UsageError(fmt::format("the article's model takes images of at least 4x4; the data set's are {}x{}: give a --model "
                                     "(docs/tutorial.md)", image_shape[0], image_shape[1]));
      return reference_model(image_shape, data_set.classes, rng);
    }
    try {
      return model_from_spec(spec, image_shape, rng);
    } catch (const SpecError& e) {
      throw UsageError(fmt::format("--model: {}", e.what()));
    }
  }();
  if (model.input_shape() != image_shape || model.output_shape(model.input_shape()) != Shape{data_set.classes})
    throw std::runtime_error(fmt::format("{}: the model takes {} and gives {} (expected the data's {} images and {} classes)",
                                         init.empty() ? "--model" : init,
                                         shape_str(model.input_shape()), shape_str(model.output_shape(model.input_shape())),
                                         shape_str(image_shape), data_set.classes));
  if (qat && !is_qat(model)) {
    apply_layer_bits(model, args);
    apply_keep_float(model, args);
    try {
      prepare_qat(model, {.bits = bits, .target = target, .observer = observer_options});
    } catch (const std::invalid_argument& e) {  // a model no int8 graph holds: refused before training
      throw UsageError(fmt::format("--qat: {}", without_function_name(e.what())));
    }
  } else if (qat && args.count("bits") && qat_bit_widths(model) != std::set<int>{bits}) {
    throw UsageError(fmt::format("--bits {}, but {} was trained {} (leave --bits out to continue it)", bits, init, qat_bits_text(model)));
  } else if (qat && (args.count("layer-bits") || args.count("int8-target"))) {
    throw UsageError(fmt::format("--{}, but {} is a QAT model trained {} (leave it out to continue the model with its widths)",
                                 args.count("layer-bits") ? "layer-bits" : "int8-target", init, qat_bits_text(model)));
  } else if (!qat && is_qat(model)) {
    throw UsageError(fmt::format("{} is a QAT model: continue it with --qat", init));
  } else if (qat) {
    apply_keep_float(model, args);  // a QAT model continued with more layers in float
  }
  const Split data = split_validation(data_set.train, split);
  if (data.train.size() == 0)
    throw UsageError(fmt::format("--validation-split {} leaves none of the {} training images to train on (expected a smaller fraction)",
                                 split, data_set.train.size()));
  check_training_memory(model, image_shape, batch_size);  // before any work, with the figures
  fmt::print("{}", model.summary());
  fmt::print("Training on {} images of {} in {} classes, validating on {}; seed {}, {} threads, {} kernels{}\n", data.train.size(),
             shape_str(image_shape), data_set.classes, data.validation.size(), seed, num_threads(), isa_name(active_isa()),
             ranks.size > 1 ? fmt::format(", on {} processes (each batch split between them)", ranks.size) : "");

  Adam adam(model.parameters(), {.lr = lr});
  FitOptions fo;
  fo.epochs = epochs;
  fo.batch_size = batch_size;
  fo.progress = stdout_is_terminal() ? Progress::kBar : Progress::kPlain;
  fo.communicator = ranks.comm;
  fo.on_epoch_end = [&](const EpochStats&) {  // the last good model is always on disk
    if (ranks.writer()) save_model(model, checkpoint);
  };
  if (qat && (freeze_after > 0 || freeze_bn_after > 0))
    fo.on_epoch_begin = [&](int epoch) {
      if (freeze_after > 0 && epoch == freeze_after + 1) freeze_observers(model), fmt::print("Activation ranges frozen\n");
      if (freeze_bn_after > 0 && epoch == freeze_bn_after + 1) freeze_bn_statistics(model), fmt::print("BatchNormalization statistics frozen\n");
    };
  const std::vector<EpochStats> history = fit(model, adam, data.train, data.validation, fo, rng);

  if (ranks.size > 1) {  // rank 0 sends the running sums along; the last rank broadcasts them back
    const int64_t steps = epochs * ((data.train.size() + batch_size - 1) / batch_size);
    fmt::print("Rank {} sent {:.1f} KB per step to the other ranks ({} steps)\n", ranks.rank, ranks.comm->bytes_sent() / 1e3 / steps,
               steps);
  }
  if (!ranks.writer()) return 0;  // the weights are rank 0's to the bit: it tests and writes them
  const Evaluation test = evaluate(model, data_set.test);
  fmt::print("Test accuracy{}: {:.4f} - test loss: {:.4f}\n", qat ? " (fake-quantized)" : "", test.accuracy, test.loss);
  if (qat) {
    freeze_observers(model);
    save_model(model, checkpoint);
    qbin::save(export_int8(model), output);
    fmt::print("Saved the QAT model (float weights + ranges) to {}\n", checkpoint);
  }
  // The saved file, as a user would load it, on the oneDNN runtime. Every file of the training is
  // on disk already: if this fails, the metrics still get written (the accuracy as null, with the
  // reason) and the exit code says it failed.
  Int8Result deployed{.accuracy = std::nullopt, .error = "", .model_bytes = static_cast<int64_t>(std::filesystem::file_size(output)),
                      .path = ""};
  try {
    failpoint("runtime-evaluation");
    const Runtime runtime(load_inference_model(output));
    deployed.accuracy = evaluate(runtime, data_set.test, 256).accuracy;
    deployed.path = runtime.int8_path();
    const std::string named_target = args.count("int8-target") ? fmt::format(", --int8-target {}", int8_target_name(target)) : "";
    fmt::print("Saved the {} model to {} ({} bytes); its test accuracy on the oneDNN runtime ({} path): {:.4f}\n",
               qat ? fmt::format("int8 ({}{})", qat_bits_text(model), named_target) : "float", output, deployed.model_bytes,
               runtime.int8_path(), *deployed.accuracy);
  } catch (const std::exception& e) {
    deployed.error = e.what();
  }
  if (!metrics.empty()) {
    write_file_atomic(metrics, metrics_json(seed, qat ? qat_bits(model) : 0, qat_bits_text(model), history, test, deployed).dump() + "\n");
    fmt::print("Wrote metrics to {}\n", metrics);
  }
  if (!deployed.error.empty()) {
    fmt::print(stderr, "train: the model is saved to {}{}, but evaluating it on the oneDNN runtime failed: {}\n", output,
               qat ? fmt::format(" (QAT checkpoint {})", checkpoint) : "", deployed.error);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Ranks& ranks = start_ranks(argc, argv);
  return run_app("train", [&] { return train_main(argc, argv, ranks); });
}
