// Sequential: layers applied in order, with Keras-style names and summary.
//
//   Rng rng(1);
//   Sequential model = mnist_reference_model(rng);   // the article's CNN
//   fmt::print("{}", model.summary());
//   Variable logits = model.forward(x);              // x: [N, 28, 28, 1]
//   save_model(model, "model_float.qbin");  Sequential back = load_model("model_float.qbin");
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "layers/layers.h"

namespace qnet {

class Sequential : public Module {
 public:
  // names_layers = false: a branch of a container (layers/residual.h) whose layers are named when
  // the container joins a model, so that names are unique model-wide.
  explicit Sequential(Shape input_shape, bool names_layers = true)
      : input_shape_(std::move(input_shape)), output_(input_shape_), names_layers_(names_layers) {}
  Sequential(Sequential&&) noexcept = default;
  Sequential& operator=(Sequential&&) noexcept = default;
  Sequential(const Sequential&) = delete;
  Sequential& operator=(const Sequential&) = delete;
  // Takes the layer and checks that it accepts the previous layer's output shape. It (and, for a
  // container, every layer inside it) gets Keras' name ("conv2d", "conv2d_1", ...) if it has none
  // or its name is taken elsewhere in this model.
  Module& add(std::unique_ptr<Module> layer);

  Variable forward(const Variable& x) override;
  Shape output_shape(const Shape& input) const override;
  std::string type_name() const override { return "Sequential"; }
  std::unique_ptr<Module> clone() const override;  // null if a layer cannot copy itself
  std::unique_ptr<Sequential> clone_chain() const;
  std::vector<Variable*> parameters() override;
  void set_training(bool training) override;

  const Shape& input_shape() const { return input_shape_; }
  size_t size() const { return layers_.size(); }
  Module& layer(size_t i) { return *layers_[i]; }
  const Module& layer(size_t i) const { return *layers_[i]; }
  // Replaces layer i by make(old layer) (used by transforms such as QAT); the new layer keeps
  // the old name.
  void transform(size_t i, const std::function<std::unique_ptr<Module>(std::unique_ptr<Module>)>& make);
  // Puts a shape-preserving layer before layer i (i == size(): at the end), named as add() names.
  Module& insert(size_t i, std::unique_ptr<Module> layer);

  // On (the default), forward runs Conv2D -> ReLU -> MaxPool2D (and their QAT forms) as one
  // fused op: same values, a fraction of the memory traffic (docs/performance.md). Off runs
  // every layer's own forward; tests compare the two.
  void set_fusion(bool on) { fusion_ = on; }

  // Keras' model.summary(): layer (type), output shape, parameter count, totals; a container's
  // branches indented under it.
  std::string summary();
  int64_t non_trainable_count() const override;

 private:
  void name_new(Module& layer);  // Keras' names for the unnamed layers in `layer`

  Shape input_shape_;
  Shape output_;               // the chain's output for input_shape_: add() checks a layer against it in O(1)
  std::vector<Shape> shapes_;  // each layer's output for input_shape_ (insert() checks against them)
  std::vector<std::unique_ptr<Module>> layers_;
  bool names_layers_ = true;
  // Every name in the model (containers' layers included) and, per base name, the next suffix to
  // try: naming a layer costs O(1), so building a model is linear in its layers.
  std::unordered_set<std::string> names_;
  std::unordered_map<std::string, int> next_suffix_;
  bool fusion_ = true;
};

// The article's model: Conv2D(12, 3x3, valid) -> ReLU -> MaxPool2D(2x2) -> Flatten -> Dense(10).
Sequential mnist_reference_model(Rng& rng);
// The same layers for other data: `input` {H, W, C} (H, W >= 4) and `classes` outputs.
Sequential reference_model(const Shape& input, int64_t classes, Rng& rng);

// Float model files (.qbin, docs/qbin-format.md). load_model throws qbin::FormatError or
// IoError naming the file and the problem.
qbin::Model to_qbin(const Sequential& model);
// `skip`: records to leave out (QAT files' Quantize records, which prepare_qat puts back).
Sequential from_qbin(const qbin::Model& file, const std::function<bool(const qbin::LayerRecord&)>& skip = nullptr);
void save_model(const Sequential& model, const std::string& path);
Sequential load_model(const std::string& path);

}  // namespace qnet
