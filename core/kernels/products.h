// Matrix products on Eigen 3.4 (core/kernels/products.cpp), where its blocked GEMM measured faster
// than qnet's hand kernels: the Dense layer's input gradient, dy w^T (1.35 - 1.8x at batch 32). The Dense
// forward and weight gradient, and the convolutions (pointwise ones included), measured as fast or
// faster on the hand kernels and stay there (docs/dependencies.md has the figures).
//
// Built for the baseline and AVX2 paths only: the AVX-512 path calls the AVX2 build
// (QNET_PRODUCTS_NS = isa_avx2 there, CMakeLists.txt), so that the AVX2 and AVX-512 paths stay
// bit-identical (Eigen's 16-float kernels would add in another order).
//
// Results do not depend on the thread count: the rows of a result go to Eigen in fixed blocks
// chosen from the shape alone, and Eigen's own blocking is pinned (fixed cache sizes).
#pragma once

#include <cstdint>

namespace qnet::QNET_PRODUCTS_NS {

// c[N, K] = a[N, M] b[K, M]^T, row-major.
void product_nt(int64_t N, int64_t M, int64_t K, const float* a, const float* b, float* c);

}  // namespace qnet::QNET_PRODUCTS_NS
