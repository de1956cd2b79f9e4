// The one seeded generator every random choice in qnet flows from (init, shuffling).
//
//   qnet::Rng rng(seed);
//   float u = rng.uniform(-1.f, 1.f);
//   rng.shuffle(indices);
//
// The distributions are written here rather than taken from <random>, whose
// distributions differ between standard libraries: the same seed gives the same
// numbers everywhere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace qnet {

class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next_u64();                   // splitmix64-seeded xoshiro256**
  double uniform01();                    // [0, 1) with 53 random bits
  float uniform(float lo, float hi);     // [lo, hi)
  uint64_t below(uint64_t n);            // [0, n), unbiased (Lemire's method)
  float normal();                        // Box-Muller
  template <typename T>
  void shuffle(std::vector<T>& v) {      // Fisher-Yates
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  uint64_t s_[4];
};

}  // namespace qnet
