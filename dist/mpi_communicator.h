// qnet's Communicator (core/distributed.h) on MPI: data-parallel training across processes.
// Built when CMake finds MPI (Debian: libopenmpi-dev), as the library qnet_mpi.
//
//   MPI_Init(&argc, &argv);                 // or let MpiCommunicator's owner do it
//   qnet::MpiCommunicator comm(MPI_COMM_WORLD);
//   FitOptions fo;  fo.communicator = &comm;  fit(model, adam, train, val, fo, rng);
//
// Each rank builds the same model from the same seed and reads the same data; fit() gives each
// rank its chunks of every batch. Only the gathers and min/max/sum reductions go over MPI.
#pragma once

#include <mpi.h>

#include "core/distributed.h"

namespace qnet {

class MpiCommunicator : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allgather(const float* local, const std::vector<int64_t>& counts, float* all) override;
  void allgather(const double* local, const std::vector<int64_t>& counts, double* all) override;
  void allreduce_min(float* values, int64_t n) override;
  void allreduce_max(float* values, int64_t n) override;
  void allreduce_sum(int64_t* values, int64_t n) override;
  // The running sum goes from rank 0 to rank N-1 (each adds its chunks in order), in segments so
  // that the ranks work at once on different segments, then rank N-1 broadcasts the total: about
  // two vectors of traffic per rank, as a ring allreduce, and N - 1 hops of latency.
  void ordered_sum(const float* local, const std::vector<int64_t>& chunks, int64_t width, float* out) override;

  // Bytes this rank sent to other ranks so far (its part of an allgather counted once per
  // receiver; a reduction's vector once).
  int64_t bytes_sent() const override { return bytes_sent_; }

 private:
  void gather(const void* local, const std::vector<int64_t>& counts, void* all, MPI_Datatype type, int64_t size);
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  int64_t bytes_sent_ = 0;
};

}  // namespace qnet
