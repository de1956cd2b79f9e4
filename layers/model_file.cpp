// Sequential <-> .qbin float model. The first record is "Input" with the example shape; then one
// record per layer, in order; a container's record (Residual) is followed by the records of each
// of its branches, whose counts it carries (docs/qbin-format.md).
#include <fmt/format.h>

#include "io/record_keys.h"
#include "io/record_schema.h"
#include "layers/container.h"
#include "layers/layer_kind.h"
#include "layers/sequential.h"

namespace qnet {

namespace key = qbin::key;

namespace {

void append_records(const Sequential& chain, std::vector<qbin::LayerRecord>& out) {
  for (size_t i = 0; i < chain.size(); ++i) {
    const Module& layer = chain.layer(i);
    const size_t at = out.size();
    out.push_back(record_of(layer));
    const LayerKind* kind = find_layer_kind(layer.type_name());
    // The identity at inference: the runtime, which knows no layer kinds, skips such records.
    if (kind && kind->role == Int8Role::kTrainingOnly) out[at].ints.emplace_back(key::kTrainingOnly, 1);
    if (layer.quant_bits() != 0) out[at].ints.emplace_back(key::kBits, layer.quant_bits());
    if (layer.keep_float()) out[at].ints.emplace_back(key::kKeepFloat, 1);
    if (const auto* c = dynamic_cast<const Container*>(&layer)) {
      const std::vector<const Sequential*> branches = c->branches();
      if (!kind || kind->branch_counts.size() != branches.size())
        throw std::logic_error(fmt::format("to_qbin: container '{}' ({}) has no kind that counts its {} branches", layer.name(),
                                           layer.type_name(), branches.size()));
      for (size_t b = 0; b < branches.size(); ++b) {
        const size_t before = out.size();
        append_records(*branches[b], out);
        out[at].ints.emplace_back(kind->branch_counts[b], static_cast<int32_t>(out.size() - before));
      }
    }
  }
}

constexpr int kMaxNesting = 32;

// Reads records [begin, end) as a chain taking `input`; `skip` says which records to leave out
// (QAT files: the Quantize records, which prepare_qat puts back).
Sequential read_chain(const std::vector<qbin::LayerRecord>& records, size_t begin, size_t end, const Shape& input, bool names_layers,
                      const std::function<bool(const qbin::LayerRecord&)>& skip, int depth) {
  if (depth > kMaxNesting) throw qbin::FormatError(fmt::format("containers nested more than {} deep", kMaxNesting));
  Sequential chain(input, names_layers);
  for (size_t i = begin; i < end; ++i) {
    const qbin::LayerRecord& r = records[i];
    qbin::check_record(r);  // what every loader checks (io/record_schema.h)
    if (skip && skip(r)) continue;
    const LayerKind* kind = find_layer_kind(r.kind);
    if (!kind) throw qbin::FormatError(fmt::format("layer '{}': unknown kind '{}'", qbin::shown(r.name), qbin::shown(r.kind)));
    for (const auto& t : r.tensors)  // before a kind reads its tensors as floats
      if (t.dtype != qbin::DType::kF32)
        throw qbin::FormatError(fmt::format("layer '{}' holds {} tensors: this is an int8 model (for evaluate and infer), not a float "
                                            "model or a QAT checkpoint (model_qat.qbin) that training can continue", qbin::shown(r.name),
                                            qbin::dtype_name(t.dtype)));
    std::unique_ptr<Module> layer;
    if (kind->from_branches) {
      std::vector<Sequential> branches;
      const Shape in = chain.output_shape(input);
      size_t next = i + 1;
      for (const std::string& count_key : kind->branch_counts) {
        const int32_t count = r.get_int(count_key);
        if (count < 0 || static_cast<size_t>(count) > end - next)
          throw qbin::FormatError(fmt::format("layer '{}' ({}): {} = {} (expected 0..{}, the records left in its chain)", qbin::shown(r.name),
                                              qbin::shown(r.kind), count_key, count, end - next));
        branches.push_back(read_chain(records, next, next + count, in, false, skip, depth + 1));
        next += count;
      }
      layer = kind->from_branches(r, std::move(branches));
      i = next - 1;
    } else {
      layer = kind->from_record(r);
    }
    layer->set_name(r.name);
    // Its own bit width: asked for (a float file), or what QAT gave its weights (a QAT file).
    layer->set_quant_bits(r.get_int(key::kBits, r.get_int(key::kWeightBits, 0)));
    layer->set_keep_float(r.get_int(key::kKeepFloat, 0) == 1);
    try {
      chain.add(std::move(layer));
    } catch (const std::invalid_argument& e) {
      throw qbin::FormatError(fmt::format("layers do not chain: {}", e.what()));
    }
  }
  return chain;
}

}  // namespace

qbin::Model to_qbin(const Sequential& model) {
  qbin::Model m;
  qbin::LayerRecord input{"Input", "input", {}, {}, {}};
  const char* axes[] = {key::kHeight, key::kWidth, key::kChannels};
  for (size_t i = 0; i < model.input_shape().size() && i < 3; ++i)
    input.ints.emplace_back(axes[i], static_cast<int32_t>(model.input_shape()[i]));
  m.layers.push_back(std::move(input));
  append_records(model, m.layers);
  return m;
}

Sequential from_qbin(const qbin::Model& file, const std::function<bool(const qbin::LayerRecord&)>& skip) {
  if (file.layers.empty() || file.layers[0].kind != "Input")
    throw qbin::FormatError("the first layer record is not 'Input'");
  const qbin::LayerRecord& in = file.layers[0];
  qbin::check_record(in);
  const Shape input{in.get_int(key::kHeight), in.get_int(key::kWidth), in.get_int(key::kChannels)};
  return read_chain(file.layers, 1, file.layers.size(), input, true, skip, 0);
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
