#include "quant/runtime.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string_view>
#include <unordered_map>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "core/parallel.h"

#if DNNL_VERSION_MAJOR >= 3
#error "quant/runtime.cpp uses the oneDNN 2.x API (Debian 12's 2.6.3); see docs/runtime.md for what 3.x changes"
#endif

namespace qnet {

namespace {
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Buffer {
  memory::desc md;
  int alias_of = -1;  // another buffer's bytes seen through a different descriptor (Flatten)
};

struct Step {
  dnnl::primitive primitive;                        // a oneDNN primitive, or (if set) qnet's own kernel:
  std::function<void(const std::vector<memory>&)> kernel;  // called with the workspace's buffers
  std::string what;                                 // "conv brgconv:avx512_core_vnni"
  std::vector<std::pair<int, int>> buffers;         // DNNL_ARG_* -> buffer index
  std::vector<std::pair<int, memory>> constants;    // reordered weights and bias
  memory::desc scratchpad;
};

// Per-thread scratch bytes for the kernels below, kept between calls (no allocation per batch).
uint8_t* scratch_bytes(size_t n) {
  thread_local std::vector<uint8_t> bytes;
  if (bytes.size() < n) bytes.resize(n);
  return bytes.data();
}

// The kernels below split rows over the OpenMP team; a batch of one image has too few rows to
// pay for starting it.
constexpr int64_t kRowsPerTeam = 64;

// body(begin, end) over rows [0, rows): split over the OpenMP team when `parallel`, else called
// once on this thread. Not `#pragma omp parallel if (...)`: a false `if` still enters libgomp and
// builds a team of one, which cost 1-1.5 us per kernel at batch 1 (more than the kernels' work:
// the duplicate of 2,028 bytes took 1.5 us).
template <typename Body>
void for_rows(int64_t rows, bool parallel, const Body& body) {
  if (!parallel || omp_get_max_threads() == 1) return body(int64_t{0}, rows);
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
    body(rows * t / n, rows * (t + 1) / n);
  }
}

// out[q * C + c] = the max over g < G of in[(q * G + g) * C + c], for q < cols: the max over
// each run of G consecutive C-byte groups. 16 bytes at a time when C <= 16, so `in` and `out`
// need 16 bytes of slack past their ends; each store's tail is overwritten by the next.
void max_of_groups_u8(const uint8_t* in, uint8_t* out, int64_t cols, int64_t C, int G) {
  using u8x16 = uint8_t __attribute__((vector_size(16)));
  if (C <= 16) {
    for (int64_t q = 0; q < cols; ++q) {
      u8x16 m, v;
      std::memcpy(&m, in + q * G * C, 16);
      for (int g = 1; g < G; ++g) std::memcpy(&v, in + (q * G + g) * C, 16), m = m > v ? m : v;
      std::memcpy(out + q * C, &m, 16);
    }
    return;
  }
  for (int64_t q = 0; q < cols; ++q)
    for (int64_t c = 0; c < C; ++c) {
      uint8_t m = in[q * G * C + c];
      for (int g = 1; g < G; ++g) m = std::max(m, in[(q * G + g) * C + c]);
      out[q * C + c] = m;
    }
}

// Max pooling of u8 codes in nhwc with windows that tile the input (stride = window, no
// padding): each window's largest code, exact because codes order like the reals.
// Per output row: a byte-wise max over the window's input rows, then over each window's
// columns, 16 bytes at a time when a pixel has at most 16 channels. oneDNN 2.6's u8 pooling
// took 7.8x its f32 pooling's time on the reference layer's output (docs/runtime.md).
void max_pool_u8_tiled(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, int KH, int KW,
                       int64_t OH, int64_t OW) {
  const int64_t span = OW * KW * C;  // the bytes of an input row that the windows cover
  for_rows(N * OH, N * OH >= kRowsPerTeam, [&](int64_t begin, int64_t end) {
    uint8_t* const acc = scratch_bytes(static_cast<size_t>(span + 16 + OW * C + 16));  // +16: vector slack
    uint8_t* const pooled = acc + span + 16;
    for (int64_t r = begin; r < end; ++r) {
      const uint8_t* top = in + ((r / OH * H) + r % OH * KH) * W * C;
      std::memcpy(acc, top, static_cast<size_t>(span));
      for (int kh = 1; kh < KH; ++kh) {
        const uint8_t* row = top + kh * W * C;
#pragma omp simd
        for (int64_t i = 0; i < span; ++i) acc[i] = acc[i] > row[i] ? acc[i] : row[i];
      }
      max_of_groups_u8(acc, pooled, OW, C, KW);
      std::memcpy(out + r * OW * C, pooled, static_cast<size_t>(OW * C));
    }
  });
}

// One row per pooled pixel: the BH x BW block of a 1-channel u8 image that the pixel's a x b
// pooling window of conv outputs reads, out[((n PH + P) PW + Q)][i BW + j] = in[n][a P + i][b Q + j],
// written `copies` times side by side (2 on the split-weights path, see duplicate_u8).
void window_blocks_u8(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t PH, int64_t PW, int a, int b,
                      int BH, int BW, int copies) {
  const int K = BH * BW;
  if (BH == 4 && BW == 4) {  // the reference layer (3x3 conv, 2x2 pool): a block is one 16-byte vector
    for_rows(N * PH, N * PH >= kRowsPerTeam, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const uint8_t* top = in + (row / PH * H + row % PH * a) * W;
        uint8_t* o = out + row * PW * 16 * copies;
        for (int64_t Q = 0; Q < PW; ++Q, o += 16 * copies) {
          const uint8_t* src = top + b * Q;
          int32_t r[4];
          for (int i = 0; i < 4; ++i) std::memcpy(&r[i], src + i * W, 4);
          const __m128i block = _mm_set_epi32(r[3], r[2], r[1], r[0]);
          for (int c = 0; c < copies; ++c) _mm_storeu_si128(reinterpret_cast<__m128i*>(o + c * 16), block);
        }
      }
    });
    return;  // 0.15 us per image, against 0.93 us for the general loop below
  }
  for_rows(N * PH, N * PH >= kRowsPerTeam, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const uint8_t* top = in + (row / PH * H + row % PH * a) * W;
      uint8_t* o = out + row * PW * K * copies;
      for (int64_t Q = 0; Q < PW; ++Q, o += K * copies) {
        for (int i = 0; i < BH; ++i) std::copy(top + i * W + b * Q, top + i * W + b * Q + BW, o + i * BW);
        for (int c = 1; c < copies; ++c) std::memcpy(o + c * K, o, static_cast<size_t>(K));
      }
    }
  });
}

// out[r] = [in[r], in[r]]: each row of `width` bytes twice. The split-weights path's input: a
// product over the doubled row with the weights' two halves stacked is the product with the
// whole weights (PlanBuilder::needs_split).
void duplicate_u8(const uint8_t* in, uint8_t* out, int64_t rows, int64_t width) {
  for_rows(rows, rows * width >= kMinParallelElements, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      std::memcpy(out + 2 * r * width, in + r * width, static_cast<size_t>(width));
      std::memcpy(out + (2 * r + 1) * width, in + r * width, static_cast<size_t>(width));
    }
  });
}

// out[n][P][Q][oc] = max over the `phases` groups of in[n][P][Q][phase * C + oc]: the max-pool
// of the window matmul's output (each phase is one position of the pooling window).
void max_of_phases_u8(const uint8_t* in, uint8_t* out, int64_t rows, int64_t cols, int64_t C, int phases) {
  const int64_t in_row = cols * phases * C, out_row = cols * C;
  for_rows(rows, rows >= kRowsPerTeam, [&](int64_t begin, int64_t end) {
    uint8_t* const src = scratch_bytes(static_cast<size_t>(in_row + 16 + out_row + 16));  // +16: vector slack
    uint8_t* const dst = src + in_row + 16;
    for (int64_t r = begin; r < end; ++r) {
      std::memcpy(src, in + r * in_row, static_cast<size_t>(in_row));
      max_of_groups_u8(src, dst, cols, C, phases);
      std::memcpy(out + r * out_row, dst, static_cast<size_t>(out_row));
    }
  });
}

// out = the nhwc u8 image `in` with `top`, `left`, `bottom` and `right` rows and columns of the
// code `value` around it: the padding of a conv whose input codes have a zero point (real 0 is
// `value`, and oneDNN pads with code 0).
void pad_u8(const uint8_t* in, uint8_t* out, int64_t N, int64_t H, int64_t W, int64_t C, int top, int left, int bottom, int right,
            uint8_t value) {
  const int64_t OW = W + left + right, OH = H + top + bottom;
  for_rows(N * OH, N * OH * OW * C >= kMinParallelElements, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      uint8_t* o = out + r * OW * C;
      const int64_t n = r / OH, h = r % OH - top;
      if (h < 0 || h >= H) {
        std::memset(o, value, static_cast<size_t>(OW * C));
        continue;
      }
      std::memset(o, value, static_cast<size_t>(left * C));
      std::memcpy(o + left * C, in + (n * H + h) * W * C, static_cast<size_t>(W * C));
      std::memset(o + (left + W) * C, value, static_cast<size_t>(right * C));
    }
  });
}

// out[i] = max(in[i], zero_point): ReLU on u8 codes whose real 0 is zero_point.
void relu_u8(const uint8_t* in, uint8_t* out, int64_t count, uint8_t zero_point) {
  for_rows(count, count >= kMinParallelElements, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) out[i] = in[i] > zero_point ? in[i] : zero_point;
  });
}

// Buffers and a stream owned by one predict() call at a time.
struct Workspace {
  dnnl::stream stream;
  std::vector<memory> mem;
  std::vector<std::unordered_map<int, memory>> args;  // per step, built once
};

class ThreadCount {  // sets this thread's OpenMP team size for a scope
 public:
  explicit ThreadCount(int n) : saved_(omp_get_max_threads()) { if (n != saved_) omp_set_num_threads(n); }
  ~ThreadCount() { if (omp_get_max_threads() != saved_) omp_set_num_threads(saved_); }
 private:
  int saved_;
};
}  // namespace

struct Runtime::Engine {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
};

struct Runtime::Plan {
  int64_t batch = 0;
  int threads = 1;
  bool int8 = false;
  std::vector<Buffer> buffers;  // 0: input images, last: logits
  std::vector<Step> steps;
  std::mutex mutex;
  std::vector<std::unique_ptr<Workspace>> idle;
};

namespace {

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
  // inner dimension: the input twice side by side (duplicate_u8), the weights' hi and lo halves
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

  // A step writing `rows` rows of `width` bytes of buffer `from` twice (duplicate_u8) into a new
  // buffer of descriptor `md`.
  int duplicated(int from, int64_t rows, int64_t width, const memory::desc& md) {
    const int to = add(md);
    kernel_step("duplicate qnet:u8_x2", {{DNNL_ARG_SRC, from}, {DNNL_ARG_DST, to}}, [=](const std::vector<memory>& mem) {
      duplicate_u8(static_cast<const uint8_t*>(mem[from].get_data_handle()), static_cast<uint8_t*>(mem[to].get_data_handle()), rows,
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
        pad_u8(static_cast<const uint8_t*>(mem[src].get_data_handle()), static_cast<uint8_t*>(mem[to].get_data_handle()), N, H, W, C,
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
        relu_u8(static_cast<const uint8_t*>(mem[src].get_data_handle()), static_cast<uint8_t*>(mem[out].get_data_handle()), count, z);
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
    if (type == dt::u8 && tiles) {  // qnet's kernel (max_pool_u8_tiled); oneDNN's for other windows
      const memory::dims in = p.buffers[cur].md.dims();  // {N, C, H, W}
      cur = as(cur, memory::desc(in, dt::u8, tag::nhwc));
      const int out = add(memory::desc({p.batch, st.C, st.H, st.W}, dt::u8, tag::nhwc));
      const int64_t N = p.batch, C = in[1], H = in[2], W = in[3], OH = st.H, OW = st.W;
      const int KH = g.KH, KW = g.KW, src = cur;
      kernel_step(fmt::format("pool qnet:u8_max_tiled_{}x{}", KH, KW), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}},
                  [=](const std::vector<memory>& mem) {
                    max_pool_u8_tiled(static_cast<const uint8_t*>(mem[src].get_data_handle()),
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
  // window reads ((a + KH - 1) x (b + KW - 1) pixels, window_blocks_u8), and a x b groups of OC
  // columns, one per window position, whose weights are the kernel shifted to that position
  // (zeros elsewhere). Same integer sums, scales and rounding as the conv: bit-exact. The pool
  // is then the max over the groups (max_of_phases_u8). oneDNN's conv pads one input channel
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
                  window_blocks_u8(static_cast<const uint8_t*>(mem[src].get_data_handle()),
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
                  max_of_phases_u8(static_cast<const uint8_t*>(mem[phases].get_data_handle()),
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

std::unique_ptr<Workspace> make_workspace(const Runtime::Plan& p, const dnnl::engine& eng) {
  auto ws = std::make_unique<Workspace>();
  ws->stream = dnnl::stream(eng);
  const int last = static_cast<int>(p.buffers.size()) - 1;
  for (int i = 0; i <= last; ++i) {
    const Buffer& b = p.buffers[i];
    const bool user = (i == 0 && p.int8) || i == last || b.alias_of >= 0;  // handles set per call
    ws->mem.push_back(user ? memory(b.md, eng, DNNL_MEMORY_NONE) : memory(b.md, eng));
  }
  for (const Step& s : p.steps) {
    std::unordered_map<int, memory> args;
    for (const auto& [arg, i] : s.buffers) args.emplace(arg, ws->mem[i]);
    for (const auto& [arg, mem] : s.constants) args.emplace(arg, mem);
    if (!s.kernel) args.emplace(DNNL_ARG_SCRATCHPAD, memory(s.scratchpad, eng));
    ws->args.push_back(std::move(args));
  }
  return ws;
}

}  // namespace

Runtime::Runtime(InferenceModel model, RuntimeOptions options)
    : model_(std::move(model)), options_(options), engine_(std::make_unique<Engine>()) {
  if (options_.max_batch < 1) throw std::invalid_argument("Runtime: max_batch must be >= 1");
  if (model_.stages.empty()) throw std::invalid_argument("Runtime: the model has no layers");
  if (model_.precision == Precision::kInt8) {
    bool wide = false;  // a weight code beyond +-64: its products can saturate without VNNI
    for (const Stage& st : model_.stages) {
      const std::vector<int8_t>* k = nullptr;
      if (const auto* c = std::get_if<ConvStage>(&st.op)) k = &c->qkernel;
      if (const auto* d = std::get_if<DenseStage>(&st.op)) k = &d->qkernel;
      if (k) wide = wide || std::any_of(k->begin(), k->end(), [](int8_t w) { return w > 64 || w < -64; });
    }
    int8_path_ = wide && !onednn_has_vnni() ? "split-weights" : "one-pass";
  }
}

std::string onednn_isa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx512_core_amx: return "AVX-512 with AMX";
    case dnnl::cpu_isa::avx512_core_bf16: return "AVX-512 with VNNI and BF16";
    case dnnl::cpu_isa::avx512_core_vnni: return "AVX-512 with VNNI";
    case dnnl::cpu_isa::avx512_core: return "AVX-512 (no VNNI)";
    case dnnl::cpu_isa::avx2_vnni: return "AVX2 with VNNI";
    case dnnl::cpu_isa::avx2: return "AVX2";
    case dnnl::cpu_isa::avx: return "AVX";
    case dnnl::cpu_isa::sse41: return "SSE4.1";
    default: return "other";
  }
}

bool onednn_has_vnni() {
  using isa = dnnl::cpu_isa;
  const isa cpu = dnnl::get_effective_cpu_isa();
  return cpu == isa::avx512_core_vnni || cpu == isa::avx512_core_bf16 || cpu == isa::avx512_core_amx || cpu == isa::avx2_vnni;
}

Runtime::~Runtime() = default;

Runtime::Plan& Runtime::plan(int64_t batch) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = plans_.find(batch);
  if (it != plans_.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  p->batch = batch;
  p->int8 = model_.precision == Precision::kInt8;
  p->threads = batch < options_.single_thread_below ? 1 : (options_.threads > 0 ? options_.threads : omp_get_max_threads());
  ThreadCount threads(p->threads);  // primitives are created for the team size they will run with
  PlanBuilder builder{model_, *p, engine_->engine};
  builder.split = std::string_view(int8_path_) == "split-weights";
  builder.build();
  return *plans_.emplace(batch, std::move(p)).first->second;
}

void Runtime::predict(const uint8_t* images, int64_t n, float* logits) const {
  const size_t in = model_.input_size();
  const int classes = model_.classes();
  for (int64_t begin = 0; begin < n; begin += options_.max_batch) {
    const int64_t count = std::min(options_.max_batch, n - begin);
    Plan& p = plan(count);
    std::unique_ptr<Workspace> ws;
    {
      std::lock_guard<std::mutex> lock(p.mutex);
      if (!p.idle.empty()) ws = std::move(p.idle.back()), p.idle.pop_back();
    }
    if (!ws) ws = make_workspace(p, engine_->engine);
    const uint8_t* x = images + begin * in;
    if (p.int8) {
      ws->mem[0].set_data_handle(const_cast<uint8_t*>(x));  // the pixels are the input codes (s = 1/255)
    } else {
      float* f = static_cast<float*>(ws->mem[0].get_data_handle());
      for (size_t i = 0; i < count * in; ++i) f[i] = static_cast<float>(x[i]) / 255.f;  // as training does
    }
    ws->mem.back().set_data_handle(logits + begin * classes);
    for (size_t i = 0; i < p.buffers.size(); ++i)
      if (p.buffers[i].alias_of >= 0) ws->mem[i].set_data_handle(ws->mem[p.buffers[i].alias_of].get_data_handle());
    {
      ThreadCount threads(p.threads);
      for (size_t s = 0; s < p.steps.size(); ++s) {
        const Step& step = p.steps[s];
        if (step.kernel) {
          ws->stream.wait();  // the steps before it have written its input
          step.kernel(ws->mem);
        } else {
          step.primitive.execute(ws->stream, ws->args[s]);
        }
      }
      ws->stream.wait();
    }
    std::lock_guard<std::mutex> lock(p.mutex);
    p.idle.push_back(std::move(ws));
  }
}

std::vector<float> Runtime::predict(const uint8_t* images, int64_t n) const {
  std::vector<float> logits(static_cast<size_t>(n) * model_.classes());
  predict(images, n, logits.data());
  return logits;
}

std::vector<std::string> Runtime::implementations(int64_t batch) const {
  std::vector<std::string> out;
  for (const Step& s : plan(batch).steps) out.push_back(s.what);
  return out;
}

std::vector<std::pair<std::string, double>> Runtime::step_times(const uint8_t* images, int64_t batch, int repeats) const {
  std::vector<float> logits(static_cast<size_t>(batch) * model_.classes());
  predict(images, batch, logits.data());  // JIT, plan and a workspace
  Plan& p = plan(batch);
  std::unique_ptr<Workspace> ws;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    ws = std::move(p.idle.back()), p.idle.pop_back();
  }
  // predict() set the handles of the input, logits and aliases: still valid while `logits` lives.
  std::vector<std::vector<double>> us(p.steps.size() + 1);
  using clock = std::chrono::steady_clock;
  for (int r = 0; r < repeats; ++r) {
    ThreadCount threads(p.threads);
    for (size_t s = 0; s < p.steps.size(); ++s) {
      const auto t0 = clock::now();
      if (p.steps[s].kernel) p.steps[s].kernel(ws->mem);
      else p.steps[s].primitive.execute(ws->stream, ws->args[s]);
      ws->stream.wait();
      us[s].push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
    }
  }
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    p.idle.push_back(std::move(ws));
  }
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = clock::now();
    predict(images, batch, logits.data());
    us.back().push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
  }
  std::vector<std::pair<std::string, double>> out;
  for (size_t s = 0; s < us.size(); ++s) {
    std::sort(us[s].begin(), us[s].end());
    out.emplace_back(s < p.steps.size() ? p.steps[s].what : "predict", us[s][us[s].size() / 2]);
  }
  return out;
}

RuntimeEvaluation evaluate(const Runtime& rt, const ImageSet& images, int64_t batch_size) {
  if (batch_size < 1) throw std::invalid_argument("evaluate: batch size must be >= 1");
  const InferenceModel& m = rt.model();
  if (images.height() != m.H || images.width() != m.W || images.channels() != m.C)
    throw std::invalid_argument(fmt::format("the model takes {}x{}x{} images, the data set has {}x{}x{}", m.H, m.W, m.C,
                                            images.height(), images.width(), images.channels()));
  for (int64_t i = 0; i < images.size(); ++i)
    if (images.label(i) >= m.classes())
      throw std::invalid_argument(fmt::format("test label {} at index {} is not below the model's {} classes", images.label(i), i,
                                              m.classes()));
  RuntimeEvaluation e;
  std::vector<float> logits(static_cast<size_t>(batch_size) * m.classes());
  int64_t correct = 0;
  double seconds = 0;
  for (int64_t begin = 0; begin < images.size(); begin += batch_size) {
    const int64_t n = std::min(batch_size, images.size() - begin);
    const auto t0 = std::chrono::steady_clock::now();
    rt.predict(images.image(begin), n, logits.data());  // consecutive images are contiguous
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (int64_t i = 0; i < n; ++i) correct += argmax(logits.data() + i * m.classes(), m.classes()) == images.label(begin + i);
  }
  e.images = images.size();
  e.accuracy = e.images ? static_cast<double>(correct) / static_cast<double>(e.images) : 0.0;
  e.seconds = seconds;
  return e;
}

int argmax(const float* logits, int classes) {
  return static_cast<int>(std::max_element(logits, logits + classes) - logits);
}

std::vector<float> softmax(const float* logits, int classes) {
  const float top = *std::max_element(logits, logits + classes);
  std::vector<float> p(classes);
  double total = 0;
  for (int i = 0; i < classes; ++i) total += p[i] = std::exp(logits[i] - top);
  for (float& v : p) v = static_cast<float>(v / total);
  return p;
}

}  // namespace qnet
