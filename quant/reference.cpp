#include "quant/reference.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace qnet {

namespace {

struct Activation {  // one image's uint8 codes, HWC
  int H, W, C;
  std::vector<uint8_t> q;
  uint8_t at(int h, int w, int c) const { return q[(static_cast<size_t>(h) * W + w) * C + c]; }
};

// out = clamp(round(max(float(acc) * output_scale[oc], 0)), 0, qmax), acc = b_q[oc] + sum x * w (eq. 11).
// Padding taps are skipped: the input zero point is 0, so a padded code contributes nothing.
Activation conv_relu(const Activation& x, const ConvStage& s, int OH, int OW) {
  const Geometry& g = s.g;
  Activation y{OH, OW, s.OC, std::vector<uint8_t>(static_cast<size_t>(OH) * OW * s.OC)};
  for (int oh = 0; oh < OH; ++oh)
    for (int ow = 0; ow < OW; ++ow)
      for (int oc = 0; oc < s.OC; ++oc) {
        int32_t acc = s.qbias[oc];
        for (int kh = 0; kh < g.KH; ++kh)
          for (int kw = 0; kw < g.KW; ++kw) {
            const int ih = oh * g.SH - g.pad_top + kh, iw = ow * g.SW - g.pad_left + kw;
            if (ih < 0 || ih >= x.H || iw < 0 || iw >= x.W) continue;
            for (int ic = 0; ic < s.IC; ++ic)
              acc += int32_t{x.at(ih, iw, ic)} * int32_t{s.qkernel[((static_cast<size_t>(kh) * g.KW + kw) * s.IC + ic) * s.OC + oc]};
          }
        const float real = std::min(std::max(static_cast<float>(acc) * s.output_scale[oc], 0.f), static_cast<float>(s.qmax));
        y.q[(static_cast<size_t>(oh) * OW + ow) * s.OC + oc] = static_cast<uint8_t>(std::nearbyint(real));
      }
  return y;
}

// The largest code in each window; padding never wins (max is order-preserving on codes with z = 0).
Activation max_pool(const Activation& x, const PoolStage& s, int OH, int OW) {
  const Geometry& g = s.g;
  Activation y{OH, OW, x.C, std::vector<uint8_t>(static_cast<size_t>(OH) * OW * x.C)};
  for (int oh = 0; oh < OH; ++oh)
    for (int ow = 0; ow < OW; ++ow)
      for (int c = 0; c < x.C; ++c) {
        uint8_t best = 0;
        for (int kh = 0; kh < g.KH; ++kh)
          for (int kw = 0; kw < g.KW; ++kw) {
            const int ih = oh * g.SH - g.pad_top + kh, iw = ow * g.SW - g.pad_left + kw;
            if (ih >= 0 && ih < x.H && iw >= 0 && iw < x.W) best = std::max(best, x.at(ih, iw, c));
          }
        y.q[(static_cast<size_t>(oh) * OW + ow) * x.C + c] = best;
      }
  return y;
}

// logit[o] = float(acc) * output_scale[o], acc = b_q[o] + sum x[i] * w[i][o] (eq. 12).
void dense(const Activation& x, const DenseStage& s, float* logits) {
  for (int o = 0; o < s.OUT; ++o) {
    int32_t acc = s.qbias[o];
    for (int i = 0; i < s.IN; ++i) acc += int32_t{x.q[i]} * int32_t{s.qkernel[static_cast<size_t>(i) * s.OUT + o]};
    logits[o] = static_cast<float>(acc) * s.output_scale[o];
  }
}

}  // namespace

std::vector<float> reference_forward(const InferenceModel& m, const uint8_t* images, int64_t n) {
  if (m.precision != Precision::kInt8) throw std::invalid_argument("reference_forward: the model is not int8");
  std::vector<float> logits(static_cast<size_t>(n) * m.classes());
  for (int64_t i = 0; i < n; ++i) {
    Activation x{m.H, m.W, m.C, std::vector<uint8_t>(images + i * m.input_size(), images + (i + 1) * m.input_size())};
    for (const Stage& st : m.stages) {
      if (const auto* c = std::get_if<ConvStage>(&st.op)) x = conv_relu(x, *c, st.H, st.W);
      else if (const auto* p = std::get_if<PoolStage>(&st.op)) x = max_pool(x, *p, st.H, st.W);
      else if (std::holds_alternative<FlattenStage>(st.op)) x = {1, 1, st.C, std::move(x.q)};
      else dense(x, std::get<DenseStage>(st.op), logits.data() + i * m.classes());
    }
  }
  return logits;
}

}  // namespace qnet
