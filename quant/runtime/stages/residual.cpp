// A residual block at inference: its record, then its body's and its shortcut's records (counted
// by body_records and shortcut_records), then the record of its output's grid; read into one
// stage holding both branches as chains of stages. Its training side is layers/residual.cpp.
//
// The add (docs/quantization.md, eq. 16), on u8 codes a (scale s_a, zero point z_a) and b (s_b,
// z_b) into codes of (s, z) clamped to [0, qmax], written as oneDNN's binary add with input
// scales and post-ops computes it, each float operation rounded on its own:
//   v = float(a) * m_a + float(b) * m_b     m_a = s_a / s, m_b = s_b / s
//   v = v + c                               c = z - m_a z_a - m_b z_b   (computed once, at load)
//   out = round_half_even(clamp(v, 0, qmax))
// On floats (f32 models): a + b, then ReLU if one follows.
#include <algorithm>
#include <cmath>

#include "io/record_keys.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace {

namespace key = qbin::key;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

class ResidualStage final : public StageOp {
 public:
  std::vector<Stage> body, shortcut;  // an empty shortcut is the identity
  float m_a = 1.f, m_b = 1.f, c = 0.f;
  int32_t qmax = 255;
  bool relu = false;  // floats: a ReLU fused after the add

  float add_codes(uint8_t a, uint8_t b) const {
    float v = static_cast<float>(a) * m_a;
    const float w = static_cast<float>(b) * m_b;
    v = v + w;
    v = v + c;
    return std::nearbyint(std::min(std::max(v, 0.f), static_cast<float>(qmax)));
  }

  void reference(RefActivation& x, const Stage& st) const override {
    RefActivation a = x, b = x;
    for (const Stage& s : body) s.op->reference(a, s);
    for (const Stage& s : shortcut) s.op->reference(b, s);
    RefActivation y = reference_output(st);
    if (y.real)
      for (size_t i = 0; i < y.f.size(); ++i) y.f[i] = relu ? std::max(a.f[i] + b.f[i], 0.f) : a.f[i] + b.f[i];
    else
      for (size_t i = 0; i < y.q.size(); ++i) y.q[i] = static_cast<uint8_t>(add_codes(a.q[i], b.q[i]));
    x = std::move(y);
  }

  int lower(PlanBuilder& b, int cur, const Stage& st, const Stage*, bool&) const override {
    const int H = b.H, W = b.W, C = b.C;
    int a = b.lower_chain(cur, body);
    b.H = H, b.W = W, b.C = C;
    int s = b.lower_chain(cur, shortcut);
    const int64_t N = b.batch();
    dnnl::primitive_attr attr = PlanBuilder::plain_attributes();
    dnnl::post_ops ops;
    memory::desc dst;
    if (st.f32_output) {
      s = b.as(s, b.desc(a));  // the body's layout (blocked in f32 plans)
      dst = b.desc(a);
      if (relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    } else {
      a = b.as_nhwc_u8(a), s = b.as_nhwc_u8(s);
      dst = memory::desc({N, st.C, st.H, st.W}, dt::u8, tag::nhwc);
      attr.set_scales(DNNL_ARG_SRC_0, 0, {m_a});
      attr.set_scales(DNNL_ARG_SRC_1, 0, {m_b});
      if (c != 0.f) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, 1.f, c);  // exact as v * 1 + c
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, static_cast<float>(qmax));
    }
    attr.set_post_ops(ops);
    dnnl::binary::primitive_desc pd(dnnl::binary::desc(dnnl::algorithm::binary_add, b.desc(a), b.desc(s), dst), attr, b.eng);
    const int out = b.add(pd.dst_desc());
    b.step(pd, "add", {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_SRC_1, s}, {DNNL_ARG_DST, out}});
    return out;
  }

  std::vector<const std::vector<Stage>*> branches() const override { return {&body, &shortcut}; }

  int64_t widest_pair_sum() const override {
    int64_t widest = 0;
    for (const auto* chain : {&body, &shortcut})
      for (const Stage& s : *chain) widest = std::max(widest, s.op->widest_pair_sum());
    return widest;
  }
};

size_t read(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  if (rd.H < 1 || rd.W < 1) StageReader::fail(r, "a residual block needs an image input");
  const int body_count = StageReader::attr(r, key::kBodyRecords, 0, static_cast<int>(records.size() - 1));
  const int shortcut_count = StageReader::attr(r, key::kShortcutRecords, 0, static_cast<int>(records.size() - 1 - body_count));
  const StageReader in = rd;  // the block's input activation, which both branches read
  auto s = std::make_shared<ResidualStage>();
  s->body = rd.read_chain(records.subspan(1, body_count));
  const StageReader a = rd;  // the body's output
  rd = in;
  s->shortcut = rd.read_chain(records.subspan(1 + body_count, shortcut_count));
  const StageReader b = rd;  // the shortcut's output
  if (a.H != b.H || a.W != b.W || a.C != b.C || a.f32 != b.f32)
    StageReader::fail(r, fmt::format("the body gives {}x{}x{} {} and the shortcut {}x{}x{} {} (expected the same)", a.H, a.W, a.C,
                                     a.f32 ? "floats" : "codes", b.H, b.W, b.C, b.f32 ? "floats" : "codes"));
  rd.scale = in.scale, rd.zero = in.zero, rd.f32 = a.f32;  // what activation() checks: codes or floats come in to the add
  const size_t after = 1 + body_count + shortcut_count;
  const StageReader::Fused f = rd.fused(records, after, false);
  if (rd.int8() && !a.f32) {
    if (f.activation.f32) StageReader::fail(r, "an add of u8 codes with no Quantize or ReLU record of its output's grid after it");
    const float out_scale = f.activation.scale;
    s->m_a = a.scale / out_scale, s->m_b = b.scale / out_scale;
    s->c = static_cast<float>(f.activation.zero_point) - s->m_a * static_cast<float>(a.zero) - s->m_b * static_cast<float>(b.zero);
    s->qmax = (1 << f.activation.bits) - 1;
    if (!sane_scale(s->m_a) || !sane_scale(s->m_b))
      StageReader::fail(r, fmt::format("requantization multipliers {} and {} (expected {})", s->m_a, s->m_b, kScaleRange));
  }
  s->relu = f.activation.relu;
  rd.H = a.H, rd.W = a.W, rd.C = a.C;
  if (a.f32) rd.push_same_grid(r, std::move(s), a.H, a.W, a.C);
  else rd.push(r, std::move(s), a.H, a.W, a.C, f.activation);
  return f.taken;
}

}  // namespace

const StageKind& residual_stage_kind() {
  static const StageKind kind{"Residual", read};
  return kind;
}

}  // namespace qnet
