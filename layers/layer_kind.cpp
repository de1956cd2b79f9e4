#include "layers/layer_kind.h"

namespace qnet {

// The kinds, each defined in its layer's source file (see zero_padding2d.cpp). A new kind: its
// Module and LayerKind in one source file, its line here and in the table below.
const LayerKind& conv2d_kind();
const LayerKind& depthwise_conv2d_kind();
const LayerKind& maxpool2d_kind();
const LayerKind& average_pooling2d_kind();
const LayerKind& global_average_pooling2d_kind();
const LayerKind& zero_padding2d_kind();
const LayerKind& batch_norm_kind();
const LayerKind& relu_kind();
const LayerKind& flatten_kind();
const LayerKind& dropout_kind();
const LayerKind& gaussian_noise_kind();
const LayerKind& dense_kind();
const LayerKind& residual_kind();

const std::vector<const LayerKind*>& layer_kinds() {
  static const std::vector<const LayerKind*> kinds{
      &conv2d_kind(),    &depthwise_conv2d_kind(), &maxpool2d_kind(), &average_pooling2d_kind(), &global_average_pooling2d_kind(),
      &zero_padding2d_kind(), &batch_norm_kind(),  &relu_kind(),      &flatten_kind(),           &dropout_kind(),
      &gaussian_noise_kind(), &dense_kind(),       &residual_kind()};
  return kinds;
}

const LayerKind* find_layer_kind(std::string_view type) {
  for (const LayerKind* k : layer_kinds())
    if (k->type == type) return k;
  return nullptr;
}

const LayerKind* find_layer_kind_in_specs(std::string_view name) {
  const std::string wanted = lower_case(std::string(name));
  for (const LayerKind* k : layer_kinds())
    if (k->spec_name == wanted) return k;
  return nullptr;
}

}  // namespace qnet
