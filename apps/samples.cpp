// samples: PNG files of MNIST test digits, to try `infer` on.
//
//   build/bin/samples --count 10 --out samples            # 28x28 gray, as in MNIST
//   build/bin/samples --count 10 --out samples --canvas   # black ink on a larger white RGB canvas
//
// Files are named INDEX_LABEL.png (e.g. 0000_7.png): the label is the digit infer should find.
#include <filesystem>

#include <fmt/format.h>

#include "apps/common.h"
#include "data/digit.h"
#include "data/mnist.h"

using namespace qnet;

namespace {

int samples_main(int argc, char** argv) {
  cxxopts::Options options("samples", "Write MNIST test digits as PNG images (INDEX_LABEL.png) to try infer on.");
  options.add_options()
      ("count", "How many images, 1..100000", number_value("10"))
      ("first", "Index of the first test image", number_value("0"))
      ("out", "Folder to write them to (created if missing)", cxxopts::value<std::string>()->default_value("samples"))
      ("canvas", "Black ink on a 120x100 white RGB canvas, enlarged 3x, instead of MNIST's 28x28 white on black")
      ("h,help", "Show this help");
  add_data_dir_option(options);
  const std::optional<cxxopts::ParseResult> parsed = parse_args(options, argc, argv);
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  const int64_t first = int_option(args, "first", 0, INT32_MAX), count = int_option(args, "count", 1, 100000);
  const std::filesystem::path out = args["out"].as<std::string>();
  prepare_output_folder(out.string(), "--out");
  const ImageSet test = load_test_images(mnist_dir(args["data-dir"].as<std::string>()));
  if (first + count > test.size())
    throw UsageError(fmt::format("--first {} --count {} (the test set has {} images)", first, count, test.size()));
  const bool canvas = args.count("canvas") > 0;
  if (canvas && test.image_shape() != Shape{28, 28, 1})
    throw UsageError(fmt::format("--canvas draws MNIST-style digits (28x28x1); this test set has {} images", shape_str(test.image_shape())));
  const PngFormat plain{.width = static_cast<int>(test.width()), .height = static_cast<int>(test.height()),
                        .channels = static_cast<int>(test.channels())};
  for (int64_t i = first; i < first + count; ++i) {
    const std::string path = (out / fmt::format("{:04}_{}.png", i, test.label(i))).string();
    if (canvas) write_png(path, {.width = 120, .height = 100, .channels = 3}, ink_on_canvas(test.image(i), 120, 100).data());
    else write_png(path, plain, test.image(i));
  }
  fmt::print("Wrote {} {} PNG images to {}/ (INDEX_LABEL.png); try: build/bin/infer model.qbin {}/*.png\n", count,
             canvas ? "120x100 RGB canvas" : shape_str(test.image_shape()), out.string(), out.string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_app("samples", [&] { return samples_main(argc, argv); });
}
