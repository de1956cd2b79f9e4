#include "data/dataset.h"

#include <numeric>
#include <stdexcept>

#include <fmt/format.h>

#include "core/parallel.h"
#include "core/parallel_for.h"

namespace qnet {

ImageSet::ImageSet(std::shared_ptr<const std::vector<uint8_t>> pixels, std::shared_ptr<const std::vector<int32_t>> labels,
                   int64_t height, int64_t width, int64_t channels)
    : pixels_(std::move(pixels)),
      labels_(std::move(labels)),
      height_(height),
      width_(width),
      channels_(channels),
      count_(static_cast<int64_t>(labels_->size())) {
  if (height < 1 || width < 1 || channels < 1 || static_cast<int64_t>(pixels_->size()) != count_ * height * width * channels)
    throw std::invalid_argument(fmt::format("ImageSet: {} bytes for {} images of {}x{}x{}", pixels_->size(), count_, height, width,
                                            channels));
}

ImageSet ImageSet::slice(int64_t begin, int64_t count) const {
  if (begin < 0 || count < 0 || begin + count > count_)
    throw std::out_of_range(fmt::format("ImageSet::slice({}, {}) of a set of {}", begin, count, count_));
  ImageSet s = *this;
  s.begin_ = begin_ + begin;
  s.count_ = count;
  return s;
}

std::vector<int64_t> ImageSet::indices() const {
  std::vector<int64_t> v(count_);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

Batch ImageSet::batch(std::span<const int64_t> idx) const {
  const int64_t n = static_cast<int64_t>(idx.size()), pixels = image_bytes();
  Batch b{Tensor({n, height_, width_, channels_}), std::vector<int32_t>(n)};
  float* const x = b.x.data();
  int32_t* const labels = b.labels.data();
  parallel_for_static(n, n * pixels > kMinParallelElements / 4, [=, this](int64_t i) {
    const uint8_t* src = image(idx[i]);
    float* dst = x + i * pixels;
    for (int64_t p = 0; p < pixels; ++p) dst[p] = static_cast<float>(src[p]) / 255.f;
    labels[i] = label(idx[i]);
  });
  return b;
}

void ImageSet::prefetch(std::span<const int64_t> idx) const {
  constexpr uintptr_t kLine = 64;
  for (const int64_t i : idx) {
    const uintptr_t first = reinterpret_cast<uintptr_t>(image(i)), last = first + static_cast<uintptr_t>(image_bytes()) - 1;
    for (uintptr_t line = first & ~(kLine - 1); line <= last; line += kLine) __builtin_prefetch(reinterpret_cast<const void*>(line));
  }
}

Batch ImageSet::batch(int64_t begin, int64_t count) const {
  std::vector<int64_t> idx(count);
  std::iota(idx.begin(), idx.end(), begin);
  return batch(idx);
}

Split split_validation(const ImageSet& all, double fraction) {
  if (!(fraction >= 0.0 && fraction < 1.0))
    throw std::invalid_argument(fmt::format("validation split {} (expected a fraction in [0, 1))", fraction));
  const int64_t at = static_cast<int64_t>(static_cast<double>(all.size()) * (1.0 - fraction));
  return {all.slice(0, at), all.slice(at, all.size() - at)};
}

}  // namespace qnet
