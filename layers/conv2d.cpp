#include <stdexcept>

#include <fmt/format.h>

#include "core/random.h"
#include "io/record_keys.h"
#include "layers/layer_kind.h"
#include "layers/layers.h"

namespace qnet {

namespace key = qbin::key;

Conv2D::Conv2D(const Conv2DOptions& o, Rng& rng) : options_(o) {
  if (o.in_channels < 1 || o.filters < 1 || o.kernel_h < 1 || o.kernel_w < 1)
    throw std::invalid_argument(fmt::format("Conv2D: {} input channels, {} filters, kernel {}x{} (expected all >= 1)",
                                            o.in_channels, o.filters, o.kernel_h, o.kernel_w));
  const int64_t taps = int64_t{o.kernel_h} * o.kernel_w;
  check_parameters("Conv2D", taps * o.in_channels * o.filters + o.filters);
  kernel_ = Variable(glorot_uniform({o.kernel_h, o.kernel_w, o.in_channels, o.filters}, taps * o.in_channels,
                                    taps * o.filters, rng),
                     true);
  if (o.use_bias) bias_ = Variable(Tensor::zeros({o.filters}), true);
}

Variable Conv2D::forward(const Variable& x) { return conv2d(x, kernel_, bias_, options_.conv); }

Variable Conv2D::forward_max_pooled(const Variable& x, const Pool2dOptions& pool, ValueRange* range, const PooledActivation& activation) {
  return conv2d_max_pool2d(x, kernel_, bias_, options_.conv, pool, range, activation);
}

Shape Conv2D::output_shape(const Shape& in) const {
  if (in.size() != 3 || in[2] != options_.in_channels)
    throw std::invalid_argument(fmt::format("Conv2D '{}': input {} (expected [H, W, {}])", name_, shape_str(in),
                                            options_.in_channels));
  const auto& c = options_.conv;
  return {axis_geometry(in[0], options_.kernel_h, c.stride_h, c.padding).out,
          axis_geometry(in[1], options_.kernel_w, c.stride_w, c.padding).out, options_.filters};
}

std::unique_ptr<Module> Conv2D::clone() const {
  auto copy = std::make_unique<Conv2D>(*this);
  copy->kernel_ = deep_copy(kernel_), copy->bias_ = deep_copy(bias_);
  return copy;
}

std::vector<Variable*> Conv2D::parameters() {
  if (bias_.defined()) return {&kernel_, &bias_};
  return {&kernel_};
}

qbin::LayerRecord Conv2D::to_record() const {
  qbin::LayerRecord r = bare_record(*this);
  r.ints = {{key::kFilters, static_cast<int32_t>(options_.filters)}, {key::kInChannels, static_cast<int32_t>(options_.in_channels)},
            {key::kKernelH, options_.kernel_h}, {key::kKernelW, options_.kernel_w},
            {key::kStrideH, options_.conv.stride_h}, {key::kStrideW, options_.conv.stride_w},
            {key::kPaddingSame, options_.conv.padding == Padding::kSame ? 1 : 0}};
  r.tensors.push_back(qbin::f32_tensor("kernel", kernel_.value()));
  if (bias_.defined()) r.tensors.push_back(qbin::f32_tensor("bias", bias_.value()));
  return r;
}

std::unique_ptr<Conv2D> Conv2D::from_record(const qbin::LayerRecord& r) {
  std::unique_ptr<Conv2D> c(new Conv2D());
  auto& o = c->options_;
  o.filters = r.get_int(key::kFilters);
  o.in_channels = r.get_int(key::kInChannels);
  o.kernel_h = r.get_int(key::kKernelH);
  o.kernel_w = r.get_int(key::kKernelW);
  o.conv.stride_h = r.get_int(key::kStrideH);
  o.conv.stride_w = r.get_int(key::kStrideW);
  o.conv.padding = r.get_int(key::kPaddingSame) ? Padding::kSame : Padding::kValid;
  if (o.filters < 1 || o.in_channels < 1 || o.kernel_h < 1 || o.kernel_w < 1 || o.conv.stride_h < 1 || o.conv.stride_w < 1)
    throw qbin::FormatError(fmt::format("layer '{}' (Conv2D): attributes out of range", qbin::shown(r.name)));
  const Shape kshape{o.kernel_h, o.kernel_w, o.in_channels, o.filters};
  const qbin::TensorRecord& k = r.tensor("kernel");
  if (k.shape != kshape)
    throw qbin::FormatError(fmt::format("layer '{}' (Conv2D): kernel {} (expected {})", qbin::shown(r.name), shape_str(k.shape), shape_str(kshape)));
  c->kernel_ = Variable(qbin::to_f32(k), true);
  c->bias_ = bias_from_record(r, o.filters);
  o.use_bias = c->bias_.defined();
  c->set_name(r.name);
  return c;
}

const LayerKind& conv2d_kind() {
  static const LayerKind kind{
      .type = "Conv2D",
      .spec_name = "conv2d",
      .positional = {key::kFilters, "kernel"},
      .keys = {key::kFilters, "kernel", "stride", "padding", "activation", "use_bias"},
      .role = Int8Role::kWeights,
      .from_spec =
          [](const SpecArgs& a, const Shape& input, Rng& rng) {
            if (input.size() != 3) a.fail("conv2d needs an image input (it comes after flatten or dense here)");
            const auto [kh, kw] = a.size2(a.need("kernel"), 1, 64, "kernel size");
            const auto [sh, sw] = a.get("stride") ? a.size2(*a.get("stride"), 1, 64, "stride") : std::pair{1, 1};
            std::vector<std::unique_ptr<Module>> made;
            made.push_back(std::make_unique<Conv2D>(
                Conv2DOptions{.in_channels = input[2], .filters = a.integer(a.need("filters"), 1, 4096, "filters"), .kernel_h = kh,
                              .kernel_w = kw, .conv = {.stride_h = sh, .stride_w = sw, .padding = a.padding()},
                              .use_bias = a.flag("use_bias", true)},
                rng));
            if (a.relu()) made.push_back(std::make_unique<ReLU>());
            return made;
          },
      .from_record = [](const qbin::LayerRecord& r) -> std::unique_ptr<Module> { return Conv2D::from_record(r); },
      .kernel = [](Module& m) -> Variable& { return dynamic_cast<Conv2D&>(m).kernel(); },
      .bias = [](Module& m) -> Variable& { return dynamic_cast<Conv2D&>(m).bias(); },
  };
  return kind;
}

}  // namespace qnet
