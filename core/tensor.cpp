#include "core/tensor.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <stdexcept>

#include <fmt/format.h>

namespace qnet {

namespace {
constexpr std::align_val_t kAlignment{64};

std::shared_ptr<float[]> allocate(int64_t n) {
  float* p = static_cast<float*>(::operator new[](std::max<int64_t>(n, 1) * sizeof(float), kAlignment));
  return std::shared_ptr<float[]>(p, [](float* q) { ::operator delete[](q, kAlignment); });
}
}  // namespace

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument(fmt::format("negative dimension in shape {}", shape_str(shape)));
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

Tensor::Tensor(Shape shape) : shape_(std::move(shape)), numel_(shape_numel(shape_)), data_(allocate(numel_)) {}

Tensor Tensor::zeros(Shape shape) { return full(std::move(shape), 0.f); }

Tensor Tensor::full(Shape shape, float value) {
  Tensor t(std::move(shape));
  t.fill(value);
  return t;
}

Tensor Tensor::from(Shape shape, std::vector<float> values) {
  Tensor t(std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel())
    throw std::invalid_argument(
        fmt::format("Tensor::from: {} values for shape {} (expected {})", values.size(), shape_str(t.shape()), t.numel()));
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

Tensor Tensor::reshaped(Shape shape) const {
  if (shape_numel(shape) != numel_)
    throw std::invalid_argument(
        fmt::format("reshape: cannot view {} ({} values) as {}", shape_str(shape_), numel_, shape_str(shape)));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  if (empty()) return {};
  Tensor t(shape_);
  std::memcpy(t.data(), data(), numel_ * sizeof(float));
  return t;
}

void Tensor::fill(float value) { std::fill(data(), data() + numel_, value); }

std::vector<float> Tensor::to_vector() const { return std::vector<float>(data(), data() + numel_); }

}  // namespace qnet
