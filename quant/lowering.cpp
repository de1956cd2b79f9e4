// Lowering an InferenceModel to a plan (quant/plan.h): oneDNN 2.6 primitives, with qnet's byte
// kernels (quant/byte_kernels.h) where they beat oneDNN, the split-weights path on CPUs without
// VNNI, and zero points folded into biases and padding (docs/runtime.md says what each choice
// measured).
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

#include "quant/byte_kernels.h"
#include "quant/plan.h"

namespace qnet {

namespace {
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;
using plan::Step;

struct PlanBuilder {
  const InferenceModel& m;
  Runtime::Plan& p;
  const dnnl::engine& eng;
  dnnl::stream stream{eng};
  dt act = m.precision == Precision::kInt8 ? dt::u8 : dt::f32;
  dt wei = m.precision == Precision::kInt8 ? dt::s8 : dt::f32;
  dt bias = m.precision == Precision::kInt8 ? dt::s32 : dt::f32;
  // Layouts, measured (docs/runtime.md): f32 convs run fastest on blocked nChw16c activations,
  // which the inner product then reads as a 4-D tensor; the int8 convs have fast kernels for
  // nhwc only, and the int8 inner product is fastest on a 2-D view of the nhwc buffer.
  bool blocked = m.precision == Precision::kF32;
  // The split-weights path: products whose weight codes exceed +-64 run on halves (needs_split).
  bool split = false;

  int add(memory::desc md, int alias_of = -1) {
    p.buffers.push_back({std::move(md), alias_of});
    return static_cast<int>(p.buffers.size()) - 1;
  }

  template <typename PD>
  void step(const PD& pd, const char* op, std::vector<std::pair<int, int>> buffers, std::vector<std::pair<int, memory>> constants = {}) {
    p.steps.push_back({dnnl::primitive(pd.get()), {}, fmt::format("{} {}", op, pd.impl_info_str()), std::move(buffers),
                       std::move(constants), pd.scratchpad_desc()});
  }

  // A step that runs one of qnet's own kernels on the workspace's buffers.
  void kernel_step(std::string what, std::vector<std::pair<int, int>> buffers, std::function<void(const std::vector<memory>&)> run) {
    Step s;
    s.kernel = std::move(run);
    s.what = std::move(what);
    s.buffers = std::move(buffers);
    p.steps.push_back(std::move(s));
  }

  // The buffer `from` in layout `want`, through a reorder step if the layouts differ.
  int as(int from, const memory::desc& want) {
    if (p.buffers[from].md == want) return from;
    const int to = add(want);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    step(dnnl::reorder::primitive_desc(eng, p.buffers[from].md, eng, want, attr), "reorder", {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
    return to;
  }

  // Weights or bias in the layout the primitive chose, reordered once from the model's vectors.
  memory constant(const memory::desc& user_md, const void* data, const memory::desc& want) {
    memory user(user_md, eng, const_cast<void*>(data));
    memory out(want, eng);
    dnnl::reorder(user, out).execute(stream, user, out);
    stream.wait();
    return out;
  }

  // Output scales and the activation after them: u8 codes (clip_max > 0) with a zero point
  // added in float, then clipped to [0, clip_max] (a fused ReLU is the clip at 0 when the zero
  // point is 0); or floats (clip_max = 0), with ReLU if `relu`.
  dnnl::primitive_attr attributes(const std::vector<float>& output_scale, int32_t clip_max, bool relu, int32_t zero_point = 0) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (!output_scale.empty()) attr.set_output_scales(1 << 1, output_scale);  // per output channel
    dnnl::post_ops ops;
    if (zero_point != 0) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, 1.f, static_cast<float>(zero_point));  // x + z, exact as x * 1 + z
    if (clip_max > 0 && (clip_max < 255 || zero_point != 0)) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, static_cast<float>(clip_max));
    else if (relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);  // u8 saturation clips at 255
    attr.set_post_ops(ops);
    return attr;
  }

  // The int8 bias with the input zero point folded in: b_q - z_in * (the sum of each output's
  // weight codes over its `K` inputs), so that oneDNN's sum over the codes x, sum x w + that,
  // is eq. 11's b_q + sum (x - z_in) w. weights: [K][outputs].
  static std::vector<int32_t> folded_bias(const std::vector<int32_t>& bias, const std::vector<int8_t>& weights, int32_t z_in) {
    std::vector<int32_t> b = bias;
    if (z_in == 0) return b;
    const size_t outputs = b.size();
    for (size_t i = 0; i < weights.size(); ++i) b[i % outputs] -= z_in * int32_t{weights[i]};
    return b;
  }

  // Without VNNI, oneDNN multiplies u8 x s8 with vpmaddubsw, whose int16 sums of two products
  // saturate: 255 * 127 * 2 > 32,767. The split-weights path writes each weight code as
  // w = hi + lo with |hi|, |lo| <= 64 (hi = w / 2 toward zero) and runs ONE product over a doubled
  // inner dimension: the input twice side by side (u8::duplicate_rows), the weights' hi and lo halves
  // stacked. Every weight it multiplies is within +-64, so any pair sum is at most 255 * 64 * 2 =
  // 32,640: exact. The int32 sum is sum a (hi + lo) = sum a w, and the primitive's own bias,
  // scales, ReLU or clip then give eq. 11/12 exactly as on the one-pass path. Twice the
  // multiply-adds, paid only where the ISA has no VNNI.
  bool needs_split(const std::vector<int8_t>& codes) const {
    return split && std::any_of(codes.begin(), codes.end(), [](int8_t w) { return w > 64 || w < -64; });
  }

  // codes seen as `groups` runs of equal length, each run replaced by [its hi halves, its lo halves].
  static std::vector<int8_t> stacked_halves(const std::vector<int8_t>& codes, size_t groups) {
    std::vector<int8_t> out;
    out.reserve(2 * codes.size());
    const size_t run = codes.size() / groups;
    for (size_t g = 0; g < groups; ++g) {
      for (size_t i = g * run; i < (g + 1) * run; ++i) out.push_back(static_cast<int8_t>(codes[i] / 2));
      for (size_t i = g * run; i < (g + 1) * run; ++i) out.push_back(static_cast<int8_t>(codes[i] - codes[i] / 2));
    }
    return out;
  }

  // A step writing `rows` rows of `width` bytes of buffer `from` twice (u8::duplicate_rows) into a new
  // buffer of descriptor `md`.
  int duplicated(int from, int64_t rows, int64_t width, const memory::desc& md) {
    const int to = add(md);
    kernel_step("duplicate qnet:u8_x2", {{DNNL_ARG_SRC, from}, {DNNL_ARG_DST, to}}, [=](const std::vector<memory>& mem) {
      u8::duplicate_rows(static_cast<const uint8_t*>(mem[from].get_data_handle()), static_cast<uint8_t*>(mem[to].get_data_handle()), rows,
                   width);
    });
    return to;
  }

  int conv(int cur, const ConvStage& s, const Stage& st) {
    const int64_t N = p.batch;
    Geometry g = s.g;
    const bool int8 = m.precision == Precision::kInt8, split_weights = needs_split(s.qkernel);
    const bool padded = g.pad_top || g.pad_left || g.pad_bottom || g.pad_right;
    if (int8 && s.input_zero_point != 0 && padded) {  // oneDNN pads with code 0; real 0 is the zero point
      const memory::dims in = p.buffers[cur].md.dims();  // {N, IC, H, W}
      cur = as(cur, memory::desc(in, dt::u8, tag::nhwc));
      const int64_t H = in[2], W = in[3], C = in[1], PH = H + g.pad_top + g.pad_bottom, PW = W + g.pad_left + g.pad_right;
      const int src = cur, to = add(memory::desc({N, C, PH, PW}, dt::u8, tag::nhwc));
      const uint8_t z = static_cast<uint8_t>(s.input_zero_point);
      kernel_step(fmt::format("pad qnet:u8_with_{}", z), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, to}}, [=](const std::vector<memory>& mem) {
        u8::pad(static_cast<const uint8_t*>(mem[src].get_data_handle()), static_cast<uint8_t*>(mem[to].get_data_handle()), N, H, W, C,
               g.pad_top, g.pad_left, g.pad_bottom, g.pad_right, z);
      });
      cur = to;
      g.pad_top = g.pad_left = g.pad_bottom = g.pad_right = 0;
    }
    const void* w = int8 ? static_cast<const void*>(s.qkernel.data()) : s.kernel.data();
    int64_t IC = s.IC;
    std::vector<int8_t> stacked;
    if (split_weights) {  // each pixel's channels twice; per tap, the hi halves then the lo halves
      const memory::dims in = p.buffers[cur].md.dims();  // {N, IC, H, W}
      cur = as(cur, memory::desc(in, dt::u8, tag::nhwc));
      cur = duplicated(cur, N * in[2] * in[3], IC, memory::desc({N, 2 * IC, in[2], in[3]}, dt::u8, tag::nhwc));
      stacked = stacked_halves(s.qkernel, static_cast<size_t>(g.KH) * g.KW);
      w = stacked.data(), IC *= 2;
    }
    const dt out_type = st.f32_output ? dt::f32 : dt::u8;
    const memory::dims wdims{s.OC, IC, g.KH, g.KW};
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, p.buffers[cur].md,
                                      memory::desc(wdims, wei, tag::any), memory::desc({s.OC}, bias, tag::x),
                                      memory::desc({N, st.C, st.H, st.W}, out_type, tag::any), {g.SH, g.SW}, {g.pad_top, g.pad_left},
                                      {g.pad_bottom, g.pad_right});
    dnnl::convolution_forward::primitive_desc pd(
        d, attributes(s.output_scale, st.f32_output ? 0 : s.qmax, s.relu, s.output_zero_point), eng);
    cur = as(cur, pd.src_desc());
    const std::vector<int32_t> qbias = int8 ? folded_bias(s.qbias, s.qkernel, s.input_zero_point) : std::vector<int32_t>{};
    const void* b = int8 ? static_cast<const void*>(qbias.data()) : s.bias.data();
    const int out = add(pd.dst_desc());
    step(pd, split_weights ? "conv split-weights" : "conv", {{DNNL_ARG_SRC, cur}, {DNNL_ARG_DST, out}},
         {{DNNL_ARG_WEIGHTS, constant(memory::desc(wdims, wei, tag::hwio), w, pd.weights_desc())},
          {DNNL_ARG_BIAS, constant(memory::desc({s.OC}, bias, tag::x), b, pd.bias_desc())}});
    return out;
  }

  // ReLU after a layer other than a Conv2D or Dense: max(code, zero point) on u8 codes (a copy
  // when the zero point is 0), oneDNN's ReLU on floats.
  int relu(int cur, const ReluStage& s) {
    const memory::desc& md = p.buffers[cur].md;
    if (md.data_type() == dt::u8) {
      if (s.zero_point == 0) return cur;  // codes never stand for negative values
      const int64_t count = static_cast<int64_t>(md.get_size());
      const int src = cur, out = add(md);
      const uint8_t z = static_cast<uint8_t>(s.zero_point);
      kernel_step(fmt::format("relu qnet:u8_max_{}", z), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}}, [=](const std::vector<memory>& mem) {
        u8::relu(static_cast<const uint8_t*>(mem[src].get_data_handle()), static_cast<uint8_t*>(mem[out].get_data_handle()), count, z);
      });
      return out;
    }
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::eltwise_relu, md, 0.f, 0.f);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::eltwise_forward::primitive_desc pd(d, attr, eng);
    const int out = add(pd.dst_desc());
    step(pd, "relu", {{DNNL_ARG_SRC, cur}, {DNNL_ARG_DST, out}});
    return out;
  }

  int pool(int cur, const PoolStage& s, const Stage& st) {
    const Geometry& g = s.g;
    const bool tiles = g.SH == g.KH && g.SW == g.KW && g.pad_top == 0 && g.pad_left == 0 && g.pad_bottom == 0 && g.pad_right == 0;
    const dt type = p.buffers[cur].md.data_type();
    if (type == dt::u8 && tiles) {  // qnet's kernel (u8::max_pool_tiled); oneDNN's for other windows
      const memory::dims in = p.buffers[cur].md.dims();  // {N, C, H, W}
      cur = as(cur, memory::desc(in, dt::u8, tag::nhwc));
      const int out = add(memory::desc({p.batch, st.C, st.H, st.W}, dt::u8, tag::nhwc));
      const int64_t N = p.batch, C = in[1], H = in[2], W = in[3], OH = st.H, OW = st.W;
      const int KH = g.KH, KW = g.KW, src = cur;
      kernel_step(fmt::format("pool qnet:u8_max_tiled_{}x{}", KH, KW), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}},
                  [=](const std::vector<memory>& mem) {
                    u8::max_pool_tiled(static_cast<const uint8_t*>(mem[src].get_data_handle()),
                                      static_cast<uint8_t*>(mem[out].get_data_handle()), N, H, W, C, KH, KW, OH, OW);
                  });
      return out;
    }
    dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max, p.buffers[cur].md,
                                  memory::desc({p.batch, st.C, st.H, st.W}, type, tag::any), {g.SH, g.SW}, {g.KH, g.KW},
                                  {g.pad_top, g.pad_left}, {g.pad_bottom, g.pad_right});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::pooling_forward::primitive_desc pd(d, attr, eng);
    const int out = add(pd.dst_desc());
    step(pd, "pool", {{DNNL_ARG_SRC, cur}, {DNNL_ARG_DST, out}});
    return out;
  }

  // int8 conv on one input channel, stride 1, no padding, followed by a pool whose a x b windows
  // tile its output, as one oneDNN matmul: a row per pooled pixel holding the input block its
  // window reads ((a + KH - 1) x (b + KW - 1) pixels, u8::window_blocks), and a x b groups of OC
  // columns, one per window position, whose weights are the kernel shifted to that position
  // (zeros elsewhere). Same integer sums, scales and rounding as the conv: bit-exact. The pool
  // is then the max over the groups (u8::max_of_phases). oneDNN's conv pads one input channel
  // to four for VNNI and wastes 3/4 of its multiplies; this took a third of its time
  // (docs/runtime.md).
  static bool fits_window_matmul(const ConvStage& c, const PoolStage& pl) {
    const Geometry &g = c.g, &q = pl.g;
    return c.IC == 1 && g.SH == 1 && g.SW == 1 && g.pad_top == 0 && g.pad_left == 0 && g.pad_bottom == 0 && g.pad_right == 0 &&
           q.SH == q.KH && q.SW == q.KW && q.pad_top == 0 && q.pad_left == 0 && q.pad_bottom == 0 && q.pad_right == 0 &&
           q.KH * q.KW > 1;
  }

  int conv_pool_as_matmul(int cur, const ConvStage& c, const Stage& pool_st, const PoolStage& pl) {
    const memory::dims in = p.buffers[cur].md.dims();  // {N, 1, H, W}
    cur = as(cur, memory::desc(in, dt::u8, tag::nhwc));
    const int a = pl.g.KH, b = pl.g.KW, phase_count = a * b, OC = c.OC, columns = phase_count * OC;
    const int KH = c.g.KH, KW = c.g.KW, BH = a + KH - 1, BW = b + KW - 1, K = BH * BW;
    const int64_t N = p.batch, H = in[2], W = in[3], PH = pool_st.H, PW = pool_st.W, M = N * PH * PW;
    const bool split_weights = needs_split(c.qkernel);
    const int copies = split_weights ? 2 : 1, rows_k = copies * K;  // split-weights: each block twice (needs_split)

    const int blocks = add(memory::desc({M, rows_k}, dt::u8, tag::ab)), src = cur;
    kernel_step(fmt::format("im2col qnet:u8_{}x{}_blocks{}", BH, BW, split_weights ? "_x2" : ""), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, blocks}},
                [=](const std::vector<memory>& mem) {
                  u8::window_blocks(static_cast<const uint8_t*>(mem[src].get_data_handle()),
                                   static_cast<uint8_t*>(mem[blocks].get_data_handle()), N, H, W, PH, PW, a, b, BH, BW, copies);
                });

    // weights[i BW + j][(dy b + dx) OC + oc] = w[i - dy][j - dx][0][oc] inside the kernel, else 0.
    std::vector<int8_t> shifted(static_cast<size_t>(K) * columns, 0);
    for (int i = 0; i < BH; ++i)
      for (int j = 0; j < BW; ++j)
        for (int dy = 0; dy < a; ++dy)
          for (int dx = 0; dx < b; ++dx) {
            const int kh = i - dy, kw = j - dx;
            if (kh < 0 || kh >= KH || kw < 0 || kw >= KW) continue;
            for (int oc = 0; oc < OC; ++oc)
              shifted[static_cast<size_t>(i * BW + j) * columns + (dy * b + dx) * OC + oc] =
                  c.qkernel[(static_cast<size_t>(kh) * KW + kw) * OC + oc];
          }
    if (split_weights) shifted = stacked_halves(shifted, 1);  // [K hi rows][K lo rows]
    std::vector<int32_t> phase_bias;
    std::vector<float> phase_scale;
    const std::vector<int32_t> qbias = folded_bias(c.qbias, c.qkernel, c.input_zero_point);  // no padding taps here
    for (int ph = 0; ph < phase_count; ++ph) {
      phase_bias.insert(phase_bias.end(), qbias.begin(), qbias.end());
      phase_scale.insert(phase_scale.end(), c.output_scale.begin(), c.output_scale.end());
    }
    int phases = -1;
    if (split_weights) {
      // The blocks as an nhwc image {N, rows_k, PH, PW} and a 1x1 conv to `columns` channels: the
      // same sums as the matmul, but oneDNN's AVX2 int8 1x1 conv kernel beat its AVX2 int8 gemm
      // here (batch 256: 305k against 262k images/s, docs/runtime.md). With VNNI the matmul
      // (brgemm) is the faster of the two.
      const int img = add(memory::desc({N, rows_k, PH, PW}, dt::u8, tag::nhwc), blocks);
      const memory::dims wd{columns, rows_k, 1, 1};
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, p.buffers[img].md,
                                        memory::desc(wd, dt::s8, tag::any), memory::desc({columns}, dt::s32, tag::x),
                                        memory::desc({N, columns, PH, PW}, dt::u8, tag::nhwc), {1, 1}, {0, 0}, {0, 0});
      dnnl::convolution_forward::primitive_desc pd(d, attributes(phase_scale, c.qmax, c.relu, c.output_zero_point), eng);
      phases = add(pd.dst_desc());
      step(pd, "conv1x1 split-weights", {{DNNL_ARG_SRC, img}, {DNNL_ARG_DST, phases}},
           {{DNNL_ARG_WEIGHTS, constant(memory::desc(wd, dt::s8, tag::hwio), shifted.data(), pd.weights_desc())},
            {DNNL_ARG_BIAS, constant(memory::desc({columns}, dt::s32, tag::x), phase_bias.data(), pd.bias_desc())}});
    } else {
      const memory::desc bias_md({1, columns}, dt::s32, tag::ab);
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p.buffers[blocks].md, memory::desc({rows_k, columns}, dt::s8, tag::any), bias_md,
                                                         memory::desc({M, columns}, dt::u8, tag::ab)),
                                      attributes(phase_scale, c.qmax, c.relu, c.output_zero_point), eng);
      phases = add(pd.dst_desc());
      step(pd, "matmul", {{DNNL_ARG_SRC, blocks}, {DNNL_ARG_DST, phases}},
           {{DNNL_ARG_WEIGHTS, constant(memory::desc({rows_k, columns}, dt::s8, tag::ab), shifted.data(), pd.weights_desc())},
            {DNNL_ARG_BIAS, constant(bias_md, phase_bias.data(), pd.bias_desc())}});
    }

    const int out = add(memory::desc({N, OC, PH, PW}, dt::u8, tag::nhwc));
    kernel_step(fmt::format("pool qnet:u8_max_of_{}_phases", phase_count), {{DNNL_ARG_SRC, phases}, {DNNL_ARG_DST, out}},
                [=](const std::vector<memory>& mem) {
                  u8::max_of_phases(static_cast<const uint8_t*>(mem[phases].get_data_handle()),
                                   static_cast<uint8_t*>(mem[out].get_data_handle()), N * PH, PW, OC, phase_count);
                });
    return out;
  }

  // Keras' Flatten order is H, W, C: an nhwc buffer seen as [N, H*W*C].
  int flatten(int cur, int H, int W, int C) {
    if (blocked) return cur;  // the inner product reads the 4-D tensor itself (dense())
    const dt type = p.buffers[cur].md.data_type();
    if (p.buffers[cur].md.dims().size() == 2) return cur;
    cur = as(cur, memory::desc({p.batch, C, H, W}, type, tag::nhwc));
    return add(memory::desc({p.batch, int64_t{H} * W * C}, type, tag::nc), cur);
  }

  int dense(int cur, const DenseStage& s, const Stage& st) {
    const bool int8 = m.precision == Precision::kInt8, split_weights = needs_split(s.qkernel);
    const void* w = int8 ? static_cast<const void*>(s.qkernel.data()) : s.kernel.data();
    const std::vector<int32_t> qbias = int8 ? folded_bias(s.qbias, s.qkernel, s.input_zero_point) : std::vector<int32_t>{};
    const void* b = int8 ? static_cast<const void*>(qbias.data()) : s.bias.data();
    const dt out_type = st.f32_output ? dt::f32 : dt::u8;
    const dnnl::primitive_attr attr = attributes(s.output_scale, st.f32_output ? 0 : s.qmax, s.relu, s.output_zero_point);
    std::vector<int8_t> stacked;
    if (split_weights) {  // int8: a 2-D [N, IN] source, each row twice; the weights' halves stacked
      cur = duplicated(cur, p.batch, s.IN, memory::desc({p.batch, 2 * int64_t{s.IN}}, dt::u8, tag::nc));
      stacked = stacked_halves(s.qkernel, 1);
      w = stacked.data();
      // The doubled rows as 1x1 images of 2 IN channels and a 1x1 conv to OUT channels: the
      // same sums, scales and bias as the inner product. Without VNNI oneDNN's int8 1x1 conv
      // kernel beat its gemm-based inner product (AVX2, batch 1: 1.0 against 2.7 us; batch 256:
      // 92 against 114 us). With VNNI the inner product (brgemm) is faster at batch 256 (22
      // against 88 us), so the one-pass path keeps it.
      const int64_t IN2 = 2 * int64_t{s.IN};
      const int img = add(memory::desc({p.batch, IN2, 1, 1}, dt::u8, tag::nhwc), cur);
      const memory::dims wd{s.OUT, IN2, 1, 1};
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, p.buffers[img].md,
                                        memory::desc(wd, dt::s8, tag::any), memory::desc({s.OUT}, dt::s32, tag::x),
                                        memory::desc({p.batch, s.OUT, 1, 1}, out_type, tag::nhwc), {1, 1}, {0, 0}, {0, 0});
      dnnl::convolution_forward::primitive_desc pd(d, attr, eng);
      const int out = add(pd.dst_desc());
      step(pd, "dense split-weights (as a 1x1 conv)", {{DNNL_ARG_SRC, img}, {DNNL_ARG_DST, out}},
           {{DNNL_ARG_WEIGHTS, constant(memory::desc(wd, dt::s8, tag::hwio), w, pd.weights_desc())},
            {DNNL_ARG_BIAS, constant(memory::desc({s.OUT}, dt::s32, tag::x), b, pd.bias_desc())}});
      return out;
    }
    if (p.buffers[cur].md.dims().size() == 4 && !blocked) cur = flatten(cur, 1, 1, s.IN);  // a 1x1 image of IN channels
    const memory::dims sd = p.buffers[cur].md.dims();
    // A 4-D source (blocked layout) is flattened by the primitive: weights {OUT, C, H, W} whose
    // user layout hwio is exactly the kernel's [H*W*C][OUT] (Keras' H, W, C flatten order).
    const memory::dims wdims = sd.size() == 4 ? memory::dims{s.OUT, sd[1], sd[2], sd[3]} : memory::dims{s.OUT, sd[1]};
    const tag user_tag = sd.size() == 4 ? tag::hwio : tag::io;
    dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, p.buffers[cur].md, memory::desc(wdims, wei, tag::any),
                                        memory::desc({s.OUT}, bias, tag::x), memory::desc({p.batch, s.OUT}, out_type, tag::nc));
    dnnl::inner_product_forward::primitive_desc pd(d, attr, eng);
    cur = as(cur, pd.src_desc());
    const int out = add(pd.dst_desc());
    step(pd, "inner_product", {{DNNL_ARG_SRC, cur}, {DNNL_ARG_DST, out}},
         {{DNNL_ARG_WEIGHTS, constant(memory::desc(wdims, wei, user_tag), w, pd.weights_desc())},  // [IN][OUT]
          {DNNL_ARG_BIAS, constant(memory::desc({s.OUT}, bias, tag::x), b, pd.bias_desc())}});
    return out;
  }

  // The logits: the last buffer, N x classes floats in a row (the last stage's output is
  // 1x1xclasses, or HxWxC flattened in nhwc order), which predict() points at its caller's array.
  int logits(int cur) {
    int base = cur;
    while (p.buffers[base].alias_of >= 0) base = p.buffers[base].alias_of;
    const memory::desc& md = p.buffers[base].md;
    const memory::desc rows = md.dims().size() == 2 ? memory::desc(md.dims(), dt::f32, tag::nc) : memory::desc(md.dims(), dt::f32, tag::nhwc);
    if (md == rows && base == static_cast<int>(p.buffers.size()) - 1) return base;
    const int out = add(rows);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    step(dnnl::reorder::primitive_desc(eng, md, eng, rows, attr), "reorder", {{DNNL_ARG_FROM, base}, {DNNL_ARG_TO, out}});
    return out;
  }

  void build() {
    // One channel: nchw and nhwc are the same bytes, and nchw lets f32 convs pick blocked outputs.
    int cur = add(memory::desc({p.batch, m.C, m.H, m.W}, act, blocked && m.C == 1 ? tag::nchw : tag::nhwc));
    int H = m.H, W = m.W, C = m.C;
    for (size_t i = 0; i < m.stages.size(); ++i) {
      const Stage& st = m.stages[i];
      const auto* next_pool = i + 1 < m.stages.size() ? std::get_if<PoolStage>(&m.stages[i + 1].op) : nullptr;
      const auto* c = std::get_if<ConvStage>(&st.op);
      if (c && next_pool && act == dt::u8 && !st.f32_output && fits_window_matmul(*c, *next_pool)) {
        const Stage& pool_st = m.stages[++i];
        cur = conv_pool_as_matmul(cur, *c, pool_st, *next_pool);
        H = pool_st.H, W = pool_st.W, C = pool_st.C;
        continue;
      }
      if (c) cur = conv(cur, *c, st);
      else if (const auto* pl = std::get_if<PoolStage>(&st.op)) cur = pool(cur, *pl, st);
      else if (std::holds_alternative<FlattenStage>(st.op)) cur = flatten(cur, H, W, C);
      else if (const auto* r = std::get_if<ReluStage>(&st.op)) cur = relu(cur, *r);
      else cur = dense(cur, std::get<DenseStage>(st.op), st);
      H = st.H, W = st.W, C = st.C;
    }
    cur = logits(cur);
    if (p.buffers[cur].md.get_size() != static_cast<size_t>(p.batch) * m.classes() * sizeof(float) || p.buffers[cur].alias_of >= 0)
      throw std::logic_error("runtime: the logits are not a dense [N, classes] f32 buffer");
  }
};

}  // namespace

void build_plan(const InferenceModel& model, Runtime::Plan& p, const dnnl::engine& engine, bool split) {
  PlanBuilder builder{model, p, engine};
  builder.split = split;
  builder.build();
}

}  // namespace qnet
