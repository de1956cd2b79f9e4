// Residual: a block that adds two branches of layers, y = body(x) + shortcut(x), as in ResNet
// (Keras: layers.Add()([body_output, shortcut])). The shortcut is the identity when it has no
// layers, or a small chain (a strided 1x1 conv and a BatchNormalization, say) that brings x to the
// body's output shape. Branches are chains of any layers, residual blocks included.
//
//   Sequential body({28, 28, 16}, false), shortcut({28, 28, 16}, false);   // names come from the model
//   body.add(...);                                    // conv, batchnorm, relu, conv, batchnorm
//   model.add(std::make_unique<Residual>(std::move(body), std::move(shortcut)));
//   model.add(std::make_unique<ReLU>());
//
// In a spec: residual(BODY[, shortcut=CHAIN]) (docs/tutorial.md). In int8 the add takes each
// branch's codes on their own grids and requantizes them to its own (docs/quantization.md).
#pragma once

#include "layers/container.h"
#include "layers/layer_record.h"
#include "layers/sequential.h"

namespace qnet {

class Residual : public Module, public Container, public Recorded {
 public:
  // Throws std::invalid_argument if the branches do not take the same input or give the same output.
  Residual(Sequential body, Sequential shortcut);
  Variable forward(const Variable& x) override;
  Shape output_shape(const Shape& input) const override;
  std::string type_name() const override { return "Residual"; }
  std::unique_ptr<Module> clone() const override;
  std::vector<Variable*> parameters() override;
  void set_training(bool training) override;
  int64_t non_trainable_count() const override;
  std::vector<Sequential*> branches() override { return {&body_, &shortcut_}; }
  // Kind and name; model files add how many records each branch takes (layers/model_file.cpp).
  qbin::LayerRecord to_record() const override { return bare_record(*this); }

  Sequential& body() { return body_; }
  Sequential& shortcut() { return shortcut_; }  // no layers: the identity

 private:
  Sequential body_, shortcut_;
};

}  // namespace qnet
