// Labelled image sets kept as uint8 in memory and normalised per batch.
//
//   ImageSet train = mnist.train.slice(0, 54000), val = mnist.train.slice(54000, 6000);
//   std::vector<int64_t> order = train.indices();  rng.shuffle(order);
//   Batch b = train.batch(std::span(order).subspan(0, 32));   // x: [32, 28, 28, 1] in [0, 1]
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace qnet {

struct Batch {
  Tensor x;                     // [N, H, W, C], pixels / 255
  std::vector<int32_t> labels;  // [N]
};

class ImageSet {
 public:
  ImageSet() = default;
  // pixels: count x height x width x channels bytes (HWC per image).
  ImageSet(std::shared_ptr<const std::vector<uint8_t>> pixels, std::shared_ptr<const std::vector<int32_t>> labels,
           int64_t height, int64_t width, int64_t channels = 1);

  int64_t size() const { return count_; }
  int64_t height() const { return height_; }
  int64_t width() const { return width_; }
  int64_t channels() const { return channels_; }
  Shape image_shape() const { return {height_, width_, channels_}; }
  int64_t image_bytes() const { return height_ * width_ * channels_; }
  const uint8_t* image(int64_t i) const { return pixels_->data() + (begin_ + i) * image_bytes(); }
  int32_t label(int64_t i) const { return (*labels_)[begin_ + i]; }

  ImageSet slice(int64_t begin, int64_t count) const;  // a view; throws if out of range
  std::vector<int64_t> indices() const;                 // 0 .. size-1
  Batch batch(std::span<const int64_t> indices) const;
  Batch batch(int64_t begin, int64_t count) const;      // consecutive images
  // Asks the CPU to bring these images' pixels into its caches: the trainer's next step's, while
  // this one computes (a step's images are scattered over the set: each would be a miss).
  void prefetch(std::span<const int64_t> indices) const;

 private:
  std::shared_ptr<const std::vector<uint8_t>> pixels_;
  std::shared_ptr<const std::vector<int32_t>> labels_;
  int64_t height_ = 0, width_ = 0, channels_ = 1, begin_ = 0, count_ = 0;
};

// Keras' validation_split: the last floor-complement goes to validation, unshuffled:
// split index = int(n * (1 - fraction)).
struct Split {
  ImageSet train, validation;
};
Split split_validation(const ImageSet& all, double fraction);

}  // namespace qnet
