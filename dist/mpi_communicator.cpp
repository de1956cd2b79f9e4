#include "dist/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

namespace qnet {

namespace {
void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) throw std::runtime_error(fmt::format("MPI: {} failed (error {})", what, rc));
}
int as_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX) throw std::runtime_error(fmt::format("MPI: {} of {} elements (expected at most {})", what, v, INT_MAX));
  return static_cast<int>(v);
}
}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) throw std::logic_error("MpiCommunicator: MPI_Init has not been called");
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

void MpiCommunicator::gather(const void* local, const std::vector<int64_t>& counts, void* all, MPI_Datatype type, int64_t size) {
  if (static_cast<int>(counts.size()) != size_)
    throw std::invalid_argument(fmt::format("allgather: {} counts for {} ranks", counts.size(), size_));
  std::vector<int> n(size_), at(size_);
  int64_t offset = 0;
  for (int r = 0; r < size_; ++r) {
    n[r] = as_int(counts[r], "an allgather part"), at[r] = as_int(offset, "an allgather");
    offset += counts[r];
  }
  check(MPI_Allgatherv(local, n[rank_], type, all, n.data(), at.data(), type, comm_), "MPI_Allgatherv");
  bytes_sent_ += counts[rank_] * size * (size_ - 1);  // this rank's part, to every other rank
}

void MpiCommunicator::allgather(const float* local, const std::vector<int64_t>& counts, float* all) {
  gather(local, counts, all, MPI_FLOAT, sizeof(float));
}

void MpiCommunicator::allgather(const double* local, const std::vector<int64_t>& counts, double* all) {
  gather(local, counts, all, MPI_DOUBLE, sizeof(double));
}

void MpiCommunicator::allreduce_min(float* values, int64_t n) {
  check(MPI_Allreduce(MPI_IN_PLACE, values, as_int(n, "an allreduce"), MPI_FLOAT, MPI_MIN, comm_), "MPI_Allreduce");
  bytes_sent_ += n * static_cast<int64_t>(sizeof(float));
}

void MpiCommunicator::allreduce_max(float* values, int64_t n) {
  check(MPI_Allreduce(MPI_IN_PLACE, values, as_int(n, "an allreduce"), MPI_FLOAT, MPI_MAX, comm_), "MPI_Allreduce");
  bytes_sent_ += n * static_cast<int64_t>(sizeof(float));
}

void MpiCommunicator::allreduce_sum(int64_t* values, int64_t n) {
  check(MPI_Allreduce(MPI_IN_PLACE, values, as_int(n, "an allreduce"), MPI_INT64_T, MPI_SUM, comm_), "MPI_Allreduce");
  bytes_sent_ += n * static_cast<int64_t>(sizeof(int64_t));
}

void MpiCommunicator::ordered_sum(const float* local, const std::vector<int64_t>& chunks, int64_t width, float* out) {
  if (static_cast<int>(chunks.size()) != size_ || chunks[rank_] < 1)
    throw std::invalid_argument(fmt::format("ordered_sum: {} chunk counts for {} ranks, {} on this rank (expected >= 1)", chunks.size(),
                                            size_, chunks[rank_]));
  constexpr int64_t kSegment = 4096;  // floats per message: 16 KB
  const int64_t mine = chunks[rank_];
  for (int64_t at = 0; at < width; at += kSegment) {
    const int n = as_int(std::min(kSegment, width - at), "an ordered sum segment");
    float* acc = out + at;
    int64_t c = 0;
    if (rank_ == 0) {
      std::copy(local + at, local + at + n, acc), c = 1;  // the first chunk starts the sum, as on one process
    } else {
      check(MPI_Recv(acc, n, MPI_FLOAT, rank_ - 1, 0, comm_, MPI_STATUS_IGNORE), "MPI_Recv");
    }
    for (; c < mine; ++c)
      for (int i = 0; i < n; ++i) acc[i] += local[c * width + at + i];
    if (rank_ + 1 < size_) {
      check(MPI_Send(acc, n, MPI_FLOAT, rank_ + 1, 0, comm_), "MPI_Send");
      bytes_sent_ += n * static_cast<int64_t>(sizeof(float));
    }
  }
  check(MPI_Bcast(out, as_int(width, "an ordered sum"), MPI_FLOAT, size_ - 1, comm_), "MPI_Bcast");
  if (rank_ == size_ - 1) bytes_sent_ += width * static_cast<int64_t>(sizeof(float));
}

}  // namespace qnet
