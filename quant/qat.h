// Quantization-aware training: turn a float model into its QAT form, keeping its parameters.
//
//   Sequential model = mnist_reference_model(rng);      // or load_model("model_float.qbin")
//   prepare_qat(model, {.bits = 8});                    // Conv2D/Dense fake-quantize their kernels,
//                                                       // ReLU after Conv2D fake-quantizes to uint8
//   fit(model, adam, ...);  freeze_observers(model);
//   save_model(model, "model_qat.qbin");                // float weights + activation ranges
//
// The graph mirrors the deployed int8 graph op for op (docs/quantization.md): the input is
// exact on the 1/255 grid, conv+ReLU output is uint8, max-pool and flatten keep its grid,
// the Dense output (logits) stays float. A BatchNormalization after a Conv2D, DepthwiseConv2D or
// Dense is folded into its kernel (eq. 13-15), as PyTorch's ConvBn2d does it.
#pragma once

#include <functional>
#include <set>

#include "layers/layer_record.h"
#include "layers/sequential.h"
#include "quant/observer.h"

namespace qnet {

// The CPUs an int8 model is made for (train --qat, quantize and inspect --int8-target; docs/runtime.md).
enum class Int8Target {
  // Every width as asked. oneDNN runs it in one pass with VNNI; without VNNI (AVX2, SSE4.1) a
  // layer whose u8 x s8 pair sums can pass int16 (8-bit kernels on 8-bit codes) runs twice, on
  // split weights: exact everywhere, fastest with VNNI.
  kVnni,
  // PyTorch's reduce_range for fbgemm: activation grids of at most 7 bits, and kernels that read
  // the 8-bit pixels at most 7 bits, so no pair sum passes int16 (2 x 127 x 127, 2 x 255 x 63):
  // one pass on every x86-64 CPU.
  kAvx2,
};
const char* int8_target_name(Int8Target target);  // "vnni", "avx2"

struct QatOptions {
  int bits = 8;  // weights and activations, 2..8, of every layer whose Module::quant_bits is 0
  Int8Target target = Int8Target::kVnni;  // may narrow some of those widths (kAvx2)
  ObserverOptions observer;
};

class QatBatchNorm;

// Conv2D, DepthwiseConv2D or Dense whose kernel is fake-quantized per output channel at every
// forward. With a BatchNormalization folded into it (fold()), the kernel it quantizes is the
// folded one, w * gamma / sqrt(moving_var + eps) (eq. 13), and it gives its output without bias:
// the QatBatchNorm after it finishes the layer.
class QatWeights : public Module, public PooledForward, public Recorded {
 public:
  QatWeights(std::unique_ptr<Module> layer, int bits);  // layer: a kWeights kind (layers/layer_kind.h)
  Variable forward(const Variable& x) override;
  bool can_forward_max_pooled() const override;
  Variable forward_max_pooled(const Variable& x, const Pool2dOptions& pool, ValueRange* range, const PooledActivation& activation) override;
  Shape output_shape(const Shape& input) const override { return layer_->output_shape(input); }
  std::string type_name() const override { return "Qat" + layer_->type_name(); }
  std::unique_ptr<Module> clone() const override;
  void link_clone(const Module& original, const std::function<Module*(const Module*)>& copy_of) override;
  std::vector<Variable*> parameters() override { return layer_->parameters(); }
  qbin::LayerRecord to_record() const override;
  int bits() const { return bits_; }
  void set_bits(int bits);  // 2..8: the next forward quantizes the kernel on the new grid
  Module& inner() { return *layer_; }
  const Module& inner() const { return *layer_; }

  // Folds the BatchNormalization of `bn` (the layer right after this one) into this layer.
  void fold(QatBatchNorm& bn);
  const QatBatchNorm* folded() const { return folded_; }
  // The float kernel and bias the int8 model quantizes: with a folded BatchNormalization
  // w * f and beta + (b - moving_mean) * f (eq. 13-14), else the layer's own (bias empty if none).
  Tensor deployed_kernel() const;
  Tensor deployed_bias() const;
  // PTQ calibration (set_calibration): the float layer, no fake quantization.
  void set_float(bool on) { float_ = on; }

 private:
  template <typename F>
  Variable with_quantized_kernel(F&& run);

  std::unique_ptr<Module> layer_;
  int bits_;
  QatBatchNorm* folded_ = nullptr;  // the layer after this one in the chain, which owns the BatchNormalization
  bool float_ = false;
};

// A BatchNormalization folded into the QatWeights before it (PyTorch's ConvBn2d, split in two
// layers so each keeps its record). In training, until freeze(), the layer before it gives
// z = x * fake_quant(w * f) and this one y = BN(z / f + b) with the batch's statistics (which
// move the moving ones); frozen, in evaluation and in int8: y = z + beta + (b - moving_mean) * f,
// exactly the folded layer (eq. 14-15). f = gamma / sqrt(moving_var + eps); where gamma is 0, f is
// 0 and z / f is taken as 0. Its record is the BatchNormalization's.
class QatBatchNorm : public Module, public Recorded {
 public:
  explicit QatBatchNorm(std::unique_ptr<Module> batch_norm);  // a BatchNormalization
  Variable forward(const Variable& z) override;
  Shape output_shape(const Shape& input) const override { return bn_->output_shape(input); }
  std::string type_name() const override { return "QatBatchNormalization"; }
  std::unique_ptr<Module> clone() const override;  // unlinked: its QatWeights' link_clone links it
  std::vector<Variable*> parameters() override { return bn_->parameters(); }
  int64_t non_trainable_count() const override { return bn_->non_trainable_count(); }
  void set_training(bool training) override;
  qbin::LayerRecord to_record() const override;

  Module& inner() { return *bn_; }
  // The per-channel factor f = gamma / sqrt(moving_var + eps), differentiable in gamma.
  Variable factor() const;
  // beta + (b - moving_mean) f: the folded bias, b the layer's bias (undefined: 0).
  Variable folded_bias(const Variable& b) const;
  // Freezes the statistics (PyTorch's freeze_bn_stats): from now on training uses the moving ones.
  void freeze() { frozen_ = true; }
  bool frozen() const { return frozen_; }

 private:
  friend class QatWeights;
  std::unique_ptr<Module> bn_;
  QatWeights* layer_ = nullptr;  // set by QatWeights::fold
  bool frozen_ = false;
};

// An activation fake-quantized to uint8 codes whose range a moving-average observer tracks (in
// training mode, and until it has seen a batch).
class QatObservedActivation : public Module, public PoolCommutingActivation {
 public:
  QatObservedActivation(int bits, const ObserverOptions& observer);
  // PoolCommutingActivation: fake-quant is non-decreasing.
  Shape output_shape(const Shape& input) const override { return input; }
  MovingAverageObserver& observer() { return observer_; }
  const MovingAverageObserver& observer() const { return observer_; }
  int bits() const { return bits_; }
  void set_bits(int bits);  // 2..8: the same range, cut into 2^bits - 1 steps from the next forward
  // PTQ calibration: with a sink, the activation is not quantized and its values (after the
  // ReLU, for a QatReLU) go to the sink instead of the observer.
  using Sink = std::function<void(QatObservedActivation& where, const Tensor& values)>;
  void set_sink(Sink sink) { sink_ = std::move(sink); }

 protected:
  bool observing() const { return training_ || !observer_.initialized(); }

  int bits_;
  MovingAverageObserver observer_;
  Sink sink_;
};

// ReLU followed by the fake-quant: codes from real 0 (zero point 0). Its record kind is "ReLU".
class QatReLU : public QatObservedActivation, public Recorded {
 public:
  QatReLU(int bits, const ObserverOptions& observer);
  Variable forward(const Variable& x) override;
  // In the fused conv + ReLU + max-pool (layers/fusion.h): the op fake-quantizes in place on the
  // grid this gives once the conv output's range is known (observed first, as forward does).
  PooledActivation inside_pooled_op() override;
  Variable activate_pooled(const Variable& pooled, const ValueRange& unpooled_range) override;
  std::string type_name() const override { return "QatReLU"; }
  std::unique_ptr<Module> clone() const override { return std::make_unique<QatReLU>(*this); }
  qbin::LayerRecord to_record() const override;
};

// The output of a layer with no ReLU after it, fake-quantized with a zero point (real 0 is the
// code z, so negative values have codes below z). Its record kind is "Quantize".
class QatQuantize : public QatObservedActivation, public Recorded {
 public:
  QatQuantize(int bits, const ObserverOptions& observer) : QatObservedActivation(bits, observer) {}
  Variable forward(const Variable& x) override;
  Variable activate_pooled(const Variable& pooled, const ValueRange& unpooled_range) override;
  std::string type_name() const override { return "QatQuantize"; }
  std::unique_ptr<Module> clone() const override { return std::make_unique<QatQuantize>(*this); }
  qbin::LayerRecord to_record() const override;
};

// Rewrites the model in place into the graph the int8 runtime runs (docs/quantization.md):
// every Conv2D, DepthwiseConv2D and Dense fake-quantizes its kernel, with a BatchNormalization
// right after it folded in; each one but the last, and each layer whose output gets a grid of its
// own (average pooling, a residual block's add), gives uint8 codes: through a QatReLU when a ReLU
// follows it and a QatQuantize (inserted) otherwise. Inside residual blocks every output is codes;
// the last Conv2D, DepthwiseConv2D or Dense of the model (outside any block) gives the float
// logits, and what follows it stays float. Max and zero padding, Flatten, Dropout and other ReLUs
// keep their input's grid. Throws std::invalid_argument, before any training, for a model no int8
// graph can express: no such layer, a BatchNormalization that follows none, the last one inside a
// residual block, or a block or BatchNormalization on the float logits.
void prepare_qat(Sequential& model, const QatOptions& options);
void freeze_observers(Sequential& model);
// Freezes every folded BatchNormalization's statistics (train --freeze-bn-after).
void freeze_bn_statistics(Sequential& model);
bool is_qat(const Sequential& model);
// The bit widths of the model's weight and activation quantizers (none for a float model; a layer
// kept in float adds none).
std::set<int> qat_bit_widths(const Sequential& model);
int qat_bits(const Sequential& model);  // the widest bit width of its weights and grids; 0 for a float model
std::string qat_bits_text(const Sequential& model);  // "8-bit", "mixed 4/8-bit", "8-bit, 1 layer in float", "float"

// PTQ calibration (quant/export.h): with a sink, every QatWeights computes in float and every
// observed activation hands its values to the sink; an empty sink restores QAT.
void set_calibration(Sequential& model, const QatObservedActivation::Sink& sink);

// A model file written from a QAT model (weight_bits / output_bits attributes) comes back
// as a QAT model with its ranges, which `observer` (its averaging constant) keeps updating if
// training continues; a float file comes back as a float model.
Sequential load_any_model(const std::string& path, const ObserverOptions& observer = {});

}  // namespace qnet
