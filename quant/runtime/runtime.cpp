// Executing a plan (quant/runtime/plan.h, built by quant/runtime/lowering.cpp): the plan cache per batch size,
// workspaces handed to concurrent predict() calls, and the helpers around a Runtime.
#include "quant/runtime/runtime.h"

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

#include "quant/runtime/plan.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace {
using dnnl::memory;
using plan::Buffer;
using plan::Step;
using plan::Workspace;

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

namespace {

std::unique_ptr<Workspace> make_workspace(const Runtime::Plan& p, const dnnl::engine& eng) {
  auto ws = std::make_unique<Workspace>();
  ws->stream = dnnl::stream(eng);
  auto allocate = [](size_t bytes) {
    void* block = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
    if (!block) throw std::bad_alloc();
    return std::unique_ptr<void, Workspace::Free>(block);
  };
  for (size_t bytes : p.block_bytes) ws->blocks.push_back(allocate(bytes));
  ws->scratchpad = allocate(p.scratchpad_bytes);
  for (size_t i = 0; i < p.buffers.size(); ++i) {
    const int block = p.block_of[i];  // -1: a handle set per call
    ws->mem.push_back(memory(p.buffers[i].md, eng, block >= 0 ? ws->blocks[block].get() : DNNL_MEMORY_NONE));
  }
  for (const Step& s : p.steps) {
    std::unordered_map<int, memory> args;
    for (const auto& [arg, i] : s.buffers) args.emplace(arg, ws->mem[i]);
    for (const auto& [arg, mem] : s.constants) args.emplace(arg, mem);
    if (!s.kernel) args.emplace(DNNL_ARG_SCRATCHPAD, memory(s.scratchpad, eng, ws->scratchpad.get()));
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
    bool wide = false;  // a layer whose pairs of products can saturate without VNNI (PlanBuilder::needs_split)
    for (const Stage& st : model_.stages) wide = wide || st.op->widest_pair_sum() > kPairSumMax;
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
  try {
    build_plan(model_, *p, engine_->engine, p->int8 && !onednn_has_vnni());
  } catch (const dnnl::error& e) {  // oneDNN's own words ("could not create a memory object") need their context
    throw std::runtime_error(fmt::format("the runtime could not set up a batch of {} images on oneDNN ({}): {}{}", batch, onednn_isa(),
                                         e.what(), e.status == dnnl_out_of_memory ? " (out of memory: run fewer images at a time)" : ""));
  }
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
    if (!ws) {
      try {
        ws = make_workspace(p, engine_->engine);
      } catch (const std::bad_alloc&) {
        throw std::runtime_error(fmt::format("the runtime could not get the {:.1f} MB a batch of {} images needs for its activations "
                                             "(out of memory: run fewer images at a time, e.g. evaluate --batch-size {})",
                                             static_cast<double>(p.workspace_bytes()) / 1e6, count, std::max<int64_t>(1, count / 4)));
      } catch (const dnnl::error& e) {
        throw std::runtime_error(fmt::format("the runtime could not get the {:.1f} MB a batch of {} images needs for its activations: {}",
                                             static_cast<double>(p.workspace_bytes()) / 1e6, count, e.what()));
      }
    }
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

size_t Runtime::workspace_bytes(int64_t batch) const { return plan(batch).workspace_bytes(); }

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
