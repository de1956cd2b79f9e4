// Data-parallel training (core/distributed.h) with ranks as threads of this process (a
// ThreadTeam, core/thread_team.h), so the sums across ranks are tested without mpirun (and under
// the sanitizers); tests/apps/mpi_test.sh runs the same on MPI processes. And fit() itself
// splitting each batch over its threads, each on a copy of the model (FitOptions::threads_split_batch).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <stdexcept>
#include <thread>

#include "core/distributed.h"
#include "core/kernels.h"
#include "core/parallel.h"
#include "core/thread_team.h"
#include "data/mnist.h"
#include "io/qbin.h"
#include "layers/model_spec.h"
#include "layers/sequential.h"
#include "optim/trainer.h"
#include "quant/qat.h"

using namespace qnet;

namespace {

// A rank of a ThreadTeam that counts its collectives (so a test can see the ranks did exchange).
class CountingRank : public Communicator {
 public:
  explicit CountingRank(Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  void allgather(const float* local, const std::vector<int64_t>& counts, float* all) override { ++collectives, inner_.allgather(local, counts, all); }
  void allgather(const double* local, const std::vector<int64_t>& counts, double* all) override {
    ++collectives, inner_.allgather(local, counts, all);
  }
  void allreduce_min(float* v, int64_t n) override { ++collectives, inner_.allreduce_min(v, n); }
  void allreduce_max(float* v, int64_t n) override { ++collectives, inner_.allreduce_max(v, n); }
  void allreduce_sum(int64_t* v, int64_t n) override { ++collectives, inner_.allreduce_sum(v, n); }
  void ordered_sum(const float* local, const std::vector<int64_t>& chunks, int64_t width, float* out) override {
    ++collectives, inner_.ordered_sum(local, chunks, width, out);
  }
  int64_t collectives = 0;

 private:
  Communicator& inner_;
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

Trained train_rank(Communicator* comm, bool qat, int64_t batch, const char* spec = kSpec, bool split_batch = true,
                   std::vector<double> thread_weights = {}) {
  Rng rng(5);
  Sequential model = model_from_spec(spec, {28, 28, 1}, rng);
  if (qat) prepare_qat(model, {.bits = 8, .observer = pytorch_observer()});
  Adam adam(model.parameters());
  FitOptions fo;
  fo.epochs = 2;
  fo.batch_size = batch;
  fo.communicator = comm;
  fo.threads_split_batch = split_batch;
  fo.thread_weights = std::move(thread_weights);
  Trained t;
  t.history = fit(model, adam, mnist().train.slice(0, 563), mnist().train.slice(54000, 100), fo, rng);
  t.file = qbin::serialize(to_qbin(model));
  return t;
}

// Trains on `ranks` threads, each a rank calling fit() as an MPI process would; returns every
// rank's result.
std::vector<Trained> train_on_ranks(int ranks, bool qat, int64_t batch) {
  ThreadTeam team(ranks);
  std::vector<CountingRank> comms;
  for (int r = 0; r < ranks; ++r) comms.emplace_back(team.rank(r));
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
        team.abort();
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

TEST_CASE("shards by measured pace: the slower rank gets fewer chunks, every rank at least one", "[core][distributed]") {
  using V = std::vector<int64_t>;
  const std::vector<double> even{1, 1}, slow_second{1, 1.7}, slow_first{3, 1};
  CHECK(balanced_chunks(8, even) == V{4, 4});
  CHECK(balanced_chunks(9, even) == V{5, 4});  // ties to the lower rank
  CHECK(balanced_chunks(8, slow_second) == V{5, 3});
  CHECK(balanced_chunks(8, slow_first) == V{2, 6});
  CHECK(balanced_chunks(8, std::vector<double>{1, 100}) == V{7, 1});  // never none while there are enough
  CHECK(balanced_chunks(2, std::vector<double>{1, 1, 1}) == V{0, 1, 1});  // too few: the last ranks, as shard_of
  CHECK(balanced_chunks(9, std::vector<double>{1, 1, 1, 1}) == V{3, 2, 2, 2});
  CHECK_THROWS_AS(balanced_chunks(8, std::vector<double>{1, 0}), std::invalid_argument);
  CHECK_THROWS_AS(balanced_chunks(8, std::vector<double>{}), std::invalid_argument);
  // The shards such a split gives: 35 images (9 chunks, the last of 3 images) as 2, 6, 1 chunks.
  const V chunks{2, 6, 1};
  CHECK(shard_of(35, 0, chunks).begin == 0);
  CHECK(shard_of(35, 0, chunks).count == 8);
  CHECK(shard_of(35, 1, chunks).begin == 8);
  CHECK(shard_of(35, 1, chunks).count == 24);
  CHECK(shard_of(35, 2, chunks).begin == 32);
  CHECK(shard_of(35, 2, chunks).count == 3);
  CHECK_THROWS_AS(shard_of(35, 0, V{2, 6}), std::invalid_argument);  // 8 chunks, not the batch's 9
  CHECK_THROWS_AS(shard_of(35, 3, chunks), std::invalid_argument);
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

// Plain std::threads and no OpenMP: scripts/test --tsan runs it (its name has "threads").
TEST_CASE("a thread team's ordered sum over 3 std::threads adds every rank's chunks in order, and a failing rank stops the others",
          "[core][distributed]") {
  constexpr int kRanks = 3;
  constexpr int64_t kWidth = 37;  // not a multiple of the ranks: uneven segments
  const std::vector<int64_t> chunks = {2, 1, 3};
  std::vector<std::vector<float>> partials(kRanks);  // values whose sum depends on the order
  std::vector<float> expected(kWidth);
  Rng rng(3);
  for (int r = 0, c = 0; r < kRanks; ++r)
    for (int64_t k = 0; k < chunks[r]; ++k, ++c)
      for (int64_t i = 0; i < kWidth; ++i) {
        const float v = rng.uniform(-1.f, 1.f) * (c % 2 ? 1e7f : 1.f);
        partials[r].push_back(v);
        expected[i] = c == 0 ? v : expected[i] + v;
      }
  ThreadTeam team(kRanks);
  std::vector<std::vector<float>> out(kRanks, std::vector<float>(kWidth));
  std::vector<int64_t> maxima(kRanks);
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r)
    threads.emplace_back([&, r] {
      team.rank(r).ordered_sum(partials[r].data(), chunks, kWidth, out[r].data());
      int64_t v = r + 1;
      team.rank(r).allreduce_sum(&v, 1);
      maxima[r] = v;
    });
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < kRanks; ++r) {
    CHECK(out[r] == expected);
    CHECK(maxima[r] == 6);
  }

  // Small reductions (an observer's two ends) reuse two slots by turns: back to back, with a rank
  // that races ahead, every call still sees every rank's values of that call (and the large ones,
  // through pointers, keep working between them).
  std::vector<int64_t> wrong(kRanks, 0);
  threads.clear();
  for (int r = 0; r < kRanks; ++r)
    threads.emplace_back([&, r] {
      for (int call = 0; call < 300; ++call) {
        float ends[2] = {static_cast<float>(-(call * 10 + r)), static_cast<float>(call * 10 + r)};
        team.rank(r).allreduce_max(ends, 2);
        wrong[r] += ends[0] != static_cast<float>(-(call * 10)) || ends[1] != static_cast<float>(call * 10 + kRanks - 1);
        if (call % 7 == 0) {
          std::vector<int64_t> many(9, call + r);  // past the slots: the pointer path
          team.rank(r).allreduce_sum(many.data(), 9);
          wrong[r] += many[8] != 3 * call + 3;
        }
        if (r == 0 && call % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
  for (std::thread& t : threads) t.join();
  CHECK(wrong == std::vector<int64_t>(kRanks, 0));

  ThreadTeam failing(2);
  std::atomic<int> aborted{0};
  std::thread waiter([&] {
    try {
      float v = 1.f;
      failing.rank(1).allreduce_max(&v, 1);  // rank 0 never comes
    } catch (const TeamAborted&) {
      ++aborted;
    }
  });
  failing.abort();  // what a rank that throws does
  waiter.join();
  CHECK(aborted == 1);
  CHECK_THROWS_AS(failing.rank(0).allreduce_max(nullptr, 0), TeamAborted);

  // The time each rank waits for the others, which fit() subtracts to find a thread's pace: rank 0
  // comes 50 ms late to a collective, so rank 1 waits about that long and rank 0 not at all.
  ThreadTeam paced(2);
  std::thread early([&] {
    float v = 1.f;
    paced.rank(1).allreduce_max(&v, 1);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  float v = 2.f;
  paced.rank(0).allreduce_max(&v, 1);
  early.join();
  CHECK(paced.waited(1) >= 0.04);
  CHECK(paced.waited(0) < paced.waited(1));
}

// fit() on several threads: each trains whole chunks of every batch on its own copy of the model
// and the partial sums meet in chunk order, so the weights, moving statistics and observed
// ranges come out the bits of one thread. kSpec has every layer kind with a sum over the batch or
// random draws; the second model adds residual blocks (with BatchNormalization folded under QAT
// inside them) and zero padding.
// (Its name leaves out the word "threads": its workers are OpenMP's, which ThreadSanitizer cannot
// follow, so scripts/test --tsan, which runs the tests named so, leaves it to the other runs.)
TEST_CASE("OpenMP workers each training its chunks of a batch on a copy of the model give one worker's model to the bit",
          "[optim][distributed]") {
  constexpr const char* kResidual =
      "conv2d(8, 3, padding=same) batchnorm relu residual(conv2d(8, 3, padding=same) batchnorm relu conv2d(8, 3, padding=same) "
      "batchnorm) relu zeropadding2d(1) residual(conv2d(8, 3, stride=2, padding=same) batchnorm relu conv2d(8, 3, padding=same) "
      "batchnorm, shortcut=conv2d(8, 1, stride=2) batchnorm) relu globalaveragepooling2d dense(10)";
  const int saved = num_threads();
  for (const char* spec : {kSpec, kResidual})
    for (bool qat : {false, true}) {
      INFO(spec << (qat ? ", QAT" : ", float"));
      {
        Rng rng(1);
        Sequential model = model_from_spec(spec, {28, 28, 1}, rng);
        if (qat) prepare_qat(model, {.bits = 8, .observer = pytorch_observer()});
        REQUIRE(model.clone() != nullptr);  // else fit() would split each op instead, and this test says nothing
      }
      set_num_threads(1);
      const Trained one = train_rank(nullptr, qat, 35, spec);
      for (int threads : {2, 3}) {
        INFO(threads << " threads");
        set_num_threads(threads);
        const Trained many = train_rank(nullptr, qat, 35, spec);
        CHECK(many.file == one.file);
        CHECK(many.history.back().loss == one.history.back().loss);
        CHECK(many.history.back().accuracy == one.history.back().accuracy);
        CHECK(many.history.back().val_accuracy == one.history.back().val_accuracy);
      }
      // Uneven splits (a batch of 9 chunks as 1 + 8, 7 + 2, 1 + 1 + 7): the same bits.
      for (const std::vector<double>& weights : {std::vector<double>{1, 100}, std::vector<double>{3, 1}, std::vector<double>{1, 1, 9}}) {
        INFO(weights.size() << " threads weighted " << weights[0] << ", " << weights[1]);
        set_num_threads(static_cast<int>(weights.size()));
        const Trained uneven = train_rank(nullptr, qat, 35, spec, true, weights);
        CHECK(uneven.file == one.file);
        CHECK(uneven.history.back().loss == one.history.back().loss);
        CHECK(uneven.history.back().accuracy == one.history.back().accuracy);
      }
      set_num_threads(2);
      CHECK(train_rank(nullptr, qat, 35, spec, /*split_batch=*/false).file == one.file);  // each op split instead
      CHECK_THROWS_AS(train_rank(nullptr, qat, 35, spec, true, {1, 2, 3}), std::invalid_argument);  // 3 weights, 2 threads
    }
  set_num_threads(saved);
}
