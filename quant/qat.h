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
// the Dense output (logits) stays float.
#pragma once

#include "layers/layer_record.h"
#include "layers/sequential.h"
#include "quant/observer.h"

namespace qnet {

struct QatOptions {
  int bits = 8;  // weights and activations, 2..8
  ObserverOptions observer;
};

// Conv2D or Dense whose kernel is fake-quantized per output channel at every forward.
class QatWeights : public Module, public PooledForward, public Recorded {
 public:
  QatWeights(std::unique_ptr<Module> layer, int bits);  // layer: Conv2D or Dense
  Variable forward(const Variable& x) override;
  bool can_forward_max_pooled() const override {
    const auto* inner = dynamic_cast<const PooledForward*>(layer_.get());
    return inner && inner->can_forward_max_pooled();
  }
  Variable forward_max_pooled(const Variable& x, const Pool2dOptions& pool, ValueRange* range) override;
  Shape output_shape(const Shape& input) const override { return layer_->output_shape(input); }
  std::string type_name() const override { return "Qat" + layer_->type_name(); }
  std::vector<Variable*> parameters() override { return layer_->parameters(); }
  qbin::LayerRecord to_record() const override;
  int bits() const { return bits_; }
  Module& inner() { return *layer_; }
  const Module& inner() const { return *layer_; }

 private:
  template <typename F>
  Variable with_quantized_kernel(F&& run);

  std::unique_ptr<Module> layer_;
  int bits_;
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

 protected:
  bool observing() const { return training_ || !observer_.initialized(); }

  int bits_;
  MovingAverageObserver observer_;
};

// ReLU followed by the fake-quant: codes from real 0 (zero point 0). Its record kind is "ReLU".
class QatReLU : public QatObservedActivation, public Recorded {
 public:
  QatReLU(int bits, const ObserverOptions& observer);
  Variable forward(const Variable& x) override;
  Variable activate_pooled(const Variable& pooled, const ValueRange& unpooled_range) override;
  std::string type_name() const override { return "QatReLU"; }
  qbin::LayerRecord to_record() const override;
};

// The output of a Conv2D or Dense with no ReLU after it, fake-quantized with a zero point (real 0
// is the code z, so negative values have codes below z). Its record kind is "Quantize".
class QatQuantize : public QatObservedActivation, public Recorded {
 public:
  QatQuantize(int bits, const ObserverOptions& observer) : QatObservedActivation(bits, observer) {}
  Variable forward(const Variable& x) override;
  Variable activate_pooled(const Variable& pooled, const ValueRange& unpooled_range) override;
  std::string type_name() const override { return "QatQuantize"; }
  qbin::LayerRecord to_record() const override;
};

// Rewrites the model in place into the graph the int8 runtime runs (docs/quantization.md):
// every Conv2D and Dense fake-quantizes its kernel; each one but the last gives uint8 codes,
// through a QatReLU when a ReLU follows it and a QatQuantize (inserted) otherwise; the last one
// gives the float logits, and what follows it stays float. MaxPool2D, Flatten, Dropout and
// other ReLUs pass codes through unchanged. Throws std::invalid_argument for a model with no
// Conv2D or Dense, or a layer kind with no int8 form.
void prepare_qat(Sequential& model, const QatOptions& options);
void freeze_observers(Sequential& model);
bool is_qat(const Sequential& model);
int qat_bits(const Sequential& model);  // 0 for a float model

// A model file written from a QAT model (weight_bits / output_bits attributes) comes back
// as a QAT model with its ranges, which `observer` (its averaging constant) keeps updating if
// training continues; a float file comes back as a float model.
Sequential load_any_model(const std::string& path, const ObserverOptions& observer = {});

}  // namespace qnet
