// The quantization debugger (quant/debugger.h): three models on the same images, compared at the
// outputs of the int8 model's stages.
#include "quant/debugger.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <unordered_map>

#include <fmt/format.h>

#include "core/autograd.h"
#include "core/parallel_for.h"
#include "layers/container.h"
#include "layers/layer_kind.h"
#include "optim/trainer.h"
#include "quant/export.h"
#include "quant/qat.h"
#include "quant/quantization.h"
#include "quant/runtime/reference.h"
#include "quant/runtime/runtime.h"
#include "quant/runtime/stage_kind.h"  // a stage's widest weight code (internal to the runtime, read here only)

namespace qnet {

void Histogram::add(double v) {
  if (std::isnan(v)) return;  // no bin holds it (a float model's NaN output); the SQNR shows it
  const double at = std::floor((v - lo) / width);
  if (at < 0) ++below;
  else if (at >= static_cast<double>(counts.size())) ++above;
  else ++counts[static_cast<size_t>(at)];
}

namespace {

double sqnr_db(double signal, double noise) {
  if (noise == 0) return std::numeric_limits<double>::infinity();
  return 10 * std::log10(signal / noise);
}

// For each stage, the index of the top-level layer of `model` whose output is the stage's output:
// the layer before the first layer named by a later stage (the last layer for the last stage), or
// -1 if the stage's own layer comes after that point. Layers that are the identity at inference
// (Dropout) fall inside the stage before them.
std::vector<int> stage_ends(const Sequential& model, const std::vector<Stage>& stages) {
  std::unordered_map<std::string, int> index;
  for (size_t i = 0; i < model.size(); ++i) index[model.layer(i).name()] = static_cast<int>(i);
  std::vector<int> ends(stages.size(), static_cast<int>(model.size()) - 1);
  for (size_t s = 0; s < stages.size(); ++s) {
    for (size_t later = s + 1; later < stages.size(); ++later)
      if (auto it = index.find(stages[later].name); it != index.end()) {
        ends[s] = it->second - 1;
        break;
      }
    if (auto own = index.find(stages[s].name); own != index.end() && own->second > ends[s]) ends[s] = -1;
  }
  return ends;
}

// Where a stage point (quant/runtime/reference.h) is in a Sequential model: the chain (the model,
// or a branch of one of its containers) and the layers [first, end] of that chain that make the
// stage; chain null or end -1 if the model has no such point.
struct ModelPoint {
  Sequential* chain = nullptr;
  int first = 0, end = -1;
};

// The places of the points of `stages` (in stage_points' order) in `chain`: a container stage's
// branches are looked for in the branches of the module named as the stage.
void place_points(Sequential* chain, const std::vector<Stage>& stages, std::vector<ModelPoint>& out) {
  const std::vector<int> ends = chain ? stage_ends(*chain, stages) : std::vector<int>(stages.size(), -1);
  for (size_t s = 0; s < stages.size(); ++s) {
    const std::vector<const std::vector<Stage>*> branches = stages[s].op->branches();
    std::vector<Sequential*> inner;
    if (chain && !branches.empty())
      for (size_t i = 0; i < chain->size(); ++i)
        if (auto* c = dynamic_cast<Container*>(&chain->layer(i)); c && chain->layer(i).name() == stages[s].name) inner = c->branches();
    for (size_t b = 0; b < branches.size(); ++b) place_points(b < inner.size() ? inner[b] : nullptr, *branches[b], out);
    out.push_back({chain, s == 0 ? 0 : std::max(ends[s - 1] + 1, 0), ends[s]});
  }
}

// Runs `chain` on x layer by layer, each container's branches on their own too, and keeps the
// output of every point that ends at a layer of the chain.
void run_points(Sequential& chain, const Variable& x, const std::vector<ModelPoint>& points, std::vector<Tensor>& out) {
  Variable y = x;
  for (size_t i = 0; i < chain.size(); ++i) {
    Module& layer = chain.layer(i);
    if (auto* c = dynamic_cast<Container*>(&layer))
      for (Sequential* branch : c->branches()) run_points(*branch, y, points, out);
    y = layer.forward(y);
    for (size_t p = 0; p < points.size(); ++p)
      if (points[p].chain == &chain && points[p].end == static_cast<int>(i)) out[p] = y.value();
  }
}

void each_quantizer(Module& m, const std::function<void(Module&)>& f) {
  f(m);
  if (auto* c = dynamic_cast<Container*>(&m))
    for (Sequential* branch : c->branches()) for_each_layer(*branch, f);
}

// Turns the quantizers of layers [first, last] off (float weights, unquantized outputs) or back on;
// returns whether there was any.
bool set_float(Sequential& model, int first, int last, bool on) {
  if (last < 0) return false;
  static const QatObservedActivation::Sink kIgnore = [](QatObservedActivation&, const Tensor&) {};
  bool any = false;
  for (int i = std::max(first, 0); i <= last; ++i)
    each_quantizer(model.layer(static_cast<size_t>(i)), [&](Module& l) {
      if (auto* w = dynamic_cast<QatWeights*>(&l)) w->set_float(on), any = true;
      if (auto* a = dynamic_cast<QatObservedActivation*>(&l)) a->set_sink(on ? kIgnore : nullptr), any = true;
    });
  return any;
}

// Gives the quantizers of layers [first, last] at least `bits` bits; returns the names to give
// --layer-bits for it (the layers with weights and the layers that set a grid of their own), empty
// if every quantizer there already had as many. `saved` keeps each quantizer's width before.
std::vector<std::string> widen(Sequential& model, int first, int last, int bits, std::vector<std::pair<Module*, int>>& saved) {
  std::vector<std::string> names;
  if (last < 0) return names;
  bool changed = false;
  for (int i = std::max(first, 0); i <= last; ++i)
    each_quantizer(model.layer(static_cast<size_t>(i)), [&](Module& l) {
      if (auto* w = dynamic_cast<QatWeights*>(&l)) {
        names.push_back(w->name());
        if (w->bits() < bits) saved.emplace_back(w, w->bits()), w->set_bits(bits), changed = true;
      }
      if (auto* a = dynamic_cast<QatObservedActivation*>(&l); a && a->bits() < bits)
        saved.emplace_back(a, a->bits()), a->set_bits(bits), changed = true;
      if (const LayerKind* k = find_layer_kind(l.type_name()); k && k->role == Int8Role::kRequantize) names.push_back(l.name());
    });
  if (!changed) names.clear();
  return names;
}

// Keeps the layers with weights among layers [first, last] in float (float islands: their outputs
// keep their grids); returns their names for --keep-float, empty if every one already was.
// `kept` collects them, to be put back.
std::vector<std::string> keep_float(Sequential& model, int first, int last, std::vector<Module*>& kept) {
  std::vector<std::string> names;
  if (last < 0) return names;
  for (int i = std::max(first, 0); i <= last; ++i)
    each_quantizer(model.layer(static_cast<size_t>(i)), [&](Module& l) {
      if (auto* w = dynamic_cast<QatWeights*>(&l); w && !w->inner().keep_float())
        w->inner().set_keep_float(true), kept.push_back(&w->inner()), names.push_back(w->name());
    });
  return names;
}

void restore_widths(const std::vector<std::pair<Module*, int>>& saved) {
  for (const auto& [m, bits] : saved) {
    if (auto* w = dynamic_cast<QatWeights*>(m)) w->set_bits(bits);
    if (auto* a = dynamic_cast<QatObservedActivation*>(m)) a->set_bits(bits);
  }
}

// The weight quantization of a stage's QatWeights: SQNR per output channel (the last axis) and the
// kernel in units of each channel's step.
void inspect_weights(const QatWeights& layer, LayerInspection& out) {
  const Tensor kernel = layer.deployed_kernel();
  const std::vector<QParams> q = choose_weight_qparams(kernel, layer.bits());
  const size_t channels = q.size();
  std::vector<double> signal(channels), noise(channels);
  out.weight_bits = layer.bits();
  const int32_t qmax = q.empty() ? 1 : q[0].qmax;
  out.weights = {-qmax - 0.5, qmax >= 32 ? 1.0 : 0.25, std::vector<int64_t>(static_cast<size_t>((2 * qmax + 1) * (qmax >= 32 ? 1 : 4))), 0, 0};
  for (int64_t i = 0; i < kernel.numel(); ++i) {
    const QParams& p = q[static_cast<size_t>(i) % channels];
    const float w = kernel[i];
    const double e = static_cast<double>(w) - dequantize(quantize(w, p), p);
    signal[static_cast<size_t>(i) % channels] += static_cast<double>(w) * w;
    noise[static_cast<size_t>(i) % channels] += e * e;
    out.weights.add(static_cast<double>(w) / p.scale);
  }
  for (size_t c = 0; c < channels; ++c) out.weight_sqnr.push_back(signal[c] == 0 ? kNoFigure : sqnr_db(signal[c], noise[c]));
}

// What is summed over the images for one stage.
struct Sums {
  double signal = 0, noise_fq = 0, noise_int8 = 0, abs_error = 0, max_abs_error = 0;
  int64_t compared = 0, clipped = 0;
  double min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity();
};

std::string int8_path(const StageOp& op) {
  if (op.float_island()) return "float island (qnet's f32 kernel)";
  const int64_t widest = op.widest_pair_sum();
  if (widest == 0) return "";
  if (onednn_has_vnni()) return "one pass (VNNI)";
  return widest > kPairSumMax ? "split weights" : "one pass (pair sums within int16)";
}

}  // namespace

Inspection inspect(Sequential& float_model, Sequential& qat_model, const ImageSet& images, const InspectOptions& options) {
  if (!is_qat(qat_model)) throw std::invalid_argument("inspect: the model to inspect is not in QAT form (prepare_qat or calibrate_ptq)");
  if (float_model.input_shape() != qat_model.input_shape())
    throw std::invalid_argument(fmt::format("inspect: the float model takes {} images, the quantized one {}",
                                            shape_str(float_model.input_shape()), shape_str(qat_model.input_shape())));
  if (const Shape f = float_model.output_shape(float_model.input_shape()), q = qat_model.output_shape(qat_model.input_shape()); f != q)
    throw std::invalid_argument(fmt::format("inspect: the float model gives {}, the quantized one {} (expected the same classes)",
                                            shape_str(f), shape_str(q)));
  if (images.image_shape() != qat_model.input_shape())
    throw std::invalid_argument(fmt::format("inspect: the images are {}, the models take {}", shape_str(images.image_shape()),
                                            shape_str(qat_model.input_shape())));
  if (images.size() < 1) throw std::invalid_argument("inspect: no images");
  NoGradGuard no_grad;
  float_model.set_training(false);
  qat_model.set_training(false);

  const InferenceModel m = inference_model(export_int8(qat_model));
  Inspection r;
  r.images = images.size();
  r.bits = qat_bits_text(qat_model);
  r.onednn_isa = onednn_isa();
  // Every stage, and inside a residual block every stage of its branches (stage_points), and where
  // each is in the float and the QAT model.
  const std::vector<StagePoint> points = stage_points(m);
  std::vector<ModelPoint> fpoints, qpoints;
  place_points(&float_model, m.stages, fpoints);
  place_points(&qat_model, m.stages, qpoints);
  const size_t stages = points.size();
  const int classes = m.classes();

  for (size_t s = 0; s < stages; ++s) {
    const Stage& st = *points[s].stage;
    LayerInspection l;
    l.name = st.name, l.kind = st.kind, l.shape = {st.H, st.W, st.C};
    l.depth = points[s].depth;
    l.codes = !st.f32_output, l.scale = st.scale, l.zero_point = st.zero_point, l.bits = st.bits, l.qmax = (1 << st.bits) - 1;
    if (l.codes) l.activation = {-0.5, 1.0, std::vector<int64_t>(static_cast<size_t>(l.qmax) + 1), 0, 0};
    l.int8_path = int8_path(*st.op);
    const ModelPoint& q = qpoints[s];
    for (int i = q.first; q.chain && i <= q.end; ++i)
      if (auto* w = dynamic_cast<const QatWeights*>(&q.chain->layer(static_cast<size_t>(i)))) {
        if (!w->inner().keep_float()) inspect_weights(*w, l);  // a float island's weights are not quantized
        break;
      }
    r.layers.push_back(std::move(l));
  }
  // A point's place in its container: "residual_1 body" (the container's own point comes later).
  for (size_t s = 0; s < stages; ++s)
    if (const int parent = points[s].parent; parent >= 0)
      r.layers[s].in = fmt::format("{} {}", points[static_cast<size_t>(parent)].stage->name, points[s].branch == 0 ? "body" : "shortcut");

  // Shape of each model's output at the stage's point, to check it is the same point.
  auto shape_at = [&](const ModelPoint& p) {
    Shape sh = p.chain->input_shape();
    for (int i = 0; i <= p.end; ++i) sh = p.chain->layer(static_cast<size_t>(i)).output_shape(sh);
    return sh;
  };
  // A stage's shape is H x W x C (1 x 1 x C after Flatten and Dense); the models' is Keras' ([C]).
  for (size_t s = 0; s < stages; ++s) {
    LayerInspection& l = r.layers[s];
    const int64_t numel = shape_numel(l.shape);
    if (!qpoints[s].chain || qpoints[s].end < 0) continue;
    if (const Shape q = shape_at(qpoints[s]); shape_numel(q) == numel) l.shape = q;
    l.compared = fpoints[s].chain && fpoints[s].end >= 0 && shape_at(fpoints[s]) == l.shape;
  }

  std::vector<Sums> sums(stages);
  std::vector<float> reference_logits(static_cast<size_t>(images.size()) * classes);
  int64_t correct_float = 0, correct_fq = 0, correct_int8 = 0;
  for (int64_t begin = 0; begin < images.size(); begin += options.batch_size) {
    const int64_t n = std::min(options.batch_size, images.size() - begin);
    const Batch batch = images.batch(begin, n);
    std::vector<Tensor> f(stages), fq(stages);
    run_points(float_model, Variable(batch.x), fpoints, f);
    run_points(qat_model, Variable(batch.x), qpoints, fq);
    correct_float += count_correct(f.back(), batch.labels);
    correct_fq += count_correct(fq.back(), batch.labels);
    std::vector<std::vector<std::vector<float>>> traces(static_cast<size_t>(n));
    parallel_for_dynamic(n, true, [&](int64_t i) { traces[static_cast<size_t>(i)] = reference_trace(m, images.image(begin + i)); });
    for (int64_t i = 0; i < n; ++i) {
      const std::vector<float>& logits = traces[static_cast<size_t>(i)].back();
      std::copy(logits.begin(), logits.end(), reference_logits.begin() + (begin + i) * classes);
      correct_int8 += argmax(logits.data(), classes) == batch.labels[static_cast<size_t>(i)];
    }
    for (size_t s = 0; s < stages; ++s) {
      LayerInspection& l = r.layers[s];
      Sums& z = sums[s];
      const int64_t per_image = shape_numel(l.shape);
      const Tensor* fo = l.compared && !f[s].empty() ? &f[s] : nullptr;
      const Tensor* qo = !fq[s].empty() ? &fq[s] : nullptr;
      if (qo && qo->numel() != per_image * n) qo = nullptr;
      if (fo && fo->numel() != per_image * n) fo = nullptr;
      const double step = l.codes ? l.scale : 1.0;
      const double lo = l.codes ? -l.zero_point * static_cast<double>(l.scale) : 0, hi = l.codes ? (l.qmax - l.zero_point) * static_cast<double>(l.scale) : 0;
      for (int64_t i = 0; i < n; ++i) {
        const std::vector<float>& q = traces[static_cast<size_t>(i)][s];
        for (int64_t k = 0; k < per_image; ++k) {
          const double x8 = q[static_cast<size_t>(k)];
          if (qo) {
            const double d = std::abs(x8 - (*qo)[i * per_image + k]) / step;
            l.max_step_difference = std::max(l.max_step_difference, d);
            l.values_differing += d >= 0.5;
            ++l.values;
          }
          if (!fo) continue;
          const double x = (*fo)[i * per_image + k];
          z.signal += x * x;
          if (qo) z.noise_fq += (qo->data()[i * per_image + k] - x) * (qo->data()[i * per_image + k] - x);
          z.noise_int8 += (x8 - x) * (x8 - x);
          z.abs_error += std::abs(x8 - x), z.max_abs_error = std::max(z.max_abs_error, std::abs(x8 - x));
          z.min = std::min(z.min, x), z.max = std::max(z.max, x);
          ++z.compared;
          if (l.codes) {
            l.activation.add(x / l.scale + l.zero_point);
            z.clipped += x < lo - 0.5 * l.scale || x > hi + 0.5 * l.scale;
          }
        }
      }
    }
  }
  for (size_t s = 0; s < stages; ++s) {
    LayerInspection& l = r.layers[s];
    const Sums& z = sums[s];
    if (!l.compared || z.compared == 0) continue;
    l.sqnr_fake_quant = sqnr_db(z.signal, z.noise_fq);
    l.sqnr_int8 = sqnr_db(z.signal, z.noise_int8);
    l.max_abs_error = z.max_abs_error, l.mean_abs_error = z.abs_error / static_cast<double>(z.compared);
    l.float_min = z.min, l.float_max = z.max;
    if (l.codes) {
      const double span = l.qmax * static_cast<double>(l.scale);
      l.range_used = (std::min(z.max, (l.qmax - l.zero_point) * static_cast<double>(l.scale)) -
                      std::max(z.min, -l.zero_point * static_cast<double>(l.scale))) / span;
      l.clipped = static_cast<double>(z.clipped) / static_cast<double>(z.compared);
    }
  }
  const auto count = static_cast<double>(images.size());
  r.accuracy_float = static_cast<double>(correct_float) / count;
  r.accuracy_fake_quant = static_cast<double>(correct_fq) / count;
  r.accuracy_int8 = static_cast<double>(correct_int8) / count;

  // The oneDNN runtime on the same images: the same logits, bit for bit.
  std::vector<uint8_t> pixels(images.image(0), images.image(0) + images.size() * images.image_bytes());
  const Runtime runtime(m);
  const std::vector<float> logits = runtime.predict(pixels.data(), images.size());
  r.runtime_matches_reference = logits.size() == reference_logits.size() &&
                                std::equal(logits.begin(), logits.end(), reference_logits.begin(),
                                           [](float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; });
  int64_t correct_runtime = 0;
  for (int64_t i = 0; i < images.size(); ++i) correct_runtime += argmax(logits.data() + i * classes, classes) == images.label(i);
  r.accuracy_runtime = static_cast<double>(correct_runtime) / count;

  if (options.sensitivity)
    for (size_t s = 0; s < stages; ++s) {
      const ModelPoint& q = qpoints[s];
      if (!q.chain || !set_float(*q.chain, q.first, q.end, true)) continue;
      try {
        r.layers[s].accuracy_with_float = evaluate(qat_model, images, options.batch_size).accuracy;
      } catch (...) {
        set_float(*q.chain, q.first, q.end, false);
        throw;
      }
      set_float(*q.chain, q.first, q.end, false);
    }

  // The suggestion: widen the stages in the order of what keeping them in float gains.
  r.target_accuracy = std::isnan(options.target_accuracy) ? r.accuracy_float - 0.01 : options.target_accuracy;
  r.suggested_bits = options.suggested_bits;
  r.suggested_float = options.suggest_float;
  r.target_met = r.accuracy_fake_quant >= r.target_accuracy;
  if (options.sensitivity && !r.target_met) {
    std::vector<size_t> order;
    for (size_t s = 0; s < stages; ++s)
      if (!std::isnan(r.layers[s].accuracy_with_float)) order.push_back(s);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return r.layers[a].accuracy_with_float > r.layers[b].accuracy_with_float; });
    std::vector<std::pair<Module*, int>> saved;
    std::vector<Module*> kept;
    const auto restore = [&] {
      restore_widths(saved);
      for (Module* m : kept) m->set_keep_float(false);
    };
    try {
      for (size_t s : order) {
        if (!qpoints[s].chain) continue;
        std::vector<std::string> names = options.suggest_float
                                             ? keep_float(*qpoints[s].chain, qpoints[s].first, qpoints[s].end, kept)
                                             : widen(*qpoints[s].chain, qpoints[s].first, qpoints[s].end, options.suggested_bits, saved);
        if (names.empty()) continue;
        const double accuracy = evaluate(qat_model, images, options.batch_size).accuracy;
        r.suggestion.push_back({r.layers[s].name, std::move(names), accuracy});
        if (accuracy >= r.target_accuracy) {
          r.target_met = true;
          break;
        }
      }
    } catch (...) {
      restore();
      throw;
    }
    restore();
  }
  return r;
}

Sequential float_twin(const std::string& path) {
  Sequential model = load_any_model(path);
  if (is_qat(model)) set_calibration(model, [](QatObservedActivation&, const Tensor&) {});
  return model;
}

}  // namespace qnet
