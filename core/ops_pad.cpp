// zero_pad2d on NHWC: each input row is one contiguous run of W*C floats in the output, so the
// forward and backward are row copies (not hot: a layer runs it once per batch).
#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "core/ops.h"

namespace qnet {

namespace {

// Calls f(plain, padded) with the offsets of each of the N*H rows of W*C floats in the unpadded
// and the padded image.
template <typename F>
void for_each_row(int64_t N, int64_t H, int64_t W, int64_t C, const Pad2dOptions& p, F&& f) {
  const int64_t PH = H + p.top + p.bottom, PW = W + p.left + p.right;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h) f((n * H + h) * W * C, ((n * PH + p.top + h) * PW + p.left) * C);
}

}  // namespace

Variable zero_pad2d(const Variable& x, const Pad2dOptions& o) {
  const Tensor& in = x.value();
  constexpr int kMax = 1 << 16;
  const auto ok = [](int v) { return v >= 0 && v <= kMax; };
  if (in.rank() != 4 || !ok(o.top) || !ok(o.bottom) || !ok(o.left) || !ok(o.right))
    throw std::invalid_argument(fmt::format("zero_pad2d: input {}, padding top {} bottom {} left {} right {} (expected [N, H, W, C] "
                                            "and paddings in 0..{})",
                                            shape_str(in.shape()), o.top, o.bottom, o.left, o.right, kMax));
  const int64_t N = in.dim(0), H = in.dim(1), W = in.dim(2), C = in.dim(3);
  Tensor out({N, H + o.top + o.bottom, W + o.left + o.right, C});
  std::fill(out.data(), out.data() + out.numel(), 0.f);
  const size_t row = static_cast<size_t>(W * C) * sizeof(float);
  for_each_row(N, H, W, C, o, [&](int64_t plain, int64_t padded) { std::memcpy(out.data() + padded, in.data() + plain, row); });
  return make_result(out, {x}, [x, o](Node& self) {
    const Shape& s = x.shape();
    Tensor g(s);
    const size_t row = static_cast<size_t>(s[2] * s[3]) * sizeof(float);
    for_each_row(s[0], s[1], s[2], s[3], o, [&](int64_t plain, int64_t padded) { std::memcpy(g.data() + plain, self.grad.data() + padded, row); });
    x.add_grad(std::move(g));
  });
}

}  // namespace qnet
