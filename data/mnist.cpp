#include "data/mnist.h"

#include "data/idx.h"

#include <cstdlib>

#include <fmt/format.h>

namespace qnet {

std::string mnist_dir(const std::string& option) {
  if (!option.empty()) return option;
  if (const char* env = std::getenv("QNET_DATA_DIR"); env && *env) return env;
  const char* home = std::getenv("HOME");
  if (!home || !*home)  // before: quietly ./.cache/qnet/mnist
    throw DataError("HOME is not set, so there is no ~/.cache/qnet/mnist: pass --data-dir DIR or set QNET_DATA_DIR");
  return fmt::format("{}/.cache/qnet/mnist", home);
}

Mnist load_mnist(const std::string& dir) {
  ImageData d = load_image_data(dir);
  if (d.train.image_shape() != Shape{28, 28, 1} || d.classes != 10)
    throw DataError(fmt::format("{}: {} images and {} classes (expected MNIST's 28x28x1 and 10)", dir, shape_str(d.train.image_shape()),
                                d.classes));
  return d;
}

ImageSet load_mnist_test(const std::string& dir) { return load_test_images(dir); }

}  // namespace qnet
