// Image classification data in the IDX format: a folder with four files, the training and test
// images (uint8, N x H x W or N x H x W x C) and their labels (uint8, N), each plain or
// gzip-compressed. MNIST, Fashion-MNIST, KMNIST and EMNIST are published this way; a user's own
// data can be written the same way (docs/tutorial.md).
//
//   ImageData d = load_image_data("~/data/fashion");   // shapes from the files, classes from the labels
//   d.train.image_shape();  // {28, 28, 1}
//   d.classes;              // 10
//
// The files are found by name: one each ending in "-ubyte" or "-ubyte.gz" whose name contains
// "train-images", "train-labels", "t10k-images" (or "test-images") and "t10k-labels" (or
// "test-labels"), so "emnist-letters-train-images-idx3-ubyte.gz" works too. Everything is checked
// before use (IDX header against the exact size, ranks, counts, equal image shapes, labels below
// the class count); a DataError names the file and what was expected.
#pragma once

#include <string>

#include "data/dataset.h"
#include "data/idx.h"

namespace qnet {

struct ImageData {
  ImageSet train;
  ImageSet test;
  int classes = 0;
};

inline constexpr int kMaxClasses = 65536;
inline constexpr int64_t kMaxImageChannels = 4;  // what the runtime's input layer takes

// classes = 0: the largest label + 1 (over both sets); else every label must be below it.
ImageData load_image_data(const std::string& dir, int classes = 0);
// The test images and labels only (evaluate, samples): the training files need not be there.
ImageSet load_test_images(const std::string& dir, int classes = 0);

}  // namespace qnet
