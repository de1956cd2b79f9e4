// ZeroPadding2D: the layer and its kind, in one file. Its runtime side (record to stage, integer
// reference, lowering) is quant/runtime/stages/zero_padding2d.cpp; docs/architecture.md walks through both.
#include <stdexcept>

#include <fmt/format.h>

#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "layers/layers.h"

namespace qnet {

namespace key = qbin::key;

namespace {
constexpr int kMaxPad = 64;  // per side, as kernel and window sizes
bool valid(const Pad2dOptions& p) {
  const auto ok = [](int v) { return v >= 0 && v <= kMaxPad; };
  return ok(p.top) && ok(p.bottom) && ok(p.left) && ok(p.right);
}
}  // namespace

ZeroPadding2D::ZeroPadding2D(const Pad2dOptions& padding) : padding_(padding) {
  if (!valid(padding))
    throw std::invalid_argument(fmt::format("ZeroPadding2D: padding top {} bottom {} left {} right {} (expected 0..{} each)", padding.top,
                                            padding.bottom, padding.left, padding.right, kMaxPad));
}

Shape ZeroPadding2D::output_shape(const Shape& in) const {
  if (in.size() != 3) throw std::invalid_argument(fmt::format("ZeroPadding2D '{}': input {} (expected [H, W, C])", name_, shape_str(in)));
  return {in[0] + padding_.top + padding_.bottom, in[1] + padding_.left + padding_.right, in[2]};
}

qbin::LayerRecord ZeroPadding2D::to_record() const {
  qbin::LayerRecord r = bare_record(*this);
  r.ints = {{key::kPadTop, padding_.top}, {key::kPadBottom, padding_.bottom}, {key::kPadLeft, padding_.left}, {key::kPadRight, padding_.right}};
  return r;
}

const LayerKind& zero_padding2d_kind() {
  static const LayerKind kind{
      .type = "ZeroPadding2D",
      .spec_name = "zeropadding2d",
      .positional = {"padding"},
      .keys = {"padding", "top", "bottom", "left", "right"},
      .role = Int8Role::kPassThrough,  // real 0 is a code on every grid (the zero point), so codes stay on their grid
      .from_spec =
          [](const SpecArgs& a, const Shape& input, Rng&) {
            if (input.size() != 3) a.fail("zeropadding2d needs an image input (it comes after flatten or dense here)");
            // padding=P or HxW (P rows above and below, W columns left and right, Keras' symmetric
            // form); top=, bottom=, left=, right= set one side.
            const auto [ph, pw] = a.get("padding") ? a.size2(*a.get("padding"), 0, kMaxPad, "padding") : std::pair{0, 0};
            Pad2dOptions p{ph, ph, pw, pw};
            const auto side = [&](const char* name, int& v) {
              if (const SpecToken* t = a.get(name)) v = static_cast<int>(a.integer(*t, 0, kMaxPad, "padding"));
            };
            side("top", p.top), side("bottom", p.bottom), side("left", p.left), side("right", p.right);
            std::vector<std::unique_ptr<Module>> made;
            made.push_back(std::make_unique<ZeroPadding2D>(p));
            return made;
          },
      .from_record =
          [](const qbin::LayerRecord& r) -> std::unique_ptr<Module> {
            const Pad2dOptions p{r.get_int(key::kPadTop), r.get_int(key::kPadBottom), r.get_int(key::kPadLeft), r.get_int(key::kPadRight)};
            if (!valid(p))
              throw qbin::FormatError(fmt::format("layer '{}' (ZeroPadding2D): padding top {} bottom {} left {} right {} (expected 0..{} each)",
                                                  qbin::shown(r.name), p.top, p.bottom, p.left, p.right, kMaxPad));
            auto m = std::make_unique<ZeroPadding2D>(p);
            m->set_name(r.name);
            return m;
          },
  };
  return kind;
}

}  // namespace qnet
