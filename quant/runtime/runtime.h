// The oneDNN runtime: executes an f32 or int8 .qbin model on oneDNN 2.6 primitives.
//
//   Runtime rt(load_inference_model("model.qbin"));
//   std::vector<float> logits = rt.predict(pixels, n);   // n x 28x28 uint8 images -> [n][10]
//
// int8: conv and inner product u8 x s8 + s32 bias (the input zero point folded in), per-channel
// output scales and a fused ReLU or output zero point -> u8, or -> f32 for the logits; max pooling
// on u8 (eq. 11-12, bit-exact with quant/runtime/reference.h). A
// 1-channel conv followed by a tiling pool (the reference model) runs as one oneDNN matmul over
// the image blocks each pooling window reads, plus a max over window positions; tiling pools
// use qnet's byte-max kernel (docs/runtime.md says why and what it measured).
// Without VNNI (AVX2, AVX-512 without VNNI, SSE4.1), oneDNN's u8 x s8 products saturate for weight
// codes beyond +-64; there each such product runs once over a doubled inner dimension: the input
// twice, the weights split into halves within +-64 (the "split-weights" path, docs/runtime.md),
// still bit-exact.
// f32: the same graph on f32 primitives (pixels / 255). Primitives are created once per batch
// size and reused, weights are reordered once per plan. predict() may be called from many
// threads at once: each call takes its own buffers and scratchpad.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "quant/runtime/inference_model.h"

namespace qnet {

struct RuntimeOptions {
  int64_t max_batch = 256;  // larger calls run in chunks of this many images
  int threads = 0;          // OpenMP threads for big batches; 0 = the current maximum
  int64_t single_thread_below = 8;  // batches smaller than this run on one thread (less overhead)
};

class Runtime {
 public:
  explicit Runtime(InferenceModel model, RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // images: n x (H*W*C) uint8 NHWC pixels; logits: n x classes.
  void predict(const uint8_t* images, int64_t n, float* logits) const;
  std::vector<float> predict(const uint8_t* images, int64_t n) const;

  const InferenceModel& model() const { return model_; }
  // oneDNN's implementation of each primitive at this batch size, e.g. "conv brgconv:avx512_core_vnni".
  std::vector<std::string> implementations(int64_t batch) const;

  // For benchmarks: the median time in microseconds of each step of the plan for `batch`
  // (implementations' order) over `repeats` runs on `images`, each step waited for alone; the
  // last entry, "predict", is the whole call as predict() makes it.
  std::vector<std::pair<std::string, double>> step_times(const uint8_t* images, int64_t batch, int repeats) const;

  // The bytes one predict() call of `batch` images takes beyond the model's weights: its
  // activations' memory blocks (reused from layer to layer) and the primitives' scratchpad.
  size_t workspace_bytes(int64_t batch) const;

  // How the int8 products run on this CPU: "one-pass" (oneDNN's ISA has VNNI, or every weight
  // code is within +-64) or "split-weights"; "f32" for an f32 model.
  const char* int8_path() const { return int8_path_; }

  struct Plan;

 private:
  Plan& plan(int64_t batch) const;

  InferenceModel model_;
  RuntimeOptions options_;
  const char* int8_path_ = "f32";
  struct Engine;
  std::unique_ptr<Engine> engine_;
  mutable std::mutex mutex_;
  mutable std::map<int64_t, std::unique_ptr<Plan>> plans_;
};

// Test-set accuracy of a runtime model, batch by batch, and the wall time of the predictions.
struct RuntimeEvaluation {
  double accuracy = 0;
  int64_t images = 0;
  double seconds = 0;
};
RuntimeEvaluation evaluate(const Runtime& runtime, const ImageSet& images, int64_t batch_size);

// oneDNN's effective ISA (after ONEDNN_MAX_CPU_ISA), e.g. "AVX2", "AVX-512 with VNNI".
std::string onednn_isa();
// True when that ISA multiplies u8 x s8 without int16 saturation (VNNI, AMX).
bool onednn_has_vnni();

// Index of the largest logit, and softmax probabilities of one row of logits.
int argmax(const float* logits, int classes);
std::vector<float> softmax(const float* logits, int classes);

}  // namespace qnet
