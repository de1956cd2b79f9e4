#include "quant/observer.h"

#include <algorithm>

#include "core/parallel.h"

namespace qnet {

std::pair<float, float> min_max(const Tensor& t) {
  float lo = t.numel() ? t[0] : 0.f, hi = lo;
  const float* p = t.data();
  const int64_t n = t.numel();
#pragma omp parallel for simd reduction(min : lo) reduction(max : hi) schedule(static) if (parallel : n > kMinParallelElements)
  for (int64_t i = 0; i < n; ++i) lo = p[i] < lo ? p[i] : lo, hi = p[i] > hi ? p[i] : hi;
  return {lo, hi};
}

MovingAverageObserver::MovingAverageObserver(const ObserverOptions& options) : options_(options) {
  if (!options_.init_from_first_batch) min_ = options_.init_min, max_ = options_.init_max, initialized_ = true;
}

void MovingAverageObserver::observe(const Tensor& t) {
  if (frozen_ || t.numel() == 0) return;
  const auto [lo, hi] = min_max(t);
  observe_range(lo, hi);
}

void MovingAverageObserver::observe_range(float lo, float hi) {
  if (frozen_) return;
  if (!initialized_) {
    min_ = lo, max_ = hi, initialized_ = true;
    return;
  }
  const float c = options_.averaging_constant;  // eq. 9
  min_ += c * (lo - min_);
  max_ += c * (hi - max_);
}

void MovingAverageObserver::set_range(float min, float max) {
  min_ = min, max_ = max, initialized_ = true;
}

void MinMaxObserver::observe(const Tensor& t) {
  if (t.numel() == 0) return;
  const auto [lo, hi] = min_max(t);
  min_ = initialized_ ? std::min(min_, lo) : lo;
  max_ = initialized_ ? std::max(max_, hi) : hi;
  initialized_ = true;
}

}  // namespace qnet
