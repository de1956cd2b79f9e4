// DepthwiseConv2D: the layer (layers/layers.h), its spec
// depthwiseconv2d(kernel[, stride=S][, padding=valid|same][, depth_multiplier=M][, relu][, use_bias=false])
// and its record (ints channels, depth_multiplier, kernel_h, kernel_w, stride_h, stride_w,
// padding_same; tensors kernel [KH, KW, 1, C * M] and bias).
#include <stdexcept>

#include <fmt/format.h>

#include "core/random.h"
#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "layers/layers.h"

namespace qnet {

namespace key = qbin::key;

namespace {
bool options_ok(const DepthwiseConv2DOptions& o) {
  return o.channels >= 1 && o.depth_multiplier >= 1 && o.channels * o.depth_multiplier <= (1 << 16) && o.kernel_h >= 1 &&
         o.kernel_w >= 1 && o.kernel_h <= 64 && o.kernel_w <= 64 && o.conv.stride_h >= 1 && o.conv.stride_w >= 1 && o.conv.stride_h <= 64 &&
         o.conv.stride_w <= 64;
}
}  // namespace

// Glorot-uniform as for a conv with one input channel per filter: fan_in = KH KW, fan_out = KH KW M.
DepthwiseConv2D::DepthwiseConv2D(const DepthwiseConv2DOptions& o, Rng& rng) : options_(o) {
  if (!options_ok(o))
    throw std::invalid_argument(fmt::format("DepthwiseConv2D: {} channels, depth multiplier {}, kernel {}x{}, stride {}x{} (expected "
                                            "channels x multiplier in 1..65536, kernel and stride 1..64)", o.channels, o.depth_multiplier,
                                            o.kernel_h, o.kernel_w, o.conv.stride_h, o.conv.stride_w));
  const int64_t taps = int64_t{o.kernel_h} * o.kernel_w, out = o.channels * o.depth_multiplier;
  check_parameters("DepthwiseConv2D", (taps + 1) * out);
  kernel_ = Variable(glorot_uniform({o.kernel_h, o.kernel_w, 1, out}, taps, taps * o.depth_multiplier, rng), true);
  if (o.use_bias) bias_ = Variable(Tensor::zeros({out}), true);
}

Variable DepthwiseConv2D::forward(const Variable& x) { return depthwise_conv2d(x, kernel_, bias_, options_.conv); }

Shape DepthwiseConv2D::output_shape(const Shape& in) const {
  if (in.size() != 3 || in[2] != options_.channels)
    throw std::invalid_argument(fmt::format("DepthwiseConv2D '{}': input {} (expected [H, W, {}])", name_, shape_str(in), options_.channels));
  const auto& c = options_.conv;
  return {axis_geometry(in[0], options_.kernel_h, c.stride_h, c.padding).out, axis_geometry(in[1], options_.kernel_w, c.stride_w, c.padding).out,
          options_.channels * options_.depth_multiplier};
}

std::unique_ptr<Module> DepthwiseConv2D::clone() const {
  auto copy = std::make_unique<DepthwiseConv2D>(*this);
  copy->kernel_ = deep_copy(kernel_), copy->bias_ = deep_copy(bias_);
  return copy;
}

std::vector<Variable*> DepthwiseConv2D::parameters() {
  if (bias_.defined()) return {&kernel_, &bias_};
  return {&kernel_};
}

qbin::LayerRecord DepthwiseConv2D::to_record() const {
  qbin::LayerRecord r = bare_record(*this);
  const auto& o = options_;
  r.ints = {{key::kChannels, static_cast<int32_t>(o.channels)}, {key::kDepthMultiplier, static_cast<int32_t>(o.depth_multiplier)},
            {key::kKernelH, o.kernel_h}, {key::kKernelW, o.kernel_w}, {key::kStrideH, o.conv.stride_h}, {key::kStrideW, o.conv.stride_w},
            {key::kPaddingSame, o.conv.padding == Padding::kSame ? 1 : 0}};
  r.tensors.push_back(qbin::f32_tensor("kernel", kernel_.value()));
  if (bias_.defined()) r.tensors.push_back(qbin::f32_tensor("bias", bias_.value()));
  return r;
}

std::unique_ptr<DepthwiseConv2D> DepthwiseConv2D::from_record(const qbin::LayerRecord& r) {
  std::unique_ptr<DepthwiseConv2D> d(new DepthwiseConv2D());
  auto& o = d->options_;
  o.channels = r.get_int(key::kChannels);
  o.depth_multiplier = r.get_int(key::kDepthMultiplier);
  o.kernel_h = r.get_int(key::kKernelH);
  o.kernel_w = r.get_int(key::kKernelW);
  o.conv.stride_h = r.get_int(key::kStrideH);
  o.conv.stride_w = r.get_int(key::kStrideW);
  o.conv.padding = r.get_int(key::kPaddingSame) ? Padding::kSame : Padding::kValid;
  if (!options_ok(o)) throw qbin::FormatError(fmt::format("layer '{}' (DepthwiseConv2D): attributes out of range", qbin::shown(r.name)));
  const Shape kshape{o.kernel_h, o.kernel_w, 1, o.channels * o.depth_multiplier};
  const qbin::TensorRecord& k = r.tensor("kernel");
  if (k.shape != kshape)
    throw qbin::FormatError(fmt::format("layer '{}' (DepthwiseConv2D): kernel {} (expected {})", qbin::shown(r.name), shape_str(k.shape),
                                        shape_str(kshape)));
  d->kernel_ = Variable(qbin::to_f32(k), true);
  d->bias_ = bias_from_record(r, kshape[3]);
  o.use_bias = d->bias_.defined();
  d->set_name(r.name);
  return d;
}

const LayerKind& depthwise_conv2d_kind() {
  static const LayerKind kind{
      .type = "DepthwiseConv2D",
      .spec_name = "depthwiseconv2d",
      .positional = {"kernel"},
      .keys = {"kernel", "stride", "padding", key::kDepthMultiplier, "activation", "use_bias"},
      .role = Int8Role::kWeights,
      .from_spec =
          [](const SpecArgs& a, const Shape& input, Rng& rng) {
            if (input.size() != 3) a.fail("depthwiseconv2d needs an image input (it comes after flatten or dense here)");
            const auto [kh, kw] = a.size2(a.need("kernel"), 1, 64, "kernel size");
            const auto [sh, sw] = a.get("stride") ? a.size2(*a.get("stride"), 1, 64, "stride") : std::pair{1, 1};
            const int64_t m = a.get(key::kDepthMultiplier) ? a.integer(*a.get(key::kDepthMultiplier), 1, 64, "depth multiplier") : 1;
            if (input[2] * m > (1 << 16)) a.fail(fmt::format("{} channels x depth multiplier {} (expected at most 65536 outputs)", input[2], m));
            std::vector<std::unique_ptr<Module>> made;
            made.push_back(std::make_unique<DepthwiseConv2D>(
                DepthwiseConv2DOptions{.channels = input[2], .depth_multiplier = m, .kernel_h = kh, .kernel_w = kw,
                                       .conv = {.stride_h = sh, .stride_w = sw, .padding = a.padding()}, .use_bias = a.flag("use_bias", true)},
                rng));
            if (a.relu()) made.push_back(std::make_unique<ReLU>());
            return made;
          },
      .from_record = [](const qbin::LayerRecord& r) -> std::unique_ptr<Module> { return DepthwiseConv2D::from_record(r); },
      .kernel = [](Module& m) -> Variable& { return dynamic_cast<DepthwiseConv2D&>(m).kernel(); },
      .bias = [](Module& m) -> Variable& { return dynamic_cast<DepthwiseConv2D&>(m).bias(); },
  };
  return kind;
}

}  // namespace qnet
