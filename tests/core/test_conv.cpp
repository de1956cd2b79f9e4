#include <catch2/catch.hpp>

#include <cstring>

#include "core/kernels.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/parallel.h"
#include "tests/grad_check.h"

using namespace qnet;
using namespace qnet::testing;

namespace {
// Plain six-loop convolution: the reference the fast kernels are compared with.
Tensor naive_conv(const Tensor& x, const Tensor& w, const Tensor* b, int sh, int sw, Padding pad) {
  const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), KH = w.dim(0), KW = w.dim(1), OC = w.dim(3);
  const AxisGeometry gh = axis_geometry(H, KH, sh, pad), gw = axis_geometry(W, KW, sw, pad);
  Tensor y = Tensor::zeros({N, gh.out, gw.out, OC});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < gh.out; ++oh)
      for (int64_t ow = 0; ow < gw.out; ++ow)
        for (int64_t oc = 0; oc < OC; ++oc) {
          double acc = b ? (*b)[oc] : 0.0;
          for (int64_t kh = 0; kh < KH; ++kh)
            for (int64_t kw = 0; kw < KW; ++kw)
              for (int64_t c = 0; c < C; ++c) {
                const int64_t ih = oh * sh - gh.pad_before + kh, iw = ow * sw - gw.pad_before + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += double{x[((n * H + ih) * W + iw) * C + c]} * w[((kh * KW + kw) * C + c) * OC + oc];
              }
          y[((n * gh.out + oh) * gw.out + ow) * OC + oc] = static_cast<float>(acc);
        }
  return y;
}
}  // namespace

TEST_CASE("conv2d forward matches a hand-computed 1-channel case", "[core]") {
  // 3x3 input, 2x2 kernel of ones, valid: each output is the sum of a 2x2 window, plus bias 0.5.
  Variable x(Tensor::from({1, 3, 3, 1}, {1, 2, 3, 4, 5, 6, 7, 8, 9}));
  Variable w(Tensor::full({2, 2, 1, 1}, 1.f)), b(Tensor::full({1}, 0.5f));
  CHECK(conv2d(x, w, b, {}).value().to_vector() == std::vector<float>{12.5f, 16.5f, 24.5f, 28.5f});
}

TEST_CASE("conv2d forward matches the naive reference for strides, paddings and channel counts", "[core]") {
  Rng rng(5);
  struct Case { int64_t H, W, C, KH, KW, OC; int stride; Padding pad; };
  const Case cases[] = {{28, 28, 1, 3, 3, 12, 1, Padding::kValid}, {9, 7, 1, 3, 3, 12, 2, Padding::kSame},
                        {8, 8, 3, 3, 3, 20, 1, Padding::kSame},    {7, 9, 2, 2, 4, 17, 2, Padding::kValid},
                        {10, 10, 1, 5, 5, 4, 1, Padding::kSame},   {6, 6, 5, 1, 1, 33, 1, Padding::kValid},
                        {13, 13, 32, 3, 3, 64, 1, Padding::kValid}, // Keras' second conv: full register tiles
                        {11, 9, 6, 3, 3, 40, 1, Padding::kSame}};    // framed input, a partial last block
  for (const Case& c : cases) {
    INFO("H " << c.H << " W " << c.W << " C " << c.C << " kernel " << c.KH << "x" << c.KW << " OC " << c.OC << " stride " << c.stride);
    Tensor x = random_tensor({3, c.H, c.W, c.C}, rng), w = random_tensor({c.KH, c.KW, c.C, c.OC}, rng);
    Tensor b = random_tensor({c.OC}, rng);
    const Tensor expected = naive_conv(x, w, &b, c.stride, c.stride, c.pad);
    const Tensor got = conv2d(Variable(x), Variable(w), Variable(b), {c.stride, c.stride, c.pad}).value();
    REQUIRE(got.shape() == expected.shape());
    for (int64_t i = 0; i < got.numel(); ++i) REQUIRE(got[i] == Approx(expected[i]).margin(1e-5));
  }
}

TEST_CASE("conv2d backward matches finite differences", "[core][grad]") {
  Rng rng(6);
  struct Case { Shape x, w; Conv2dOptions o; };
  const Case cases[] = {
      {{2, 5, 5, 1}, {3, 3, 1, 12}, {1, 1, Padding::kValid}},  // the reference layer (specialised kernel)
      {{1, 6, 5, 3}, {3, 3, 3, 4}, {2, 2, Padding::kSame}},    // specialised 3x3x3, stride 2, same
      {{2, 5, 6, 2}, {2, 3, 2, 3}, {1, 2, Padding::kSame}},    // generic kernel, mixed strides
      {{1, 7, 7, 2}, {3, 3, 2, 18}, {2, 1, Padding::kValid}},  // two channel blocks (18 > 16)
      // Several input channels, stride 1: dx as a conv of dy by the turned kernel; tiles of taps
      // and blocks in dw (full and partial blocks, tap counts not a multiple of the tile).
      {{2, 7, 6, 5}, {3, 3, 5, 37}, {1, 1, Padding::kSame}},
      {{2, 6, 6, 8}, {3, 3, 8, 64}, {1, 1, Padding::kValid}},
      {{1, 5, 6, 6}, {2, 2, 6, 7}, {1, 1, Padding::kSame}},    // padding only below and right
      // Several input channels, strides: dx phase by phase of the stride, each a stride-1 conv of
      // dy by the taps that reach it (ResNet's downsampling convs and 1x1 shortcuts; a 1x1
      // stride-2 kernel leaves three phases without taps: their dx is 0).
      {{2, 7, 8, 5}, {3, 3, 5, 9}, {2, 2, Padding::kSame}},
      {{1, 8, 7, 4}, {1, 1, 4, 6}, {2, 2, Padding::kValid}},
      {{1, 9, 8, 4}, {5, 4, 4, 3}, {3, 2, Padding::kSame}},
      {{1, 7, 7, 4}, {3, 2, 4, 5}, {2, 3, Padding::kValid}},
      // 1x1, stride 1 (MobileNet's pointwise convs), two chunks of images.
      {{5, 3, 4, 7}, {1, 1, 7, 19}, {1, 1, Padding::kValid}},
  };
  for (const Case& c : cases) {
    INFO("input " << shape_str(c.x) << " kernel " << shape_str(c.w) << " stride " << c.o.stride_h << "x" << c.o.stride_w);
    const Conv2dOptions o = c.o;
    check_gradients([o](auto& v) { return conv2d(v[0], v[1], v[2], o); },
                    {random_tensor(c.x, rng), random_tensor(c.w, rng), random_tensor({c.w[3]}, rng)});
  }
  check_gradients([](auto& v) { return conv2d(v[0], v[1], Variable(), {}); },
                  {random_tensor({1, 4, 4, 1}, rng), random_tensor({3, 3, 1, 2}, rng)});
}

TEST_CASE("conv2d refuses mismatched shapes", "[core]") {
  Variable x(Tensor::zeros({1, 5, 5, 2})), w(Tensor::zeros({3, 3, 1, 4})), b(Tensor::zeros({4}));
  CHECK_THROWS_WITH(conv2d(x, w, b, {}), Catch::Contains("conv2d") && Catch::Contains("[1, 5, 5, 2]"));
  Variable w2(Tensor::zeros({7, 7, 2, 4}));
  CHECK_THROWS_WITH(conv2d(x, w2, b, {}), Catch::Contains("does not fit"));
  Variable w3(Tensor::zeros({3, 3, 2, 4}));
  CHECK_THROWS_WITH(conv2d(x, w3, b, {0, 1, Padding::kValid}), Catch::Contains("stride"));
}

TEST_CASE("a pointwise conv's value and gradients do not depend on the thread count", "[core]") {
  Rng rng(32);
  const Tensor x = random_tensor({9, 14, 14, 16}, rng), w = random_tensor({1, 1, 16, 32}, rng), b = random_tensor({32}, rng);
  const Tensor g = random_tensor({9, 14, 14, 32}, rng);
  const int saved = num_threads();
  auto run = [&](int threads) {
    set_num_threads(threads);
    Variable vx(x, true), vw(w, true), vb(b, true);
    const Variable y = conv2d(vx, vw, vb, {});
    y.backward(g);
    std::vector<float> all = y.value().to_vector();
    for (const Variable* v : {&vx, &vw, &vb})
      for (float f : v->grad().to_vector()) all.push_back(f);
    return all;
  };
  const std::vector<float> one = run(1), two = run(2), three = run(3);
  set_num_threads(saved);
  CHECK(two == one);
  CHECK(three == one);
  const Tensor expected = naive_conv(x, w, &b, 1, 1, Padding::kValid);
  for (int64_t i = 0; i < expected.numel(); ++i) REQUIRE(one[i] == Approx(expected[i]).margin(1e-4));
}

TEST_CASE("conv2d's input gradient: the same bits whether it walks only dy's nonzeros or all of dy", "[core]") {
  struct Case {
    int64_t N, H, W, IC, K, OC, pad;  // stride 1, `pad` rows and columns of padding on each side
  };
  // Keras' second conv (dy: a max-pool's gradient), channels that fill no whole vector, 'same'
  // padding, a 5x5 kernel with 2 rows of padding, a pointwise conv.
  const Case cases[] = {{3, 13, 13, 32, 3, 64, 0}, {2, 9, 7, 5, 3, 20, 1}, {2, 8, 8, 12, 5, 3, 2}, {2, 6, 5, 16, 1, 24, 0}};
  Rng rng(3);
  for (const Case& c : cases)
    for (const double density : {0.0, 0.1, 0.5, 1.0}) {
      CAPTURE(c.IC, c.OC, c.K, c.pad, density);
      const int64_t OH = c.H + 2 * c.pad - c.K + 1, OW = c.W + 2 * c.pad - c.K + 1;
      const ConvShape s{c.N, c.H, c.W, c.IC, c.K, c.K, c.OC, OH, OW, 1, 1, c.pad, c.pad};
      std::vector<float> w(static_cast<size_t>(c.K * c.K * c.IC * c.OC)), dy(static_cast<size_t>(c.N * OH * OW * c.OC));
      for (float& v : w) v = rng.uniform(-1.f, 1.f);
      for (float& v : dy) v = rng.uniform01() < density ? rng.uniform(-1.f, 1.f) : (rng.uniform01() < 0.5 ? 0.f : -0.f);
      const size_t n = static_cast<size_t>(c.N * c.H * c.W * c.IC);
      std::vector<float> all(n, 7.f), nonzeros(n, 7.f), chosen(n, 7.f);  // 7: every element must be written
      kernels().conv_backward_input_walk(s, w.data(), dy.data(), all.data(), GradientWalk::kAll);
      kernels().conv_backward_input_walk(s, w.data(), dy.data(), nonzeros.data(), GradientWalk::kNonZeros);
      kernels().conv_backward_input(s, w.data(), dy.data(), chosen.data());
      REQUIRE(std::memcmp(all.data(), nonzeros.data(), n * sizeof(float)) == 0);
      REQUIRE(std::memcmp(all.data(), chosen.data(), n * sizeof(float)) == 0);
      // Against the plain sum dx[ih, iw, ic] = sum over taps and oc of dy[oh, ow, oc] w[kh, kw, ic, oc].
      for (int64_t nn = 0; nn < c.N; ++nn)
        for (int64_t ih = 0; ih < c.H; ++ih)
          for (int64_t iw = 0; iw < c.W; ++iw)
            for (int64_t ic = 0; ic < c.IC; ++ic) {
              double want = 0;
              for (int64_t kh = 0; kh < c.K; ++kh)
                for (int64_t kw = 0; kw < c.K; ++kw) {
                  const int64_t oh = ih + c.pad - kh, ow = iw + c.pad - kw;
                  if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                  for (int64_t oc = 0; oc < c.OC; ++oc)
                    want += double{dy[static_cast<size_t>(((nn * OH + oh) * OW + ow) * c.OC + oc)]} *
                            w[static_cast<size_t>(((kh * c.K + kw) * c.IC + ic) * c.OC + oc)];
                }
              REQUIRE(all[static_cast<size_t>(((nn * c.H + ih) * c.W + iw) * c.IC + ic)] == Approx(want).margin(1e-4));
            }
    }
}

TEST_CASE("conv2d's kernel gradient: the same bits whether it walks only dy's nonzeros or all of dy", "[core]") {
  struct Case {
    int64_t N, H, W, IC, K, OC, stride, pad;
  };
  // Keras' second conv (9 images: chunks of 4, 4 and 1), channels that fill no whole vector of dy,
  // a strided padded conv, a pointwise conv, and input channels the walk cannot take (5: the tiles).
  const Case cases[] = {{9, 13, 13, 32, 3, 64, 1, 0}, {5, 9, 7, 16, 3, 20, 2, 1}, {3, 6, 5, 16, 1, 24, 1, 0}, {3, 8, 8, 5, 3, 16, 1, 1}};
  Rng rng(4);
  for (const Case& c : cases)
    for (const double density : {0.0, 0.1, 0.5, 1.0}) {
      CAPTURE(c.IC, c.OC, c.K, c.stride, c.pad, density);
      const int64_t OH = (c.H + 2 * c.pad - c.K) / c.stride + 1, OW = (c.W + 2 * c.pad - c.K) / c.stride + 1;
      const ConvShape s{c.N, c.H, c.W, c.IC, c.K, c.K, c.OC, OH, OW, c.stride, c.stride, c.pad, c.pad};
      std::vector<float> x(static_cast<size_t>(c.N * c.H * c.W * c.IC)), dy(static_cast<size_t>(c.N * OH * OW * c.OC));
      for (float& v : x) v = rng.uniform(-1.f, 1.f);
      for (float& v : dy) v = rng.uniform01() < density ? rng.uniform(-1.f, 1.f) : (rng.uniform01() < 0.5 ? 0.f : -0.f);
      const size_t n = static_cast<size_t>(c.K * c.K * c.IC * c.OC), nb = static_cast<size_t>(c.OC);
      std::vector<float> dw_all(n, 7.f), dw_nz(n, 7.f), dw_chosen(n, 7.f), db_all(nb, 7.f), db_nz(nb, 7.f), db_chosen(nb, 7.f);
      kernels().conv_backward_weights_walk(s, x.data(), dy.data(), dw_all.data(), db_all.data(), GradientWalk::kAll);
      kernels().conv_backward_weights_walk(s, x.data(), dy.data(), dw_nz.data(), db_nz.data(), GradientWalk::kNonZeros);
      kernels().conv_backward_weights(s, x.data(), dy.data(), dw_chosen.data(), db_chosen.data());
      REQUIRE(std::memcmp(dw_all.data(), dw_nz.data(), n * sizeof(float)) == 0);
      REQUIRE(std::memcmp(dw_all.data(), dw_chosen.data(), n * sizeof(float)) == 0);
      REQUIRE(std::memcmp(db_all.data(), db_nz.data(), nb * sizeof(float)) == 0);
      REQUIRE(std::memcmp(db_all.data(), db_chosen.data(), nb * sizeof(float)) == 0);
      for (int64_t kh = 0; kh < c.K; ++kh)  // against the plain sum over images and output pixels
        for (int64_t kw = 0; kw < c.K; ++kw)
          for (int64_t ic = 0; ic < c.IC; ++ic)
            for (int64_t oc = 0; oc < c.OC; ++oc) {
              double want = 0;
              for (int64_t nn = 0; nn < c.N; ++nn)
                for (int64_t oh = 0; oh < OH; ++oh)
                  for (int64_t ow = 0; ow < OW; ++ow) {
                    const int64_t ih = oh * c.stride - c.pad + kh, iw = ow * c.stride - c.pad + kw;
                    if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                    want += double{x[static_cast<size_t>(((nn * c.H + ih) * c.W + iw) * c.IC + ic)]} *
                            dy[static_cast<size_t>(((nn * OH + oh) * OW + ow) * c.OC + oc)];
                  }
              REQUIRE(dw_all[static_cast<size_t>(((kh * c.K + kw) * c.IC + ic) * c.OC + oc)] == Approx(want).margin(1e-3));
            }
    }
}
