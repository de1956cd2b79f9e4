// The report helpers of `reproduce`: SVG bar charts and summary statistics.
#include <cmath>

#include <catch2/catch.hpp>

#include "apps/report.h"

using namespace qnet;

TEST_CASE("a bar chart has its title, axis label, legend and one bar per value", "[apps]") {
  const BarChart c{.title = "Speed <test>", .y_label = "seconds", .groups = {"a", "b"},
                   .series = {{"float", "#111111", {1.0, 2.0}}, {"int8", "#222222", {0.5, std::nan("")}}}};
  const std::string svg = bar_chart_svg(c);
  CHECK(svg.find("Speed &lt;test&gt;") != std::string::npos);  // escaped
  CHECK(svg.find(">seconds<") != std::string::npos);
  CHECK(svg.find(">float<") != std::string::npos);
  CHECK(svg.find(">int8<") != std::string::npos);
  size_t bars = 0;
  for (size_t at = svg.find("fill=\"#"); at != std::string::npos; at = svg.find("fill=\"#", at + 1)) ++bars;
  CHECK(bars == 3 + 2);  // three bars (the NaN one is "n/a") and two legend swatches
  CHECK(svg.find(">n/a<") != std::string::npos);
  CHECK(svg.find(">2.000<") != std::string::npos);  // value labels
}

TEST_CASE("a ragged or empty chart is refused", "[apps]") {
  CHECK_THROWS_AS(bar_chart_svg({.title = "t", .y_label = "y", .groups = {"a", "b"}, .series = {{"s", "#000", {1.0}}}}),
                  std::invalid_argument);
  CHECK_THROWS_AS(bar_chart_svg({.title = "t", .y_label = "y", .groups = {}, .series = {}}), std::invalid_argument);
}

TEST_CASE("a histogram draws one bar per non-empty bin, the clipped counts in red, grid lines for few codes", "[apps]") {
  const HistogramChart c{.title = "conv2d <grid>", .x_label = "code", .lo = -0.5, .width = 1.0, .counts = {5, 0, 100, 7}, .below = 0, .above = 3};
  const std::string svg = histogram_svg(c);
  CHECK(svg.find("conv2d &lt;grid&gt;") != std::string::npos);
  size_t bars = 0, red = 0, grid = 0;
  for (size_t at = svg.find("fill=\"#4c78a8\""); at != std::string::npos; at = svg.find("fill=\"#4c78a8\"", at + 1)) ++bars;
  for (size_t at = svg.find("fill=\"#e45756\"/>"); at != std::string::npos; at = svg.find("fill=\"#e45756\"/>", at + 1)) ++red;  // bars, not labels
  for (size_t at = svg.find("stroke=\"#9ecae1\""); at != std::string::npos; at = svg.find("stroke=\"#9ecae1\"", at + 1)) ++grid;
  CHECK(bars == 3);  // the empty bin draws nothing
  CHECK(red == 1);   // "above" has 3 values, "below" none
  CHECK(grid == 4);  // codes 0..3
  HistogramChart wide = c;
  wide.counts.assign(256, 1);
  CHECK(histogram_svg(wide).find("#9ecae1") == std::string::npos);  // 256 codes: no grid lines
  CHECK_THROWS_AS(histogram_svg({.title = "t", .x_label = "x"}), std::invalid_argument);
}

TEST_CASE("mean and sample standard deviation", "[apps]") {
  const Stats s = stats({0.9799, 0.9806, 0.9809, 0.9834, 0.9814, 0.9812});
  CHECK(s.mean == Approx(0.98123).epsilon(1e-4));
  CHECK(s.sd == Approx(0.00118).epsilon(1e-2));
  CHECK(stats({2.0}).sd == 0.0);
  CHECK(mean_sd({0.5}, 2) == "0.50");
  CHECK(mean_sd({1.0, 3.0}, 1) == "2.0 ± 1.4 (n=2)");
}

TEST_CASE("median and range, for timings", "[apps]") {
  CHECK(stats({0.4, 1.06, 0.38, 0.44, 0.39}).median == 0.4);
  CHECK(stats({4.0, 1.0, 3.0, 2.0}).median == 2.5);
  CHECK(median_range({0.396, 0.385, 0.383, 1.06, 0.442}, 3) == "0.396 (median of 5; 0.383 - 1.060)");
  CHECK(median_range({0.5}, 2) == "0.50");
}
