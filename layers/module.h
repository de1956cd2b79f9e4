// Module: a layer or a stack of layers, with parameters and a train/eval mode.
//
//   Rng rng(1);
//   Conv2D conv({.in_channels = 1, .filters = 12, .kernel_h = 3, .kernel_w = 3}, rng);
//   Variable y = conv.forward(x);          // x: [N, H, W, C]
//   for (Variable* p : conv.parameters()) ...
//
// Shapes passed to output_shape() are per example (no batch axis), as in Keras' summary.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"

namespace qnet {

class Module {
 public:
  Module() = default;
  Module(const Module&) = default;
  Module(Module&&) noexcept = default;
  Module& operator=(const Module&) = default;
  Module& operator=(Module&&) noexcept = default;
  virtual ~Module() = default;
  virtual Variable forward(const Variable& x) = 0;
  virtual Shape output_shape(const Shape& input) const = 0;
  virtual std::string type_name() const = 0;        // "Conv2D", as in Keras' summary
  virtual std::vector<Variable*> parameters() { return {}; }
  virtual void set_training(bool training) { training_ = training; }
  // A deep copy: its own parameters, statistics, ranges and random state, equal to this one's,
  // so that it trains to the same bits (optim/trainer.cpp runs one per thread, each on its part of
  // the batch). Null for a module that cannot copy itself: training then splits each op instead.
  virtual std::unique_ptr<Module> clone() const { return nullptr; }
  // Called on a layer's copy once its chain is copied: points the copy at the copies of the layers
  // the original points at (a QatWeights at its folded BatchNormalization); copy_of maps a layer
  // of the original chain to its copy.
  virtual void link_clone(const Module& /*original*/, const std::function<Module*(const Module*)>& /*copy_of*/) {}
  bool training() const { return training_; }
  // What else a layer does, it says through interfaces: its record in model files
  // (layers/layer_record.h) and its part in the conv -> activation -> max-pool fusion
  // (layers/fusion.h).

  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  int64_t parameter_count();
  // State that is saved but not trained (BatchNormalization's moving statistics), counted apart
  // in the summary as Keras does.
  virtual int64_t non_trainable_count() const { return 0; }
  // The bit width QAT and PTQ give this layer's kernel and output codes, for a kind that has them
  // (layers/layer_kind.h: kWeights, kRequantize); 0: the model's default (--bits). Specs set it
  // with `bits=N`, model files keep it (attribute "bits").
  int quant_bits() const { return quant_bits_; }
  void set_quant_bits(int bits) { quant_bits_ = bits; }
  // A Conv2D, DepthwiseConv2D or Dense that QAT, PTQ and export keep in float (spec `float=true`,
  // --keep-float; attribute "float" in files): its kernel is not quantized, its output still gets
  // its grid, and the int8 file holds it as a float island (docs/quantization.md).
  bool keep_float() const { return keep_float_; }
  void set_keep_float(bool on) { keep_float_ = on; }

 protected:
  bool training_ = true;
  std::string name_;
  int quant_bits_ = 0;
  bool keep_float_ = false;
};

// v's value copied into storage of its own (undefined stays undefined), for clone().
Variable deep_copy(const Variable& v);

// The most float parameters a model may hold: what a .qbin file holds (1 GiB), less 1 MiB for its
// records. Layers refuse more before allocating them (check_parameters), specs before building.
inline constexpr int64_t kMaxParameters = ((int64_t{1} << 30) - (int64_t{1} << 20)) / 4;
// Throws std::invalid_argument naming the layer if `count` parameters are more than kMaxParameters.
void check_parameters(const char* layer, int64_t count);

// Glorot (Xavier) uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)), Keras' default.
class Rng;
Tensor glorot_uniform(Shape shape, int64_t fan_in, int64_t fan_out, Rng& rng);

}  // namespace qnet
