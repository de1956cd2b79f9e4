#include "layers/layer_kind.h"

namespace qnet {

// A new kind: its Module and LayerKind in one source file (see conv2d.cpp), one line here.
const std::vector<const LayerKind*>& layer_kinds() {
  static const std::vector<const LayerKind*> kinds{&conv2d_kind(),  &maxpool2d_kind(),       &zero_padding2d_kind(), &relu_kind(),
                                                   &flatten_kind(), &dropout_kind(),         &gaussian_noise_kind(),  &dense_kind()};
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
