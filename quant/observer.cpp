#include "quant/observer.h"

#include "core/distributed.h"

#include <algorithm>

#include "core/kernels.h"

namespace qnet {

std::pair<float, float> min_max(const Tensor& t) {
  if (t.numel() == 0) return {0.f, 0.f};
  float lo = 0.f, hi = 0.f;
  kernels().min_max(t.numel(), t.data(), &lo, &hi);
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
  if (const StepContext* step = sharded_step()) {  // the range of the whole batch, on every rank (exact in any order)
    float ends[2] = {-lo, hi};                       // one collective: min(lo) = -max(-lo), negation is exact
    step->comm->allreduce_max(ends, 2);
    lo = -ends[0], hi = ends[1];
  }
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
