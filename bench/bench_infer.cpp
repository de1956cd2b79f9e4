// bench_infer: the oneDNN runtime's speed, f32 vs int8, at batch 1 (the article's image-by-image
// loop) and batch 256, as medians of repeats.
//
//   build/bin/bench_infer --repeats 7 [--images 10000] [--threads 2] [--float F.qbin --int8 Q.qbin]
//                         [--model SPEC|FILE] [--data-dir DIR]
//
// Without model files it builds the reference model, or --model's (weights do not change the
// speed): a float model, and its int8 export after QAT observers have seen a few training
// batches. The images are the test set of --data-dir (any IDX data set; MNIST by default).
// f32 and int8 alternate inside each repeat so both see the same machine conditions.
#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "apps/common.h"
#include "core/autograd.h"
#include "core/parallel.h"
#include "core/random.h"
#include "data/image_data.h"
#include "data/mnist.h"
#include "layers/model_spec.h"
#include "layers/sequential.h"
#include "quant/export.h"
#include "quant/qat.h"
#include "quant/runtime/runtime.h"

using namespace qnet;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Sequential float_model(const std::string& spec, const ImageData& data) {
  Rng rng(1);
  return spec.empty() ? reference_model(data.train.image_shape(), data.classes, rng) : model_from_spec(spec, data.train.image_shape(), rng);
}

InferenceModel int8_model(const std::string& spec, const ImageData& data) {
  Sequential model = float_model(spec, data);
  prepare_qat(model, {.bits = 8, .observer = {}});
  NoGradGuard no_grad;
  for (int b = 0; b < 4; ++b) model.forward(Variable(data.train.batch(b * 32, 32).x, false));  // observers see data
  return inference_model(export_int8(model));
}

}  // namespace

int main(int argc, char** argv) {
  return run_app("bench_infer", [&] {
    cxxopts::Options options("bench_infer", "Time the oneDNN runtime, f32 vs int8, at batch 1 and batch 256");
    options.add_options()
        ("repeats", "Independent runs (the median is reported)", number_value("7"))
        ("images", "Test images per measurement", number_value("10000"))
        ("float", "An f32 .qbin model (default: the reference model)", cxxopts::value<std::string>()->default_value(""))
        ("int8", "An int8 .qbin model (default: the reference model exported)", cxxopts::value<std::string>()->default_value(""))
        ("model", "A model spec or a file holding one (default: the article's model)", cxxopts::value<std::string>()->default_value(""))
        ("data-dir", "IDX data set folder (default: MNIST)", cxxopts::value<std::string>()->default_value(""));
    add_threads_option(options);
    const auto args = options.parse(argc, argv);
    const int64_t repeats = int_option(args, "repeats", 1, 1000), images = int_option(args, "images", 256, 10000);
    const std::string spec = spec_option_text(args["model"].as<std::string>());
    use_threads_option(args);
    const ImageData data = load_image_data(mnist_dir(args["data-dir"].as<std::string>()));
    const int64_t n = std::min<int64_t>(images, data.test.size());
    const std::string float_path = args["float"].as<std::string>(), int8_path = args["int8"].as<std::string>();
    const Runtime rt[2] = {Runtime(float_path.empty() ? inference_model(to_qbin(float_model(spec, data))) : load_inference_model(float_path)),
                           Runtime(int8_path.empty() ? int8_model(spec, data) : load_inference_model(int8_path))};
    const char* names[2] = {"f32 ", "int8"};
    const int64_t size = data.test.image_bytes(), classes = rt[0].model().classes();
    if (rt[1].model().classes() != classes || static_cast<int64_t>(rt[0].model().input_size()) != size ||
        static_cast<int64_t>(rt[1].model().input_size()) != size)
      throw UsageError("the two models and the data set do not agree on the image size and the classes");
    std::vector<float> logits(static_cast<size_t>(n) * classes);
    const uint8_t* px = data.test.image(0);
    for (const Runtime& r : rt) r.predict(px, 256), r.predict(px, 1), r.predict(px, n);  // JIT, plans, warm caches
    std::vector<double> b1[2], b256[2];
    for (int64_t rep = 0; rep < repeats; ++rep)
      for (int p = 0; p < 2; ++p) {
        auto t0 = std::chrono::steady_clock::now();
        for (int64_t i = 0; i < n; ++i) rt[p].predict(px + i * size, 1, logits.data() + i * classes);
        b1[p].push_back(1e6 * seconds_since(t0) / static_cast<double>(n));
        t0 = std::chrono::steady_clock::now();
        for (int64_t i = 0; i < n; i += 256) rt[p].predict(px + i * size, std::min<int64_t>(256, n - i), logits.data() + i * classes);
        b256[p].push_back(static_cast<double>(n) / seconds_since(t0));
        fmt::print("repeat {} {}: batch 1 {:.2f} us/image, batch 256 {:.0f} images/s\n", rep + 1, names[p], b1[p].back(), b256[p].back());
      }
    fmt::print("\nmedians over {} repeats of {} images ({} threads at batch 256, 1 at batch 1; oneDNN {}, int8 path {}):\n",
               b1[0].size(), n, num_threads(), onednn_isa(), rt[1].int8_path());
    for (int p = 0; p < 2; ++p)
      fmt::print("{}: batch 1 {:.2f} us/image ({:.3f} s per 10k), batch 256 {:.0f} images/s ({:.3f} s per 10k)\n", names[p], median(b1[p]),
                 median(b1[p]) * 1e-2, median(b256[p]), 1e4 / median(b256[p]));
    fmt::print("int8 speed-up over f32: batch 1 {:.2f}x, batch 256 {:.2f}x\n", median(b1[0]) / median(b1[1]), median(b256[1]) / median(b256[0]));
    if (spec.empty() && float_path.empty() && int8_path.empty())
      fmt::print("vs PyTorch 1.13 int8 (144 us/image, 91k images/s; ../shared/notes/peers.md): batch 1 {:.1f}x, batch 256 {:.1f}x\n",
                 144.0 / median(b1[1]), median(b256[1]) / 91000.0);
    for (int64_t batch : {int64_t{1}, int64_t{256}})
      for (int p = 0; p < 2; ++p) {
        fmt::print("{} batch {}:", names[p], batch);
        for (const auto& [what, us] : rt[p].step_times(px, batch, 201)) fmt::print(" {} {:.2f} us;", what, us);
        fmt::print("\n");
      }
    return 0;
  });
}
