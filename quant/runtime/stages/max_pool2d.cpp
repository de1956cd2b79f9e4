// MaxPool2D at inference: its record read into a stage, its arithmetic and its lowering
// (quant/runtime/stage_kind.h). Its training side is layers/simple_layers.cpp.
#include <algorithm>
#include <limits>
#include <string_view>

#include "io/record_keys.h"
#include "quant/runtime/byte_kernels.h"
#include "quant/runtime/stage_kind.h"

namespace qnet {

namespace {

namespace key = qbin::key;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

class PoolStage final : public StageOp {
 public:
  Geometry g;

  // The largest value in each window; padding never wins (max is order-preserving on codes).
  void reference(RefActivation& x, const Stage& st) const override {
    RefActivation y = reference_output(st);
    for (int oh = 0; oh < st.H; ++oh)
      for (int ow = 0; ow < st.W; ++ow)
        for (int c = 0; c < x.C; ++c) {
          uint8_t best = 0;
          float best_f = -std::numeric_limits<float>::infinity();
          for (int kh = 0; kh < g.KH; ++kh)
            for (int kw = 0; kw < g.KW; ++kw) {
              const int ih = oh * g.SH - g.pad_top + kh, iw = ow * g.SW - g.pad_left + kw;
              if (ih < 0 || ih >= x.H || iw < 0 || iw >= x.W) continue;
              if (x.real) best_f = std::max(best_f, x.f[x.at(ih, iw, c)]);
              else best = std::max(best, x.q[x.at(ih, iw, c)]);
            }
          if (x.real) y.f[y.at(oh, ow, c)] = best_f;
          else y.q[y.at(oh, ow, c)] = best;
        }
    x = std::move(y);
  }

  // Windows that tile the input run on qnet's kernels (u8::max_pool_tiled; f32::max_pool_tiled on
  // nhwc or blocked floats where oneDNN's f32 pooling is not an AVX-512 kernel, docs/runtime.md);
  // other windows and layouts on oneDNN's. Either gives the same floats: a max is exact.
  int lower(PlanBuilder& b, int cur, const Stage& st, const Stage*, bool&) const override {
    const bool tiles = g.SH == g.KH && g.SW == g.KW && g.pad_top == 0 && g.pad_left == 0 && g.pad_bottom == 0 && g.pad_right == 0;
    const dt type = b.desc(cur).data_type();
    const int64_t N = b.batch();
    if (type == dt::u8 && tiles) {
      cur = b.as_nhwc_u8(cur);
      return tiled<uint8_t>(b, cur, st, tag::nhwc, N, b.desc(cur).dims()[1], u8::max_pool_tiled);
    }
    dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max, b.desc(cur),
                                  memory::desc({N, st.C, st.H, st.W}, type, tag::any), {g.SH, g.SW}, {g.KH, g.KW}, {g.pad_top, g.pad_left},
                                  {g.pad_bottom, g.pad_right});
    dnnl::pooling_forward::primitive_desc pd(d, PlanBuilder::plain_attributes(), b.eng);
    // oneDNN 2.6's f32 pooling is 2 - 3x faster than qnet's SSE kernel where it runs on AVX-512
    // (jit:avx512_core, Zen 5) and 3.5 - 6x slower on AVX2 (jit:avx2, Zen 3): measured, docs/runtime.md.
    if (type == dt::f32 && tiles && std::string_view(pd.impl_info_str()).rfind("jit:avx512", 0) != 0) {
      const memory::dims in = b.desc(cur).dims();  // {N, C, H, W}; nhwc, or blocked: images of `block` channels
      for (const auto& [layout, block] : {std::pair{tag::nhwc, int64_t{0}}, {tag::aBcd8b, int64_t{8}}, {tag::aBcd16b, int64_t{16}}})
        if (b.desc(cur) == memory::desc(in, dt::f32, layout))
          return tiled<float>(b, cur, st, layout, block ? N * ((in[1] + block - 1) / block) : N, block ? block : in[1],
                              f32::max_pool_tiled);
    }
    const int out = b.add(pd.dst_desc());
    b.step(pd, "pool", {{DNNL_ARG_SRC, cur}, {DNNL_ARG_DST, out}});
    return out;
  }

  const Geometry* max_pool_window() const override { return &g; }

 private:
  // A step of qnet's tiled max pooling (T: u8 codes or floats) reading buffer `cur`, in `layout`,
  // as `images` images of C channels each; its output has the same layout.
  template <typename T>
  int tiled(PlanBuilder& b, int cur, const Stage& st, tag layout, int64_t images, int64_t C,
            void (*kernel)(const T*, T*, int64_t, int64_t, int64_t, int64_t, int, int, int64_t, int64_t)) const {
    const memory::dims in = b.desc(cur).dims();  // {N, C, H, W}
    const int out = b.add(memory::desc({b.batch(), st.C, st.H, st.W}, b.desc(cur).data_type(), layout));
    const int64_t H = in[2], W = in[3], OH = st.H, OW = st.W;
    const int KH = g.KH, KW = g.KW, src = cur;
    b.kernel_step(fmt::format("pool qnet:{}_max_tiled_{}x{}", sizeof(T) == 1 ? "u8" : "f32", KH, KW), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, out}},
                  [=](const std::vector<memory>& mem) {
                    kernel(static_cast<const T*>(mem[src].get_data_handle()), static_cast<T*>(mem[out].get_data_handle()), images, H, W, C,
                           KH, KW, OH, OW);
                  });
    return out;
  }
};

size_t read(StageReader& rd, std::span<const qbin::LayerRecord> records) {
  const qbin::LayerRecord& r = records[0];
  auto s = std::make_shared<PoolStage>();
  int OH = 0, OW = 0;
  s->g = rd.window(r, key::kWindowH, key::kWindowW, OH, OW);
  rd.push_same_grid(r, std::move(s), OH, OW, rd.C);
  return 1;
}

}  // namespace

const StageKind& maxpool2d_stage_kind() {
  static const StageKind kind{"MaxPool2D", read};
  return kind;
}

}  // namespace qnet
