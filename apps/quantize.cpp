// quantize: post-training quantization (PTQ) of a float model to an int8 .qbin, calibrated on
// training images (TFLite's "full integer" quantization). A QAT checkpoint is exported with
// its own trained ranges instead.
//
//   build/bin/quantize model_float.qbin -o model_ptq.qbin [--calibration-images 1000] [--method minmax|percentile]
#include <filesystem>

#include <fmt/format.h>

#include "apps/common.h"
#include "apps/quant_options.h"
#include "core/file_io.h"
#include "core/parallel.h"
#include "io/qbin.h"
#include "data/mnist.h"
#include "quant/export.h"
#include "quant/qat.h"
#include "quant/runtime/runtime.h"

using namespace qnet;

namespace {

int quantize_main(int argc, char** argv) {
  cxxopts::Options options("quantize", "Quantize a float .qbin model to int8 (post-training, calibrated on training images: MNIST or "
                           "any IDX data set).");
  options.add_options()
      ("o,output", "Where to write the int8 model", cxxopts::value<std::string>()->default_value("model_ptq.qbin"))
      ("model", "The float .qbin model", cxxopts::value<std::string>())
      ("h,help", "Show this help");
  options.parse_positional({"model"});
  options.positional_help("MODEL");
  add_ptq_options(options, "");
  add_bits_options(options, "");
  add_data_dir_option(options);
  add_threads_option(options);
  const std::optional<cxxopts::ParseResult> parsed = parse_args(options, argc, argv);
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  if (!args.count("model")) throw UsageError("missing MODEL (expected: quantize MODEL -o OUTPUT)");
  const PtqRequest ptq = read_ptq_options(args);
  const std::string input = args["model"].as<std::string>(), output = args["output"].as<std::string>();
  check_output_path(output, "-o");
  if (same_file(input, output)) throw UsageError(fmt::format("-o {} would overwrite the input model", output));
  use_threads_option(args);

  Sequential model = load_any_model(input);
  const ImageData data = load_image_data(mnist_dir(args["data-dir"].as<std::string>()));
  if (model.input_shape() != data.train.image_shape())
    throw std::runtime_error(fmt::format("{} takes {} images, the data set has {}", input, shape_str(model.input_shape()),
                                         shape_str(data.train.image_shape())));
  const std::string done = quantize_after_training(model, input, data.train, args, ptq);
  if (done.empty()) fmt::print("{} is a QAT model: exporting it with its trained activation ranges ({})\n", input, qat_bits_text(model));
  else fmt::print("Calibrated the activation ranges: {}\n", done);
  // Validate completely, then write: the bytes about to be saved are loaded back and run on the
  // runtime first, so a model that cannot load or run never replaces what is at OUTPUT.
  std::vector<uint8_t> bytes;
  RuntimeEvaluation e;
  try {
    bytes = qbin::serialize(export_int8(model));
    failpoint("quantize-validation");
    e = evaluate(Runtime(inference_model(qbin::parse(bytes.data(), bytes.size()))), data.test, 256);
  } catch (const std::exception& err) {
    throw std::runtime_error(fmt::format("the int8 model of {} is not valid: {}; nothing written, {} left as it was", input,
                                         err.what(), output));
  }
  write_file_atomic(output, bytes);
  fmt::print("Wrote {} ({} bytes); int8 test accuracy on the oneDNN runtime: {:.4f}\n", output, bytes.size(), e.accuracy);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_app("quantize", [&] { return quantize_main(argc, argv); });
}
