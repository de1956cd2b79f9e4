// Data-parallel training across processes, with the same weights on any number of them.
//
//   qnet::MpiCommunicator comm;                 // dist/mpi_communicator.h (built when MPI is found)
//   FitOptions fo{...};  fo.communicator = &comm;  fit(...)   // optim/trainer.h
//
// Why the weights come out bit-identical for 1, 2 or 4 processes: every sum over the batch
// (kernel gradients, biases, BatchNorm's statistics, the loss) is made of partial sums over
// fixed chunks of kReductionChunk images (core/kernels.h), added in chunk order. That is what makes
// a result independent of the thread count, and it makes it independent of the process count too:
// each rank holds whole chunks of every global batch (its shard, BatchShard), computes those
// chunks' partial sums, and these are added across ranks in chunk order exactly as one process
// adds them (Communicator::ordered_sum: on MPI a running sum passed from rank to rank). A plain
// MPI_Allreduce would add in an order that depends on the number of processes.
//
// The ops find the step's shard through sharded_step(): fit() sets it (ShardedStep) around each
// step's forward and backward. Outside such a step, or on one process, every op runs as before.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace qnet {

// The collectives data-parallel training needs; an MPI one is in dist/ (qnet_mpi), and tests may
// use any other. Every rank calls the same collectives in the same order.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // all = every rank's `counts[r]` floats, concatenated in rank order (counts known to all ranks).
  virtual void allgather(const float* local, const std::vector<int64_t>& counts, float* all) = 0;
  virtual void allgather(const double* local, const std::vector<int64_t>& counts, double* all) = 0;
  // values[i] = the smallest (largest) values[i] of all ranks.
  virtual void allreduce_min(float* values, int64_t n) = 0;
  virtual void allreduce_max(float* values, int64_t n) = 0;
  virtual void allreduce_sum(int64_t* values, int64_t n) = 0;  // integers: exact in any order
  // out[0..width) = every rank's partial sums added one after another, in rank order and each
  // rank's chunks in order, starting from the first (local: this rank's chunks[rank] x width
  // floats; every rank has at least one chunk). The default gathers all partials on every rank
  // (allgather); MPI passes a running sum along the ranks instead (dist/mpi_communicator.h),
  // the same additions with a vector's worth of traffic per rank.
  virtual void ordered_sum(const float* local, const std::vector<int64_t>& chunks, int64_t width, float* out);
  // Bytes this rank has sent to others so far (0 if the communicator does not count them).
  virtual int64_t bytes_sent() const { return 0; }
  // Ranks that are threads of one process (core/thread_team.h) can read each other's memory, so
  // a rank may compute its share of a sum from every rank's operands instead of exchanging
  // partial sums. share_operands(mine) returns every rank's `mine`, in rank order, once all have
  // given theirs; they stay valid until every rank has called done_with_operands(). Null (and no
  // done_with_operands to call) where ranks do not share memory, as on MPI.
  virtual const void* const* share_operands(const void* /*mine*/) { return nullptr; }
  virtual void done_with_operands() {}
};

// One rank's part of a global batch: images [begin, begin + count) of `global` images. begin is
// a multiple of kReductionChunk, so each rank holds whole chunks.
struct BatchShard {
  int64_t global = 0, begin = 0, count = 0;
};

// The chunks of a batch of `global` images split as evenly as they go over `ranks` ranks, in rank
// order; empty shards (count 0) when the batch has fewer chunks than ranks.
BatchShard shard_of(int64_t global, int rank, int ranks);
// Rank `rank`'s shard when rank r holds chunks[r] chunks of the batch, in rank order (they add up
// to the batch's chunks; a rank may hold none only if the batch has fewer chunks than ranks).
BatchShard shard_of(int64_t global, int rank, std::span<const int64_t> chunks);

// The batch's `chunks` chunks over the ranks so that the slowest finishes first: rank r takes
// seconds_per_chunk[r] for each (its measured pace; any positive scale), and every rank gets at
// least one chunk when there are enough. Ties go to the lower rank: equal paces give an even split,
// the extra chunks on the first ranks (shard_of puts them on the last). Which rank sums which
// chunk never changes a sum (each is added in chunk order), so any split gives the same bits.
std::vector<int64_t> balanced_chunks(int64_t chunks, std::span<const double> seconds_per_chunk);

// Set for the duration of one training step's forward and backward on several ranks (nested
// steps are refused). Thread-local: each thread of a process may run its own step.
class ShardedStep {
 public:
  ShardedStep(Communicator& comm, const BatchShard& shard);  // every rank's shard as shard_of gives it
  // Rank r holds chunks[r] chunks of the batch of `global` images (balanced_chunks).
  ShardedStep(Communicator& comm, int64_t global, std::vector<int64_t> chunks);
  ~ShardedStep();
  ShardedStep(const ShardedStep&) = delete;
  ShardedStep& operator=(const ShardedStep&) = delete;
};

struct StepContext {
  Communicator* comm;
  BatchShard shard;             // this rank's
  std::vector<int64_t> chunks;  // every rank's chunks of the batch, in rank order
  int64_t images_of(int rank) const { return shard_of(shard.global, rank, chunks).count; }
};
const StepContext* sharded_step();  // null on one process and outside a step

// out[0..width) = the sum over the global batch's chunks, in chunk order, of each chunk's partial
// sums. partial(first, images, dst) writes the partial sums of this rank's images
// [first, first + images) (one chunk, local indices) into dst[0..width). Chunks run in parallel
// on the process's threads. Call only inside a sharded step.
void sum_chunks_across_ranks(int64_t width, const std::function<void(int64_t first, int64_t images, float* dst)>& partial,
                             float* out);

// A product's weight gradient out[K, M] = x^T dy summed over every rank's rows (x [rows, K] and
// dy [rows, M] this rank's), as sum_chunks_across_ranks would give it from Kernels::matmul_dw's
// partial sums, when the ranks share memory: each rank computes a share of out's K rows over
// all ranks' rows in chunk order (Kernels::matmul_dw_parts) and writes it into every rank's out.
// No partial sums are written or exchanged. False, with nothing done, where ranks do not share
// memory. Call only inside a sharded step.
bool matmul_dw_on_shared_ranks(int64_t rows, int64_t K, int64_t M, const float* x, const float* dy, float* out);

// Per-channel sums over the rows of a batch tensor [N, ..., C] (rows = N * ... ), in chunks of
// kReductionChunk images: sum(row0, rows, chunk_rows, dst) writes dst[0..C) = the sums of rows
// [row0, row0 + rows) in chunks of chunk_rows rows added in order (a channel kernel). On one
// process one call over all rows; in a sharded step one per chunk, then across ranks.
void batch_channel_sum(const std::vector<int64_t>& shape,
                       const std::function<void(int64_t row0, int64_t rows, int64_t chunk_rows, float* dst)>& sum, float* out);
// The rows of the whole batch such a tensor is part of (in a sharded step: every rank's).
int64_t batch_rows(const std::vector<int64_t>& shape);

// Dropout and noise draw their random numbers for the whole global batch, so every process count
// draws the same ones: the elements of this rank's images are [offset, offset + count) of
// `total` (per_image elements per image). Outside a sharded step: offset 0, total = count.
struct DrawRange {
  int64_t offset, total;
};
DrawRange draw_range(int64_t per_image, int64_t local_elements);

}  // namespace qnet
