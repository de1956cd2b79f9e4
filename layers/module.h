// Module: a layer or a stack of layers, with parameters and a train/eval mode.
//
//   Rng rng(1);
//   Conv2D conv({.in_channels = 1, .filters = 12, .kernel_h = 3, .kernel_w = 3}, rng);
//   Variable y = conv.forward(x);          // x: [N, H, W, C]
//   for (Variable* p : conv.parameters()) ...
//
// Shapes passed to output_shape() are per example (no batch axis), as in Keras' summary.
#pragma once

#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "io/qbin.h"

namespace qnet {

class Module {
 public:
  virtual ~Module() = default;
  virtual Variable forward(const Variable& x) = 0;
  virtual Shape output_shape(const Shape& input) const = 0;
  virtual std::string type_name() const = 0;        // "Conv2D", as in Keras' summary
  virtual std::vector<Variable*> parameters() { return {}; }
  // The layer's record in a .qbin model file (attributes and float tensors).
  virtual qbin::LayerRecord to_record() const;
  virtual void set_training(bool training) { training_ = training; }
  bool training() const { return training_; }
  // Layers that take part in the conv -> activation -> max-pool fusion say so through the
  // interfaces in layers/fusion.h.

  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  int64_t parameter_count();

 protected:
  bool training_ = true;
  std::string name_;
};

// The optional "bias" tensor of a layer record, checked to be [channels]; undefined if absent.
Variable bias_from_record(const qbin::LayerRecord& r, int64_t channels);

// Glorot (Xavier) uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)), Keras' default.
class Rng;
Tensor glorot_uniform(Shape shape, int64_t fan_in, int64_t fan_out, Rng& rng);

}  // namespace qnet
