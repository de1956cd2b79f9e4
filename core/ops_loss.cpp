// Softmax cross-entropy fused with its gradient, stable for any finite logits:
// log softmax(z)_k = z_k - m - log(sum_j exp(z_j - m)) with m = max_j z_j.
#include <cmath>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "core/distributed.h"
#include "core/ops.h"

namespace qnet {

Variable softmax_cross_entropy(const Variable& logits, std::span<const int32_t> labels) {
  const Tensor& z = logits.value();
  if (z.rank() != 2 || z.dim(0) != static_cast<int64_t>(labels.size()) || z.dim(0) == 0)
    throw std::invalid_argument(fmt::format("softmax_cross_entropy: logits {} with {} labels (expected [N, K], N labels, N > 0)",
                                            shape_str(z.shape()), labels.size()));
  const int64_t N = z.dim(0), K = z.dim(1);
  Tensor probs({N, K});  // kept for the backward: dL/dz = (softmax(z) - onehot) / N
  std::vector<int32_t> label_copy(labels.begin(), labels.end());
  std::vector<double> row_loss(N);
  for (int64_t n = 0; n < N; ++n) {
    const int32_t label = labels[n];
    if (label < 0 || label >= K)
      throw std::invalid_argument(fmt::format("softmax_cross_entropy: label {} at row {} (expected 0..{})", label, n, K - 1));
    const float* row = z.data() + n * K;
    float m = row[0];
    for (int64_t k = 1; k < K; ++k) m = std::max(m, row[k]);
    double s = 0;
    for (int64_t k = 0; k < K; ++k) s += std::exp(static_cast<double>(row[k] - m));
    const double log_s = std::log(s);
    for (int64_t k = 0; k < K; ++k) probs[n * K + k] = static_cast<float>(std::exp(row[k] - m - log_s));
    row_loss[n] = log_s - (row[label] - m);
  }
  // On several processes (core/distributed.h) the mean over every rank's rows, added in row order.
  const StepContext* step = sharded_step();
  const int64_t all = step ? step->shard.global : N;
  if (step) {
    std::vector<int64_t> counts(step->comm->size());
    for (int r = 0; r < step->comm->size(); ++r) counts[r] = step->images_of(r);
    std::vector<double> every(all);
    step->comm->allgather(row_loss.data(), counts, every.data());
    row_loss.swap(every);
  }
  double total = 0;
  for (double l : row_loss) total += l;
  Tensor loss = Tensor::full({1}, static_cast<float>(total / all));
  return make_result(std::move(loss), {logits}, [logits, probs, label_copy, N, K, all](Node& self) {
    Tensor g(logits.shape());
    const float scale = self.grad[0] / static_cast<float>(all);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) g[n * K + k] = (probs[n * K + k] - (k == label_copy[n] ? 1.f : 0.f)) * scale;
    logits.add_grad(std::move(g));
  });
}

}  // namespace qnet
