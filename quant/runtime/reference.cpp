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

std::vector<std::vector<float>> reference_trace(const InferenceModel& m, const uint8_t* image) {
  if (m.precision != Precision::kInt8) throw std::invalid_argument("reference_trace: the model is not int8");
  std::vector<std::vector<float>> outputs;
  RefActivation x{m.H, m.W, m.C, false, std::vector<uint8_t>(image, image + m.input_size()), {}};
  for (const Stage& st : m.stages) {
    st.op->reference(x, st);
    if (x.real) {
      outputs.push_back(x.f);
    } else {
      std::vector<float> real(x.q.size());
      for (size_t i = 0; i < real.size(); ++i) real[i] = static_cast<float>(x.q[i] - st.zero_point) * st.scale;
      outputs.push_back(std::move(real));
    }
  }
  return outputs;
}

}  // namespace qnet
