// conv2d and the fused conv2d -> max_pool2d: shape checks and autograd closures. The loops are
// per-ISA kernels (core/kernels/conv.cpp, chosen by core/cpu.h).
#include <algorithm>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>

#include "core/distributed.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace qnet {

namespace {

// A kernel gradient (dw and db) summed over the batch: on one process the kernel over all N
// images; in a sharded step (core/distributed.h) chunk by chunk, then over every rank's chunks in
// chunk order, the same sums. kernel(first, images, dw, db) computes images [first, first + images).
template <typename F>
void weight_gradient(Tensor& dw, Tensor& db, bool want_b, int64_t N, F&& kernel) {
  if (!sharded_step()) return kernel(0, N, dw.data(), want_b ? db.data() : nullptr);
  const int64_t wn = dw.numel();
  Tensor sum({wn + db.numel()});
  sum_chunks_across_ranks(
      sum.numel(), [&](int64_t first, int64_t images, float* dst) { kernel(first, images, dst, dst + wn); }, sum.data());
  std::copy(sum.data(), sum.data() + wn, dw.data());
  std::copy(sum.data() + wn, sum.data() + sum.numel(), db.data());
}

// The shape of `images` images of a batch.
ConvShape images_of(ConvShape s, int64_t images) {
  s.N = images;
  return s;
}

ConvShape conv_shape(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dOptions& o) {
  if (x.rank() != 4 || w.rank() != 4 || x.dim(3) != w.dim(2) || (bias && (bias->rank() != 1 || bias->dim(0) != w.dim(3))))
    throw std::invalid_argument(fmt::format(
        "conv2d: input {}, kernel {}, bias {} (expected input [N, H, W, C], kernel [KH, KW, C, OC], bias [OC])",
        shape_str(x.shape()), shape_str(w.shape()), bias ? shape_str(bias->shape()) : "none"));
  if (o.stride_h < 1 || o.stride_w < 1)
    throw std::invalid_argument(fmt::format("conv2d: stride {}x{} (expected >= 1)", o.stride_h, o.stride_w));
  ConvShape s{x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1), w.dim(3), 0, 0, o.stride_h, o.stride_w, 0, 0};
  const AxisGeometry gh = axis_geometry(s.H, s.KH, s.SH, o.padding);
  const AxisGeometry gw = axis_geometry(s.W, s.KW, s.SW, o.padding);
  s.OH = gh.out, s.PT = gh.pad_before, s.OW = gw.out, s.PL = gw.pad_before;
  if (s.OH <= 0 || s.OW <= 0)
    throw std::invalid_argument(fmt::format("conv2d: kernel {}x{} does not fit input {} with valid padding", s.KH, s.KW,
                                            shape_str(x.shape())));
  return s;
}

}  // namespace

Variable conv2d(const Variable& x, const Variable& w, const Variable& bias, const Conv2dOptions& options) {
  const bool has_bias = bias.defined();
  const ConvShape s = conv_shape(x.value(), w.value(), has_bias ? &bias.value() : nullptr, options);
  Tensor y({s.N, s.OH, s.OW, s.OC});
  kernels().conv_forward(s, x.value().data(), w.value().data(), has_bias ? bias.value().data() : nullptr, y.data());
  std::vector<Variable> inputs{x, w};
  if (has_bias) inputs.push_back(bias);
  return make_result(std::move(y), inputs, [x, w, bias, s, has_bias](Node& self) {
    const bool want_b = has_bias && bias.requires_grad();
    if (w.requires_grad() || want_b) {
      Tensor dw(w.shape()), db({s.OC});
      weight_gradient(dw, db, want_b, s.N, [&](int64_t first, int64_t images, float* gw, float* gb) {
        kernels().conv_backward_weights(images_of(s, images), x.value().data() + first * s.H * s.W * s.IC,
                                        self.grad.data() + first * s.OH * s.OW * s.OC, gw, gb);
      });
      if (w.requires_grad()) w.add_grad(std::move(dw));
      if (want_b) bias.add_grad(std::move(db));
    }
    if (x.requires_grad()) {
      Tensor dx(x.shape());
      kernels().conv_backward_input(s, w.value().data(), self.grad.data(), dx.data());
      x.add_grad(std::move(dx));
    }
  });
}

// --- depthwise_conv2d ----------------------------------------------------------------------
namespace {

// y[..., c * M + m] = x[..., c]: the channels repeated for a depth multiplier M > 1; the
// gradient sums the M copies.
Variable repeat_channels(const Variable& x, int64_t M) {
  const int64_t C = x.shape().back(), rows = x.value().numel() / C;
  Shape shape = x.shape();
  shape.back() = C * M;
  Tensor y(shape);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t m = 0; m < M; ++m) y[(r * C + c) * M + m] = x.value()[r * C + c];
  return make_result(std::move(y), {x}, [x, M, C, rows](Node& self) {
    Tensor g(x.shape());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < C; ++c) {
        float sum = 0.f;
        for (int64_t m = 0; m < M; ++m) sum += self.grad[(r * C + c) * M + m];
        g[r * C + c] = sum;
      }
    x.add_grad(std::move(g));
  });
}

}  // namespace

Variable depthwise_conv2d(const Variable& x, const Variable& w, const Variable& bias, const Conv2dOptions& o) {
  const Tensor& in = x.value();
  const bool has_bias = bias.defined();
  const bool shapes_ok = in.rank() == 4 && w.value().rank() == 4 && w.value().dim(2) == 1 && in.dim(3) >= 1 &&
                         w.value().dim(3) % in.dim(3) == 0 && w.value().dim(3) >= in.dim(3) &&
                         (!has_bias || (bias.value().rank() == 1 && bias.value().dim(0) == w.value().dim(3)));
  if (!shapes_ok || o.stride_h < 1 || o.stride_w < 1)
    throw std::invalid_argument(fmt::format("depthwise_conv2d: input {}, kernel {}, bias {}, stride {}x{} (expected input [N, H, W, C], "
                                            "kernel [KH, KW, 1, C * M], bias [C * M], strides >= 1)",
                                            shape_str(in.shape()), shape_str(w.shape()), has_bias ? shape_str(bias.shape()) : "none",
                                            o.stride_h, o.stride_w));
  const int64_t M = w.value().dim(3) / in.dim(3);
  const Variable xr = M > 1 ? repeat_channels(x, M) : x;
  const int64_t KH = w.value().dim(0), KW = w.value().dim(1);
  const AxisGeometry gh = axis_geometry(in.dim(1), KH, o.stride_h, o.padding), gw = axis_geometry(in.dim(2), KW, o.stride_w, o.padding);
  if (gh.out <= 0 || gw.out <= 0)
    throw std::invalid_argument(fmt::format("depthwise_conv2d: kernel {}x{} does not fit input {} with valid padding", KH, KW,
                                            shape_str(in.shape())));
  const PoolShape s{in.dim(0), in.dim(1), in.dim(2), xr.shape()[3], gh.out, gw.out, KH, KW, o.stride_h, o.stride_w, gh.pad_before,
                    gw.pad_before};
  Tensor y({s.N, s.OH, s.OW, s.C});
  kernels().depthwise_forward(s, xr.value().data(), w.value().data(), has_bias ? bias.value().data() : nullptr, y.data());
  std::vector<Variable> inputs{xr, w};
  if (has_bias) inputs.push_back(bias);
  return make_result(std::move(y), inputs, [xr, w, bias, s, has_bias](Node& self) {
    const bool want_b = has_bias && bias.requires_grad();
    if (w.requires_grad() || want_b) {
      Tensor dw(w.shape()), db({s.C});
      weight_gradient(dw, db, want_b, s.N, [&](int64_t first, int64_t images, float* gw, float* gb) {
        PoolShape c = s;
        c.N = images;
        kernels().depthwise_backward_weights(c, xr.value().data() + first * s.H * s.W * s.C, self.grad.data() + first * s.OH * s.OW * s.C,
                                             gw, gb);
      });
      if (w.requires_grad()) w.add_grad(std::move(dw));
      if (want_b) bias.add_grad(std::move(db));
    }
    if (xr.requires_grad()) {
      Tensor dx(xr.shape());
      kernels().depthwise_backward_input(s, w.value().data(), self.grad.data(), dx.data());
      xr.add_grad(std::move(dx));
    }
  });
}

// --- conv2d_max_pool2d ---------------------------------------------------------------------
//
// The fast path (core/kernels/conv.cpp) computes the four conv outputs of each 2x2 window side
// by side, keeps their maximum and the window index of the first maximum (one byte per
// channel), and never writes the conv output; its backward routes each pooled gradient to that
// one conv output, a quarter of the plain conv backward's work.
namespace {

bool fast_path(const ConvShape& s, const Pool2dOptions& p) {
  const int sh = p.stride_h ? p.stride_h : p.window_h, sw = p.stride_w ? p.stride_w : p.window_w;
  return s.KH == 3 && s.KW == 3 && s.IC == 1 && s.SH == 1 && s.SW == 1 && s.OH == s.H - 2 && s.OW == s.W - 2 &&
         s.OH >= 2 && s.OW >= 2 && p.window_h == 2 && p.window_w == 2 && sh == 2 && sw == 2 && p.padding == Padding::kValid;
}

// The conv output's gradient: each pooled gradient at its window's chosen position, 0 elsewhere
// (everywhere in the window where a fused ReLU gave 0).
Tensor unpooled_gradient(const ConvShape& s, const float* dy, const uint8_t* which, int64_t lanes) {
  const int64_t PH = s.OH / 2, PW = s.OW / 2, blocks = (s.OC + lanes - 1) / lanes;
  Tensor g = Tensor::zeros({s.N, s.OH, s.OW, s.OC});
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t ph = 0; ph < PH; ++ph)
      for (int64_t pw = 0; pw < PW; ++pw)
        for (int64_t c = 0; c < s.OC; ++c) {
          const int64_t pix = (n * PH + ph) * PW + pw;
          const int q = which[pix * blocks * lanes + c];
          if (q != kClipped) g.data()[((n * s.OH + 2 * ph + q / 2) * s.OW + 2 * pw + q % 2) * s.OC + c] = dy[pix * s.OC + c];
        }
  return g;
}

}  // namespace

Variable conv2d_max_pool2d(const Variable& x, const Variable& w, const Variable& bias, const Conv2dOptions& conv,
                           const Pool2dOptions& pool, ValueRange* conv_range, const PooledActivation& activation) {
  const bool has_bias = bias.defined(), quantized = activation.kind == PooledActivation::kReLUFakeQuant;
  const bool with_relu = activation.kind != PooledActivation::kNone;
  const ConvShape s = conv_shape(x.value(), w.value(), has_bias ? &bias.value() : nullptr, conv);
  ValueRange range;
  const bool want_range = conv_range || quantized;
  // The grid of a kReLUFakeQuant, from the conv output's range (which relu clamps at 0).
  const auto grid = [&] { return activation.grid({std::max(range.min, 0.f), std::max(range.max, 0.f)}); };
  if (!fast_path(s, pool)) {
    Variable c = conv2d(x, w, bias, conv);
    if (want_range && c.value().numel() > 0) kernels().min_max(c.value().numel(), c.value().data(), &range.min, &range.max);
    if (conv_range) *conv_range = range;
    Variable pooled = max_pool2d(c, pool);
    if (quantized) return relu_fake_quant(pooled, grid());
    return with_relu ? relu(pooled) : pooled;
  }
  const Kernels* k = &kernels();  // one ISA for the forward and its backward: `which` is laid out per `lanes`
  const int64_t PH = s.OH / 2, PW = s.OW / 2, lanes = k->lanes, blocks = (s.OC + lanes - 1) / lanes;
  Tensor y({s.N, PH, PW, s.OC});
  std::shared_ptr<uint8_t[]> which = std::make_shared_for_overwrite<uint8_t[]>(s.N * PH * PW * blocks * lanes);
  float ends[2];
  k->pooled_conv_forward(s, x.value().data(), w.value().data(), has_bias ? bias.value().data() : nullptr, with_relu, y.data(),
                         which.get(), want_range ? ends : nullptr);
  if (want_range) range = {ends[0], ends[1]};
  if (conv_range) *conv_range = range;
  if (quantized) {  // in place: the values are relu'd already, and `which` takes the gradient's upper cut
    const ReluGrid g = grid();
    k->pooled_fake_quant(s.N * PH * PW, s.OC, g.scale, g.hi, g.real_hi, range.max, y.data(), which.get());
  }
  std::vector<Variable> inputs{x, w};
  if (has_bias) inputs.push_back(bias);
  return make_result(std::move(y), inputs, [x, w, bias, s, which, has_bias, k](Node& self) {
    const bool want_b = has_bias && bias.requires_grad();
    if (w.requires_grad() || want_b) {
      Tensor dw(w.shape()), db({s.OC});
      const int64_t pooled = (s.OH / 2) * (s.OW / 2), which_per_image = pooled * ((s.OC + k->lanes - 1) / k->lanes) * k->lanes;
      weight_gradient(dw, db, want_b, s.N, [&](int64_t first, int64_t images, float* gw, float* gb) {
        k->pooled_conv_backward_weights(images_of(s, images), x.value().data() + first * s.H * s.W * s.IC,
                                        self.grad.data() + first * pooled * s.OC, which.get() + first * which_per_image, gw, gb);
      });
      if (w.requires_grad()) w.add_grad(std::move(dw));
      if (want_b) bias.add_grad(std::move(db));
    }
    if (x.requires_grad()) {  // not needed for a first layer; through the plain conv backward
      const Tensor g = unpooled_gradient(s, self.grad.data(), which.get(), k->lanes);
      Tensor dx(x.shape());
      k->conv_backward_input(s, w.value().data(), g.data(), dx.data());
      x.add_grad(std::move(dx));
    }
  });
}

}  // namespace qnet
