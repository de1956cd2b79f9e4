// Observers track the real range of a tensor during training (docs/quantization.md, eq. 9).
//
//   MovingAverageObserver obs({.averaging_constant = 0.01f});
//   obs.observe(batch_output);        // training steps only
//   QParams p = obs.qparams(8);       // nudged uint8 parameters of the current range
//   obs.freeze();                     // ranges stop moving (e.g. after epoch N)
#pragma once

#include <utility>

#include "core/tensor.h"
#include "quant/quantization.h"

namespace qnet {

// The smallest and largest element (0, 0 for an empty tensor).
std::pair<float, float> min_max(const Tensor& t);

struct ObserverOptions {
  // v <- v + c (batch - v). PyTorch: c = 0.01, first batch initialises; tfmot: c = 0.001 from [-6, 6].
  float averaging_constant = 0.01f;
  bool init_from_first_batch = true;
  float init_min = -6.f, init_max = 6.f;  // used when not initialised from the first batch
};

// qnet's default for QAT (train --observer tfmot): tfmot's, the article's tool. Measured against
// PyTorch's over 5 seeds, the two give the same accuracy within noise (docs/quantization.md).
inline ObserverOptions tfmot_observer() { return {.averaging_constant = 0.001f, .init_from_first_batch = false}; }
inline ObserverOptions pytorch_observer() { return {.averaging_constant = 0.01f, .init_from_first_batch = true}; }

class MovingAverageObserver {
 public:
  explicit MovingAverageObserver(const ObserverOptions& options = {});
  void observe(const Tensor& t);
  void observe_range(float batch_min, float batch_max);  // the min and max of one batch
  void freeze() { frozen_ = true; }
  bool frozen() const { return frozen_; }
  bool initialized() const { return initialized_; }
  float min() const { return min_; }
  float max() const { return max_; }
  void set_range(float min, float max);  // e.g. from a saved model
  QParams qparams(int bits) const { return choose_activation_qparams(min_, max_, bits); }

 private:
  ObserverOptions options_;
  float min_ = 0.f, max_ = 0.f;
  bool initialized_ = false, frozen_ = false;
};

// Plain min/max over everything observed (calibration for post-training quantization).
class MinMaxObserver {
 public:
  void observe(const Tensor& t);
  float min() const { return min_; }
  float max() const { return max_; }

 private:
  float min_ = 0.f, max_ = 0.f;
  bool initialized_ = false;
};

}  // namespace qnet
