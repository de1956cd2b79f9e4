// The training loop, top-down: fit -> epoch -> batch, with Keras-style progress.
//
//   Adam adam(model.parameters(), {.lr = 1e-3f});
//   FitOptions fo{.epochs = 10, .batch_size = 32};
//   std::vector<EpochStats> h = fit(model, adam, split.train, split.validation, fo, rng);
//   Evaluation test = evaluate(model, mnist.test);
#pragma once

#include <algorithm>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <vector>

#include "core/distributed.h"
#include "core/random.h"
#include "data/dataset.h"
#include "layers/module.h"
#include "optim/optimizer.h"

namespace qnet {

struct Evaluation {
  double loss = 0;
  double accuracy = 0;
  int64_t images = 0;
};

struct EpochStats {
  int epoch = 0;  // 1-based
  double seconds = 0;
  double loss = 0, accuracy = 0;          // running means over the epoch's batches
  double val_loss = 0, val_accuracy = 0;  // after the epoch, eval mode
};

enum class Progress { kNone, kPlain, kBar };  // kBar: a live bar for terminals

struct FitOptions {
  int epochs = 10;
  int64_t batch_size = 32;
  Progress progress = Progress::kNone;
  std::FILE* out = stdout;
  std::function<void(int epoch)> on_epoch_begin{};           // e.g. freeze QAT ranges
  std::function<void(const EpochStats&)> on_epoch_end{};     // e.g. checkpoint
  // Data-parallel training (core/distributed.h): every rank calls fit() with the same model, data,
  // options and seed, and trains on its chunks of each batch; the weights come out the same bits
  // as on one process. Null: this process alone.
  Communicator* communicator = nullptr;
  // On several threads (core/parallel.h) and one process: each thread trains its chunks of every
  // batch on its own copy of the model (Module::clone), the partial sums meeting in chunk order
  // (core/thread_team.h): one fork and join per step, the same bits as one thread. Off, or for a
  // model that cannot copy itself, or a batch of fewer chunks than threads: each op is split
  // over the threads instead.
  bool threads_split_batch = true;
  // How those threads share each batch, in whole chunks of kReductionChunk images: empty, by each
  // thread's measured pace (a thread on a slower or busier core gets fewer); else thread r's
  // relative speed (one per thread, e.g. {3, 1}: 6 and 2 of a batch's 8 chunks). The weights come
  // out the same bits either way.
  std::vector<double> thread_weights{};
};

// A NaN or infinite loss: training stops and says where.
class TrainingError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Loss and accuracy in eval mode with no graph recorded.
Evaluation evaluate(Module& model, const ImageSet& data, int64_t batch_size = 256);

std::vector<EpochStats> fit(Module& model, Optimizer& optimizer, const ImageSet& train, const ImageSet& validation,
                            const FitOptions& options, Rng& rng);

// About the memory training a model takes, from its layers' shapes alone (before any work):
// its parameters with their gradients and Adam's two moments (16 bytes each); per training step,
// every layer's output and its gradient for `batch` images (8 bytes a value); and the evaluation
// (batch 256, no graph), about the two largest outputs at once.
struct MemoryEstimate {
  int64_t parameters = 0, step = 0, evaluation = 0;  // bytes
  int64_t total() const { return parameters + std::max(step, evaluation); }
};
MemoryEstimate estimate_training_memory(Module& model, const Shape& input, int64_t batch);

// Fraction of rows whose arg-max equals the label (first maximum wins).
int64_t count_correct(const Tensor& logits, const std::vector<int32_t>& labels);

}  // namespace qnet
