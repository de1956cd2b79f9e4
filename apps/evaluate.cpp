// evaluate: test-set accuracy and inference time of an f32 or int8 .qbin model on oneDNN.
//
//   build/bin/evaluate model.qbin [--batch-size 256] [--json] [--data-dir DIR]
#include <filesystem>

#include <fmt/format.h>

#include "apps/common.h"
#include "core/parallel.h"
#include "data/mnist.h"
#include "quant/runtime/runtime.h"

using namespace qnet;

namespace {

int evaluate_main(int argc, char** argv) {
  cxxopts::Options options("evaluate", "Accuracy and speed of a .qbin model (f32 or int8) on a test set (MNIST by default), run by oneDNN.");
  options.add_options()
      ("batch-size", "Images per runtime call, 1..65536", number_value("256"))
      ("json", "Print one JSON object instead of text")
      ("model", "The .qbin model", cxxopts::value<std::string>())
      ("h,help", "Show this help");
  options.parse_positional({"model"});
  options.positional_help("MODEL");
  add_data_dir_option(options);
  add_threads_option(options);
  const std::optional<cxxopts::ParseResult> parsed = parse_args(options, argc, argv);
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  if (!args.count("model")) throw UsageError("missing MODEL (expected: evaluate MODEL)");
  const int64_t batch = int_option(args, "batch-size", 1, 65536);
  use_threads_option(args);
  const std::string path = args["model"].as<std::string>();
  const Runtime rt(load_inference_model(path));
  const ImageSet test = load_test_images(mnist_dir(args["data-dir"].as<std::string>()));
  rt.predict(test.image(0), std::min<int64_t>(batch, test.size()));  // JIT and plan creation are not timed
  const RuntimeEvaluation e = evaluate(rt, test, batch);
  const auto bytes = static_cast<int64_t>(std::filesystem::file_size(path));
  const char* precision = precision_name(rt.model().precision);
  if (args.count("json")) {
    fmt::print("{}\n", Json::object()
                           .set("model", Json::string(path))
                           .set("precision", Json::string(precision))
                           .set("accuracy", Json::number(e.accuracy))
                           .set("images", Json::integer(e.images))
                           .set("seconds", Json::number(e.seconds))
                           .set("batch_size", Json::integer(batch))
                           .set("model_bytes", Json::integer(bytes))
                           .set("onednn_isa", Json::string(onednn_isa()))
                           .set("int8_path", Json::string(rt.int8_path()))
                           .dump(0));
  } else {
    fmt::print("{} ({}, {} bytes): test accuracy {:.4f} on {} images; {:.3f} s at batch {} ({:.1f} us/image, {} threads; oneDNN {}, "
               "path {})\n", path, precision, bytes, e.accuracy, e.images, e.seconds, batch,
               1e6 * e.seconds / static_cast<double>(e.images), num_threads(), onednn_isa(), rt.int8_path());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_app("evaluate", [&] { return evaluate_main(argc, argv); });
}
