// Per-channel ops on the last axis: mul_channels and batch normalization with batch statistics.
// The sums are per-ISA kernels (core/kernels/channel.cpp) over fixed chunks of rows, so the
// results do not depend on the thread count.
#include <cmath>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "core/distributed.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace qnet {

namespace {

// Rows per partial sum: kReductionChunk leading-axis entries (images) of the tensor.
int64_t chunk_rows(const Shape& shape) {
  const int64_t rows_per_item = shape.empty() || shape[0] == 0 ? 1 : shape_numel(shape) / shape[0] / shape.back();
  return kReductionChunk * std::max<int64_t>(rows_per_item, 1);
}

void check_channels(const char* op, const Variable& x, const Variable& v, const char* what) {
  if (x.value().rank() < 1 || v.value().rank() != 1 || x.shape().back() != v.shape()[0] || x.shape().back() < 1)
    throw std::invalid_argument(fmt::format("{}: input {} and {} {} (expected {} [C] with C = the last input axis)", op,
                                            shape_str(x.shape()), what, shape_str(v.shape()), what));
}

}  // namespace

Variable mul_channels(const Variable& x, const Variable& scale) {
  check_channels("mul_channels", x, scale, "scale");
  const int64_t C = scale.value().numel(), rows = x.value().numel() / C;
  Tensor y(x.shape());
  kernels().channel_affine(rows, C, x.value().data(), nullptr, scale.value().data(), nullptr, y.data());
  return make_result(std::move(y), {x, scale}, [x, scale, rows, C](Node& self) {
    if (x.requires_grad()) {
      Tensor g(x.shape());
      kernels().channel_affine(rows, C, self.grad.data(), nullptr, scale.value().data(), nullptr, g.data());
      x.add_grad(std::move(g));
    }
    if (scale.requires_grad()) {  // qnet scales kernels with it (BN folding): a sum on this process
      Tensor g({C});
      kernels().channel_dot_dev(rows, C, chunk_rows(x.shape()), self.grad.data(), x.value().data(), nullptr, g.data());
      scale.add_grad(std::move(g));
    }
  });
}

// Forward (M = rows per channel): mean = sum x / M, var = sum (x - mean)^2 / M,
// y = (x - mean) * r * gamma + beta with r = 1 / sqrt(var + eps).
// Backward, with S1 = sum dy and S2 = sum dy (x - mean): dbeta = S1, dgamma = r S2 and
// dx = gamma r dy - gamma r^3 S2 / M (x - mean) - gamma r S1 / M.
Variable batch_norm_train(const Variable& x, const Variable& gamma, const Variable& beta, float epsilon, MovingStatistics* moving) {
  check_channels("batch_norm", x, gamma, "gamma");
  check_channels("batch_norm", x, beta, "beta");
  if (!(epsilon > 0.f)) throw std::invalid_argument(fmt::format("batch_norm: epsilon {} (expected > 0)", epsilon));
  const int64_t C = gamma.value().numel(), rows = x.value().numel() / C;
  if (rows < 1) throw std::invalid_argument(fmt::format("batch_norm: input {} has no rows to take statistics of", shape_str(x.shape())));
  if (moving && (moving->mean.numel() != C || moving->var.numel() != C))
    throw std::invalid_argument(fmt::format("batch_norm: moving statistics of {} and {} channels (expected {})", moving->mean.numel(),
                                            moving->var.numel(), C));
  const Kernels& k = kernels();
  const int64_t all_rows = batch_rows(x.shape());  // on several processes, every rank's (core/distributed.h)
  const float M = static_cast<float>(all_rows);
  const float* xv = x.value().data();
  Tensor mean({C}), var({C}), r({C}), scale({C});
  batch_channel_sum(x.shape(), [&](int64_t r0, int64_t n, int64_t ch, float* d) { k.channel_sum(n, C, ch, xv + r0 * C, d); }, mean.data());
  for (int64_t c = 0; c < C; ++c) mean[c] /= M;
  batch_channel_sum(
      x.shape(), [&](int64_t r0, int64_t n, int64_t ch, float* d) { k.channel_sq_dev(n, C, ch, xv + r0 * C, mean.data(), d); },
      var.data());
  for (int64_t c = 0; c < C; ++c) {
    var[c] /= M;
    r[c] = 1.f / std::sqrt(var[c] + epsilon);
    scale[c] = r[c] * gamma.value()[c];
  }
  Tensor y(x.shape());
  k.channel_affine(rows, C, x.value().data(), mean.data(), scale.data(), beta.value().data(), y.data());
  if (moving) {
    const float a = moving->momentum, unbiased = all_rows > 1 ? M / (M - 1.f) : 1.f;
    for (int64_t c = 0; c < C; ++c) {
      moving->mean[c] = a * moving->mean[c] + (1.f - a) * mean[c];
      moving->var[c] = a * moving->var[c] + (1.f - a) * var[c] * unbiased;
    }
  }
  return make_result(std::move(y), {x, gamma, beta}, [x, gamma, beta, mean, r, scale, rows, C, M](Node& self) {
    const Kernels& k = kernels();
    const float *dy = self.grad.data(), *xv = x.value().data();
    Tensor s1({C}), s2({C});
    batch_channel_sum(x.shape(), [&](int64_t r0, int64_t n, int64_t ch, float* d) { k.channel_sum(n, C, ch, dy + r0 * C, d); }, s1.data());
    const auto dot_dev = [&](int64_t r0, int64_t n, int64_t ch, float* d) {
      k.channel_dot_dev(n, C, ch, dy + r0 * C, xv + r0 * C, mean.data(), d);
    };
    batch_channel_sum(x.shape(), dot_dev, s2.data());
    if (beta.requires_grad()) beta.add_grad(s1.clone());
    if (gamma.requires_grad()) {
      Tensor g({C});
      for (int64_t c = 0; c < C; ++c) g[c] = r[c] * s2[c];
      gamma.add_grad(std::move(g));
    }
    if (x.requires_grad()) {
      Tensor a({C}), shift({C}), g(x.shape());
      for (int64_t c = 0; c < C; ++c) {
        a[c] = -scale[c] * r[c] * r[c] * s2[c] / M;  // on (x - mean)
        shift[c] = -scale[c] * s1[c] / M;
      }
      k.channel_affine2(rows, C, x.value().data(), mean.data(), a.data(), self.grad.data(), scale.data(), shift.data(), g.data());
      x.add_grad(std::move(g));
    }
  });
}

Variable batch_norm_fixed(const Variable& x, const Variable& gamma, const Variable& beta, const Tensor& mean, const Tensor& var,
                          float epsilon) {
  check_channels("batch_norm", x, gamma, "gamma");
  check_channels("batch_norm", x, beta, "beta");
  const int64_t C = gamma.value().numel(), rows = x.value().numel() / C;
  if (mean.numel() != C || var.numel() != C)
    throw std::invalid_argument(fmt::format("batch_norm: statistics of {} and {} channels (expected {})", mean.numel(), var.numel(), C));
  Tensor r({C}), scale({C});
  for (int64_t c = 0; c < C; ++c) {
    r[c] = 1.f / std::sqrt(var[c] + epsilon);
    scale[c] = r[c] * gamma.value()[c];
  }
  Tensor y(x.shape());
  kernels().channel_affine(rows, C, x.value().data(), mean.data(), scale.data(), beta.value().data(), y.data());
  // The statistics as they are now (moving ones may move before the backward runs).
  return make_result(std::move(y), {x, gamma, beta}, [x, gamma, beta, mean = mean.clone(), r, scale, rows, C](Node& self) {
    const Kernels& k = kernels();
    const float *dy = self.grad.data(), *xv = x.value().data();
    if (beta.requires_grad()) {
      Tensor g({C});
      batch_channel_sum(x.shape(), [&](int64_t r0, int64_t n, int64_t ch, float* d) { k.channel_sum(n, C, ch, dy + r0 * C, d); }, g.data());
      beta.add_grad(std::move(g));
    }
    if (gamma.requires_grad()) {
      Tensor g({C});
      const auto dot_dev = [&](int64_t r0, int64_t n, int64_t ch, float* d) {
        k.channel_dot_dev(n, C, ch, dy + r0 * C, xv + r0 * C, mean.data(), d);
      };
      batch_channel_sum(x.shape(), dot_dev, g.data());
      for (int64_t c = 0; c < C; ++c) g[c] *= r[c];
      gamma.add_grad(std::move(g));
    }
    if (x.requires_grad()) {
      Tensor g(x.shape());
      k.channel_affine(rows, C, self.grad.data(), nullptr, scale.data(), nullptr, g.data());
      x.add_grad(std::move(g));
    }
  });
}

}  // namespace qnet
