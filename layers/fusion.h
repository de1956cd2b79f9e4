// Fusion of conv -> activation -> max-pool in training (Sequential::forward, docs/architecture.md).
// Max-pooling commutes with a non-decreasing activation, so a layer that can return its output
// already max-pooled, followed by such an activation and a MaxPool2D, runs as one fused op. Two
// interfaces a layer opts into, beside Module; one predicate decides.
//
//   class Conv2D : public Module, public PooledForward { ... };          // and QatWeights
//   class ReLU : public Module, public PoolCommutingActivation { ... };  // and the QAT activations
#pragma once

#include "core/ops.h"
#include "layers/module.h"

namespace qnet {

// A layer that can return its output max-pooled (and then activated by `activation`, for the
// activations the fused op applies itself), filling `range` with the min and max of its whole
// unpooled output if `range` is not null (QAT's observers need it; Sequential passes null when the
// activation is applied inside the op).
class PooledForward {
 public:
  virtual ~PooledForward() = default;
  virtual bool can_forward_max_pooled() const { return true; }  // QatWeights: only around a conv
  virtual Variable forward_max_pooled(const Variable& x, const Pool2dOptions& pool, ValueRange* range,
                                      const PooledActivation& activation) = 0;
};

// A non-decreasing activation: act(max_pool(c)) == max_pool(act(c)). One the fused op can apply
// itself (a plain ReLU; a QAT ReLU, whose grid the op asks it for) names it in inside_pooled_op(),
// for this forward, and activate_pooled is then not called.
class PoolCommutingActivation {
 public:
  virtual ~PoolCommutingActivation() = default;
  virtual PooledActivation inside_pooled_op() { return PooledActivation::kNone; }
  virtual Variable activate_pooled(const Variable& pooled, const ValueRange& unpooled_range) = 0;
};

// Whether layers a, b, c run as one fused op: a can forward max-pooled, b commutes with
// max-pooling, c is a MaxPool2D.
bool fuses_with_max_pool(const Module& a, const Module& b, const Module& c);

}  // namespace qnet
