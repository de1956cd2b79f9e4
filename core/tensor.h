// A dense float tensor: a shape and a 64-byte aligned buffer shared by copies.
//
//   qnet::Tensor x({2, 28, 28, 1});          // uninitialised
//   qnet::Tensor z = qnet::Tensor::zeros({2, 10});
//   z[3] = 1.f;  x.reshaped({2, 784});       // a view of the same storage
//
// Images are NHWC and conv kernels HWIO (KH, KW, IC, OC), so a flatten is in H, W, C
// order as in Keras and oneDNN's nhwc int8 layout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qnet {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[32, 26, 26, 12]"

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(Shape shape);  // uninitialised contents
  static Tensor zeros(Shape shape);
  static Tensor full(Shape shape, float value);
  static Tensor from(Shape shape, std::vector<float> values);

  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_; }
  bool empty() const { return data_ == nullptr; }

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  float& operator[](int64_t i) { return data_.get()[i]; }
  float operator[](int64_t i) const { return data_.get()[i]; }

  // Same storage, new shape (numel must match). Throws std::invalid_argument.
  Tensor reshaped(Shape shape) const;
  Tensor clone() const;  // deep copy
  void fill(float value);
  std::vector<float> to_vector() const;

 private:
  Shape shape_;
  int64_t numel_ = 0;
  std::shared_ptr<float[]> data_;
};

}  // namespace qnet
