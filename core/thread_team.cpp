#include "core/thread_team.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

namespace qnet {

class ThreadTeam::Rank : public Communicator {
 public:
  Rank(ThreadTeam& team, int rank) : team_(team), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return team_.size_; }
  void allgather(const float* local, const std::vector<int64_t>& counts, float* all) override { gather(local, counts, all); }
  void allgather(const double* local, const std::vector<int64_t>& counts, double* all) override { gather(local, counts, all); }
  void allreduce_min(float* values, int64_t n) override {
    reduce(values, n, [](float a, float b) { return std::min(a, b); });
  }
  void allreduce_max(float* values, int64_t n) override {
    reduce(values, n, [](float a, float b) { return std::max(a, b); });
  }
  void allreduce_sum(int64_t* values, int64_t n) override {
    reduce(values, n, [](int64_t a, int64_t b) { return a + b; });
  }

  const void* const* share_operands(const void* mine) override {
    team_.in_[rank_] = mine;
    team_.barrier(rank_);
    return team_.in_.data();
  }
  void done_with_operands() override { team_.barrier(rank_); }

  // Each rank adds one segment of the width, every chunk in order (the additions
  // Communicator::ordered_sum makes), and writes it into every rank's out.
  void ordered_sum(const float* local, const std::vector<int64_t>& chunks, int64_t width, float* out) override {
    const int ranks = team_.size_;
    team_.in_[rank_] = local, team_.out_[rank_] = out;
    team_.barrier(rank_);
    const int64_t begin = width * rank_ / ranks, end = width * (rank_ + 1) / ranks;
    bool first = true;
    for (int q = 0; q < ranks; ++q) {
      const float* partials = static_cast<const float*>(team_.in_[q]);
      for (int64_t c = 0; c < chunks[q]; ++c, first = false) {
        const float* p = partials + c * width;
        if (first)
          for (int64_t i = begin; i < end; ++i) out[i] = p[i];
        else
          for (int64_t i = begin; i < end; ++i) out[i] += p[i];
      }
    }
    for (int q = 0; q < ranks; ++q)
      if (q != rank_ && end > begin) std::memcpy(static_cast<float*>(team_.out_[q]) + begin, out + begin, (end - begin) * sizeof(float));
    team_.barrier(rank_);
  }

 private:
  template <typename T>
  void gather(const T* local, const std::vector<int64_t>& counts, T* all) {
    team_.in_[rank_] = local;
    team_.barrier(rank_);
    for (int64_t q = 0, at = 0; q < team_.size_; at += counts[q], ++q)
      std::copy_n(static_cast<const T*>(team_.in_[q]), counts[q], all + at);
    team_.barrier(rank_);
  }
  // A few values (an observer's min and max) go through the team's slots: one barrier, not two.
  // Calls alternate between two slots, so a rank writes the slot of its call k + 2 only after the
  // barrier of call k + 1, which every rank reaches after reading call k's.
  template <typename T, typename F>
  void reduce(T* values, int64_t n, F op) {
    if (n * static_cast<int64_t>(sizeof(T)) <= kSlotBytes) {
      const int parity = static_cast<int>(small_calls_++ & 1);
      if (n > 0) std::memcpy(team_.slots_[rank_].bytes[parity], values, n * sizeof(T));  // values may be null then
      team_.barrier(rank_);
      for (int q = 0; q < team_.size_; ++q)
        if (q != rank_)
          for (int64_t i = 0; i < n; ++i) {
            T other;
            std::memcpy(&other, team_.slots_[q].bytes[parity] + i * sizeof(T), sizeof(T));
            values[i] = op(values[i], other);
          }
      return;
    }
    std::vector<T> result(values, values + n);
    team_.in_[rank_] = values;
    team_.barrier(rank_);
    for (int q = 0; q < team_.size_; ++q)
      if (q != rank_)
        for (int64_t i = 0; i < n; ++i) result[i] = op(result[i], static_cast<const T*>(team_.in_[q])[i]);
    team_.barrier(rank_);  // every rank has read the others' values: each may now overwrite its own
    std::copy(result.begin(), result.end(), values);
  }

  ThreadTeam& team_;
  int rank_;
  uint64_t small_calls_ = 0;
};

ThreadTeam::ThreadTeam(int size) : size_(size), in_(size), out_(size), slots_(size), waited_(size) {
  if (size < 1) throw std::invalid_argument("ThreadTeam: fewer than 1 thread");
  for (int r = 0; r < size; ++r) ranks_.push_back(std::make_unique<Rank>(*this, r));
}

ThreadTeam::~ThreadTeam() = default;

Communicator& ThreadTeam::rank(int r) { return *ranks_.at(r); }

// A sense-reversing barrier: spins briefly (a collective's partner is usually a few microseconds
// away), then yields the core, so that more threads than cores still make progress.
void ThreadTeam::barrier(int rank) {
  if (aborted()) throw TeamAborted();
  const unsigned generation = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == size_) {
    arrived_.store(0, std::memory_order_relaxed);
    generation_.store(generation + 1, std::memory_order_release);
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
    if (aborted()) throw TeamAborted();
    if (spins < 4000)
      _mm_pause();
    else
      std::this_thread::yield();
  }
  waited_[rank].seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace qnet
