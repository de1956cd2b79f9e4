// The runtime's plan for one batch size (internal: quant/runtime/runtime.cpp executes it,
// quant/runtime/lowering.cpp builds it): buffers, and steps that are oneDNN primitives or qnet's own
// byte kernels (quant/runtime/byte_kernels.h).
#pragma once

#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "quant/runtime/runtime.h"

#if DNNL_VERSION_MAJOR >= 3
#error "quant/ uses the oneDNN 2.x API (Debian 12's 2.6.3); see docs/runtime.md for what 3.x changes"
#endif

namespace qnet {

namespace plan {
using dnnl::memory;

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

// Buffers and a stream owned by one predict() call at a time: the plan's memory blocks (each
// buffer lives in one, with the buffers whose steps do not overlap), one scratchpad for every step.
struct Workspace {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  dnnl::stream stream;
  std::vector<std::unique_ptr<void, Free>> blocks;
  std::unique_ptr<void, Free> scratchpad;
  std::vector<memory> mem;
  std::vector<std::unordered_map<int, memory>> args;  // per step, built once
};

}  // namespace plan

struct Runtime::Plan {
  int64_t batch = 0;
  int threads = 1;
  bool int8 = false;
  std::vector<plan::Buffer> buffers;  // 0: input images, last: logits
  std::vector<plan::Step> steps;
  // Memory: buffer i lives in block block_of[i] (-1: a handle predict() sets: the int8 input, the
  // logits, views of other buffers); buffers share a block when no step uses both of them while
  // the other is live, so a workspace holds about the two largest activations, not every layer's.
  std::vector<int> block_of;
  std::vector<size_t> block_bytes;
  size_t scratchpad_bytes = 0;  // the largest step's; steps run one at a time
  size_t workspace_bytes() const;
  std::mutex mutex;
  std::vector<std::unique_ptr<plan::Workspace>> idle;
};

// The largest sum of two u8 x s8 products oneDNN's vpmaddubsw keeps exact (int16) on CPUs without VNNI.
inline constexpr int64_t kPairSumMax = 32767;

// Builds a plan stage by stage (quant/runtime/lowering.cpp). Each kind's lowering (StageOp::lower,
// quant/runtime/stages/) adds its buffers and steps through these helpers.
class PlanBuilder {
 public:
  using memory = dnnl::memory;
  using dt = memory::data_type;
  using tag = memory::format_tag;

  PlanBuilder(const InferenceModel& model, Runtime::Plan& plan, const dnnl::engine& engine, bool no_vnni);
  void build();
  // Lowers the stages in order from buffer `cur` (shape H x W x C per image); returns the buffer
  // of the last one's output and leaves H, W, C at its shape (the model, or a container's branch).
  int lower_chain(int cur, const std::vector<Stage>& stages);

  const InferenceModel& m;
  Runtime::Plan& p;
  const dnnl::engine& eng;
  dnnl::stream stream{eng};
  const bool int8 = m.precision == Precision::kInt8;
  const dt act = int8 ? dt::u8 : dt::f32;
  const dt wei = int8 ? dt::s8 : dt::f32;
  const dt bias = int8 ? dt::s32 : dt::f32;
  // Layouts, measured (docs/runtime.md): f32 convs run fastest on blocked nChw16c activations,
  // which the inner product then reads as a 4-D tensor; the int8 convs have fast kernels for
  // nhwc only, and the int8 inner product is fastest on a 2-D view of the nhwc buffer.
  const bool blocked = !int8;
  // oneDNN's ISA has no VNNI: u8 x s8 products are summed in pairs in a saturating int16, and
  // the layers whose pairs can pass 32,767 run on the split-weights path (needs_split).
  const bool no_vnni;
  int H = 0, W = 0, C = 0;  // the shape per image of the stage being lowered's input

  int64_t batch() const { return p.batch; }
  const memory::desc& desc(int buffer) const { return p.buffers[buffer].md; }
  // A new buffer, or a view of buffer alias_of's bytes through another descriptor.
  int add(memory::desc md, int alias_of = -1);
  // A step running a oneDNN primitive; `buffers` maps DNNL_ARG_* to buffer indices.
  template <typename PD>
  void step(const PD& pd, const char* op, std::vector<std::pair<int, int>> buffers, std::vector<std::pair<int, memory>> constants = {}) {
    p.steps.push_back({dnnl::primitive(pd.get()), {}, fmt::format("{} {}", op, pd.impl_info_str()), std::move(buffers),
                       std::move(constants), pd.scratchpad_desc()});
  }
  // A step that runs one of qnet's own kernels on the workspace's buffers.
  void kernel_step(std::string what, std::vector<std::pair<int, int>> buffers, std::function<void(const std::vector<memory>&)> run);
  // The buffer `from` in layout `want`, through a reorder step if the layouts differ.
  int as(int from, const memory::desc& want);
  // `from` as nhwc u8 bytes (a reorder if it is in another layout).
  int as_nhwc_u8(int from);
  // u8 codes whose real 0 is the code z > 0, framed by z for a window with padding g: oneDNN pads
  // with code 0, which is not real 0 there (eq. 11). Returns the framed buffer and clears g's padding.
  int framed_codes(int from, Geometry& g, int32_t z);
  // Weights or bias in the layout the primitive chose, reordered once from the model's vectors.
  memory constant(const memory::desc& user_md, const void* data, const memory::desc& want);
  // Output scales and the activation after them: u8 codes (clip_max > 0) with a zero point
  // added in float, then clipped to [0, clip_max]; or floats (clip_max = 0), with ReLU if `relu`.
  dnnl::primitive_attr attributes(const std::vector<float>& output_scale, int32_t clip_max, bool relu, int32_t zero_point = 0) const;
  // A primitive_attr with only the user scratchpad (each predict() call brings its own).
  static dnnl::primitive_attr plain_attributes();
  // The int8 bias with the input zero point folded in (b_q - z_in * sum of each output's weight
  // codes), so that oneDNN's sum over the codes x gives eq. 11's b_q + sum (x - z_in) w.
  // weights: [K][outputs].
  static std::vector<int32_t> folded_bias(const std::vector<int32_t>& bias, const std::vector<int8_t>& weights, int32_t z_in);
  // The split-weights path (docs/runtime.md): no VNNI, and a layer whose pair sums
  // (StageOp::widest_pair_sum) can pass 32,767.
  bool needs_split(int64_t widest_pair_sum) const { return no_vnni && widest_pair_sum > kPairSumMax; }
  // codes as `groups` runs of equal length, each replaced by [its hi halves, its lo halves].
  static std::vector<int8_t> stacked_halves(const std::vector<int8_t>& codes, size_t groups);
  // A step writing `rows` rows of `width` bytes of buffer `from` twice into a new buffer `md`.
  int duplicated(int from, int64_t rows, int64_t width, const memory::desc& md);
  // An int8 1x1 conv of `rows` x `columns` images of `in` channels to `out` channels, reading
  // buffer `from`'s bytes as nhwc u8: weights [in][out] s8, bias [out] s32. The split-weights
  // path's product where oneDNN's 1x1 conv kernel beats its gemm without VNNI (docs/runtime.md).
  int conv1x1(int from, int64_t rows, int64_t columns, int64_t in, int64_t out, dt out_type, const int8_t* weights,
              const int32_t* bias_codes, const dnnl::primitive_attr& attr, const char* what);
  // Keras' Flatten order is H, W, C: an nhwc buffer of H x W x C per image seen as [N, H*W*C]
  // (blocked f32 plans keep the 4-D tensor: the inner product flattens it itself).
  int flatten(int cur, int H, int W, int C);

 private:
  int logits(int cur);
};

// Lowers the model to oneDNN primitives and qnet's kernels for p.batch images (p.batch and
// p.threads set; the caller has set the OpenMP team size the primitives will run with). no_vnni:
// oneDNN runs without VNNI (the split-weights path where needed, docs/runtime.md).
void build_plan(const InferenceModel& model, Runtime::Plan& p, const dnnl::engine& engine, bool no_vnni);

}  // namespace qnet
