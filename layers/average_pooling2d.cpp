// AveragePooling2D and GlobalAveragePooling2D: the layers (layers/layers.h), their specs
// averagepooling2d(size[, stride=S][, padding=valid|same]) and globalaveragepooling2d, and their
// records (AveragePooling2D: MaxPool2D's ints; GlobalAveragePooling2D: none).
#include <stdexcept>

#include <fmt/format.h>

#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "layers/layers.h"

namespace qnet {

namespace key = qbin::key;

Shape AveragePooling2D::output_shape(const Shape& in) const {
  if (in.size() != 3) throw std::invalid_argument(fmt::format("AveragePooling2D '{}': input {} (expected [H, W, C])", name_, shape_str(in)));
  const auto& o = options_;
  return {axis_geometry(in[0], o.window_h, o.stride_h ? o.stride_h : o.window_h, o.padding).out,
          axis_geometry(in[1], o.window_w, o.stride_w ? o.stride_w : o.window_w, o.padding).out, in[2]};
}

qbin::LayerRecord AveragePooling2D::to_record() const {
  qbin::LayerRecord r = bare_record(*this);
  const auto& o = options_;
  r.ints = {{key::kWindowH, o.window_h}, {key::kWindowW, o.window_w}, {key::kStrideH, o.stride_h ? o.stride_h : o.window_h},
            {key::kStrideW, o.stride_w ? o.stride_w : o.window_w}, {key::kPaddingSame, o.padding == Padding::kSame ? 1 : 0}};
  return r;
}

Shape GlobalAveragePooling2D::output_shape(const Shape& in) const {
  if (in.size() != 3) throw std::invalid_argument(fmt::format("GlobalAveragePooling2D '{}': input {} (expected [H, W, C])", name_, shape_str(in)));
  return {in[2]};
}

const LayerKind& average_pooling2d_kind() {
  static const LayerKind kind{
      .type = "AveragePooling2D",
      .spec_name = "averagepooling2d",
      .positional = {"size"},
      .keys = {"size", "stride", "padding"},
      .role = Int8Role::kRequantize,
      .from_spec =
          [](const SpecArgs& a, const Shape& input, Rng&) {
            if (input.size() != 3) a.fail("averagepooling2d needs an image input (it comes after flatten or dense here)");
            const auto [ph, pw] = a.size2(a.need("size"), 1, 64, "pool size");
            const auto [sh, sw] = a.get("stride") ? a.size2(*a.get("stride"), 1, 64, "stride") : std::pair{ph, pw};
            std::vector<std::unique_ptr<Module>> made;
            made.push_back(std::make_unique<AveragePooling2D>(Pool2dOptions{ph, pw, sh, sw, a.padding()}));
            return made;
          },
      .from_record =
          [](const qbin::LayerRecord& r) -> std::unique_ptr<Module> {
            const Pool2dOptions o{r.get_int(key::kWindowH), r.get_int(key::kWindowW), r.get_int(key::kStrideH), r.get_int(key::kStrideW),
                                  r.get_int(key::kPaddingSame) ? Padding::kSame : Padding::kValid};
            if (o.window_h < 1 || o.window_w < 1 || o.stride_h < 1 || o.stride_w < 1 || o.window_h > 64 || o.window_w > 64 ||
                o.stride_h > 64 || o.stride_w > 64)
              throw qbin::FormatError(fmt::format("layer '{}' (AveragePooling2D): window and stride must be 1..64", qbin::shown(r.name)));
            auto p = std::make_unique<AveragePooling2D>(o);
            p->set_name(r.name);
            return p;
          },
  };
  return kind;
}

const LayerKind& global_average_pooling2d_kind() {
  static const LayerKind kind{
      .type = "GlobalAveragePooling2D",
      .spec_name = "globalaveragepooling2d",
      .role = Int8Role::kRequantize,
      .from_spec =
          [](const SpecArgs& a, const Shape& input, Rng&) {
            if (input.size() != 3) a.fail("globalaveragepooling2d needs an image input (it comes after flatten or dense here)");
            std::vector<std::unique_ptr<Module>> made;
            made.push_back(std::make_unique<GlobalAveragePooling2D>());
            return made;
          },
      .from_record =
          [](const qbin::LayerRecord& r) -> std::unique_ptr<Module> {
            auto p = std::make_unique<GlobalAveragePooling2D>();
            p->set_name(r.name);
            return p;
          },
  };
  return kind;
}

}  // namespace qnet
