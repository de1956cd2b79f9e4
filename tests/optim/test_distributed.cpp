// Data-parallel training (core/distributed.h) with ranks as threads of this process: a
// Communicator on shared memory, so the sums across ranks are tested without mpirun (and under
// the sanitizers). tests/apps/mpi_test.sh runs the same on MPI processes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "core/distributed.h"
#include "core/kernels.h"
#include "data/mnist.h"
#include "io/qbin.h"
#include "layers/model_spec.h"
#include "layers/sequential.h"
#include "optim/trainer.h"
#include "quant/qat.h"

using namespace qnet;

namespace {

// What the ranks of one group share: a barrier that a failing rank can break (the others then
// throw instead of waiting forever), and each rank's buffer during a collective.
class Group {
 public:
  explicit Group(int ranks) : ranks_(ranks), parts_(ranks) {}
  int ranks() const { return ranks_; }
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (broken_) throw std::runtime_error("another rank failed");
    const int64_t generation = generation_;
    if (++arrived_ == ranks_) {
      arrived_ = 0, ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation || broken_; });
      if (broken_) throw std::runtime_error("another rank failed");
    }
  }
  void breaks() {
    std::lock_guard<std::mutex> lock(mutex_);
    broken_ = true;
    cv_.notify_all();
  }
  std::vector<const void*>& parts() { return parts_; }

 private:
  int ranks_;
  std::vector<const void*> parts_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
  int64_t generation_ = 0;
  bool broken_ = false;
};

class ThreadCommunicator : public Communicator {
 public:
  ThreadCommunicator(Group& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_.ranks(); }
  void allgather(const float* local, const std::vector<int64_t>& counts, float* all) override { gather(local, counts, all); }
  void allgather(const double* local, const std::vector<int64_t>& counts, double* all) override { gather(local, counts, all); }
  void allreduce_min(float* v, int64_t n) override { reduce(v, n, [](float a, float b) { return std::min(a, b); }); }
  void allreduce_max(float* v, int64_t n) override { reduce(v, n, [](float a, float b) { return std::max(a, b); }); }
  void allreduce_sum(int64_t* v, int64_t n) override { reduce(v, n, [](int64_t a, int64_t b) { return a + b; }); }
  int64_t collectives = 0;

 private:
  template <typename T>
  void gather(const T* local, const std::vector<int64_t>& counts, T* all) {
    // Not REQUIRE: Catch's assertions are for the main thread.
    if (static_cast<int>(counts.size()) != size()) throw std::logic_error("allgather: one count per rank expected");
    group_.parts()[rank_] = local;
    group_.wait();
    for (int r = 0, at = 0; r < size(); at += static_cast<int>(counts[r]), ++r)
      std::memcpy(all + at, group_.parts()[r], counts[r] * sizeof(T));
    group_.wait();  // the others have read this rank's buffer
    ++collectives;
  }
  template <typename T, typename F>
  void reduce(T* values, int64_t n, F op) {
    group_.parts()[rank_] = values;
    group_.wait();
    const T* first = static_cast<const T*>(group_.parts()[0]);
    std::vector<T> out(first, first + n);
    for (int r = 1; r < size(); ++r)
      for (int64_t i = 0; i < n; ++i) out[i] = op(out[i], static_cast<const T*>(group_.parts()[r])[i]);
    group_.wait();
    std::copy(out.begin(), out.end(), values);
    ++collectives;
  }
  Group& group_;
  int rank_;
};

const Mnist& mnist() {
  static const Mnist m = load_mnist(mnist_dir(""));
  return m;
}

// Every layer kind with a sum over the batch or random draws: conv and depthwise kernel gradients,
// BatchNormalization (statistics forward, sums backward; folded under QAT), dropout, noise,
// average pooling, Dense and its bias.
constexpr const char* kSpec =
    "gaussiannoise(0.1) conv2d(6, 3) batchnorm relu depthwiseconv2d(3, relu) maxpool2d(2) conv2d(8, 3, relu) "
    "averagepooling2d(2) flatten dropout(0.3) dense(10)";

struct Trained {
  std::vector<uint8_t> file;  // the model as saved: weights, observed ranges, moving statistics
  std::vector<EpochStats> history;
  int64_t collectives = 0;
};

Trained train_rank(Communicator* comm, bool qat, int64_t batch) {
  Rng rng(5);
  Sequential model = model_from_spec(kSpec, {28, 28, 1}, rng);
  if (qat) prepare_qat(model, {.bits = 8, .observer = pytorch_observer()});
  Adam adam(model.parameters());
  FitOptions fo;
  fo.epochs = 2;
  fo.batch_size = batch;
  fo.communicator = comm;
  Trained t;
  t.history = fit(model, adam, mnist().train.slice(0, 563), mnist().train.slice(54000, 100), fo, rng);
  t.file = qbin::serialize(to_qbin(model));
  return t;
}

// Trains on `ranks` threads, each a rank; returns every rank's result.
std::vector<Trained> train_on_ranks(int ranks, bool qat, int64_t batch) {
  Group group(ranks);
  std::vector<ThreadCommunicator> comms;
  for (int r = 0; r < ranks; ++r) comms.emplace_back(group, r);
  std::vector<Trained> out(ranks);
  std::vector<std::exception_ptr> errors(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        out[r] = train_rank(&comms[r], qat, batch);
        out[r].collectives = comms[r].collectives;
      } catch (...) {
        errors[r] = std::current_exception();
        group.breaks();
      }
    });
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

}  // namespace

TEST_CASE("shards: whole chunks of the batch, in rank order, as even as they go", "[core][distributed]") {
  // 35 images = 9 chunks (the last of 3 images) over 4 ranks: 2, 2, 2, 3 chunks.
  CHECK(shard_of(35, 0, 4).begin == 0);
  CHECK(shard_of(35, 0, 4).count == 8);
  CHECK(shard_of(35, 1, 4).begin == 8);
  CHECK(shard_of(35, 2, 4).begin == 16);
  CHECK(shard_of(35, 3, 4).begin == 24);
  CHECK(shard_of(35, 3, 4).count == 11);
  CHECK(shard_of(8, 2, 3).count == 4);  // 2 chunks over 3 ranks: the first gets none
  CHECK(shard_of(8, 0, 3).count == 0);
  CHECK(shard_of(32, 0, 1).count == 32);
  CHECK_THROWS_AS(shard_of(32, 2, 2), std::invalid_argument);
  CHECK(sharded_step() == nullptr);
}

TEST_CASE("data-parallel training on 2 and 3 ranks gives one process's weights to the bit, float and QAT", "[optim][distributed]") {
  for (bool qat : {false, true})
    for (int64_t batch : {32, 35}) {
      INFO((qat ? "QAT" : "float") << ", batch " << batch << " (563 images: a last batch of " << 563 % batch << ")");
      const Trained one = train_rank(nullptr, qat, batch);
      for (int ranks : {2, 3}) {
        INFO(ranks << " ranks");
        const std::vector<Trained> many = train_on_ranks(ranks, qat, batch);
        for (const Trained& t : many) {
          CHECK(t.file == one.file);
          CHECK(t.history.back().loss == one.history.back().loss);          // every rank's loss, in order
          CHECK(t.history.back().accuracy == one.history.back().accuracy);  // every rank's images counted
          CHECK(t.collectives > 0);
        }
      }
    }
}
