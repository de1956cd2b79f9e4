// infer: the digit in each PNG, from an f32 or int8 model on the oneDNN runtime.
//
//   build/bin/infer model.qbin digit.png [more.png ...] [--json] [--raw]
//
// Each image is prepared the way MNIST digits were (data/digit.h) unless --raw says it already
// is a 28x28 MNIST-style image. A bad image gets an error line and the others are still
// processed; the exit code is then 1.
#include <fmt/format.h>

#include "apps/common.h"
#include "data/digit.h"
#include "quant/runtime.h"

using namespace qnet;

namespace {

struct Prediction {
  int digit;
  std::vector<std::pair<int, float>> top3;
};

Prediction predict(const Runtime& rt, const Digit& x) {
  float logits[10];
  rt.predict(x.data(), 1, logits);
  const std::vector<float> p = softmax(logits, 10);
  std::vector<int> order(10);
  for (int i = 0; i < 10; ++i) order[i] = i;
  std::partial_sort(order.begin(), order.begin() + 3, order.end(), [&](int a, int b) { return p[a] > p[b]; });
  Prediction out{order[0], {}};
  for (int i = 0; i < 3; ++i) out.top3.emplace_back(order[i], p[order[i]]);
  return out;
}

int infer_main(int argc, char** argv) {
  cxxopts::Options options("infer", "Recognise the digit in PNG images with a .qbin model (f32 or int8) on oneDNN.");
  options.add_options()
      ("json", "One JSON object per image: {\"image\", \"digit\", \"probability\", \"top3\"}")
      ("raw", "The images already are 28x28 MNIST-style digits (white on black): skip the preparation")
      ("model", "The .qbin model", cxxopts::value<std::string>())
      ("images", "PNG images", cxxopts::value<std::vector<std::string>>())
      ("h,help", "Show this help");
  options.parse_positional({"model", "images"});
  options.positional_help("MODEL IMAGE.png [IMAGE.png ...]");
  const std::optional<cxxopts::ParseResult> parsed = parse_args(options, argc, argv);
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  if (!args.count("model")) throw UsageError("missing MODEL (expected: infer MODEL IMAGE.png [IMAGE.png ...])");
  if (!args.count("images")) throw UsageError("no images given (expected: infer MODEL IMAGE.png [IMAGE.png ...])");
  const Runtime rt(load_inference_model(args["model"].as<std::string>()));
  const InferenceModel& m = rt.model();
  if (m.H != 28 || m.W != 28 || m.C != 1 || m.classes() != 10)
    throw std::runtime_error(fmt::format("{}: the model takes {}x{}x{} images and gives {} classes (expected an MNIST model: 28x28x1, 10)",
                                         args["model"].as<std::string>(), m.H, m.W, m.C, m.classes()));
  const bool json = args.count("json") > 0, raw = args.count("raw") > 0;
  int failures = 0;
  for (const std::string& path : args["images"].as<std::vector<std::string>>()) {
    Prediction p;
    try {
      const GrayImage img = read_png_gray(path);
      p = predict(rt, raw ? raw_digit(img) : prepare_digit(img));
    } catch (const ImageError& e) {
      const std::string what = e.what();
      fmt::print(stderr, "infer: error: {}\n", what.rfind(path, 0) == 0 ? what : path + ": " + what);
      ++failures;
      continue;
    }
    if (json) {
      Json top3 = Json::array();
      for (const auto& [d, prob] : p.top3) top3.push(Json::array().push(Json::integer(d)).push(Json::number(prob)));
      fmt::print("{}\n", Json::object()
                             .set("image", Json::string(path))
                             .set("digit", Json::integer(p.digit))
                             .set("probability", Json::number(p.top3[0].second))
                             .set("top3", std::move(top3))
                             .dump(0));
    } else {
      fmt::print("{}: {} (p = {:.3f}); top 3: {} {:.3f}, {} {:.3f}, {} {:.3f}\n", path, p.digit, p.top3[0].second, p.top3[0].first,
                 p.top3[0].second, p.top3[1].first, p.top3[1].second, p.top3[2].first, p.top3[2].second);
    }
  }
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_app("infer", [&] { return infer_main(argc, argv); });
}
