// bench_cores: how fast each CPU this process may run on computes, alone and with all of them busy
// at once, and how steady it is. On a shared VM one vCPU can run 1.3 - 1.8x slower than another
// for minutes (docs/performance.md); fit() then gives its thread fewer chunks of each batch
// (optim/trainer.cpp, ThreadPace). Run it beside a benchmark to say which state the machine was in.
//
//   build/bin/bench_cores [--seconds 1]
//
// Each CPU runs chains of independent multiply-adds (8-wide AVX2 FMA where the CPU has it, else
// SSE multiplies and adds) in slices of about 15 us (Zen 5 at 2.1 GHz). Per CPU: GFLOP/s, the mean slice over the
// fastest slice (1.00x: steady), and how many slices took 3x the fastest or longer (the thread was
// stopped: time-slicing, interrupts). A CPU that is slow in the mean with few long slices is slow
// throughout, as a core shared with another guest's work is.
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <immintrin.h>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "apps/common.h"

using namespace qnet;

namespace {

constexpr int kChains = 10, kSliceIterations = 6000;

struct Slices {
  double gflops = 0, mean_over_fastest = 0;
  int64_t slices = 0, stopped = 0;
};

// One slice: kSliceIterations rounds of kChains independent multiply-adds; the flops it did.
__attribute__((target("avx2,fma"))) double slice_fma(float* state) {
  __m256 a[kChains];
  for (int i = 0; i < kChains; ++i) a[i] = _mm256_set1_ps(state[i]);
  const __m256 m = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(0.0001f);
  for (int k = 0; k < kSliceIterations; ++k)
    for (int i = 0; i < kChains; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  for (int i = 0; i < kChains; ++i) state[i] = _mm256_cvtss_f32(a[i]);
  return 2.0 * 8 * kChains * kSliceIterations;
}

double slice_sse(float* state) {
  __m128 a[kChains];
  for (int i = 0; i < kChains; ++i) a[i] = _mm_set1_ps(state[i]);
  const __m128 m = _mm_set1_ps(0.9999f), c = _mm_set1_ps(0.0001f);
  for (int k = 0; k < kSliceIterations; ++k)
    for (int i = 0; i < kChains; ++i) a[i] = _mm_add_ps(_mm_mul_ps(a[i], m), c);
  for (int i = 0; i < kChains; ++i) state[i] = _mm_cvtss_f32(a[i]);
  return 2.0 * 4 * kChains * kSliceIterations;
}

bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

Slices run_slices(double seconds, bool fma) {
  using Clock = std::chrono::steady_clock;
  float state[kChains];
  for (int i = 0; i < kChains; ++i) state[i] = 0.001f * static_cast<float>(i);
  std::vector<double> times;
  double flops = 0;
  const Clock::time_point start = Clock::now();
  while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    const Clock::time_point t0 = Clock::now();
    flops += fma ? slice_fma(state) : slice_sse(state);
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  Slices s;
  double total = 0;
  for (double t : times) total += t;
  const double fastest = *std::min_element(times.begin(), times.end());
  s.slices = static_cast<int64_t>(times.size());
  s.gflops = flops / total * 1e-9;
  s.mean_over_fastest = total / static_cast<double>(times.size()) / fastest;
  s.stopped = std::count_if(times.begin(), times.end(), [&](double t) { return t >= 3 * fastest; });
  if (state[0] == 12345.f) fmt::print("");  // keep the work
  return s;
}

void print(const char* when, int cpu, const Slices& s) {
  fmt::print("{:<9} cpu {:>3}: {:6.1f} GFLOP/s, mean slice {:.2f}x the fastest, {} of {} slices >= 3x\n", when, cpu, s.gflops,
             s.mean_over_fastest, s.stopped, s.slices);
}

}  // namespace

int main(int argc, char** argv) {
  return run_app("bench_cores", [&] {
    cxxopts::Options options("bench_cores", "Each CPU's multiply-add speed, alone and all at once");
    options.add_options()("seconds", "Seconds per measurement", number_value("1"));
    const auto parsed = parse_args(options, argc, argv);
    if (!parsed) return 0;
    const double seconds = real_option(*parsed, "seconds", {0, 60, true});
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) throw std::runtime_error("bench_cores: cannot read this process's CPUs");
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
    const bool fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    fmt::print("{} CPUs, {} slices of {} multiply-adds\n", cpus.size(), fma ? "AVX2 FMA" : "SSE", kChains * kSliceIterations);
    for (int cpu : cpus) {
      Slices s;
      std::thread([&] { s = pin_to(cpu) ? run_slices(seconds, fma) : Slices{}; }).join();
      print("alone", cpu, s);
    }
    std::vector<Slices> together(cpus.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < cpus.size(); ++i)
      threads.emplace_back([&, i] { together[i] = pin_to(cpus[i]) ? run_slices(seconds, fma) : Slices{}; });
    for (std::thread& t : threads) t.join();
    for (size_t i = 0; i < cpus.size(); ++i) print("together", cpus[i], together[i]);
    return 0;
  });
}
