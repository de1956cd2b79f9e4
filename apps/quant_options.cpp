#include "apps/quant_options.h"

#include <algorithm>
#include <functional>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "apps/common.h"
#include "layers/container.h"
#include "layers/layer_kind.h"
#include "quant/export.h"
#include "quant/qat.h"

namespace qnet {

namespace {
// --keep-float also applies to a QAT model's export: "A float MODEL: " becomes "", "QAT: " stays.
std::string when_float(const std::string& when) { return when == "A float MODEL: " ? "" : when; }
}  // namespace

void add_bits_options(cxxopts::Options& options, const std::string& when, const std::string& target_when) {
  const std::string& target = target_when.empty() ? when : target_when;
  options.add_options()
      ("bits", when + "bit width of weights and activations, 2..8", number_value("8"))
      ("layer-bits", when + "layers' own bit widths, NAME=N[,NAME=N...] (a spec's bits=N; names as in the summary)",
       cxxopts::value<std::string>())
      ("keep-float", when_float(when) + "layers to keep in float, NAME[,NAME...] (a spec's float=true: Conv2D, DepthwiseConv2D or "
       "Dense; the int8 model runs them in f32 between codes)", cxxopts::value<std::string>())
      ("int8-target", target + "the CPUs the int8 model is for: 'vnni' (the widths as asked: one pass with VNNI, 8-bit layers run "
       "twice on split weights without it) or 'avx2' (PyTorch's reduce_range: codes of at most 7 bits and 7-bit kernels on the "
       "pixels, one pass on every x86-64 CPU; docs/runtime.md)", cxxopts::value<std::string>()->default_value("vnni"));
}

void add_ptq_options(cxxopts::Options& options, const std::string& when) {
  options.add_options()
      ("calibration-images", when + "training images to calibrate on (PTQ), 1..60000", number_value("1000"))
      ("method", when + "'minmax' (the largest value seen) or 'percentile' (its 99.99th percentile) calibration",
       cxxopts::value<std::string>()->default_value("minmax"));
}

namespace {

bool takes_bits(const Module& m) {
  const LayerKind* kind = find_layer_kind(m.type_name());
  return kind && takes_bits(kind->role);
}

// Calls `item` on each comma-separated item of `list` (an empty list is one empty item).
void for_each_item(const std::string& list, const std::function<void(const std::string&)>& item) {
  size_t at = 0;
  do {
    const size_t end = std::min(list.find(',', at), list.size());
    item(list.substr(at, end - at));
    at = end + 1;
  } while (at <= list.size());
}

Module* find_layer(Sequential& model, const std::string& name) {
  Module* found = nullptr;
  for_each_layer(model, [&](Module& m) {
    if (m.name() == name) found = &m;
  });
  return found;
}

}  // namespace

void apply_layer_bits(Sequential& model, const cxxopts::ParseResult& args) {
  if (!args.count("layer-bits")) return;
  const std::string list = args["layer-bits"].as<std::string>();
  std::vector<std::string> names;  // the layers that take bits, for the messages
  for_each_layer(model, [&](const Module& m) {
    if (takes_bits(m)) names.push_back(m.name());
  });
  const std::string expected = fmt::format("expected NAME=N with N in 2..8 and NAME one of {}", fmt::join(names, ", "));
  for_each_item(list, [&](const std::string& item) {
    const size_t eq = item.find('=');
    const std::string name = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (eq == std::string::npos || value.size() != 1 || value[0] < '2' || value[0] > '8')
      throw UsageError(fmt::format("--layer-bits '{}': '{}' ({})", list, item, expected));
    Module* found = find_layer(model, name);
    if (!found) throw UsageError(fmt::format("--layer-bits '{}': the model has no layer '{}' ({})", list, name, expected));
    if (!takes_bits(*found))
      throw UsageError(fmt::format("--layer-bits '{}': layer '{}' ({}) keeps its input's grid and has no bits of its own ({})", list, name,
                                   found->type_name(), expected));
    found->set_quant_bits(value[0] - '0');
  });
}

void apply_keep_float(Sequential& model, const cxxopts::ParseResult& args) {
  if (!args.count("keep-float")) return;
  const std::string list = args["keep-float"].as<std::string>();
  const auto weights_of = [](Module& m) -> Module* {  // the layer whose flag counts (a QAT layer's inner one)
    if (auto* q = dynamic_cast<QatWeights*>(&m)) return &q->inner();
    const LayerKind* kind = find_layer_kind(m.type_name());
    return kind && kind->role == Int8Role::kWeights ? &m : nullptr;
  };
  std::vector<std::string> names;  // the layers with weights, for the messages
  for_each_layer(model, [&](Module& m) {
    if (weights_of(m)) names.push_back(m.name());
  });
  const std::string expected = fmt::format("expected NAME[,NAME...] with each NAME one of {}", fmt::join(names, ", "));
  for_each_item(list, [&](const std::string& name) {
    Module* found = find_layer(model, name);
    if (!found) throw UsageError(fmt::format("--keep-float '{}': the model has no layer '{}' ({})", list, name, expected));
    Module* w = weights_of(*found);
    if (!w)
      throw UsageError(fmt::format("--keep-float '{}': layer '{}' ({}) has no weights to keep in float ({})", list, name,
                                   found->type_name(), expected));
    w->set_keep_float(true);
  });
}

Int8Target read_int8_target(const cxxopts::ParseResult& args) {
  const std::string target = args["int8-target"].as<std::string>();
  if (target == "vnni") return Int8Target::kVnni;
  if (target == "avx2") return Int8Target::kAvx2;
  throw UsageError(fmt::format("--int8-target '{}' (expected vnni or avx2)", target));
}

PtqRequest read_ptq_options(const cxxopts::ParseResult& args) {
  PtqRequest r;
  r.target = read_int8_target(args);
  r.calibration_images = int_option(args, "calibration-images", 1, 60000);
  r.bits = static_cast<int>(int_option(args, "bits", 2, 8));
  r.method = args["method"].as<std::string>();
  if (r.method != "minmax" && r.method != "percentile") throw UsageError(fmt::format("--method '{}' (expected minmax or percentile)", r.method));
  return r;
}

std::string quantize_after_training(Sequential& model, const std::string& path, const ImageSet& train, const cxxopts::ParseResult& args,
                                    const PtqRequest& ptq, bool qat_target_ok) {
  if (is_qat(model)) {
    for (const char* option : {"calibration-images", "method", "bits", "layer-bits", "int8-target"})
      if (args.count(option) && !(qat_target_ok && std::string_view(option) == "int8-target"))
        throw UsageError(fmt::format("{} is a QAT model with its trained ranges and bit widths ({}); --{} applies to float models (PTQ)",
                                     path, qat_bits_text(model), option));
    apply_keep_float(model, args);  // an export choice: the trained kernel runs in f32
    return "";
  }
  apply_layer_bits(model, args);
  apply_keep_float(model, args);
  const int64_t images = std::min(ptq.calibration_images, train.size());
  try {
    calibrate_ptq(model, train.slice(0, images),
                  {.bits = ptq.bits, .target = ptq.target,
                   .method = ptq.method == "percentile" ? CalibrationMethod::kPercentile : CalibrationMethod::kMinMax});
  } catch (const std::invalid_argument& e) {  // a model int8 cannot hold, or calibration images that cannot calibrate
    throw std::runtime_error(fmt::format("{}: {}", path, without_function_name(e.what())));
  }
  return fmt::format("PTQ, {}{}, {} calibration on the first {} training images", qat_bits_text(model),
                     ptq.target == Int8Target::kAvx2 ? " for avx2" : "", ptq.method, images);
}

}  // namespace qnet
