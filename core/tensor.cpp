#include "core/tensor.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>
#include <new>
#include <stdexcept>

#include <fmt/format.h>

namespace qnet {

namespace {
constexpr std::align_val_t kAlignment{64};

// Training allocates and frees the same few buffer sizes every step. Freed buffers wait here for
// reuse (up to kPoolBytes per thread), so a step does not go back to the kernel for fresh, zeroed
// pages each time. One pool per thread, without a lock: a buffer goes back to the pool of the
// thread that frees it, and is next used by that thread, whose cache holds it (one pool for all
// threads handed each thread buffers the other had just written, and took a lock per tensor).
class BufferPool {
 public:
  static constexpr size_t kPoolBytes = size_t{256} << 20;
  BufferPool() = default;
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  ~BufferPool();
  float* get(size_t floats) {
    auto it = free_.find(floats);
    if (it != free_.end() && !it->second.empty()) {
      float* p = it->second.back();
      it->second.pop_back();
      bytes_ -= floats * sizeof(float);
      return p;
    }
    return static_cast<float*>(::operator new[](floats * sizeof(float), kAlignment));
  }
  void put(float* p, size_t floats) {
    if (bytes_ + floats * sizeof(float) <= kPoolBytes) {
      free_[floats].push_back(p);
      bytes_ += floats * sizeof(float);
      return;
    }
    ::operator delete[](p, kAlignment);
  }

 private:
  std::unordered_map<size_t, std::vector<float*>> free_;
  size_t bytes_ = 0;
};

// Set when this thread's pool is gone (its thread-local objects destroyed at thread exit, or at
// the end of main): tensors freed after that, during static destruction, go straight back.
thread_local bool t_pool_gone = false;

BufferPool::~BufferPool() {
  t_pool_gone = true;
  for (auto& [floats, buffers] : free_)
    for (float* p : buffers) ::operator delete[](p, kAlignment);
}

BufferPool* pool() {
  if (t_pool_gone) return nullptr;
  thread_local BufferPool p;
  return &p;
}

float* get_buffer(size_t floats) {
  BufferPool* p = pool();
  return p ? p->get(floats) : static_cast<float*>(::operator new[](floats * sizeof(float), kAlignment));
}

void put_buffer(float* q, size_t floats) {
  if (BufferPool* p = pool())
    p->put(q, floats);
  else
    ::operator delete[](q, kAlignment);
}

std::shared_ptr<float[]> allocate(int64_t n) {
  const size_t floats = static_cast<size_t>(std::max<int64_t>(n, 1));
  return std::shared_ptr<float[]>(get_buffer(floats), [floats](float* q) { put_buffer(q, floats); });
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
