// What the runtime tests share (tests/quant/test_runtime*.cpp): QAT forms with observed ranges,
// the float graph's logits, random pixels, and bitwise comparisons.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "core/autograd.h"
#include "core/random.h"
#include "quant/qat.h"
#include "quant/runtime/reference.h"
#include "quant/runtime/runtime.h"
#include "tests/grad_check.h"

namespace qnet::testing {

// Random biases, then the QAT form with activation ranges observed on three random batches.
inline Sequential with_qat_ranges(Sequential m, int bits, Rng& rng) {
  for (Variable* p : m.parameters())
    if (p->value().rank() == 1)
      for (int64_t i = 0; i < p->value().numel(); ++i) p->value()[i] = rng.uniform(-0.3f, 0.3f);
  prepare_qat(m, {.bits = bits, .observer = {}});
  Shape batch{8};
  for (int64_t d : m.input_shape()) batch.push_back(d);
  for (int i = 0; i < 3; ++i) m.forward(Variable(testing::random_tensor(batch, rng, 0.f, 1.f), false));
  freeze_observers(m);
  return m;
}

// The training graph's logits (evaluation mode) for n images of uint8 pixels, read as training
// reads them (p / 255).
inline std::vector<float> float_forward(Sequential& model, const std::vector<uint8_t>& px, int64_t n) {
  Shape shape{n};
  for (int64_t d : model.input_shape()) shape.push_back(d);
  Tensor x(shape);
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(px[i]) / 255.f;
  NoGradGuard no_grad;
  model.set_training(false);
  return model.forward(Variable(x, false)).value().to_vector();
}

// The int8 path this CPU (or ONEDNN_MAX_CPU_ISA) must take for a model of one width whose first
// layer reads the pixels: 8-bit weight codes on 8-bit codes run split where oneDNN has no VNNI.
// scripts/test runs these tests under every cap, so both paths run.
inline std::string expected_path(int bits) { return bits == 8 && !onednn_has_vnni() ? "split-weights" : "one-pass"; }

inline bool uses(const Runtime& rt, int64_t batch, const std::string& what) {
  for (const std::string& s : rt.implementations(batch))
    if (s.find(what) != std::string::npos) return true;
  return false;
}

inline std::vector<uint8_t> random_pixels(int64_t count, Rng& rng) {
  std::vector<uint8_t> px(count);
  for (auto& p : px) p = static_cast<uint8_t>(rng.uniform(0.f, 256.f));
  return px;
}

// Logits compared as bits: the runtime must compute exactly the reference's floats.
inline int64_t mismatches(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  int64_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) bad += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return bad;
}

// The runtime's logits equal the integer reference's bit for bit on n images given as pixels: in
// the runtime's batches, and one by one for the first 10. Returns the reference's logits.
inline std::vector<float> check_bit_exact(const Runtime& rt, const std::vector<uint8_t>& px, int64_t n) {
  const InferenceModel& m = rt.model();
  const int64_t size = static_cast<int64_t>(m.input_size());
  const std::vector<float> ref = reference_forward(m, px.data(), n);
  CHECK(mismatches(rt.predict(px.data(), n), ref) == 0);
  std::vector<float> one(m.classes());
  for (int i = 0; i < 10 && i < n; ++i) {
    rt.predict(px.data() + i * size, 1, one.data());
    CHECK(std::memcmp(one.data(), ref.data() + i * m.classes(), one.size() * sizeof(float)) == 0);
  }
  return ref;
}

// The QAT graph computes the same layers in float: its logits are close to the int8 ones `ref`,
// not equal. A rounding tie decided the other way moves a code by one and the layers after
// carry it; the median difference stays within `median_share` of the largest logit, and (if
// worst_share > 0) every difference within worst_share.
inline void check_close_to_qat(Sequential& qat, const std::vector<uint8_t>& px, int64_t n, const std::vector<float>& ref, float median_share,
                               float worst_share) {
  const std::vector<float> fq = float_forward(qat, px, n);
  float top = 0.f;
  std::vector<float> differences;
  for (size_t i = 0; i < fq.size(); ++i) top = std::max(top, std::abs(fq[i])), differences.push_back(std::abs(fq[i] - ref[i]));
  std::sort(differences.begin(), differences.end());
  const float median = differences[differences.size() / 2], worst = differences.back();
  INFO("largest |logit| " << top << ", median difference " << median << ", largest " << worst);
  CHECK(top > 0.f);
  CHECK(median <= median_share * top);
  if (worst_share > 0.f) CHECK(worst <= worst_share * top);
}

}  // namespace qnet::testing
