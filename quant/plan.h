// The runtime's plan for one batch size (internal: quant/runtime.cpp executes it,
// quant/lowering.cpp builds it): buffers, and steps that are oneDNN primitives or qnet's own
// byte kernels (quant/byte_kernels.h).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "quant/runtime.h"

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

// Buffers and a stream owned by one predict() call at a time.
struct Workspace {
  dnnl::stream stream;
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
  std::mutex mutex;
  std::vector<std::unique_ptr<plan::Workspace>> idle;
};

// Lowers the model to oneDNN primitives and qnet's kernels for p.batch images (p.batch and
// p.threads set; the caller has set the OpenMP team size the primitives will run with). split:
// the split-weights path (docs/runtime.md).
void build_plan(const InferenceModel& model, Runtime::Plan& p, const dnnl::engine& engine, bool split);

}  // namespace qnet
