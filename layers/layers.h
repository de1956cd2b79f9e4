// The layer types: Conv2D, DepthwiseConv2D, Dense, BatchNormalization, MaxPool2D,
// AveragePooling2D, GlobalAveragePooling2D, Flatten, ReLU, Dropout, GaussianNoise, ZeroPadding2D
// (Sequential: layers/sequential.h; Residual: layers/residual.h; each kind's LayerKind:
// layers/layer_kind.h).
//
//   Rng rng(seed);
//   auto conv = std::make_unique<Conv2D>(Conv2DOptions{.in_channels = 1, .filters = 12}, rng);
//   auto dense = std::make_unique<Dense>(DenseOptions{.in_features = 2028, .units = 10}, rng);
//
// Kernels are Glorot-uniform, biases zero. Each layer is one op (core/ops.h) plus its
// parameters; activations are layers of their own.
#pragma once

#include "core/ops.h"
#include "layers/fusion.h"
#include "layers/layer_record.h"
#include "layers/module.h"

namespace qnet {

class Rng;

struct Conv2DOptions {
  int64_t in_channels = 1;
  int64_t filters = 1;
  int kernel_h = 3;
  int kernel_w = 3;
  Conv2dOptions conv;  // stride and padding
  bool use_bias = true;
};

class Conv2D : public Module, public PooledForward, public Recorded {
 public:
  Conv2D(const Conv2DOptions& options, Rng& rng);
  Variable forward(const Variable& x) override;
  Variable forward_max_pooled(const Variable& x, const Pool2dOptions& pool, ValueRange* range, const PooledActivation& activation) override;
  Shape output_shape(const Shape& input) const override;
  std::string type_name() const override { return "Conv2D"; }
  std::unique_ptr<Module> clone() const override;
  std::vector<Variable*> parameters() override;
  qbin::LayerRecord to_record() const override;
  static std::unique_ptr<Conv2D> from_record(const qbin::LayerRecord& r);

  const Conv2DOptions& options() const { return options_; }
  Variable& kernel() { return kernel_; }  // [KH, KW, IC, OC]
  Variable& bias() { return bias_; }      // [OC]

 private:
  Conv2D() = default;
  Conv2DOptions options_;
  Variable kernel_, bias_;
};

// DepthwiseConv2D (Keras'): each input channel c convolved with its own depth_multiplier (M)
// filters; output channel c * M + m. Kernel [KH, KW, 1, C * M] (a conv kernel with one input
// channel per group, as TFLite and oneDNN's grouped convs hold it), bias [C * M].
struct DepthwiseConv2DOptions {
  int64_t channels = 1;
  int64_t depth_multiplier = 1;
  int kernel_h = 3;
  int kernel_w = 3;
  Conv2dOptions conv;  // stride and padding
  bool use_bias = true;
};

class DepthwiseConv2D : public Module, public Recorded {
 public:
  DepthwiseConv2D(const DepthwiseConv2DOptions& options, Rng& rng);
  Variable forward(const Variable& x) override;
  Shape output_shape(const Shape& input) const override;
  std::string type_name() const override { return "DepthwiseConv2D"; }
  std::unique_ptr<Module> clone() const override;
  std::vector<Variable*> parameters() override;
  qbin::LayerRecord to_record() const override;
  static std::unique_ptr<DepthwiseConv2D> from_record(const qbin::LayerRecord& r);

  const DepthwiseConv2DOptions& options() const { return options_; }
  Variable& kernel() { return kernel_; }  // [KH, KW, 1, C * M]
  Variable& bias() { return bias_; }      // [C * M] or undefined

 private:
  DepthwiseConv2D() = default;
  DepthwiseConv2DOptions options_;
  Variable kernel_, bias_;
};

struct DenseOptions {
  int64_t in_features = 1;
  int64_t units = 1;
  bool use_bias = true;
};

class Dense : public Module, public Recorded {
 public:
  Dense(const DenseOptions& options, Rng& rng);
  Variable forward(const Variable& x) override;
  Shape output_shape(const Shape& input) const override;
  std::string type_name() const override { return "Dense"; }
  std::unique_ptr<Module> clone() const override;
  std::vector<Variable*> parameters() override;
  qbin::LayerRecord to_record() const override;
  static std::unique_ptr<Dense> from_record(const qbin::LayerRecord& r);

  const DenseOptions& options() const { return options_; }
  Variable& kernel() { return kernel_; }  // [IN, OUT]
  Variable& bias() { return bias_; }      // [OUT]

 private:
  Dense() = default;
  DenseOptions options_;
  Variable kernel_, bias_;
};

// BatchNormalization (Keras', over the last axis: the channels of an image, or a Dense layer's
// units): in training mode it normalizes with the batch's mean and variance and moves its moving
// statistics toward them (m <- momentum m + (1 - momentum) batch); in evaluation mode it uses the
// moving ones: y = gamma (x - moving_mean) / sqrt(moving_var + epsilon) + beta. gamma and beta
// are trained; the moving statistics are saved, not trained. In QAT and int8 it is folded into
// the Conv2D, DepthwiseConv2D or Dense before it (docs/quantization.md, eq. 13-15).
struct BatchNormOptions {
  int64_t channels = 1;
  float momentum = 0.99f;
  float epsilon = 1e-3f;
};

class BatchNormalization : public Module, public Recorded {
 public:
  explicit BatchNormalization(const BatchNormOptions& options);
  Variable forward(const Variable& x) override;
  Shape output_shape(const Shape& input) const override;
  std::string type_name() const override { return "BatchNormalization"; }
  std::unique_ptr<Module> clone() const override;
  std::vector<Variable*> parameters() override { return {&gamma_, &beta_}; }
  int64_t non_trainable_count() const override { return 2 * options_.channels; }
  qbin::LayerRecord to_record() const override;
  static std::unique_ptr<BatchNormalization> from_record(const qbin::LayerRecord& r);

  const BatchNormOptions& options() const { return options_; }
  Variable& gamma() { return gamma_; }
  Variable& beta() { return beta_; }
  MovingStatistics& moving() { return moving_; }  // mean and variance, [C] each
  const MovingStatistics& moving() const { return moving_; }

 private:
  BatchNormOptions options_;
  Variable gamma_, beta_;
  MovingStatistics moving_;
};

class MaxPool2D : public Module, public Recorded {
 public:
  explicit MaxPool2D(const Pool2dOptions& options = {}) : options_(options) {}
  Variable forward(const Variable& x) override { return max_pool2d(x, options_); }
  Shape output_shape(const Shape& input) const override;
  std::string type_name() const override { return "MaxPool2D"; }
  std::unique_ptr<Module> clone() const override { return std::make_unique<MaxPool2D>(*this); }
  qbin::LayerRecord to_record() const override;
  static std::unique_ptr<MaxPool2D> from_record(const qbin::LayerRecord& r);
  const Pool2dOptions& options() const { return options_; }

 private:
  Pool2dOptions options_;
};

// AveragePooling2D (Keras'): the mean of each window; with "same" padding, of the taps inside the
// input. In int8 its output gets a grid of its own (docs/quantization.md).
class AveragePooling2D : public Module, public Recorded {
 public:
  explicit AveragePooling2D(const Pool2dOptions& options = {}) : options_(options) {}
  Variable forward(const Variable& x) override { return avg_pool2d(x, options_); }
  Shape output_shape(const Shape& input) const override;
  std::string type_name() const override { return "AveragePooling2D"; }
  std::unique_ptr<Module> clone() const override { return std::make_unique<AveragePooling2D>(*this); }
  qbin::LayerRecord to_record() const override;
  const Pool2dOptions& options() const { return options_; }

 private:
  Pool2dOptions options_;
};

// GlobalAveragePooling2D (Keras'): the mean over H and W of each channel, [H, W, C] -> [C].
class GlobalAveragePooling2D : public Module {
 public:
  Variable forward(const Variable& x) override { return global_avg_pool2d(x); }
  Shape output_shape(const Shape& input) const override;
  std::string type_name() const override { return "GlobalAveragePooling2D"; }
  std::unique_ptr<Module> clone() const override { return std::make_unique<GlobalAveragePooling2D>(*this); }
};

class Flatten : public Module {
 public:
  Variable forward(const Variable& x) override { return flatten(x); }
  Shape output_shape(const Shape& input) const override { return {shape_numel(input)}; }
  std::string type_name() const override { return "Flatten"; }
  std::unique_ptr<Module> clone() const override { return std::make_unique<Flatten>(*this); }
};

// Dropout (training only): in training mode each element is kept with probability 1 - rate and
// scaled by 1 / (1 - rate) (inverted dropout, as Keras); in evaluation mode, and in every exported
// or deployed model, it is the identity. Its masks come from its own Rng, seeded when it is made,
// so a seed still gives the same training run.
class Dropout : public Module, public Recorded {
 public:
  Dropout(float rate, uint64_t seed);
  ~Dropout() override;
  Variable forward(const Variable& x) override;
  Shape output_shape(const Shape& input) const override { return input; }
  std::string type_name() const override { return "Dropout"; }
  std::unique_ptr<Module> clone() const override;
  qbin::LayerRecord to_record() const override;
  static std::unique_ptr<Dropout> from_record(const qbin::LayerRecord& r);
  float rate() const { return rate_; }

 private:
  float rate_;
  std::unique_ptr<Rng> rng_;
};

// GaussianNoise (training only, as Keras'): in training mode adds N(0, stddev^2) noise to each
// element; in evaluation mode and in every deployed model, the identity. Its noise comes from its
// own Rng, seeded when it is made. (The worked example of adding a layer kind,
// docs/architecture.md: this class, layers/gaussian_noise.cpp and one line in layer_kinds().)
class GaussianNoise : public Module, public Recorded {
 public:
  GaussianNoise(float stddev, uint64_t seed);
  ~GaussianNoise() override;
  Variable forward(const Variable& x) override;
  Shape output_shape(const Shape& input) const override { return input; }
  std::string type_name() const override { return "GaussianNoise"; }
  std::unique_ptr<Module> clone() const override;
  qbin::LayerRecord to_record() const override;
  float stddev() const { return stddev_; }

 private:
  float stddev_;
  std::unique_ptr<Rng> rng_;
};

// ZeroPadding2D (Keras'): the image in a frame of zeros, `top` rows above, `bottom` below, `left`
// and `right` columns beside. In int8 it frames u8 codes with the code of real 0. (The worked
// example of a kind that computes at inference, docs/architecture.md: this class,
// layers/zero_padding2d.cpp, quant/runtime/stages/zero_padding2d.cpp and a line in each kinds table.)
class ZeroPadding2D : public Module, public Recorded {
 public:
  explicit ZeroPadding2D(const Pad2dOptions& padding);
  Variable forward(const Variable& x) override { return zero_pad2d(x, padding_); }
  Shape output_shape(const Shape& input) const override;
  std::string type_name() const override { return "ZeroPadding2D"; }
  std::unique_ptr<Module> clone() const override { return std::make_unique<ZeroPadding2D>(*this); }
  qbin::LayerRecord to_record() const override;
  const Pad2dOptions& padding() const { return padding_; }

 private:
  Pad2dOptions padding_;
};

class ReLU : public Module, public PoolCommutingActivation {
 public:
  Variable forward(const Variable& x) override { return relu(x); }
  PooledActivation inside_pooled_op() override { return PooledActivation::kReLU; }
  Variable activate_pooled(const Variable& pooled, const ValueRange&) override { return relu(pooled); }
  Shape output_shape(const Shape& input) const override { return input; }
  std::string type_name() const override { return "ReLU"; }
  std::unique_ptr<Module> clone() const override { return std::make_unique<ReLU>(*this); }
};

}  // namespace qnet
