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
  uint64_t next_u64() {                  // splitmix64-seeded xoshiro256**
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  double uniform01() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }  // [0, 1), 53 random bits
  // uniform01() < p exactly when (next_u64() >> 11) < below_cut(p): the same test without the
  // conversion (Dropout's masks, drawn by the ten thousand a step).
  static uint64_t below_cut(double p);
  void discard(uint64_t n) {             // as n calls of next_u64(), the values unused
    for (uint64_t i = 0; i < n; ++i) next_u64();
  }
  float uniform(float lo, float hi);     // [lo, hi)
  uint64_t below(uint64_t n);            // [0, n), unbiased (Lemire's method)
  float normal();                        // Box-Muller, two draws each
  template <typename T>
  void shuffle(std::vector<T>& v) {      // Fisher-Yates
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace qnet
