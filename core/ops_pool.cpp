// max_pool2d on NHWC. The forward records, for each output, the input index of the first
// maximum in its window (row-major window order); the backward routes the gradient there.
#include <limits>
#include <memory>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "core/ops.h"

namespace qnet {

Variable max_pool2d(const Variable& x, const Pool2dOptions& o) {
  const Tensor& in = x.value();
  const int SH = o.stride_h ? o.stride_h : o.window_h, SW = o.stride_w ? o.stride_w : o.window_w;
  if (in.rank() != 4 || o.window_h < 1 || o.window_w < 1 || SH < 1 || SW < 1)
    throw std::invalid_argument(fmt::format("max_pool2d: input {}, window {}x{}, stride {}x{} (expected [N, H, W, C], "
                                            "window and stride >= 1)",
                                            shape_str(in.shape()), o.window_h, o.window_w, SH, SW));
  const int64_t N = in.dim(0), H = in.dim(1), W = in.dim(2), C = in.dim(3);
  const AxisGeometry gh = axis_geometry(H, o.window_h, SH, o.padding);
  const AxisGeometry gw = axis_geometry(W, o.window_w, SW, o.padding);
  const int64_t OH = gh.out, OW = gw.out;
  if (OH <= 0 || OW <= 0)
    throw std::invalid_argument(fmt::format("max_pool2d: window {}x{} does not fit input {}", o.window_h, o.window_w,
                                            shape_str(in.shape())));
  Tensor out({N, OH, OW, C});
  auto argmax = std::make_shared<std::vector<int32_t>>(out.numel());
  const float* src = in.data();
  float* dst = out.data();
  int32_t* arg = argmax->data();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t o_base = ((n * OH + oh) * OW + ow) * C;
        for (int64_t c = 0; c < C; ++c) dst[o_base + c] = -std::numeric_limits<float>::infinity(), arg[o_base + c] = -1;
        for (int64_t kh = 0; kh < o.window_h; ++kh) {
          const int64_t ih = oh * SH - gh.pad_before + kh;
          if (ih < 0 || ih >= H) continue;
          for (int64_t kw = 0; kw < o.window_w; ++kw) {
            const int64_t iw = ow * SW - gw.pad_before + kw;
            if (iw < 0 || iw >= W) continue;
            const int64_t i_base = ((n * H + ih) * W + iw) * C;
            for (int64_t c = 0; c < C; ++c)
              if (src[i_base + c] > dst[o_base + c] || arg[o_base + c] < 0)
                dst[o_base + c] = src[i_base + c], arg[o_base + c] = static_cast<int32_t>(i_base + c);
          }
        }
      }
  return make_result(std::move(out), {x}, [x, argmax, N](Node& self) {
    Tensor g = Tensor::zeros(x.shape());
    const int32_t* arg = argmax->data();
    const float* gy = self.grad.data();
    const int64_t per_image = self.grad.numel() / std::max<int64_t>(N, 1);
    float* gx = g.data();
    // Windows may overlap (stride < window), but never across images: split by image.
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = n * per_image; i < (n + 1) * per_image; ++i) gx[arg[i]] += gy[i];
    x.add_grad(std::move(g));
  });
}

}  // namespace qnet
