// What `reproduce` writes: bar charts as SVG, and summary statistics.
//
//   BarChart c{.title = "Inference time", .y_label = "seconds", .groups = {"part 1", ...},
//              .series = {{"float", "#4c78a8", {0.02, ...}}, {"int8", "#f58518", {0.01, ...}}}};
//   write_file_atomic("chart.svg", bar_chart_svg(c));
#pragma once

#include <string>
#include <vector>

namespace qnet {

struct BarSeries {
  std::string name;   // legend entry
  std::string color;  // "#4c78a8"
  std::vector<double> values;  // one per group; NaN = no figure ("n/a", no bar)
};

struct BarChart {
  std::string title;
  std::string y_label;  // with its unit: "seconds per 2,000 images"
  std::vector<std::string> groups;
  std::vector<BarSeries> series;
  std::string value_format = "{:.3f}";  // label printed above each bar
};

std::string bar_chart_svg(const BarChart& chart);  // throws std::invalid_argument on ragged data

// A histogram on a quantization grid: bin i covers [lo + i * width, lo + (i + 1) * width) on the
// code axis; values below and above the bins (clipped) drawn apart in red; counts on a log scale;
// a line at each integer code (the grid) when there are at most 64 codes.
struct HistogramChart {
  std::string title;
  std::string x_label;  // "code (output / scale + zero point)"
  double lo = 0, width = 1;
  std::vector<int64_t> counts;
  int64_t below = 0, above = 0;
};
std::string histogram_svg(const HistogramChart& chart);  // throws std::invalid_argument with no bins

struct Stats {
  double mean = 0, sd = 0;  // sd: sample standard deviation (0 for one value)
  double median = 0;        // the middle value; the mean of the two middle ones for an even count
  double min = 0, max = 0;
};
Stats stats(const std::vector<double>& v);

// "0.9812" for one value, "0.9812 ± 0.0012 (n=5)" for several.
std::string mean_sd(const std::vector<double>& v, int decimals);

// For timings on a shared machine, where one slow spell skews a mean: "0.396" for one value,
// "0.396 (median of 5; 0.383 - 1.060)" for several.
std::string median_range(const std::vector<double>& v, int decimals);

}  // namespace qnet
