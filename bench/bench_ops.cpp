// bench_ops: microseconds per call of each op of the reference model at batch 32
// (forward and backward), median of many calls, then the GEMM-shaped kernels alone (the Dense
// layers' and MobileNet's pointwise convs' products, no autograd around them). Used to choose
// kernels.
//
//   build/bin/bench_ops [--threads 2] [--iterations 300] [--only products]
#include <algorithm>
#include <chrono>
#include <functional>

#include <fmt/format.h>

#include "apps/common.h"
#include "core/cpu.h"
#include "core/kernels.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/random.h"
#include "quant/fake_quant.h"
#include "quant/observer.h"
#include "quant/quantization.h"

using namespace qnet;

namespace {
double median_us(int iterations, const std::function<void()>& f) {
  std::vector<double> t;
  for (int i = 0; i < iterations; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

Tensor random_tensor(Shape s, Rng& rng) {
  Tensor t(std::move(s));
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(-1.f, 1.f);
  return t;
}

// The kernels of the Dense layers (article, Keras' convnet at batch 32 and 128, the MobileNet's
// classifier, a wide hidden layer) and of the MobileNet's pointwise convs, called directly.
void time_products(int it, Rng& rng) {
  const Kernels& k = kernels();
  fmt::print("GEMM-shaped kernels (microseconds, median): forward, input gradient, weight gradient\n");
  struct Dense { int64_t N, K, M; };
  for (const Dense d : {Dense{32, 2028, 10}, Dense{32, 1600, 10}, Dense{128, 1600, 10}, Dense{32, 128, 10}, Dense{32, 256, 128}}) {
    const Tensor x = random_tensor({d.N, d.K}, rng), w = random_tensor({d.K, d.M}, rng), dy = random_tensor({d.N, d.M}, rng);
    Tensor y({d.N, d.M}), dx({d.N, d.K}), dw({d.K, d.M});
    fmt::print("{:<40} {:8.1f} {:8.1f} {:8.1f}\n", fmt::format("dense [{}, {}] x [{}, {}]", d.N, d.K, d.K, d.M),
               median_us(it, [&] { k.matmul(d.N, d.K, d.M, x.data(), w.data(), y.data()); }),
               median_us(it, [&] { k.matmul_dx(d.N, d.K, d.M, dy.data(), w.data(), dx.data()); }),
               median_us(it, [&] { k.matmul_dw(d.N, d.K, d.M, x.data(), dy.data(), dw.data()); }));
  }
  struct Pointwise { int64_t N, H, IC, OC; };
  for (const Pointwise p : {Pointwise{32, 14, 16, 32}, Pointwise{32, 7, 32, 64}, Pointwise{32, 7, 64, 64}, Pointwise{32, 4, 64, 128}}) {
    const ConvShape s{p.N, p.H, p.H, p.IC, 1, 1, p.OC, p.H, p.H, 1, 1, 0, 0};
    const Tensor x = random_tensor({p.N, p.H, p.H, p.IC}, rng), w = random_tensor({1, 1, p.IC, p.OC}, rng), b = random_tensor({p.OC}, rng);
    const Tensor dy = random_tensor({p.N, p.H, p.H, p.OC}, rng);
    Tensor y(dy.shape()), dx(x.shape()), dw(w.shape()), db(b.shape());
    fmt::print("{:<40} {:8.1f} {:8.1f} {:8.1f}\n", fmt::format("pointwise conv {}x{}x{} -> {}, batch {}", p.H, p.H, p.IC, p.OC, p.N),
               median_us(it, [&] { k.conv_forward(s, x.data(), w.data(), b.data(), y.data()); }),
               median_us(it, [&] { k.conv_backward_input(s, w.data(), dy.data(), dx.data()); }),
               median_us(it, [&] { k.conv_backward_weights(s, x.data(), dy.data(), dw.data(), db.data()); }));
  }
}
// A stride-1 conv's input and kernel gradients by their two walks of dy (all of it, or only its
// nonzeros), as dy's share of nonzeros grows: where the walk stops paying (core/kernels/conv.cpp).
void time_input_gradient_walks(int it, Rng& rng) {
  const Kernels& k = kernels();
  fmt::print("conv input gradient, microseconds (median): all of dy / its nonzeros only / the one chosen, by dy's nonzero share\n");
  const ConvShape shapes[] = {{32, 13, 13, 32, 3, 3, 64, 11, 11, 1, 1, 0, 0}, {32, 14, 14, 16, 3, 3, 16, 14, 14, 1, 1, 1, 1},
                              {32, 7, 7, 32, 1, 1, 64, 7, 7, 1, 1, 0, 0}};
  const char* names[] = {"keras conv2 3x3 32 -> 64, 13x13", "3x3 16 -> 16, 14x14 same", "pointwise 32 -> 64, 7x7"};
  for (int i = 0; i < 3; ++i) {
    const ConvShape& s = shapes[i];
    const Tensor w = random_tensor({s.KH, s.KW, s.IC, s.OC}, rng);
    Tensor dy({s.N, s.OH, s.OW, s.OC}), dx({s.N, s.H, s.W, s.IC});
    fmt::print("{}:", names[i]);
    for (const double share : {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7}) {
      for (int64_t j = 0; j < dy.numel(); ++j) dy[j] = rng.uniform01() < share ? rng.uniform(-1.f, 1.f) : 0.f;
      fmt::print("  {:.2f}: {:.0f} / {:.0f} / {:.0f}", share,
                 median_us(it, [&] { k.conv_backward_input_walk(s, w.data(), dy.data(), dx.data(), GradientWalk::kAll); }),
                 median_us(it, [&] { k.conv_backward_input_walk(s, w.data(), dy.data(), dx.data(), GradientWalk::kNonZeros); }),
                 median_us(it, [&] { k.conv_backward_input(s, w.data(), dy.data(), dx.data()); }));
    }
    fmt::print("\n");
  }
  fmt::print("conv kernel gradient, microseconds (median): all of dy / its nonzeros only / the one chosen, by dy's nonzero share\n");
  const ConvShape forward[] = {{32, 13, 13, 32, 3, 3, 64, 11, 11, 1, 1, 0, 0}, {32, 14, 14, 16, 3, 3, 16, 14, 14, 1, 1, 1, 1},
                               {32, 7, 7, 32, 1, 1, 64, 7, 7, 1, 1, 0, 0}};
  for (int i = 0; i < 3; ++i) {
    const ConvShape& s = forward[i];
    const Tensor x = random_tensor({s.N, s.H, s.W, s.IC}, rng);
    Tensor dy({s.N, s.OH, s.OW, s.OC}), dw({s.KH, s.KW, s.IC, s.OC}), db({s.OC});
    fmt::print("{}:", names[i]);
    for (const double share : {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7}) {
      for (int64_t j = 0; j < dy.numel(); ++j) dy[j] = rng.uniform01() < share ? rng.uniform(-1.f, 1.f) : 0.f;
      const auto walk = [&](GradientWalk w) { k.conv_backward_weights_walk(s, x.data(), dy.data(), dw.data(), db.data(), w); };
      fmt::print("  {:.2f}: {:.0f} / {:.0f} / {:.0f}", share, median_us(it, [&] { walk(GradientWalk::kAll); }),
                 median_us(it, [&] { walk(GradientWalk::kNonZeros); }),
                 median_us(it, [&] { k.conv_backward_weights(s, x.data(), dy.data(), dw.data(), db.data()); }));
    }
    fmt::print("\n");
  }
}
// What QAT adds to a step of the article's model, per piece: the Dense kernel's per-channel scales
// (eq. 6) and fake quantization each way (eq. 7, 8), the pooled conv output's ReLU + fake
// quantization each way, and the observer's range (docs/performance.md).
void time_qat(int it, Rng& rng) {
  fmt::print("QAT's pieces at batch 32 (microseconds, median)\n");
  const Tensor wd = random_tensor({2028, 10}, rng), gw = random_tensor({2028, 10}, rng);
  const std::vector<QParams> wq = choose_weight_qparams(wd, 8);
  fmt::print("dense kernel scales      {:8.1f}\n", median_us(it, [&] { choose_weight_qparams(wd, 8); }));
  Variable w(wd, true);
  Variable fq = fake_quant(w, wq);
  fmt::print("dense kernel fake-quant  {:8.1f}\n", median_us(it, [&] { fake_quant(w, wq); }));
  fq.node().grad = gw;
  fmt::print("  its backward           {:8.1f}\n", median_us(it, [&] { fq.node().backward_fn(fq.node()); w.zero_grad(); }));
  Variable pooled(random_tensor({32, 13, 13, 12}, rng), true);
  const QParams a = choose_activation_qparams(0.f, 0.7f, 8);
  Variable rq = relu_fake_quant(pooled, a);
  fmt::print("relu + fake-quant        {:8.1f}\n", median_us(it, [&] { relu_fake_quant(pooled, a); }));
  rq.node().grad = random_tensor({32, 13, 13, 12}, rng);
  fmt::print("  its backward           {:8.1f}\n", median_us(it, [&] { rq.node().backward_fn(rq.node()); pooled.zero_grad(); }));
  std::vector<uint8_t> which(32 * 13 * 13 * ((12 + kernels().lanes - 1) / kernels().lanes) * kernels().lanes);
  Tensor inside = pooled.value().clone();
  const ReluGrid g = relu_grid(a);
  for (const float largest : {1.f, g.real_hi})  // values above the grid to mark (the op's range says), or none
    fmt::print("  in the fused op{}{:8.1f}\n", largest > g.real_hi ? ", marks " : "         ", median_us(it, [&] {
                 kernels().pooled_fake_quant(32 * 13 * 13, 12, g.scale, g.hi, g.real_hi, largest, inside.data(), which.data());
               }));
  fmt::print("min and max              {:8.1f}\n", median_us(it, [&] { min_max(pooled.value()); }));
}
}  // namespace

int main(int argc, char** argv) {
  return run_app("bench_ops", [&] {
    cxxopts::Options options("bench_ops", "Time the reference model's ops at batch 32");
    add_threads_option(options);
    options.add_options()("iterations", "Calls per op", number_value("300"))(
        "only", "Time only this group: products (the GEMM-shaped kernels), qat (what QAT adds)", cxxopts::value<std::string>());
    const auto args = options.parse(argc, argv);
    use_threads_option(args);
    const int it = static_cast<int>(int_option(args, "iterations", 1, 1000000));
    Rng rng(1);
    if (args.count("only")) {
      const std::string only = args["only"].as<std::string>();
      if (only != "products" && only != "qat")
        throw UsageError(fmt::format("--only: unknown group '{}'; expected products or qat", only));
      if (only == "products") time_products(it, rng);
      if (only == "qat") time_qat(it, rng);
      return 0;
    }
    Variable x(random_tensor({32, 28, 28, 1}, rng));
    Variable w(random_tensor({3, 3, 1, 12}, rng), true), b(random_tensor({12}, rng), true);
    Variable wd(random_tensor({2028, 10}, rng), true);
    Tensor g_conv = random_tensor({32, 26, 26, 12}, rng), g_pool = random_tensor({32, 13, 13, 12}, rng);
    Variable conv_out = conv2d(x, w, b, {});
    Variable pooled = max_pool2d(conv_out, {});
    Variable flat(random_tensor({32, 2028}, rng), true);
    Variable logits = matmul(flat, wd);
    conv_out.node().grad = g_conv;
    fmt::print("{} threads, {} iterations, batch 32, {} kernels (microseconds, median)\n", num_threads(), it, isa_name(active_isa()));
    fmt::print("conv2d forward          {:8.1f}\n", median_us(it, [&] { conv2d(x, w, b, {}); }));
    fmt::print("conv2d backward (w, b)  {:8.1f}\n", median_us(it, [&] { conv_out.node().backward_fn(conv_out.node()); w.zero_grad(); b.zero_grad(); }));
    conv_out.node().grad = g_conv;
    fmt::print("relu forward            {:8.1f}\n", median_us(it, [&] { relu(conv_out); }));
    fmt::print("max_pool2d forward      {:8.1f}\n", median_us(it, [&] { max_pool2d(conv_out, {}); }));
    pooled.node().grad = g_pool;
    fmt::print("max_pool2d backward     {:8.1f}\n", median_us(it, [&] { pooled.node().backward_fn(pooled.node()); conv_out.zero_grad(); }));
    ValueRange range;
    Variable fused = conv2d_max_pool2d(x, w, b, {}, {}, &range);
    fmt::print("conv2d_max_pool2d fwd   {:8.1f}\n", median_us(it, [&] { conv2d_max_pool2d(x, w, b, {}, {}, &range); }));
    fmt::print("  without the range      {:8.1f}\n", median_us(it, [&] { conv2d_max_pool2d(x, w, b, {}, {}, nullptr); }));
    fused.node().grad = g_pool;
    fmt::print("conv2d_max_pool2d bwd   {:8.1f}\n", median_us(it, [&] { fused.node().backward_fn(fused.node()); w.zero_grad(); b.zero_grad(); }));
    fmt::print("matmul forward          {:8.1f}\n", median_us(it, [&] { matmul(flat, wd); }));
    logits.node().grad = random_tensor({32, 10}, rng);
    fmt::print("matmul backward         {:8.1f}\n", median_us(it, [&] { logits.node().backward_fn(logits.node()); flat.zero_grad(); wd.zero_grad(); }));

    // Keras' classic convnet's second conv (docs/performance.md): 3x3, 32 -> 64 channels on 13x13.
    Variable x2(random_tensor({32, 13, 13, 32}, rng), true);
    Variable w2(random_tensor({3, 3, 32, 64}, rng), true), b2(random_tensor({64}, rng), true);
    Variable conv2 = conv2d(x2, w2, b2, {});
    conv2.node().grad = random_tensor({32, 11, 11, 64}, rng);
    fmt::print("keras conv2 forward     {:8.1f}\n", median_us(it, [&] { conv2d(x2, w2, b2, {}); }));
    Variable x2_const(x2.value(), false);
    Variable conv2_w = conv2d(x2_const, w2, b2, {});
    conv2_w.node().grad = conv2.node().grad;
    fmt::print("keras conv2 backward    {:8.1f}  (w, b)\n",
               median_us(it, [&] { conv2_w.node().backward_fn(conv2_w.node()); w2.zero_grad(); b2.zero_grad(); }));
    fmt::print("keras conv2 backward    {:8.1f}  (w, b and x)\n",
               median_us(it, [&] { conv2.node().backward_fn(conv2.node()); x2.zero_grad(); w2.zero_grad(); b2.zero_grad(); }));
    time_input_gradient_walks(it, rng);
    time_products(it, rng);
    time_qat(it, rng);
    return 0;
  });
}
