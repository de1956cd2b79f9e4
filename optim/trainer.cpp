#include "optim/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <span>

#include <fmt/format.h>
#include <omp.h>

#include "core/kernels.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/thread_team.h"
#include "layers/container.h"
#include "layers/sequential.h"

namespace qnet {

namespace {
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// "1688/1688 [==============================] - 0.4s 0.2ms/step - loss: 0.0512 - accuracy: 0.9843"
std::string progress_line(int64_t step, int64_t steps, double elapsed, double loss, double acc) {
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * step / std::max<int64_t>(steps, 1));
  std::string bar(filled, '=');
  if (filled < kWidth) bar += '>', bar += std::string(kWidth - filled - 1, '.');
  const double per_step_ms = step > 0 ? 1000.0 * elapsed / step : 0.0;
  return fmt::format("{}/{} [{}] - {:.1f}s {:.1f}ms/step - loss: {:.4f} - accuracy: {:.4f}", step, steps, bar, elapsed,
                     per_step_ms, loss, acc);
}
}  // namespace

namespace {
// The sum and the largest of the layers' output sizes per image, branches included.
void output_sizes(const Sequential& chain, int64_t& sum, int64_t& largest) {
  Shape s = chain.input_shape();
  for (size_t i = 0; i < chain.size(); ++i) {
    s = chain.layer(i).output_shape(s);
    sum += shape_numel(s), largest = std::max(largest, shape_numel(s));
    if (const auto* c = dynamic_cast<const Container*>(&chain.layer(i)))
      for (const Sequential* branch : c->branches()) output_sizes(*branch, sum, largest);
  }
}
}  // namespace

MemoryEstimate estimate_training_memory(Module& model, const Shape& input, int64_t batch) {
  MemoryEstimate e;
  e.parameters = 16 * model.parameter_count();
  int64_t sum = shape_numel(input), largest = shape_numel(input);
  if (const auto* chain = dynamic_cast<const Sequential*>(&model)) output_sizes(*chain, sum, largest);
  e.step = 8 * sum * batch;
  e.evaluation = 2 * 4 * largest * 256;
  return e;
}

int64_t count_correct(const Tensor& logits, const std::vector<int32_t>& labels) {
  const int64_t N = logits.dim(0), K = logits.dim(1);
  int64_t correct = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits.data() + n * K;
    int64_t best = 0;
    for (int64_t k = 1; k < K; ++k)
      if (row[k] > row[best]) best = k;
    correct += best == labels[n];
  }
  return correct;
}

Evaluation evaluate(Module& model, const ImageSet& data, int64_t batch_size) {
  NoGradGuard no_grad;
  const bool was_training = model.training();
  model.set_training(false);
  Evaluation e;
  double loss_sum = 0;
  for (int64_t begin = 0; begin < data.size(); begin += batch_size) {
    const int64_t n = std::min(batch_size, data.size() - begin);
    Batch b = data.batch(begin, n);
    Variable logits = model.forward(Variable(b.x));
    loss_sum += softmax_cross_entropy(logits, b.labels).value()[0] * n;
    e.accuracy += static_cast<double>(count_correct(logits.value(), b.labels));
    e.images += n;
  }
  model.set_training(was_training);
  if (e.images > 0) e.loss = loss_sum / e.images, e.accuracy /= e.images;
  return e;
}

// A NaN weight can hide from the loss (ReLU maps NaN to 0), so the parameters are checked too.
void check_parameters_finite(Module& model, int epoch) {
  for (Variable* p : model.parameters()) {
    const Tensor& t = p->value();
    for (int64_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(t[i]))
        throw TrainingError(fmt::format("training diverged: a parameter of shape {} holds {} at the end of epoch {}", shape_str(t.shape()),
                                        t[i], epoch));
  }
}

namespace {
// The copies of the model the other threads train on in one epoch (FitOptions::threads_split_batch).
// Their parameters hold the model's values (the same storage: the optimizer's updates reach them)
// and gradients of their own; statistics, ranges and random state are their own, and move as the
// model's do, since every sum they are made of is the whole batch's.
struct Replicas {
  std::vector<std::unique_ptr<Module>> copies;  // copies[r - 1] for thread r
  std::vector<std::vector<Variable*>> parameters;
  bool failed = false;  // the model cannot copy itself: split each op instead

  void make(Module& model, int threads) {
    const std::vector<Variable*> master = model.parameters();
    for (int r = 1; r < threads && !failed; ++r) {
      std::unique_ptr<Module> copy = model.clone();
      failed = !copy;
      if (failed) break;
      std::vector<Variable*> params = copy->parameters();
      for (size_t i = 0; i < params.size(); ++i) *params[i] = Variable(master[i]->value(), master[i]->requires_grad());
      parameters.push_back(std::move(params)), copies.push_back(std::move(copy));
    }
    if (failed) clear();
  }
  void clear() { copies.clear(), parameters.clear(); }
};

// How the threads share each batch's chunks. From an even split, every kWindow steps one chunk
// moves to the thread that waited longest for the others, if even its shortest wait in the window
// was kMargin times what a chunk takes it: then the move would shorten every step of the window. A core
// that runs slower step after step (a VM's vCPU sharing its host core with another guest's work,
// say) so gives up chunks, and takes them back once it is as fast again. A move is a trial:
// unless the next window's steps take at least 2% less time (a thread stopped for long stretches by
// another program, which fewer images do not shorten), it is undone and not tried again for twice
// as many windows as the last time. A thread's time is its time in forward and backward less its
// waits in the team's collectives. FitOptions::thread_weights fixes the split instead. No split
// changes the bits (balanced_chunks).
class ThreadPace {
 public:
  ThreadPace(int threads, const std::vector<double>& weights) : paces_(threads, 1.0), fixed_(!weights.empty()) {
    if (!fixed_) return;
    if (static_cast<int>(weights.size()) != threads)
      throw std::invalid_argument(fmt::format("fit: {} thread weights for {} threads", weights.size(), threads));
    for (int r = 0; r < threads; ++r) {
      if (!(weights[r] > 0) || !std::isfinite(weights[r]))
        throw std::invalid_argument(fmt::format("fit: thread weight {} (expected a positive number)", weights[r]));
      paces_[r] = 1.0 / weights[r];
    }
  }
  std::vector<int64_t> split(int64_t images) {
    const int64_t chunks = (images + kReductionChunk - 1) / kReductionChunk;
    if (fixed_) return balanced_chunks(chunks, paces_);
    if (split_.empty()) split_ = balanced_chunks(chunks, paces_);  // the first batch's: a full one
    return total(split_) == chunks ? split_ : balanced_chunks(chunks, paces_);  // an epoch's last, evenly
  }
  // A step with `chunks` took step_seconds in all, thread r busy_seconds[r] of it.
  void measured(const std::vector<int64_t>& chunks, const std::vector<double>& busy_seconds, double step_seconds) {
    if (fixed_ || chunks != split_) return;
    const size_t ranks = chunks.size();
    if (wait_.empty()) reset_window(ranks);
    const double slowest = *std::max_element(busy_seconds.begin(), busy_seconds.end());
    for (size_t r = 0; r < ranks; ++r) {
      wait_[r] = std::min(wait_[r], slowest - busy_seconds[r]);
      chunk_[r] = std::min(chunk_[r], busy_seconds[r] / static_cast<double>(chunks[r]));
    }
    window_seconds_ += step_seconds;
    if (++steps_ % kWindow == 0) end_window(ranks);
  }

 private:
  static constexpr int64_t kWindow = 32, kMaxBackoff = 64;
  static constexpr double kMargin = 1.5;  // a move when the shortest wait is this many chunks: a gain of half a chunk
  static constexpr double kKeep = 0.98;   // a move stays if its window took at most this much of the one before
  static int64_t total(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }
  void end_window(size_t ranks) {
    if (trial_) {  // keep the move only if it paid
      trial_ = false;
      if (window_seconds_ > kKeep * before_seconds_) {
        --split_[to_], ++split_[from_];
        backoff_ = std::min(2 * backoff_, kMaxBackoff), cooldown_ = backoff_;
      } else {
        backoff_ = 1;
      }
    } else if (cooldown_ > 0) {
      --cooldown_;
    } else {
      const size_t idle = static_cast<size_t>(std::max_element(wait_.begin(), wait_.end()) - wait_.begin());
      size_t busiest = idle;
      for (size_t r = 0; r < ranks; ++r)
        if (split_[r] > 1 && (busiest == idle || wait_[r] < wait_[busiest])) busiest = r;
      if (busiest != idle && wait_[idle] > kMargin * chunk_[idle]) {
        ++split_[idle], --split_[busiest];
        trial_ = true, to_ = idle, from_ = busiest, before_seconds_ = window_seconds_;
      }
    }
    reset_window(ranks);
  }
  void reset_window(size_t ranks) {
    wait_.assign(ranks, std::numeric_limits<double>::infinity());
    chunk_.assign(ranks, std::numeric_limits<double>::infinity());
    window_seconds_ = 0;
  }
  std::vector<double> paces_;  // relative seconds per chunk: thread_weights' or all equal
  bool fixed_;
  std::vector<int64_t> split_;        // the chunks of a full batch, per thread
  std::vector<double> wait_, chunk_;  // this window's shortest wait and fastest chunk, per thread
  double window_seconds_ = 0, before_seconds_ = 0;  // this window's steps; the window before a trial
  int64_t steps_ = 0, backoff_ = 1, cooldown_ = 0;
  bool trial_ = false;
  size_t to_ = 0, from_ = 0;
};

// The images of the step that starts at `begin` of the epoch's order (none after the last).
std::span<const int64_t> next_images(std::span<const int64_t> order, int64_t begin, int64_t batch_size) {
  const int64_t size = static_cast<int64_t>(order.size());
  return begin < size ? order.subspan(begin, std::min(batch_size, size - begin)) : std::span<const int64_t>();
}

// One training step with each of the team's threads on its chunks of the batch: thread 0 on the
// model, thread r on copies[r - 1]. Once every thread's backward is done, the threads step the
// optimizer (unless the loss is not finite: the caller throws). Returns the mean loss (every
// rank's) and the number of right answers.
std::pair<float, int64_t> team_step(Module& model, Optimizer& optimizer, Replicas& replicas, const ImageSet& train,
                                    std::span<const int64_t> images, std::span<const int64_t> next, ThreadPace& pace) {
  const int threads = static_cast<int>(replicas.copies.size()) + 1;
  const int64_t n = static_cast<int64_t>(images.size());
  const Clock::time_point step_start = Clock::now();
  const std::vector<int64_t> chunks = pace.split(n);
  std::vector<double> busy(threads);
  ThreadTeam team(threads);
  std::vector<std::exception_ptr> errors(threads);
  std::atomic<int64_t> right{0};
  float loss_value = 0;
#pragma omp parallel num_threads(threads)
  {
    const int r = omp_get_thread_num();
    omp_set_num_threads(1);  // the ops inside run on this thread alone
    const Clock::time_point start = Clock::now();
    try {
      if (r > 0)
        for (Variable* p : replicas.parameters[r - 1]) p->zero_grad();
      else
        optimizer.zero_grad();
      const BatchShard shard = shard_of(n, r, chunks);
      Batch b = train.batch(images.subspan(shard.begin, shard.count));
      if (static_cast<int64_t>(next.size()) == n) train.prefetch(next.subspan(shard.begin, shard.count));  // likely its next shard
      ShardedStep step(team.rank(r), n, chunks);
      Variable logits = (r == 0 ? model : *replicas.copies[r - 1]).forward(Variable(b.x));
      Variable loss = softmax_cross_entropy(logits, b.labels);  // the whole batch's mean, on every rank
      if (r == 0) loss_value = loss.value()[0];
      if (std::isfinite(loss.value()[0])) loss.backward();  // else every rank stops here
      right += count_correct(logits.value(), b.labels);
      busy[r] = seconds_since(start) - team.waited(r);
    } catch (...) {
      errors[r] = std::current_exception();
      team.abort();
    }
#pragma omp barrier
    if (!team.aborted() && std::isfinite(loss_value)) {  // the same on every thread
      // Each thread updates its part of every parameter, or thread 0 all of them.
      const bool in_parts = optimizer.step_part(r, threads);
#pragma omp barrier
      if (r == 0) {
        try {
          if (in_parts)
            optimizer.end_step();
          else
            optimizer.step();
        } catch (...) {
          errors[0] = std::current_exception();
        }
      }
    }
  }
  pace.measured(chunks, busy, seconds_since(step_start));
  // The failure itself, not another thread's TeamAborted.
  for (const std::exception_ptr& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const TeamAborted&) {
    }
  }
  return {loss_value, right.load()};
}
}  // namespace

std::vector<EpochStats> fit(Module& model, Optimizer& optimizer, const ImageSet& train, const ImageSet& validation,
                            const FitOptions& o, Rng& rng) {
  if (o.epochs < 1 || o.batch_size < 1)
    throw std::invalid_argument(fmt::format("fit: {} epochs, batch size {} (expected both >= 1)", o.epochs, o.batch_size));
  if (train.size() == 0) throw std::invalid_argument("fit: the training set is empty");
  const int64_t steps = (train.size() + o.batch_size - 1) / o.batch_size;
  const int ranks = o.communicator ? o.communicator->size() : 1;
  const int threads = o.communicator || !o.threads_split_batch ? 1 : num_threads();
  std::vector<EpochStats> history;
  ThreadPace pace(threads, o.communicator || threads == 1 ? std::vector<double>{} : o.thread_weights);
  for (int epoch = 1; epoch <= o.epochs; ++epoch) {
    if (o.on_epoch_begin) o.on_epoch_begin(epoch);
    if (o.progress != Progress::kNone) fmt::print(o.out, "Epoch {}/{}\n", epoch, o.epochs), std::fflush(o.out);
    model.set_training(true);
    std::vector<int64_t> order = train.indices();
    rng.shuffle(order);
    const Clock::time_point t0 = Clock::now();
    Clock::time_point last_draw = t0;
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    const auto draw_progress = [&](int64_t step) {
      if (o.progress == Progress::kBar && (seconds_since(last_draw) > 0.1 || step + 1 == steps)) {
        last_draw = Clock::now();
        fmt::print(o.out, "\r{}", progress_line(step + 1, steps, seconds_since(t0), loss_sum / seen,
                                                static_cast<double>(correct) / seen));
        std::fflush(o.out);
      }
    };
    Replicas replicas;  // made at the first step that splits its batch over the threads, after on_epoch_begin
    for (int64_t step = 0; step < steps; ++step) {
      const int64_t begin = step * o.batch_size, n = std::min(o.batch_size, train.size() - begin);
      if (threads > 1 && (n + kReductionChunk - 1) / kReductionChunk >= threads && !replicas.failed) {
        if (replicas.copies.empty()) replicas.make(model, threads);
        if (!replicas.failed) {
          const std::span<const int64_t> all(order);
          const auto [l, right] =
              team_step(model, optimizer, replicas, train, all.subspan(begin, n), next_images(all, begin + n, o.batch_size), pace);
          if (!std::isfinite(l))
            throw TrainingError(fmt::format("training diverged: loss is {} at epoch {}, step {}/{}", l, epoch, step + 1, steps));
          loss_sum += static_cast<double>(l) * n;
          correct += right;
          seen += n;
          draw_progress(step);
          continue;
        }
      }
      replicas.clear();  // this step moves the model alone: copy it again
      // On several ranks each takes its chunks of the batch; a batch with fewer chunks than ranks
      // (an epoch's last) runs whole on every rank, the same sums without any exchange.
      const bool sharded = ranks > 1 && (n + kReductionChunk - 1) / kReductionChunk >= ranks;
      const BatchShard shard = sharded ? shard_of(n, o.communicator->rank(), ranks) : BatchShard{n, 0, n};
      Batch b = train.batch(std::span<const int64_t>(order).subspan(begin + shard.begin, shard.count));
      const std::span<const int64_t> next = next_images(order, begin + n, o.batch_size);
      if (static_cast<int64_t>(next.size()) == n) train.prefetch(next.subspan(shard.begin, shard.count));
      std::optional<ShardedStep> in_step;
      if (sharded) in_step.emplace(*o.communicator, shard);
      Variable logits = model.forward(Variable(b.x));
      Variable loss = softmax_cross_entropy(logits, b.labels);  // every rank's mean
      const float l = loss.value()[0];
      if (!std::isfinite(l))
        throw TrainingError(fmt::format("training diverged: loss is {} at epoch {}, step {}/{}", l, epoch, step + 1, steps));
      optimizer.zero_grad();
      loss.backward();
      in_step.reset();
      optimizer.step();
      loss_sum += static_cast<double>(l) * n;
      int64_t right = count_correct(logits.value(), b.labels);
      if (sharded) o.communicator->allreduce_sum(&right, 1);
      correct += right;
      seen += n;
      draw_progress(step);
    }
    EpochStats s{epoch, seconds_since(t0), loss_sum / seen, static_cast<double>(correct) / seen, 0, 0};
    if (validation.size() > 0) {
      const Evaluation v = evaluate(model, validation);
      s.val_loss = v.loss, s.val_accuracy = v.accuracy;
    }
    if (o.progress != Progress::kNone) {
      const std::string line = progress_line(steps, steps, s.seconds, s.loss, s.accuracy);
      const std::string val = validation.size() > 0
                                  ? fmt::format(" - val_loss: {:.4f} - val_accuracy: {:.4f}", s.val_loss, s.val_accuracy)
                                  : "";
      fmt::print(o.out, "{}{}{}\n", o.progress == Progress::kBar ? "\r" : "", line, val);
      std::fflush(o.out);
    }
    check_parameters_finite(model, epoch);  // before on_epoch_end saves anything
    history.push_back(s);
    if (o.on_epoch_end) o.on_epoch_end(s);
  }
  return history;
}

}  // namespace qnet
