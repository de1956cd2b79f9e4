// A layer made of chains of layers: Residual (layers/residual.cpp). Every walk that must see
// each layer (names, the summary, model files, QAT, export, calibration) descends into its
// branches through this interface, in branch order, rather than naming the container's kind.
//
//   for_each_layer(model, [](Module& layer) { ... });   // pre-order: a container, then its branches
#pragma once

#include <functional>
#include <vector>

#include "layers/module.h"

namespace qnet {

class Sequential;

class Container {
 public:
  virtual ~Container() = default;
  // The branches in file order (Residual: the body, then the shortcut, empty for the identity).
  virtual std::vector<Sequential*> branches() = 0;
  std::vector<const Sequential*> branches() const;
};

// Calls f on every layer of the chain, descending into containers (the container first).
void for_each_layer(Sequential& chain, const std::function<void(Module&)>& f);
void for_each_layer(const Sequential& chain, const std::function<void(const Module&)>& f);

}  // namespace qnet
