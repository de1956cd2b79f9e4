// max_pool2d, avg_pool2d and global_avg_pool2d on NHWC: shape checks and the autograd closures;
// the loops are per-ISA kernels (core/kernels/pool.cpp). The max-pool backward recomputes which
// input was the first maximum of each window (row-major window order) and routes the gradient
// there, so the forward stores no indices.
#include <stdexcept>

#include <fmt/format.h>

#include "core/kernels.h"
#include "core/ops.h"

namespace qnet {

namespace {

PoolShape pool_shape(const char* op, const Tensor& in, const Pool2dOptions& o) {
  const int SH = o.stride_h ? o.stride_h : o.window_h, SW = o.stride_w ? o.stride_w : o.window_w;
  if (in.rank() != 4 || o.window_h < 1 || o.window_w < 1 || SH < 1 || SW < 1)
    throw std::invalid_argument(fmt::format("{}: input {}, window {}x{}, stride {}x{} (expected [N, H, W, C], "
                                            "window and stride >= 1)",
                                            op, shape_str(in.shape()), o.window_h, o.window_w, SH, SW));
  const AxisGeometry gh = axis_geometry(in.dim(1), o.window_h, SH, o.padding);
  const AxisGeometry gw = axis_geometry(in.dim(2), o.window_w, SW, o.padding);
  const PoolShape s{in.dim(0), in.dim(1), in.dim(2), in.dim(3), gh.out, gw.out, o.window_h, o.window_w,
                    SH, SW, gh.pad_before, gw.pad_before};
  if (s.OH <= 0 || s.OW <= 0)
    throw std::invalid_argument(fmt::format("{}: window {}x{} does not fit input {}", op, o.window_h, o.window_w, shape_str(in.shape())));
  return s;
}

}  // namespace

Variable max_pool2d(const Variable& x, const Pool2dOptions& o) {
  const Tensor& in = x.value();
  const PoolShape s = pool_shape("max_pool2d", in, o);
  Tensor out({s.N, s.OH, s.OW, s.C});
  kernels().max_pool_forward(s, in.data(), out.data());
  return make_result(out, {x}, [x, out, s](Node& self) {
    Tensor g(x.shape());  // the kernel writes every element
    kernels().max_pool_backward(s, x.value().data(), out.data(), self.grad.data(), g.data());
    x.add_grad(std::move(g));
  });
}

Variable avg_pool2d(const Variable& x, const Pool2dOptions& o) {
  const PoolShape s = pool_shape("avg_pool2d", x.value(), o);
  Tensor out({s.N, s.OH, s.OW, s.C});
  kernels().avg_pool_forward(s, x.value().data(), out.data());
  return make_result(std::move(out), {x}, [x, s](Node& self) {
    Tensor g(x.shape());
    kernels().avg_pool_backward(s, self.grad.data(), g.data());
    x.add_grad(std::move(g));
  });
}

Variable global_avg_pool2d(const Variable& x) {
  const Tensor& in = x.value();
  if (in.rank() != 4 || in.dim(1) < 1 || in.dim(2) < 1)
    throw std::invalid_argument(fmt::format("global_avg_pool2d: input {} (expected [N, H, W, C])", shape_str(in.shape())));
  const int H = static_cast<int>(in.dim(1)), W = static_cast<int>(in.dim(2));
  return reshape(avg_pool2d(x, {.window_h = H, .window_w = W}), {in.dim(0), in.dim(3)});
}

}  // namespace qnet
