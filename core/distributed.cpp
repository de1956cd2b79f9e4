#include "core/distributed.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "core/kernels.h"
#include "core/parallel_for.h"
#include "core/tensor.h"

namespace qnet {

namespace {
thread_local StepContext* t_step = nullptr;
thread_local StepContext t_storage;

int64_t chunks_of(int64_t images) { return (images + kReductionChunk - 1) / kReductionChunk; }
}  // namespace

BatchShard shard_of(int64_t global, int rank, int ranks) {
  if (ranks < 1 || rank < 0 || rank >= ranks || global < 0) throw std::invalid_argument("shard_of: rank outside 0..ranks-1");
  const int64_t chunks = chunks_of(global);
  const int64_t first = chunks * rank / ranks, last = chunks * (rank + 1) / ranks;
  const int64_t begin = std::min(global, first * kReductionChunk), end = std::min(global, last * kReductionChunk);
  return {global, begin, end - begin};
}

BatchShard shard_of(int64_t global, int rank, std::span<const int64_t> chunks) {
  const int ranks = static_cast<int>(chunks.size());
  if (rank < 0 || rank >= ranks || global < 0) throw std::invalid_argument("shard_of: rank outside 0..ranks-1");
  int64_t total = 0, before = 0;
  for (int r = 0; r < ranks; ++r) {
    if (chunks[r] < 0) throw std::invalid_argument("shard_of: a rank with fewer than 0 chunks");
    if (r == rank) before = total;
    total += chunks[r];
  }
  if (total != chunks_of(global))
    throw std::invalid_argument(fmt::format("shard_of: {} chunks over the ranks (expected the batch's {})", total, chunks_of(global)));
  const int64_t begin = std::min(global, before * kReductionChunk), end = std::min(global, (before + chunks[rank]) * kReductionChunk);
  return {global, begin, end - begin};
}

std::vector<int64_t> balanced_chunks(int64_t chunks, std::span<const double> seconds_per_chunk) {
  const int ranks = static_cast<int>(seconds_per_chunk.size());
  if (ranks < 1 || chunks < 0) throw std::invalid_argument("balanced_chunks: no ranks, or fewer than 0 chunks");
  for (double s : seconds_per_chunk)
    if (!(s > 0) || !std::isfinite(s)) throw std::invalid_argument("balanced_chunks: a pace that is not a positive number");
  std::vector<int64_t> out(ranks, chunks >= ranks ? 1 : 0);
  if (chunks < ranks) {  // the last ranks, as shard_of does
    for (int r = ranks - static_cast<int>(chunks); r < ranks; ++r) out[r] = 1;
    return out;
  }
  // Each further chunk to the rank that would finish it soonest.
  for (int64_t c = ranks; c < chunks; ++c) {
    int best = 0;
    for (int r = 1; r < ranks; ++r)
      if (static_cast<double>(out[r] + 1) * seconds_per_chunk[r] < static_cast<double>(out[best] + 1) * seconds_per_chunk[best]) best = r;
    ++out[best];
  }
  return out;
}

ShardedStep::ShardedStep(Communicator& comm, const BatchShard& shard) {
  if (t_step) throw std::logic_error("ShardedStep: a sharded step is already running on this thread");
  std::vector<int64_t> chunks(comm.size());
  for (int r = 0; r < comm.size(); ++r) chunks[r] = chunks_of(shard_of(shard.global, r, comm.size()).count);
  t_storage = {&comm, shard, std::move(chunks)};
  t_step = &t_storage;
}

ShardedStep::ShardedStep(Communicator& comm, int64_t global, std::vector<int64_t> chunks) {
  if (t_step) throw std::logic_error("ShardedStep: a sharded step is already running on this thread");
  if (static_cast<int>(chunks.size()) != comm.size())
    throw std::invalid_argument(fmt::format("ShardedStep: chunks for {} ranks (expected {})", chunks.size(), comm.size()));
  const BatchShard shard = shard_of(global, comm.rank(), chunks);
  t_storage = {&comm, shard, std::move(chunks)};
  t_step = &t_storage;
}

ShardedStep::~ShardedStep() { t_step = nullptr; }

const StepContext* sharded_step() { return t_step; }

void sum_chunks_across_ranks(int64_t width, const std::function<void(int64_t, int64_t, float*)>& partial, float* out) {
  const StepContext* step = t_step;
  if (!step) throw std::logic_error("sum_chunks_across_ranks: called outside a sharded step");
  const std::vector<int64_t>& chunks = step->chunks;
  const int64_t local_chunks = chunks_of(step->shard.count);
  Tensor local({local_chunks * width});  // every chunk's partial sums, all written below
  parallel_for_dynamic(local_chunks, true, [&](int64_t c) {
    const int64_t first = c * kReductionChunk;
    partial(first, std::min(kReductionChunk, step->shard.count - first), local.data() + c * width);
  });
  step->comm->ordered_sum(local.data(), chunks, width, out);
}

bool matmul_dw_on_shared_ranks(int64_t rows, int64_t K, int64_t M, const float* x, const float* dy, float* out) {
  const StepContext* step = t_step;
  if (!step) throw std::logic_error("matmul_dw_on_shared_ranks: called outside a sharded step");
  const int ranks = step->comm->size(), rank = step->comm->rank();
  if (ranks > kMaxProductParts) return false;
  struct Operands {
    const float *x, *dy;
    int64_t rows;
    float* out;
  };
  const Operands mine{x, dy, rows, out};
  const void* const* all = step->comm->share_operands(&mine);
  if (!all) return false;
  std::vector<const float*> xs(ranks), dys(ranks);
  std::vector<int64_t> counts(ranks);
  for (int q = 0; q < ranks; ++q) {
    const auto* o = static_cast<const Operands*>(all[q]);
    xs[q] = o->x, dys[q] = o->dy, counts[q] = o->rows;
  }
  // Each rank its share of the rows by its share of the batch (which rank computes a row does not
  // change it), so a rank given fewer images for being slower has fewer rows here too.
  int64_t before = 0, total = 0;
  for (int q = 0; q < ranks; ++q) before += q < rank ? step->chunks[q] : 0, total += step->chunks[q];
  const int64_t begin = total ? K * before / total : 0, end = total ? K * (before + step->chunks[rank]) / total : 0;
  kernels().matmul_dw_parts(ranks, counts.data(), xs.data(), dys.data(), K, M, begin, end, out);
  for (int q = 0; q < ranks; ++q)
    if (q != rank && end > begin) std::copy(out + begin * M, out + end * M, static_cast<const Operands*>(all[q])->out + begin * M);
  step->comm->done_with_operands();
  return true;
}

void Communicator::ordered_sum(const float* local, const std::vector<int64_t>& chunks, int64_t width, float* out) {
  int64_t total = 0;
  std::vector<int64_t> counts(chunks.size());
  for (size_t r = 0; r < chunks.size(); ++r) counts[r] = chunks[r] * width, total += chunks[r];
  std::vector<float> all(total * width);
  allgather(local, counts, all.data());
  for (int64_t i = 0; i < width; ++i) out[i] = all[i];
  for (int64_t c = 1; c < total; ++c)
    for (int64_t i = 0; i < width; ++i) out[i] += all[c * width + i];
}

namespace {
int64_t rows_per_image(const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  return shape.empty() || shape[0] == 0 || shape.back() == 0 ? 1 : std::max<int64_t>(numel / shape[0] / shape.back(), 1);
}
}  // namespace

void batch_channel_sum(const std::vector<int64_t>& shape, const std::function<void(int64_t, int64_t, int64_t, float*)>& sum,
                       float* out) {
  const int64_t per_image = rows_per_image(shape), chunk = kReductionChunk * per_image;
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (!t_step) return sum(0, shape.empty() || shape.back() == 0 ? 0 : numel / shape.back(), chunk, out);
  sum_chunks_across_ranks(
      shape.back(), [&](int64_t first, int64_t images, float* dst) { sum(first * per_image, images * per_image, chunk, dst); }, out);
}

int64_t batch_rows(const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (!t_step) return shape.empty() || shape.back() == 0 ? 0 : numel / shape.back();
  return t_step->shard.global * rows_per_image(shape);
}

DrawRange draw_range(int64_t per_image, int64_t local_elements) {
  const StepContext* step = t_step;
  if (!step) return {0, local_elements};
  return {step->shard.begin * per_image, step->shard.global * per_image};
}

}  // namespace qnet
