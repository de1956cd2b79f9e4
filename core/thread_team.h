// The threads of one process as the ranks of data-parallel training (optim/trainer.cpp): each
// thread runs its chunks of every batch through a copy of the model, and the per-chunk partial
// sums meet here, added in chunk order as on one thread or across MPI processes (core/distributed.h).
// One fork and join per step instead of one per op.
//
//   ThreadTeam team(2);
//   #pragma omp parallel num_threads(2)
//   { ShardedStep step(team.rank(omp_get_thread_num()), shard); ... }
//
// Every rank calls the same collectives in the same order. If one rank fails, abort() makes every
// collective, waiting or to come, throw TeamAborted, so the others leave instead of waiting forever.
#pragma once

#include <atomic>
#include <memory>
#include <stdexcept>
#include <vector>

#include "core/distributed.h"

namespace qnet {

class TeamAborted : public std::runtime_error {
 public:
  TeamAborted() : std::runtime_error("another thread of the team failed") {}
};

class ThreadTeam {
 public:
  explicit ThreadTeam(int size);
  ~ThreadTeam();
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;
  int size() const { return size_; }
  Communicator& rank(int r);
  void abort() { aborted_.store(true, std::memory_order_release); }
  bool aborted() const { return aborted_.load(std::memory_order_acquire); }
  // Seconds rank r has spent waiting in the collectives for the other ranks so far (its idle time:
  // the trainer gives a rank that waits less, the slower one, fewer images).
  double waited(int r) const { return waited_.at(r).seconds; }

 private:
  class Rank;
  friend class Rank;
  void barrier(int rank);  // every rank arrives before any leaves; throws TeamAborted once aborted

  int size_;
  std::vector<std::unique_ptr<Rank>> ranks_;
  std::vector<const void*> in_;  // what each rank publishes for the collective in progress
  std::vector<void*> out_;
  static constexpr int64_t kSlotBytes = 32;
  struct alignas(64) Slot {
    unsigned char bytes[2][kSlotBytes];  // a small reduction's values, by call parity (Rank::reduce)
  };
  std::vector<Slot> slots_;
  struct alignas(64) Waited {
    double seconds = 0;  // written by its rank only
  };
  std::vector<Waited> waited_;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<unsigned> generation_{0};
  std::atomic<bool> aborted_{false};
};

}  // namespace qnet
