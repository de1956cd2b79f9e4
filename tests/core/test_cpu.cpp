// The kernel-path dispatch (core/cpu.h): what runs is what QNET_ISA asked for, and every path
// this CPU has computes the ops to rounding of each other.
#include <cstdlib>

#include <catch2/catch.hpp>

#include "core/cpu.h"
#include "core/kernels.h"
#include "core/ops.h"
#include "core/random.h"
#include "tests/grad_check.h"

using namespace qnet;

TEST_CASE("the active kernel path is QNET_ISA's, or the best the CPU has", "[core][isa]") {
  const char* env = std::getenv("QNET_ISA");
  const Isa expected = env && *env ? *parse_isa(env) : cpu_isa();
  CHECK(active_isa() == expected);
  CHECK(kernels().lanes == (expected == Isa::kAvx512 ? 16 : expected == Isa::kAvx2 ? 8 : 4));
  INFO("CPU path " << isa_name(cpu_isa()) << ", active " << isa_name(active_isa()));
  CHECK(parse_isa("avx2") == Isa::kAvx2);
  CHECK_FALSE(parse_isa("sse"));
}

TEST_CASE("a path above the CPU's is refused", "[core][isa]") {
  if (cpu_isa() == Isa::kAvx512) {
    SUCCEED("this CPU runs every path; the refusal is checked on CPUs without AVX-512 (qemu -cpu Haswell in scripts/test)");
    return;
  }
  CHECK_THROWS_WITH(set_isa(Isa::kAvx512), Catch::Contains("this CPU can run at most"));
}

TEST_CASE("every kernel path this CPU runs gives the same ops to rounding", "[core][isa]") {
  const Isa saved = active_isa();
  Rng rng(4);
  Variable x(testing::random_tensor({3, 28, 28, 1}, rng, -1.f, 1.f)), w(testing::random_tensor({3, 3, 1, 12}, rng, -1.f, 1.f), true);
  Variable b(testing::random_tensor({12}, rng, -1.f, 1.f), true), wd(testing::random_tensor({2028, 10}, rng, -1.f, 1.f), true);
  std::vector<std::vector<float>> results;
  for (int i = 0; i <= static_cast<int>(cpu_isa()); ++i) {
    set_isa(static_cast<Isa>(i));
    Variable y = matmul(flatten(relu(conv2d_max_pool2d(x, w, b, {}, {}))), wd);
    sum(mul(y, y)).backward();
    std::vector<float> r = y.value().to_vector();
    for (const Variable* p : {&w, &b, &wd})
      for (float v : p->grad().to_vector()) r.push_back(v);
    w.zero_grad(), b.zero_grad(), wd.zero_grad();
    results.push_back(std::move(r));
  }
  set_isa(saved);
  for (size_t i = 1; i < results.size(); ++i) {
    INFO("path " << isa_name(static_cast<Isa>(i)) << " against baseline");
    REQUIRE(results[i].size() == results[0].size());
    for (size_t k = 0; k < results[0].size(); ++k) CHECK(results[i][k] == Approx(results[0][k]).epsilon(1e-4).margin(1e-4));
  }
  // AVX2 and AVX-512 both contract to FMAs and sum in the same order lane by lane: the same bits
  // (so the same trained weights, docs/performance.md). The baseline has no FMA.
  if (results.size() == 3) CHECK(results[2] == results[1]);
}
