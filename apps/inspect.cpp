// inspect: where quantization loses accuracy, layer by layer. Runs the float model, the
// fake-quantized model and the int8 model side by side on test images and writes report.md
// (tables), SVG charts and inspection.json (quant/debugger.h; docs/quantization.md says how to
// read them).
//
//   build/bin/inspect model_qat.qbin [--float model_float.qbin] [--images 1000] [--out inspect-output] [--json]
//   build/bin/inspect model_float.qbin --bits 4          # PTQ: calibrated as `quantize` does, then compared
#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "apps/common.h"
#include "apps/quant_options.h"
#include "apps/report.h"
#include "core/file_io.h"
#include "data/mnist.h"
#include "io/qbin.h"
#include "quant/debugger.h"
#include "quant/export.h"
#include "quant/qat.h"

using namespace qnet;

namespace {

std::string db(double v) {
  if (std::isnan(v)) return "-";
  return std::isinf(v) ? "inf (equal)" : fmt::format("{:.1f}", v);
}
std::string num(double v, const char* f = "{:.4g}") { return std::isnan(v) ? "-" : fmt::format(fmt::runtime(f), v); }
Json jnum(double v) { return std::isfinite(v) ? Json::number(v) : Json::string(std::isnan(v) ? "n/a" : "inf"); }

// Layer names are Keras' ("conv2d_1"): safe in file names, but a file may hold any name.
std::string file_safe(const std::string& name) {
  std::string out;
  for (char c : name) out += std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ? c : '_';
  return out.substr(0, 64);
}

// The list the suggestion gives its option (after the user's own, which it overrides where both
// name a layer): --layer-bits NAME=N,... or, with --suggest-float, --keep-float NAME,...
std::string suggested_list(const Inspection& r, const std::string& given) {
  std::vector<std::string> items;
  if (!given.empty()) items.push_back(given);
  for (const WidthStep& step : r.suggestion)
    for (const std::string& name : step.layers) items.push_back(r.suggested_float ? name : fmt::format("{}={}", name, r.suggested_bits));
  return fmt::format("{}", fmt::join(items, ","));
}
const char* suggested_option(const Inspection& r) { return r.suggested_float ? "--keep-float" : "--layer-bits"; }

Json to_json(const Inspection& r, const std::string& model, const std::string& reference, const std::string& layer_bits) {
  Json layers = Json::array();
  for (const LayerInspection& l : r.layers) {
    Json sq = Json::array();
    for (double v : l.weight_sqnr) sq.push(jnum(v));
    layers.push(Json::object()
                    .set("name", Json::string(l.name))
                    .set("in", Json::string(l.in))
                    .set("depth", Json::integer(l.depth))
                    .set("kind", Json::string(l.kind))
                    .set("shape", Json::string(shape_str(l.shape)))
                    .set("output", Json::string(l.codes ? "codes" : "float"))
                    .set("scale", Json::number(l.scale))
                    .set("zero_point", Json::integer(l.zero_point))
                    .set("output_bits", l.codes ? Json::integer(l.bits) : Json::number(kNoFigure))
                    .set("sqnr_fake_quant_db", jnum(l.sqnr_fake_quant))
                    .set("sqnr_int8_db", jnum(l.sqnr_int8))
                    .set("max_abs_error", jnum(l.max_abs_error))
                    .set("mean_abs_error", jnum(l.mean_abs_error))
                    .set("int8_vs_fake_quant_max_steps", jnum(l.max_step_difference))
                    .set("int8_vs_fake_quant_values_differing", Json::integer(l.values_differing))
                    .set("values", Json::integer(l.values))
                    .set("float_min", jnum(l.float_min))
                    .set("float_max", jnum(l.float_max))
                    .set("range_used", jnum(l.range_used))
                    .set("clipped", jnum(l.clipped))
                    .set("weight_bits", Json::integer(l.weight_bits))
                    .set("weight_sqnr_db_per_channel", std::move(sq))
                    .set("int8_path", Json::string(l.int8_path))
                    .set("accuracy_with_this_layer_float", jnum(l.accuracy_with_float)));
  }
  Json steps = Json::array();
  for (const WidthStep& s : r.suggestion) {
    Json names = Json::array();
    for (const std::string& n : s.layers) names.push(Json::string(n));
    steps.push(Json::object().set("stage", Json::string(s.stage)).set("layers", std::move(names)).set("accuracy", Json::number(s.accuracy)));
  }
  return Json::object()
      .set("model", Json::string(model))
      .set("float_model", Json::string(reference))
      .set("images", Json::integer(r.images))
      .set("bits", Json::string(r.bits))
      .set("accuracy_float", Json::number(r.accuracy_float))
      .set("accuracy_fake_quant", Json::number(r.accuracy_fake_quant))
      .set("accuracy_int8_reference", Json::number(r.accuracy_int8))
      .set("accuracy_int8_runtime", Json::number(r.accuracy_runtime))
      .set("runtime_matches_reference", Json::string(r.runtime_matches_reference ? "yes" : "no"))
      .set("onednn_isa", Json::string(r.onednn_isa))
      .set("layers", std::move(layers))
      .set("target_accuracy", jnum(r.target_accuracy))
      .set("target_met", Json::string(r.target_met ? "yes" : "no"))
      .set("suggested_bits", Json::integer(r.suggested_bits))
      .set("suggestion", std::move(steps))
      .set("suggested_layer_bits", Json::string(r.suggestion.empty() || r.suggested_float ? "" : layer_bits))
      .set("suggested_keep_float", Json::string(r.suggestion.empty() || !r.suggested_float ? "" : layer_bits));
}

// A row's name: a stage inside a residual block says where ("residual_1 body / conv2d_3").
std::string label(const LayerInspection& l) { return l.in.empty() ? l.name : fmt::format("{} / {}", l.in, l.name); }

double median_of(std::vector<double> v) {
  std::erase_if(v, [](double x) { return std::isnan(x); });
  if (v.empty()) return kNoFigure;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// fix: how to apply the suggestion's --layer-bits to this model ("quantize MODEL --bits 3").
std::string report_md(const Inspection& r, const std::string& model, const std::string& reference, const std::string& what,
                      const std::string& fix, const std::string& layer_bits) {
  std::string md = fmt::format("# Quantization report: {}\n\n{} against {}, on the first {} test images; oneDNN ISA: {}.\n\n", model,
                               what, reference, r.images, r.onednn_isa);
  md += "| model | accuracy |\n|---|---|\n";
  md += fmt::format("| float | {:.4f} |\n| fake-quantized | {:.4f} |\n| int8, integer reference | {:.4f} |\n| int8, oneDNN runtime | {:.4f} |\n\n",
                    r.accuracy_float, r.accuracy_fake_quant, r.accuracy_int8, r.accuracy_runtime);
  md += fmt::format("The oneDNN runtime's logits are {} the integer reference's on these images.\n\n",
                    r.runtime_matches_reference ? "bit-identical to" : "NOT identical to");
  md += "## Output error per layer\n\nEach row is a stage of the int8 model (a layer with what is fused into it; inside a residual block "
        "each stage of its body and shortcut, named after the block and branch, then the block's output). SQNR: "
        "10 log10(sum f^2 / sum (x - f)^2) of the layer's output x against the float model's f, in dB; each 6 dB is one bit. "
        "int8 vs fake-quant: the largest difference in output steps and how many values differ by half a step or more "
        "(0 and 0: the int8 model computes what QAT trained).\n\n![SQNR per layer](sqnr.svg)\n\n";
  md += "| layer | kind | output | SQNR fake-quant (dB) | SQNR int8 (dB) | max abs err | mean abs err | int8 vs fake-quant: max steps, values differing |\n"
        "|---|---|---|---|---|---|---|---|\n";
  for (const LayerInspection& l : r.layers)
    md += fmt::format("| {} | {} | {} {} | {} | {} | {} | {} | {:.2g}, {} of {} |\n", label(l), l.kind, shape_str(l.shape), l.codes ? "codes" : "float",
                      db(l.sqnr_fake_quant), db(l.sqnr_int8), num(l.max_abs_error), num(l.mean_abs_error), l.max_step_difference,
                      l.values_differing, l.values);
  md += "\n## Activation grids\n\nThe grid of each layer that gives codes: its real range, how much of it the float output spans, and "
        "the share of float values outside it (clipped to the first or last code). Histograms: the float output on the code axis.\n\n";
  md += "| layer | bits | scale | zero point | grid range | float range | range used | clipped | histogram |\n|---|---|---|---|---|---|---|---|---|\n";
  for (const LayerInspection& l : r.layers)
    if (l.codes)
      md += fmt::format("| {} | {} | {:.4g} | {} | [{:.4g}, {:.4g}] | [{}, {}] | {} | {} | [svg](histograms/{}_activation.svg) |\n", label(l), l.bits,
                        l.scale, l.zero_point, -l.zero_point * l.scale, (l.qmax - l.zero_point) * l.scale, num(l.float_min), num(l.float_max),
                        std::isnan(l.range_used) ? "-" : fmt::format("{:.1f}%", 100 * l.range_used),
                        std::isnan(l.clipped) ? "-" : fmt::format("{:.3f}%", 100 * l.clipped), file_safe(l.name));
  md += "\n## Weights\n\nThe kernel as deployed (BatchNormalization folded in), quantized per output channel: the SQNR of each "
        "channel's codes against its float weights. Histograms: w / scale of its channel (the integers are the codes).\n\n";
  md += "| layer | bits | channels | SQNR worst channel (dB) | median (dB) | int8 path on this CPU | histogram |\n|---|---|---|---|---|---|---|\n";
  for (const LayerInspection& l : r.layers) {
    if (l.weight_bits == 0 && l.int8_path.starts_with("float island")) {  // kept in float: nothing quantized
      md += fmt::format("| {} | float | - | - | - | {} | - |\n", label(l), l.int8_path);
      continue;
    }
    if (l.weight_bits == 0) continue;
    double worst = kNoFigure;
    for (double v : l.weight_sqnr)
      if (!std::isnan(v) && (std::isnan(worst) || v < worst)) worst = v;
    md += fmt::format("| {} | {} | {} | {} | {} | {} | [svg](histograms/{}_weights.svg) |\n", label(l), l.weight_bits, l.weight_sqnr.size(), db(worst),
                      db(median_of(l.weight_sqnr)), l.int8_path.empty() ? "-" : l.int8_path, file_safe(l.name));
  }
  md += fmt::format("\n## Sensitivity\n\nThe fake-quantized model's accuracy with one layer at a time kept in float (its weights and output "
                    "not quantized), against {:.4f} with every layer quantized: the layers whose float form gains most are the ones "
                    "to give more bits or keep in float.\n\n![Sensitivity](sensitivity.svg)\n\n",
                    r.accuracy_fake_quant);
  std::vector<const LayerInspection*> ranked;
  for (const LayerInspection& l : r.layers)
    if (!std::isnan(l.accuracy_with_float)) ranked.push_back(&l);
  std::stable_sort(ranked.begin(), ranked.end(), [](auto* a, auto* b) { return a->accuracy_with_float > b->accuracy_with_float; });
  md += "| rank | layer | accuracy with it in float | gain |\n|---|---|---|---|\n";
  for (size_t i = 0; i < ranked.size(); ++i)
    md += fmt::format("| {} | {} | {:.4f} | {:+.4f} |\n", i + 1, label(*ranked[i]), ranked[i]->accuracy_with_float,
                      ranked[i]->accuracy_with_float - r.accuracy_fake_quant);

  md += fmt::format("\n## Suggested {}\n\nTarget accuracy: {:.4f}. ", r.suggested_float ? "float layers" : "bit widths", r.target_accuracy);
  if (r.suggestion.empty()) {
    md += r.target_met ? fmt::format("The fake-quantized model already reaches it ({:.4f}).\n", r.accuracy_fake_quant)
                       : "No layer can be widened further (or the sensitivity was not measured).\n";
    return md;
  }
  md += fmt::format("The layers above, most sensitive first, each {} on top of the ones before (the fake-quantized "
                    "model's accuracy after each step):\n\n| step | layer | {} | accuracy |\n|---|---|---|---|\n| 0 | all "
                    "as they are | | {:.4f} |\n",
                    r.suggested_float ? "kept in float (its layers with weights: float islands between codes)"
                                      : fmt::format("given {} bits", r.suggested_bits),
                    suggested_option(r), r.accuracy_fake_quant);
  for (size_t i = 0; i < r.suggestion.size(); ++i) {
    std::vector<std::string> items;
    for (const std::string& name : r.suggestion[i].layers)
      items.push_back(r.suggested_float ? name : fmt::format("{}={}", name, r.suggested_bits));
    md += fmt::format("| {} | {} | {} | {:.4f} |\n", i + 1, r.suggestion[i].stage, fmt::join(items, ","), r.suggestion[i].accuracy);
  }
  md += r.target_met ? fmt::format("\nThe target is reached with: `{} {} {}`.\n", fix, suggested_option(r), layer_bits)
                     : fmt::format("\nEven with every step the model stays below the target; the closest: `{} {} {}`.\n", fix,
                                   suggested_option(r), layer_bits);
  return md;
}

void write_charts(const Inspection& r, const std::string& out) {
  std::vector<std::string> names;
  std::vector<double> fq, q8, sens;
  for (const LayerInspection& l : r.layers) {
    names.push_back(label(l));
    // An exact match has no finite SQNR: drawn as "n/a" in the chart, "inf (equal)" in the tables.
    fq.push_back(std::isfinite(l.sqnr_fake_quant) ? l.sqnr_fake_quant : kNoFigure);
    q8.push_back(std::isfinite(l.sqnr_int8) ? l.sqnr_int8 : kNoFigure);
    sens.push_back(l.accuracy_with_float);
  }
  write_file_atomic(out + "/sqnr.svg", bar_chart_svg({.title = "Output SQNR per layer against the float model",
                                                      .y_label = "dB (higher: less quantization noise)",
                                                      .groups = names,
                                                      .series = {{"fake-quantized", "#4c78a8", fq}, {"int8", "#f58518", q8}},
                                                      .value_format = "{:.1f}"}));
  std::vector<double> all(names.size(), r.accuracy_fake_quant);
  write_file_atomic(out + "/sensitivity.svg",
                    bar_chart_svg({.title = "Accuracy with one layer kept in float",
                                   .y_label = fmt::format("accuracy on {} test images", r.images),
                                   .groups = names,
                                   .series = {{"all quantized", "#bab0ac", all}, {"this layer float", "#54a24b", sens}},
                                   .value_format = "{:.3f}"}));
  std::filesystem::create_directories(out + "/histograms");
  for (const LayerInspection& l : r.layers) {
    if (l.codes && !l.activation.counts.empty())
      write_file_atomic(out + "/histograms/" + file_safe(l.name) + "_activation.svg",
                        histogram_svg({.title = fmt::format("{}: float output on its {}-bit grid", l.name, l.bits),
                                       .x_label = fmt::format("code = output / {:.4g} + {}", l.scale, l.zero_point),
                                       .lo = l.activation.lo, .width = l.activation.width, .counts = l.activation.counts,
                                       .below = l.activation.below, .above = l.activation.above}));
    if (l.weight_bits > 0)
      write_file_atomic(out + "/histograms/" + file_safe(l.name) + "_weights.svg",
                        histogram_svg({.title = fmt::format("{}: weights on their {}-bit grid", l.name, l.weight_bits),
                                       .x_label = "w / scale of its channel (codes are the integers)",
                                       .lo = l.weights.lo, .width = l.weights.width, .counts = l.weights.counts,
                                       .below = l.weights.below, .above = l.weights.above}));
  }
}

int inspect_main(int argc, char** argv) {
  cxxopts::Options options("inspect", "Compare a quantized model with its float model layer by layer on test images: output SQNR, "
                           "activation grids, weight error, and the accuracy gained by keeping each layer in float.");
  options.add_options()
      ("float", "The float model to compare with (default: MODEL's own weights without quantization)", cxxopts::value<std::string>())
      ("images", "Test images to run, 1..100000 (the first ones)", number_value("1000"))
      ("out", "Folder for report.md, the charts and inspection.json", cxxopts::value<std::string>()->default_value("inspect-output"))
      ("json", "Print inspection.json on stdout instead of the summary")
      ("target-accuracy", "The accuracy the suggested bit widths should reach, in [0, 1] (default: the float accuracy less 0.01)",
       cxxopts::value<std::string>())
      ("suggest-bits", "The width the suggestion gives the sensitive layers, 2..8", number_value("8"))
      ("suggest-float", "The suggestion keeps the sensitive layers with weights in float (--keep-float) instead of widening them")
      ("model", "The QAT checkpoint (model_qat.qbin), or a float model to quantize after training (PTQ)", cxxopts::value<std::string>())
      ("h,help", "Show this help");
  options.parse_positional({"model"});
  options.positional_help("MODEL");
  add_ptq_options(options, "A float MODEL: ");
  add_bits_options(options, "A float MODEL: ", "A float MODEL, or a QAT MODEL trained with it: ");
  add_data_dir_option(options);
  add_threads_option(options);
  const std::optional<cxxopts::ParseResult> parsed = parse_args(options, argc, argv);
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  if (!args.count("model")) throw UsageError("missing MODEL (expected: inspect MODEL, a QAT checkpoint or a float model)");
  const int64_t images = int_option(args, "images", 1, 100000);
  const PtqRequest ptq_request = read_ptq_options(args);
  InspectOptions inspect_options;
  if (args.count("target-accuracy")) inspect_options.target_accuracy = real_option(args, "target-accuracy", {.min = 0, .max = 1});
  inspect_options.suggested_bits = static_cast<int>(int_option(args, "suggest-bits", 2, 8));
  inspect_options.suggest_float = args.count("suggest-float") > 0;
  if (inspect_options.suggest_float && args.count("suggest-bits"))
    throw UsageError("--suggest-float and --suggest-bits (expected one: float layers, or the width to give them)");
  if (ptq_request.target == Int8Target::kAvx2) {  // its codes stay within 7 bits: so does what the suggestion widens to
    if (args.count("suggest-bits") && inspect_options.suggested_bits > 7)
      throw UsageError(fmt::format("--suggest-bits {} with --int8-target avx2 (expected 2..7: avx2 keeps codes within 7 bits)",
                                   inspect_options.suggested_bits));
    inspect_options.suggested_bits = std::min(inspect_options.suggested_bits, 7);
  }
  const std::string path = args["model"].as<std::string>(), out = args["out"].as<std::string>();
  prepare_output_folder(out, "--out");
  use_threads_option(args);

  for (const qbin::LayerRecord& r : qbin::load(path).layers)
    for (const qbin::TensorRecord& t : r.tensors)
      if (t.dtype != qbin::DType::kF32)
        throw std::runtime_error(fmt::format("{} is an int8 model (layer '{}' holds {} tensors); inspect takes the QAT checkpoint it was exported "
                                     "from (model_qat.qbin) or the float model to quantize (PTQ)", path, qbin::shown(r.name),
                                     qbin::dtype_name(t.dtype)));
  Sequential model = load_any_model(path);
  const std::string reference = args.count("float") ? args["float"].as<std::string>() : path;
  Sequential float_model = float_twin(reference);
  const ImageData data = load_image_data(mnist_dir(args["data-dir"].as<std::string>()));
  for (const auto* m : {&model, &float_model})
    if (m->input_shape() != data.test.image_shape())
      throw std::runtime_error(fmt::format("{} takes {} images, the data set has {}", m == &model ? path : reference,
                                           shape_str(m->input_shape()), shape_str(data.test.image_shape())));
  // A QAT checkpoint keeps its widths; --int8-target then says which target it was trained for,
  // so that the suggestion stays within it and its fix command carries it.
  const std::string ptq = quantize_after_training(model, path, data.train, args, ptq_request, true);
  const std::string what = ptq.empty() ? fmt::format("The QAT model ({}, fake-quantized) and its int8 export", qat_bits_text(model))
                                       : fmt::format("{} and its int8 model", ptq);
  Inspection r;
  try {
    r = inspect(float_model, model, data.test.slice(0, std::min(images, data.test.size())), inspect_options);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(fmt::format("{}: {}", path, without_function_name(e.what())));
  }
  const std::string reference_name = args.count("float") ? reference : "its own weights in float";
  const char* given = r.suggested_float ? "keep-float" : "layer-bits";
  const std::string layer_bits = suggested_list(r, args.count(given) ? args[given].as<std::string>() : "");
  std::string fix = ptq.empty() ? fmt::format("train --qat{} --init FLOAT_MODEL",
                                                    ptq_request.target == Int8Target::kAvx2 ? " --int8-target avx2" : "")
                                      : fmt::format("quantize {} --bits {} --method {}{}", path, ptq_request.bits, ptq_request.method,
                                                    ptq_request.target == Int8Target::kAvx2 ? " --int8-target avx2" : "");
  if (r.suggested_float && args.count("layer-bits")) fix += " --layer-bits " + args["layer-bits"].as<std::string>();
  const Json json = to_json(r, path, reference_name, layer_bits);
  write_charts(r, out);
  write_file_atomic(out + "/report.md", report_md(r, path, reference_name, what, fix, layer_bits));
  write_file_atomic(out + "/inspection.json", json.dump() + "\n");
  if (args.count("json")) {
    fmt::print("{}\n", json.dump());
    return 0;
  }
  fmt::print("{}: float {:.4f}, fake-quantized {:.4f}, int8 {:.4f} (runtime {:.4f}, {} the reference) on {} images\n", path,
             r.accuracy_float, r.accuracy_fake_quant, r.accuracy_int8, r.accuracy_runtime,
             r.runtime_matches_reference ? "bit-identical to" : "NOT identical to", r.images);
  size_t width = 24;
  for (const LayerInspection& l : r.layers) width = std::max(width, label(l).size() + 1);
  fmt::print("{:<{}} {:>10} {:>10} {:>12}\n", "layer", width, "SQNR fq", "SQNR int8", "acc. float");
  for (const LayerInspection& l : r.layers)
    fmt::print("{:<{}} {:>10} {:>10} {:>12}\n", label(l), width, db(l.sqnr_fake_quant), db(l.sqnr_int8), num(l.accuracy_with_float, "{:.4f}"));
  if (!r.suggestion.empty())
    fmt::print("{} {:.4f} ({} of {:.4f}): {} {} {}\n", r.target_met ? "Reaches" : "Comes closest to the target with",
               r.suggestion.back().accuracy, r.target_met ? "target" : "short", r.target_accuracy, fix, suggested_option(r), layer_bits);
  else if (r.target_met)
    fmt::print("Meets the target accuracy {:.4f} as it is\n", r.target_accuracy);
  fmt::print("Wrote {}/report.md, its charts and inspection.json\n", out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_app("inspect", [&] { return inspect_main(argc, argv); });
}
