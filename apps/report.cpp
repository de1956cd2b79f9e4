#include "apps/report.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <tuple>

#include <fmt/format.h>

namespace qnet {

namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

// A "nice" axis maximum (1, 2, 2.5 or 5 times a power of ten) at or above v, and its tick step.
std::pair<double, double> nice_axis(double v) {
  if (!(v > 0)) return {1.0, 0.2};
  const double p = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * p >= v) return {m * p, m * p / 5};
  return {10 * p, 2 * p};
}

}  // namespace

std::string bar_chart_svg(const BarChart& c) {
  if (c.groups.empty() || c.series.empty()) throw std::invalid_argument("bar_chart_svg: no data");
  double top = 0;
  for (const BarSeries& s : c.series) {
    if (s.values.size() != c.groups.size()) throw std::invalid_argument("bar_chart_svg: a series does not have one value per group");
    for (double v : s.values)
      if (std::isfinite(v)) top = std::max(top, v);
  }
  const auto [y_max, step] = nice_axis(top * 1.1);
  // Many groups (a layer per group) widen the chart to ~28 px a bar; labels longer than their
  // group is wide are drawn slanted, with room below for them.
  size_t longest = 0;
  for (const std::string& g : c.groups) longest = std::max(longest, g.size());
  const double bars = static_cast<double>(c.groups.size() * c.series.size());
  const double W = std::max({720.0, 11.0 * static_cast<double>(c.title.size()) + 40, 100 + 28 * bars}), left = 80, right = 20, plot_top = 60;
  const bool slanted = 7.5 * static_cast<double>(longest) > (W - left - right) / static_cast<double>(c.groups.size());
  const double bottom = slanted ? 40 + 5.5 * static_cast<double>(longest) : 60, H = 360 + bottom;
  const double pw = W - left - right, ph = H - plot_top - bottom;
  auto y = [&](double v) { return plot_top + ph * (1 - v / y_max); };
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" font-family=\"sans-serif\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"28\" font-size=\"18\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\n",
      W, H, W, H, W / 2, escape(c.title));
  for (double t = 0; t <= y_max + step / 2; t += step) {  // grid and y ticks
    svg += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n", left, y(t), W - right, y(t));
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"12\" text-anchor=\"end\">{}</text>\n", left - 6, y(t) + 4,
                       fmt::format("{:g}", t));
  }
  svg += fmt::format("<text transform=\"translate(20,{}) rotate(-90)\" font-size=\"13\" text-anchor=\"middle\">{}</text>\n",
                     plot_top + ph / 2, escape(c.y_label));
  const double group_w = pw / static_cast<double>(c.groups.size());
  const double bar_w = group_w * 0.7 / static_cast<double>(c.series.size());
  for (size_t g = 0; g < c.groups.size(); ++g) {
    const double x0 = left + g * group_w + group_w * 0.15;
    for (size_t s = 0; s < c.series.size(); ++s) {
      const double v = c.series[s].values[g], x = x0 + s * bar_w;
      if (!std::isfinite(v)) {  // no figure: say so instead of drawing a zero
        svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\" text-anchor=\"middle\">n/a</text>\n", x + bar_w * 0.46,
                           plot_top + ph - 4);
        continue;
      }
      svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>\n", x, y(v), bar_w * 0.92,
                         plot_top + ph - y(v), c.series[s].color);
      svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\n", x + bar_w * 0.46,
                         y(v) - 4, fmt::format(fmt::runtime(c.value_format), v));
    }
    if (slanted)
      svg += fmt::format("<text transform=\"translate({:.1f},{}) rotate(-35)\" font-size=\"12\" text-anchor=\"end\">{}</text>\n",
                         left + (g + 0.5) * group_w, plot_top + ph + 14, escape(c.groups[g]));
    else
      svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"13\" text-anchor=\"middle\">{}</text>\n", left + (g + 0.5) * group_w,
                         plot_top + ph + 20, escape(c.groups[g]));
  }
  svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n", left, plot_top + ph, W - right, plot_top + ph);
  svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n", left, plot_top, left, plot_top + ph);
  for (size_t s = 0; s < c.series.size(); ++s) {  // legend, top right
    const double lx = W - right - 150, ly = plot_top + 8 + s * 20;
    svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"{}\"/>\n", lx, ly, c.series[s].color);
    svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"13\">{}</text>\n", lx + 20, ly + 12, escape(c.series[s].name));
  }
  return svg + "</svg>\n";
}

std::string histogram_svg(const HistogramChart& c) {
  if (c.counts.empty() || !(c.width > 0)) throw std::invalid_argument("histogram_svg: no bins");
  const double W = 720, H = 360, left = 70, right = 20, plot_top = 50, bottom = 60, gap = 24;
  const double pw = W - left - right - 2 * gap, ph = H - plot_top - bottom;
  int64_t top = std::max(c.below, c.above);
  for (int64_t n : c.counts) top = std::max(top, n);
  const double y_max = std::max(1.0, std::ceil(std::log10(static_cast<double>(top) + 1)));
  auto y = [&](int64_t n) { return plot_top + ph * (1 - std::log10(static_cast<double>(n) + 1) / y_max); };
  const double hi = c.lo + c.width * static_cast<double>(c.counts.size());
  auto x = [&](double v) { return left + gap + pw * (v - c.lo) / (hi - c.lo); };
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" font-family=\"sans-serif\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"26\" font-size=\"16\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\n",
      W, H, W, H, W / 2, escape(c.title));
  for (int d = 0; d <= static_cast<int>(y_max); ++d) {  // 1, 10, 100, ... values
    const double yy = plot_top + ph * (1 - d / y_max);
    svg += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#eee\"/>\n", left, yy, W - right, yy);
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\">{:g}</text>\n", left - 6, yy + 4, std::pow(10.0, d) - (d == 0));
  }
  if ((hi - c.lo) <= 64)
    for (double g = std::ceil(c.lo); g < hi; g += 1)
      svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{}\" x2=\"{:.1f}\" y2=\"{}\" stroke=\"#9ecae1\"/>\n", x(g), plot_top, x(g), plot_top + ph);
  const double bw = pw / static_cast<double>(c.counts.size());
  for (size_t i = 0; i < c.counts.size(); ++i)
    if (c.counts[i] > 0)
      svg += fmt::format("<rect x=\"{:.2f}\" y=\"{:.1f}\" width=\"{:.2f}\" height=\"{:.1f}\" fill=\"#4c78a8\"/>\n", left + gap + i * bw,
                         y(c.counts[i]), std::max(bw * 0.9, 0.5), plot_top + ph - y(c.counts[i]));
  for (auto [n, at, label] : {std::tuple{c.below, left + 2.0, "below"}, std::tuple{c.above, W - right - gap + 2.0, "above"}}) {
    if (n > 0)
      svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{}\" height=\"{:.1f}\" fill=\"#e45756\"/>\n", at, y(n), gap - 4, plot_top + ph - y(n));
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#e45756\">{}</text>\n", at + (gap - 4) / 2,
                       plot_top + ph + 28, label);
  }
  const double first = std::ceil(c.lo), last = std::floor(hi);  // the first, middle and last integer (code) on the axis
  for (double t : {first, std::round((first + last) / 2), last})
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{:g}</text>\n", x(t), plot_top + ph + 14, t);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"13\" text-anchor=\"middle\">{}</text>\n", left + pw / 2 + gap, H - 12, escape(c.x_label));
  svg += fmt::format("<text transform=\"translate(18,{}) rotate(-90)\" font-size=\"13\" text-anchor=\"middle\">values (log scale)</text>\n",
                     plot_top + ph / 2);
  svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n", left, plot_top + ph, W - right, plot_top + ph);
  return svg + "</svg>\n";
}

Stats stats(const std::vector<double>& v) {
  Stats s;
  if (v.empty()) return s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / static_cast<double>(v.size() - 1)) : 0.0;
  std::vector<double> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  const size_t mid = sorted.size() / 2;
  s.median = sorted.size() % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  s.min = sorted.front();
  s.max = sorted.back();
  return s;
}

std::string mean_sd(const std::vector<double>& v, int decimals) {
  const Stats s = stats(v);
  if (v.size() == 1) return fmt::format("{:.{}f}", s.mean, decimals);
  return fmt::format("{:.{}f} ± {:.{}f} (n={})", s.mean, decimals, s.sd, decimals, v.size());
}

std::string median_range(const std::vector<double>& v, int decimals) {
  const Stats s = stats(v);
  if (v.size() == 1) return fmt::format("{:.{}f}", s.median, decimals);
  return fmt::format("{:.{}f} (median of {}; {:.{}f} - {:.{}f})", s.median, decimals, v.size(), s.min, decimals, s.max, decimals);
}

}  // namespace qnet
