// Per-channel kernels on `rows` x C floats (every axis but the last is a row: NHWC images, or
// [N, features]): the sums BatchNorm needs and per-channel affine maps.
//
// Sums are vectorised over channels: each lane adds its channel's rows in row order, inside fixed
// chunks of `chunk_rows` rows whose partial sums are added in chunk order, so a sum depends
// neither on the thread count nor on the vector width (core/kernels.h).
#include "core/kernels.h"
#include "core/parallel.h"
#include "core/parallel_for.h"
#include "core/simd.h"

namespace qnet::QNET_ISA_NS {

namespace {

// out[c] = the sum over rows of term(row offset, channel block start, lanes), per chunk of rows
// and then in chunk order. `term` returns one vector per row and block.
template <typename F>
void chunked_channel_sum(int64_t rows, int64_t C, int64_t chunk_rows, float* out, F&& term) {
  const int64_t blocks = (C + kLanes - 1) / kLanes, chunks = (rows + chunk_rows - 1) / chunk_rows;
  VecBuffer partial(chunks * blocks);
  vf* const parts = partial.data();
  parallel_for_static(chunks, rows * C > kMinParallelElements, [=, &term](int64_t chunk) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int lanes = lanes_in_block(C, b);
      vf acc = {};
      for (int64_t r = chunk * chunk_rows; r < min_i(rows, (chunk + 1) * chunk_rows); ++r) acc += term(r * C + b * kLanes, b, lanes);
      parts[chunk * blocks + b] = acc;
    }
  });
  for (int64_t b = 0; b < blocks; ++b) {
    vf acc = partial[b];
    for (int64_t chunk = 1; chunk < chunks; ++chunk) acc += partial[chunk * blocks + b];
    store(out + b * kLanes, acc, lanes_in_block(C, b));
  }
}

}  // namespace

void channel_sum(int64_t rows, int64_t C, int64_t chunk_rows, const float* x, float* sum) {
  chunked_channel_sum(rows, C, chunk_rows, sum, [&](int64_t at, int64_t, int lanes) { return load(x + at, lanes); });
}

void channel_sq_dev(int64_t rows, int64_t C, int64_t chunk_rows, const float* x, const float* mean, float* out) {
  chunked_channel_sum(rows, C, chunk_rows, out, [&](int64_t at, int64_t b, int lanes) {
    const vf d = load(x + at, lanes) - load(mean + b * kLanes, lanes);
    return d * d;
  });
}

void channel_dot_dev(int64_t rows, int64_t C, int64_t chunk_rows, const float* a, const float* x, const float* mean, float* out) {
  chunked_channel_sum(rows, C, chunk_rows, out, [&](int64_t at, int64_t b, int lanes) {
    const vf d = mean ? load(x + at, lanes) - load(mean + b * kLanes, lanes) : load(x + at, lanes);
    return load(a + at, lanes) * d;
  });
}

void channel_affine(int64_t rows, int64_t C, const float* x, const float* center, const float* scale, const float* shift, float* y) {
  const int64_t blocks = (C + kLanes - 1) / kLanes;
  parallel_for_static(rows, rows * C > kMinParallelElements, [=](int64_t r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int lanes = lanes_in_block(C, b);
      const int64_t at = r * C + b * kLanes, c = b * kLanes;
      const vf d = center ? load(x + at, lanes) - load(center + c, lanes) : load(x + at, lanes);
      store(y + at, shift ? d * load(scale + c, lanes) + load(shift + c, lanes) : d * load(scale + c, lanes), lanes);
    }
  });
}

void channel_affine2(int64_t rows, int64_t C, const float* x, const float* center, const float* a, const float* y, const float* b_coef,
                     const float* shift, float* out) {
  const int64_t blocks = (C + kLanes - 1) / kLanes;
  parallel_for_static(rows, rows * C > kMinParallelElements, [=](int64_t r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int lanes = lanes_in_block(C, b);
      const int64_t at = r * C + b * kLanes, c = b * kLanes;
      const vf d = load(x + at, lanes) - load(center + c, lanes);
      store(out + at, d * load(a + c, lanes) + load(y + at, lanes) * load(b_coef + c, lanes) + load(shift + c, lanes), lanes);
    }
  });
}

}  // namespace qnet::QNET_ISA_NS
