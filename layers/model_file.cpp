// Sequential <-> .qbin float model. The first record is "Input" with the example shape;
// then one record per layer (docs/qbin-format.md).
#include <fmt/format.h>

#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "layers/sequential.h"

namespace qnet {

namespace key = qbin::key;

qbin::Model to_qbin(const Sequential& model) {
  qbin::Model m;
  qbin::LayerRecord input{"Input", "input", {}, {}, {}};
  const char* axes[] = {key::kHeight, key::kWidth, key::kChannels};
  for (size_t i = 0; i < model.input_shape().size() && i < 3; ++i)
    input.ints.emplace_back(axes[i], static_cast<int32_t>(model.input_shape()[i]));
  m.layers.push_back(std::move(input));
  for (size_t i = 0; i < model.size(); ++i) {
    m.layers.push_back(record_of(model.layer(i)));
    // The identity at inference: the runtime, which knows no layer kinds, skips such records.
    const LayerKind* kind = find_layer_kind(model.layer(i).type_name());
    if (kind && kind->role == Int8Role::kTrainingOnly) m.layers.back().ints.emplace_back(key::kTrainingOnly, 1);
  }
  return m;
}

Sequential from_qbin(const qbin::Model& file) {
  if (file.layers.empty() || file.layers[0].kind != "Input")
    throw qbin::FormatError("the first layer record is not 'Input'");
  const qbin::LayerRecord& in = file.layers[0];
  const Shape input{in.get_int(key::kHeight), in.get_int(key::kWidth), in.get_int(key::kChannels)};
  for (int64_t d : input)
    if (d < 1 || d > 65536) throw qbin::FormatError(fmt::format("input shape {} out of range", shape_str(input)));
  Sequential model(input);
  for (size_t i = 1; i < file.layers.size(); ++i) {
    const qbin::LayerRecord& r = file.layers[i];
    const LayerKind* kind = find_layer_kind(r.kind);
    if (!kind) throw qbin::FormatError(fmt::format("layer '{}': unknown kind '{}'", qbin::shown(r.name), qbin::shown(r.kind)));
    std::unique_ptr<Module> layer = kind->from_record(r);
    for (const auto& t : r.tensors)
      if (t.dtype != qbin::DType::kF32)
        throw qbin::FormatError(fmt::format("layer '{}' holds {} tensors: this is an int8 model, not a float one", qbin::shown(r.name),
                                            qbin::dtype_name(t.dtype)));
    layer->set_name(r.name);
    try {
      model.add(std::move(layer));
    } catch (const std::invalid_argument& e) {
      throw qbin::FormatError(fmt::format("layers do not chain: {}", e.what()));
    }
  }
  return model;
}

void save_model(const Sequential& model, const std::string& path) { qbin::save(to_qbin(model), path); }

Sequential load_model(const std::string& path) {
  const qbin::Model file = qbin::load(path);
  try {
    return from_qbin(file);
  } catch (const qbin::FormatError& e) {
    throw qbin::FormatError(fmt::format("{}: {}", path, e.what()));
  }
}

}  // namespace qnet
