// The integer reference's walk over the stages; each kind's arithmetic is its
// StageOp::reference (quant/runtime/stages/, one file per kind).
#include "quant/runtime/reference.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "quant/runtime/stage_kind.h"

namespace qnet {

RefActivation reference_output(const Stage& st) {
  RefActivation y{st.H, st.W, st.C, st.f32_output, {}, {}};
  const size_t n = static_cast<size_t>(st.H) * st.W * st.C;
  (st.f32_output ? y.f.resize(n) : y.q.resize(n));
  return y;
}

void write_accumulator(RefActivation& y, size_t i, int32_t acc, float scale, const Stage& st, bool relu, int32_t z_out, int32_t qmax) {
  if (st.f32_output) {
    const float v = static_cast<float>(acc) * scale;
    y.f[i] = relu ? std::max(v, 0.f) : v;
  } else {
    float v = static_cast<float>(acc) * scale;
    if (z_out != 0) v += static_cast<float>(z_out);
    y.q[i] = static_cast<uint8_t>(std::nearbyint(std::min(std::max(v, 0.f), static_cast<float>(qmax))));
  }
}

std::vector<float> reference_forward(const InferenceModel& m, const uint8_t* images, int64_t n) {
  if (m.precision != Precision::kInt8) throw std::invalid_argument("reference_forward: the model is not int8");
  std::vector<float> logits(static_cast<size_t>(n) * m.classes());
  for (int64_t i = 0; i < n; ++i) {
    RefActivation x{m.H, m.W, m.C, false, std::vector<uint8_t>(images + i * m.input_size(), images + (i + 1) * m.input_size()), {}};
    for (const Stage& st : m.stages) st.op->reference(x, st);
    std::copy(x.f.begin(), x.f.end(), logits.begin() + i * m.classes());
  }
  return logits;
}

namespace {

void add_points(const std::vector<Stage>& chain, int depth, int parent, int branch, std::vector<StagePoint>& out) {
  for (size_t i = 0; i < chain.size(); ++i) {
    const std::vector<const std::vector<Stage>*> branches = chain[i].op->branches();
    const size_t first = out.size();
    for (size_t b = 0; b < branches.size(); ++b) add_points(*branches[b], depth + 1, -1, static_cast<int>(b), out);
    const int self = static_cast<int>(out.size());
    for (size_t k = first; k < out.size(); ++k)
      if (out[k].depth == depth + 1) out[k].parent = self;
    out.push_back({&chain[i], depth, parent, branch});
  }
}

// Runs `chain` on x (the reference), appending each point's output in real numbers.
void trace_chain(const std::vector<Stage>& chain, RefActivation& x, std::vector<std::vector<float>>& out) {
  for (const Stage& st : chain) {
    for (const std::vector<Stage>* branch : st.op->branches()) {
      RefActivation y = x;
      trace_chain(*branch, y, out);
    }
    st.op->reference(x, st);
    if (x.real) {
      out.push_back(x.f);
    } else {
      std::vector<float> real(x.q.size());
      for (size_t i = 0; i < real.size(); ++i) real[i] = static_cast<float>(x.q[i] - st.zero_point) * st.scale;
      out.push_back(std::move(real));
    }
  }
}

}  // namespace

std::vector<StagePoint> stage_points(const InferenceModel& m) {
  std::vector<StagePoint> points;
  add_points(m.stages, 0, -1, 0, points);
  return points;
}

std::vector<std::vector<float>> reference_trace(const InferenceModel& m, const uint8_t* image) {
  if (m.precision != Precision::kInt8) throw std::invalid_argument("reference_trace: the model is not int8");
  std::vector<std::vector<float>> outputs;
  RefActivation x{m.H, m.W, m.C, false, std::vector<uint8_t>(image, image + m.input_size()), {}};
  trace_chain(m.stages, x, outputs);
  return outputs;
}

}  // namespace qnet
