// Lowering an InferenceModel to a plan (quant/runtime/plan.h): each stage adds its oneDNN primitives or
// qnet's byte kernels (quant/runtime/byte_kernels.h) through StageOp::lower (quant/runtime/stages/, one file per
// kind); this file holds the helpers they share (layouts, constants, output attributes, zero
// points folded into biases, the split-weights path on CPUs without VNNI) and the walk over the
// stages. docs/runtime.md says what each choice measured.
#include <algorithm>
#include <stdexcept>

#include "quant/runtime/byte_kernels.h"
#include "quant/runtime/plan.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

PlanBuilder::PlanBuilder(const InferenceModel& model, Runtime::Plan& plan, const dnnl::engine& engine, bool without_vnni)
    : m(model), p(plan), eng(engine), no_vnni(without_vnni) {}

int PlanBuilder::add(memory::desc md, int alias_of) {
  p.buffers.push_back({std::move(md), alias_of});
  return static_cast<int>(p.buffers.size()) - 1;
}

void PlanBuilder::kernel_step(std::string what, std::vector<std::pair<int, int>> buffers, std::function<void(const std::vector<memory>&)> run) {
  plan::Step s;
  s.kernel = std::move(run);
  s.what = std::move(what);
  s.buffers = std::move(buffers);
  p.steps.push_back(std::move(s));
}

dnnl::primitive_attr PlanBuilder::plain_attributes() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

int PlanBuilder::as(int from, const memory::desc& want) {
  if (p.buffers[from].md == want) return from;
  const int to = add(want);
  step(dnnl::reorder::primitive_desc(eng, p.buffers[from].md, eng, want, plain_attributes()), "reorder", {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
  return to;
}

int PlanBuilder::as_nhwc_u8(int from) { return as(from, memory::desc(desc(from).dims(), dt::u8, tag::nhwc)); }

memory PlanBuilder::constant(const memory::desc& user_md, const void* data, const memory::desc& want) {
  memory user(user_md, eng, const_cast<void*>(data));
  memory out(want, eng);
  dnnl::reorder(user, out).execute(stream, user, out);
  stream.wait();
  return out;
}

// A fused ReLU is the clip at 0 when the zero point is 0; u8 saturation clips at 255.
dnnl::primitive_attr PlanBuilder::attributes(const std::vector<float>& output_scale, int32_t clip_max, bool relu, int32_t zero_point) const {
  dnnl::primitive_attr attr = plain_attributes();
  if (!output_scale.empty()) attr.set_output_scales(1 << 1, output_scale);  // per output channel
  dnnl::post_ops ops;
  if (zero_point != 0) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, 1.f, static_cast<float>(zero_point));  // x + z, exact as x * 1 + z
  if (clip_max > 0 && (clip_max < 255 || zero_point != 0)) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, static_cast<float>(clip_max));
  else if (relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  attr.set_post_ops(ops);
  return attr;
}

std::vector<int32_t> PlanBuilder::folded_bias(const std::vector<int32_t>& bias, const std::vector<int8_t>& weights, int32_t z_in) {
  std::vector<int32_t> b = bias;
  if (z_in == 0) return b;
  const size_t outputs = b.size();
  for (size_t i = 0; i < weights.size(); ++i) b[i % outputs] -= z_in * int32_t{weights[i]};
  return b;
}

// Without VNNI, oneDNN multiplies u8 x s8 with vpmaddubsw, whose int16 sums of two products
// saturate: 255 * 127 * 2 > 32,767 (needs_split: 2 x the input's largest code x the largest
// |weight code| above 32,767; 7-bit input codes take 8-bit weights, the pixels 7-bit ones).
// The split-weights path writes each weight code as w = hi + lo with |hi|, |lo| <= 64 (hi = w / 2 toward zero) and runs ONE product over a doubled
// inner dimension: the input twice side by side (u8::duplicate_rows), the weights' hi and lo halves
// stacked. Every weight it multiplies is within +-64, so any pair sum is at most 255 * 64 * 2 =
// 32,640: exact. The int32 sum is sum a (hi + lo) = sum a w, and the primitive's own bias,
// scales, ReLU or clip then give eq. 11/12 exactly as on the one-pass path. Twice the
// multiply-adds, paid only where the ISA has no VNNI.

std::vector<int8_t> PlanBuilder::stacked_halves(const std::vector<int8_t>& codes, size_t groups) {
  std::vector<int8_t> out;
  out.reserve(2 * codes.size());
  const size_t run = codes.size() / groups;
  for (size_t g = 0; g < groups; ++g) {
    for (size_t i = g * run; i < (g + 1) * run; ++i) out.push_back(static_cast<int8_t>(codes[i] / 2));
    for (size_t i = g * run; i < (g + 1) * run; ++i) out.push_back(static_cast<int8_t>(codes[i] - codes[i] / 2));
  }
  return out;
}

int PlanBuilder::duplicated(int from, int64_t rows, int64_t width, const memory::desc& md) {
  const int to = add(md);
  kernel_step("duplicate qnet:u8_x2", {{DNNL_ARG_SRC, from}, {DNNL_ARG_DST, to}}, [=](const std::vector<memory>& mem) {
    u8::duplicate_rows(static_cast<const uint8_t*>(mem[from].get_data_handle()), static_cast<uint8_t*>(mem[to].get_data_handle()), rows, width);
  });
  return to;
}

int PlanBuilder::conv1x1(int from, int64_t rows, int64_t columns, int64_t in, int64_t out, dt out_type, const int8_t* weights,
                         const int32_t* bias_codes, const dnnl::primitive_attr& attr, const char* what) {
  const int64_t N = p.batch;
  const int img = add(memory::desc({N, in, rows, columns}, dt::u8, tag::nhwc), from);
  const memory::dims wd{out, in, 1, 1};
  dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, desc(img),
                                    memory::desc(wd, dt::s8, tag::any), memory::desc({out}, dt::s32, tag::x),
                                    memory::desc({N, out, rows, columns}, out_type, tag::nhwc), {1, 1}, {0, 0}, {0, 0});
  dnnl::convolution_forward::primitive_desc pd(d, attr, eng);
  const int dst = add(pd.dst_desc());
  step(pd, what, {{DNNL_ARG_SRC, img}, {DNNL_ARG_DST, dst}},
       {{DNNL_ARG_WEIGHTS, constant(memory::desc(wd, dt::s8, tag::hwio), weights, pd.weights_desc())},
        {DNNL_ARG_BIAS, constant(memory::desc({out}, dt::s32, tag::x), bias_codes, pd.bias_desc())}});
  return dst;
}

int PlanBuilder::flatten(int cur, int fh, int fw, int fc) {
  if (blocked) return cur;
  const dt type = desc(cur).data_type();
  if (desc(cur).dims().size() == 2) return cur;
  cur = as(cur, memory::desc({p.batch, fc, fh, fw}, type, tag::nhwc));
  return add(memory::desc({p.batch, int64_t{fh} * fw * fc}, type, tag::nc), cur);
}

// The logits: the last buffer, N x classes floats in a row (the last stage's output is
// 1x1xclasses, or HxWxC flattened in nhwc order), which predict() points at its caller's array.
int PlanBuilder::logits(int cur) {
  int base = cur;
  while (p.buffers[base].alias_of >= 0) base = p.buffers[base].alias_of;
  const memory::desc& md = p.buffers[base].md;
  const memory::desc rows = md.dims().size() == 2 ? memory::desc(md.dims(), dt::f32, tag::nc) : memory::desc(md.dims(), dt::f32, tag::nhwc);
  if (md == rows && base == static_cast<int>(p.buffers.size()) - 1) return base;
  const int out = add(rows);
  step(dnnl::reorder::primitive_desc(eng, md, eng, rows, plain_attributes()), "reorder", {{DNNL_ARG_FROM, base}, {DNNL_ARG_TO, out}});
  return out;
}

int PlanBuilder::framed_codes(int from, Geometry& g, int32_t z) {
  const int cur = as_nhwc_u8(from);
  const memory::dims in = desc(cur).dims();  // {N, C, H, W}
  const int64_t N = in[0], C = in[1], IH = in[2], IW = in[3], PH = IH + g.pad_top + g.pad_bottom, PW = IW + g.pad_left + g.pad_right;
  const int to = add(memory::desc({N, C, PH, PW}, dt::u8, tag::nhwc));
  const uint8_t value = static_cast<uint8_t>(z);
  const Geometry pad = g;
  kernel_step(fmt::format("pad qnet:u8_with_{}", value), {{DNNL_ARG_SRC, cur}, {DNNL_ARG_DST, to}}, [=](const std::vector<memory>& mem) {
    u8::pad(static_cast<const uint8_t*>(mem[cur].get_data_handle()), static_cast<uint8_t*>(mem[to].get_data_handle()), N, IH, IW, C,
            pad.pad_top, pad.pad_left, pad.pad_bottom, pad.pad_right, value);
  });
  g.pad_top = g.pad_left = g.pad_bottom = g.pad_right = 0;
  return to;
}

int PlanBuilder::lower_chain(int cur, const std::vector<Stage>& stages) {
  for (size_t i = 0; i < stages.size(); ++i) {
    const Stage& st = stages[i];
    const Stage* next = i + 1 < stages.size() ? &stages[i + 1] : nullptr;
    bool took_next = false;
    cur = st.op->lower(*this, cur, st, next, took_next);
    const Stage& done = took_next ? stages[++i] : st;
    H = done.H, W = done.W, C = done.C;
  }
  return cur;
}

void PlanBuilder::build() {
  // One channel: nchw and nhwc are the same bytes, and nchw lets f32 convs pick blocked outputs.
  int cur = add(memory::desc({p.batch, m.C, m.H, m.W}, act, blocked && m.C == 1 ? tag::nchw : tag::nhwc));
  H = m.H, W = m.W, C = m.C;
  cur = lower_chain(cur, m.stages);
  cur = logits(cur);
  if (p.buffers[cur].md.get_size() != static_cast<size_t>(p.batch) * m.classes() * sizeof(float) || p.buffers[cur].alias_of >= 0)
    throw std::logic_error("runtime: the logits are not a dense [N, classes] f32 buffer");
}

namespace {

// Assigns the plan's buffers to memory blocks (Runtime::Plan::block_of): each buffer is live from
// the step that first uses it (the input: before the first step) to the last step that uses it
// or a view of it; in order of first use, a buffer takes the first block whose buffers are all
// dead by then, else a new block. Views (alias_of) and the handles predict() sets have no block.
void assign_blocks(Runtime::Plan& p) {
  const int n = static_cast<int>(p.buffers.size()), last = n - 1;
  auto base = [&](int i) {
    while (p.buffers[i].alias_of >= 0) i = p.buffers[i].alias_of;
    return i;
  };
  std::vector<int> first(n, -1), end(n, -1);  // first and last step using each base buffer; -1: before the steps
  std::vector<bool> used(n, false);
  used[0] = true;
  for (int s = 0; s < static_cast<int>(p.steps.size()); ++s)
    for (const auto& [arg, i] : p.steps[s].buffers) {
      const int b = base(i);
      if (!used[b]) first[b] = s, used[b] = true;
      end[b] = s;
    }
  p.block_of.assign(n, -1);
  p.block_bytes.clear();
  std::vector<int> free_after;  // per block: the last step of its latest buffer
  for (int i = 0; i < n; ++i) {
    const bool user = (i == 0 && p.int8) || i == last || p.buffers[i].alias_of >= 0;
    if (user || !used[i]) continue;
    const size_t bytes = p.buffers[i].md.get_size();
    int block = -1;
    for (int k = 0; k < static_cast<int>(free_after.size()) && block < 0; ++k)
      if (free_after[k] < first[i]) block = k;
    if (block < 0) block = static_cast<int>(free_after.size()), free_after.push_back(-2), p.block_bytes.push_back(0);
    p.block_of[i] = block;
    free_after[block] = end[i];
    p.block_bytes[block] = std::max(p.block_bytes[block], bytes);
  }
  // Buffers are assigned in index order, which is the order the lowering creates them: a buffer's
  // first use is never before an earlier-created buffer's, so first-fit by index is by first use.
  p.scratchpad_bytes = 0;
  for (const plan::Step& s : p.steps)
    if (!s.kernel) p.scratchpad_bytes = std::max(p.scratchpad_bytes, s.scratchpad.get_size());
}

}  // namespace

void build_plan(const InferenceModel& model, Runtime::Plan& p, const dnnl::engine& engine, bool no_vnni) {
  PlanBuilder(model, p, engine, no_vnni).build();
  assign_blocks(p);
}

size_t Runtime::Plan::workspace_bytes() const {
  size_t total = scratchpad_bytes;
  for (size_t b : block_bytes) total += b;
  return total;
}

}  // namespace qnet
