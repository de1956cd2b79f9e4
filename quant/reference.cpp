#include "quant/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace qnet {

namespace {

// One image's activation, HWC: u8 codes, or floats once the logits layer has run.
struct Activation {
  int H, W, C;
  bool real = false;
  std::vector<uint8_t> q;
  std::vector<float> f;
  size_t at(int h, int w, int c) const { return (static_cast<size_t>(h) * W + w) * C + c; }
};

// A Conv2D or Dense output from its accumulator (inference_model.h): u8 codes
// clamp(round(float(acc) * scale + z_out), 0, qmax), or floats float(acc) * scale, ReLU if fused.
void write_output(Activation& y, size_t i, int32_t acc, float scale, const Stage& st, bool relu, int32_t z_out, int32_t qmax) {
  if (st.f32_output) {
    const float v = static_cast<float>(acc) * scale;
    y.f[i] = relu ? std::max(v, 0.f) : v;
  } else {
    float v = static_cast<float>(acc) * scale;
    if (z_out != 0) v += static_cast<float>(z_out);
    y.q[i] = static_cast<uint8_t>(std::nearbyint(std::min(std::max(v, 0.f), static_cast<float>(qmax))));
  }
}

Activation output_of(const Stage& st) {
  Activation y{st.H, st.W, st.C, st.f32_output, {}, {}};
  (st.f32_output ? y.f.resize(static_cast<size_t>(st.H) * st.W * st.C) : y.q.resize(static_cast<size_t>(st.H) * st.W * st.C));
  return y;
}

// acc = b_q[oc] + sum (x - z_in) * w over the taps inside the input (eq. 11): a padding tap
// stands for real 0 and contributes nothing.
Activation conv(const Activation& x, const ConvStage& s, const Stage& st) {
  const Geometry& g = s.g;
  Activation y = output_of(st);
  for (int oh = 0; oh < st.H; ++oh)
    for (int ow = 0; ow < st.W; ++ow)
      for (int oc = 0; oc < s.OC; ++oc) {
        int32_t acc = s.qbias[oc];
        for (int kh = 0; kh < g.KH; ++kh)
          for (int kw = 0; kw < g.KW; ++kw) {
            const int ih = oh * g.SH - g.pad_top + kh, iw = ow * g.SW - g.pad_left + kw;
            if (ih < 0 || ih >= x.H || iw < 0 || iw >= x.W) continue;
            for (int ic = 0; ic < s.IC; ++ic)
              acc += (int32_t{x.q[x.at(ih, iw, ic)]} - s.input_zero_point) *
                     int32_t{s.qkernel[((static_cast<size_t>(kh) * g.KW + kw) * s.IC + ic) * s.OC + oc]};
          }
        write_output(y, y.at(oh, ow, oc), acc, s.output_scale[oc], st, s.relu, s.output_zero_point, s.qmax);
      }
  return y;
}

// The largest value in each window; padding never wins (max is order-preserving on codes).
Activation max_pool(const Activation& x, const PoolStage& s, const Stage& st) {
  const Geometry& g = s.g;
  Activation y = output_of(st);
  for (int oh = 0; oh < st.H; ++oh)
    for (int ow = 0; ow < st.W; ++ow)
      for (int c = 0; c < x.C; ++c) {
        uint8_t best = 0;
        float best_f = -std::numeric_limits<float>::infinity();
        for (int kh = 0; kh < g.KH; ++kh)
          for (int kw = 0; kw < g.KW; ++kw) {
            const int ih = oh * g.SH - g.pad_top + kh, iw = ow * g.SW - g.pad_left + kw;
            if (ih < 0 || ih >= x.H || iw < 0 || iw >= x.W) continue;
            if (x.real) best_f = std::max(best_f, x.f[x.at(ih, iw, c)]);
            else best = std::max(best, x.q[x.at(ih, iw, c)]);
          }
        if (x.real) y.f[y.at(oh, ow, c)] = best_f;
        else y.q[y.at(oh, ow, c)] = best;
      }
  return y;
}

// acc = b_q[o] + sum (x[i] - z_in) * w[i][o] (eq. 11 or 12).
Activation dense(const Activation& x, const DenseStage& s, const Stage& st) {
  Activation y = output_of(st);
  for (int o = 0; o < s.OUT; ++o) {
    int32_t acc = s.qbias[o];
    for (int i = 0; i < s.IN; ++i) acc += (int32_t{x.q[i]} - s.input_zero_point) * int32_t{s.qkernel[static_cast<size_t>(i) * s.OUT + o]};
    write_output(y, o, acc, s.output_scale[o], st, s.relu, s.output_zero_point, s.qmax);
  }
  return y;
}

// ReLU on codes: real 0 is the code zero_point.
void relu(Activation& x, const ReluStage& s) {
  for (float& v : x.f) v = std::max(v, 0.f);
  for (uint8_t& v : x.q) v = std::max(v, static_cast<uint8_t>(s.zero_point));
}

}  // namespace

std::vector<float> reference_forward(const InferenceModel& m, const uint8_t* images, int64_t n) {
  if (m.precision != Precision::kInt8) throw std::invalid_argument("reference_forward: the model is not int8");
  std::vector<float> logits(static_cast<size_t>(n) * m.classes());
  for (int64_t i = 0; i < n; ++i) {
    Activation x{m.H, m.W, m.C, false, std::vector<uint8_t>(images + i * m.input_size(), images + (i + 1) * m.input_size()), {}};
    for (const Stage& st : m.stages) {
      if (const auto* c = std::get_if<ConvStage>(&st.op)) x = conv(x, *c, st);
      else if (const auto* p = std::get_if<PoolStage>(&st.op)) x = max_pool(x, *p, st);
      else if (const auto* d = std::get_if<DenseStage>(&st.op)) x = dense(x, *d, st);
      else if (const auto* r = std::get_if<ReluStage>(&st.op)) relu(x, *r);
      else x.H = 1, x.W = 1, x.C = st.C;  // Flatten: HWC order is already the flat order
    }
    std::copy(x.f.begin(), x.f.end(), logits.begin() + i * m.classes());
  }
  return logits;
}

}  // namespace qnet
