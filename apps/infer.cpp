// infer: the class of each PNG (the digit, for an MNIST model), from an f32 or int8 model on the
// oneDNN runtime.
//
//   build/bin/infer model.qbin digit.png [more.png ...] [--json] [--raw]
//
// For an MNIST model (28x28x1, 10 classes) each image is prepared the way MNIST digits were
// (data/digit.h) unless --raw says it already is a 28x28 MNIST-style image. A model of other
// images gets the PNG in its channels (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA: data/png.h) and a
// plain resize (resize_image; --raw: the image must have the model's size); evaluate runs models on
// an IDX test set. A bad image gets an error line and the others are still processed; the exit
// code is then 1.
#include <fmt/format.h>

#include "apps/common.h"
#include "data/digit.h"
#include "quant/runtime/runtime.h"

using namespace qnet;

namespace {

struct Prediction {
  int digit;
  std::vector<std::pair<int, float>> top3;  // or fewer, with fewer classes
};

Prediction predict(const Runtime& rt, const uint8_t* x) {
  const int classes = rt.model().classes(), top = std::min(classes, 3);
  std::vector<float> logits(static_cast<size_t>(classes));
  rt.predict(x, 1, logits.data());
  const std::vector<float> p = softmax(logits.data(), classes);
  std::vector<int> order(classes);
  for (int i = 0; i < classes; ++i) order[i] = i;
  std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](int a, int b) { return p[a] > p[b]; });
  Prediction out{order[0], {}};
  for (int i = 0; i < top; ++i) out.top3.emplace_back(order[i], p[order[i]]);
  return out;
}

int infer_main(int argc, char** argv) {
  cxxopts::Options options("infer", "Classify PNG images (the digit, for an MNIST model) with a .qbin model (f32 or int8) on oneDNN.");
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
  const bool mnist = m.H == 28 && m.W == 28 && m.C == 1 && m.classes() == 10;
  const char* key = mnist ? "digit" : "class";
  const bool json = args.count("json") > 0, raw = args.count("raw") > 0;
  int failures = 0;
  for (const std::string& path : args["images"].as<std::vector<std::string>>()) {
    Prediction p;
    try {
      if (mnist) {
        const GrayImage img = read_png_gray(path);
        p = predict(rt, (raw ? raw_digit(img) : prepare_digit(img)).data());
      } else {  // the model's channels: gray, gray + alpha, RGB or RGBA (data/png.h), plainly resized
        const Image img = read_png(path, m.C);
        if (raw && (img.width != m.W || img.height != m.H))
          throw ImageError(fmt::format("--raw needs a {}x{} image, this one is {}x{}", m.W, m.H, img.width, img.height));
        p = predict(rt, (raw ? img.pixels : resize_image(img, m.W, m.H)).data());
      }
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
                             .set(key, Json::integer(p.digit))
                             .set("probability", Json::number(p.top3[0].second))
                             .set("top3", std::move(top3))
                             .dump(0));
    } else {
      std::string top;
      for (const auto& [c, prob] : p.top3) top += fmt::format("{}{} {:.3f}", top.empty() ? "" : ", ", c, prob);
      fmt::print("{}: {}{} (p = {:.3f}); top {}: {}\n", path, mnist ? "" : "class ", p.digit, p.top3[0].second, p.top3.size(), top);
    }
  }
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_app("infer", [&] { return infer_main(argc, argv); });
}
