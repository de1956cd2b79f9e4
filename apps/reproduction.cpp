#include "apps/reproduction.h"

#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "apps/report.h"

namespace qnet {

namespace {

std::vector<double> column(const std::vector<SeedResult>& r, double SeedResult::*field) {
  std::vector<double> v;
  for (const SeedResult& s : r) v.push_back(s.*field);
  return v;
}

double mb(uintmax_t bytes) { return static_cast<double>(bytes) / 1e6; }

Json stats_json(const std::vector<double>& v) {
  const Stats s = stats(v);
  Json values = Json::array();
  for (double x : v) values.push(Json::number(x));
  return Json::object()
      .set("mean", Json::number(s.mean))
      .set("median", Json::number(s.median))
      .set("sd", Json::number(s.sd))
      .set("min", Json::number(s.min))
      .set("max", Json::number(s.max))
      .set("per_seed", std::move(values));
}

}  // namespace

std::string report_md(const std::vector<SeedResult>& r, const Sizes& sz, const Timing& t, const Machine& m,
                      const ReproduceCommand& command) {
  const int64_t seeds = static_cast<int64_t>(r.size());
  const bool article = command.article();
  std::string data = std::filesystem::path(command.data).lexically_normal().filename().string();  // "fashion-mnist"
  if (data.empty()) data = std::filesystem::path(command.data).lexically_normal().parent_path().filename().string();
  if (data.empty()) data = command.data;
  // An article figure, or "-" where the article has none for this model and data set.
  const auto art = [&](const std::string& figure) { return article ? figure : std::string("-"); };
  std::string options = fmt::format("--epochs {} --seed {} --seeds {}", command.epochs, command.seed, seeds);
  if (!command.model.empty()) options += fmt::format(" --model {}", command.model);
  if (command.data != "MNIST") options += fmt::format(" --data-dir {}", command.data);
  if (command.freeze_bn_after > 0) options += fmt::format(" --freeze-bn-after {}", command.freeze_bn_after);
  std::string md = fmt::format(
      "# Reproduction: float vs QAT vs int8 on {}\n\n"
      "Command: `build/bin/reproduce {}`. {}, Adam 1e-3, batch 32, the last 10% of the training images for validation. {}\n\n",
      data, options,
      command.model.empty() ? "The reference model (Conv2D 12 3x3 + ReLU, MaxPool 2x2, Flatten, Dense)" : fmt::format("The model of `{}`", command.model),
      seeds > 1 ? fmt::format("qnet's figures are mean ± standard deviation over {} seeds.", seeds)
                : "qnet's figures are one draw (one seed); `--seeds K` reports their spread.");
  if (!article) md += "The article measured its own model on MNIST only: its columns are left empty here.\n\n";
  if (!command.spec.empty()) md += fmt::format("```\n{}\n```\n\n```\n{}```\n\n", command.spec, command.summary);

  md += fmt::format("## 1. Accuracy ({} test set, {} images)\n\n| model | article | qnet |\n|---|---|---|\n", data, command.test_images);
  md += fmt::format("| baseline (float) | {} | {} |\n", art(fmt::format("{:.4f}", kArticleFloat)), mean_sd(column(r, &SeedResult::float_acc), 4));
  md += fmt::format("| QAT (fake-quantized, as trained) | {} | {} |\n", art(fmt::format("{:.4f}", kArticleQat)), mean_sd(column(r, &SeedResult::qat_acc), 4));
  md += fmt::format("| int8 from QAT (article: TFLite; qnet: oneDNN) | {} | {} |\n", art(fmt::format("{:.4f}", kArticleInt8)),
                    mean_sd(column(r, &SeedResult::int8_acc), 4));
  md += fmt::format("| int8 by post-training quantization (PTQ, {} calibration images, min/max) | {} | {} |\n",
                    command.calibration_images, art("not measured"), mean_sd(column(r, &SeedResult::ptq_acc), 4));
  md += fmt::format("| float model on the oneDNN f32 runtime | - | {} |\n\n", mean_sd(column(r, &SeedResult::float_runtime_acc), 4));

  md += "## 2. Model size\n\n| model | article | qnet |\n|---|---|---|\n";
  md += fmt::format("| float | {} | {:.4f} MB ({} bytes) |\n", art(fmt::format("{:.4f} MB", kArticleFloatMB)), mb(sz.float_bytes), sz.float_bytes);
  md += fmt::format("| int8 (QAT) | {} | {:.4f} MB ({} bytes) |\n", art(fmt::format("{:.4f} MB", kArticleInt8MB)), mb(sz.int8_bytes), sz.int8_bytes);
  md += fmt::format("| int8 (PTQ) | - | {:.4f} MB ({} bytes) |\n", mb(sz.ptq_bytes), sz.ptq_bytes);
  md += fmt::format("| float / int8 | {} | {:.2f}x |\n\n", art(fmt::format("{:.2f}x (\"divided by four\")", kArticleFloatMB / kArticleInt8MB)),
                    static_cast<double>(sz.float_bytes) / static_cast<double>(sz.int8_bytes));
  md += "![model sizes](model_size.svg)\n\n";

  md += fmt::format("## 3. Inference time: the test set in {} parts of {} images, image by image (batch 1)\n\n", kParts, t.part_images);
  md += "| part | article | qnet float (s) | qnet int8 (s) | int8 speed-up |\n|---|---|---|---|---|\n";
  int int8_faster = 0;
  for (int k = 0; k < kParts; ++k) {
    int8_faster += t.part_s[1][k] < t.part_s[0][k];
    md += fmt::format("| {} | {} | {:.4f} | {:.4f} | {:.2f}x |\n", k + 1, art("int8 faster (chart, no figures)"), t.part_s[0][k], t.part_s[1][k],
                      t.part_s[0][k] / t.part_s[1][k]);
  }
  md += fmt::format("| whole test set at batch 256 (images/s) | - | {:.0f} | {:.0f} | {:.2f}x |\n\n", t.batch256_ips[0], t.batch256_ips[1],
                    t.batch256_ips[1] / t.batch256_ips[0]);
  md += fmt::format("int8 was faster than float in {} of {} parts here. ", int8_faster, kParts);
  md += "Times are medians of repeats on this machine; docs/runtime.md explains where oneDNN 2.6 spends them.\n\n";
  md += "![inference time per part](inference_time.svg)\n\n";

  md += "## 4. Training time per epoch\n\n| | article (its machine) | qnet (this machine), seconds |\n|---|---|---|\n";
  const std::vector<double> fe = column(r, &SeedResult::float_epoch_s), qe = column(r, &SeedResult::qat_epoch_s);
  md += fmt::format("| float | {} | {} |\n", art(fmt::format("{:.0f} s", kArticleFloatEpoch)), median_range(fe, 3));
  md += fmt::format("| QAT | {} | {} |\n", art(fmt::format("{:.0f} s", kArticleQatEpoch)), median_range(qe, 3));
  md += fmt::format("| QAT / float | {} | {:.2f} |\n\n", art(fmt::format("{:.2f}", kArticleQatEpoch / kArticleFloatEpoch)),
                    stats(qe).median / stats(fe).median);
  md += "Each run's figure is the median of its epochs; across runs the median is given, because the shared machine "
        "has slow spells that skew a mean. `build/bin/bench_train` measures this more carefully (docs/performance.md).\n\n";

  md += fmt::format("## Machine\n\n- CPU: {} ({} logical cores), {} threads used{}\n- oneDNN {} (ISA in use: {})\n", m.cpu, m.cores,
                    m.threads, m.processes > 1 ? fmt::format(" by each of {} training processes (mpirun)", m.processes) : "",
                    m.onednn_version, m.isa);
  md += fmt::format("- int8 primitives at batch 1: {}\n", m.int8_implementations);
  if (seeds > 1) {
    md += "\n## Per seed\n\n| seed | float | QAT | int8 | PTQ | float s/epoch | QAT s/epoch |\n|---|---|---|---|---|---|---|\n";
    for (const SeedResult& s : r)
      md += fmt::format("| {} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {:.3f} | {:.3f} |\n", s.seed, s.float_acc, s.qat_acc, s.int8_acc,
                        s.ptq_acc, s.float_epoch_s, s.qat_epoch_s);
  }
  return md;
}

std::string inference_chart(const Timing& t, const std::string& data) {
  BarChart c{.title = fmt::format("Inference time per part of the {} test set (batch 1)", data),
             .y_label = fmt::format("seconds per {} images", t.part_images),
             .groups = {},
             .series = {{"float (f32)", "#4c78a8", {}}, {"int8", "#f58518", {}}},
             .value_format = "{:.4f}"};
  for (int k = 0; k < kParts; ++k) {
    c.groups.push_back(fmt::format("part {}", k + 1));
    for (int p = 0; p < 2; ++p) c.series[p].values.push_back(t.part_s[p][k]);
  }
  return bar_chart_svg(c);
}

std::string size_chart(const Sizes& sz, bool article) {
  BarChart c{.title = "Model file size",
             .y_label = "kilobytes (1 KB = 1,000 bytes)",
             .groups = {"float", "int8 (QAT)", "int8 (PTQ)"},
             .series = {{"article (TFLite)", "#9d9d9d", {kArticleFloatMB * 1000, kArticleInt8MB * 1000, std::nan("")}},
                        {"qnet (.qbin)", "#4c78a8",
                         {static_cast<double>(sz.float_bytes) / 1000, static_cast<double>(sz.int8_bytes) / 1000,
                          static_cast<double>(sz.ptq_bytes) / 1000}}},
             .value_format = "{:.1f}"};
  if (!article) c.series.erase(c.series.begin());
  return bar_chart_svg(c);
}

Json results_json(const std::vector<SeedResult>& r, const Sizes& sz, const Timing& t, const Machine& m, const ReproduceCommand& command) {
  Json parts = Json::array();
  for (int k = 0; k < kParts; ++k)
    parts.push(Json::object()
                   .set("part", Json::integer(k + 1))
                   .set("images", Json::integer(t.part_images))
                   .set("float_seconds", Json::number(t.part_s[0][k]))
                   .set("int8_seconds", Json::number(t.part_s[1][k])));
  Json seeds = Json::array();
  for (const SeedResult& s : r) seeds.push(Json::integer(s.seed));
  return Json::object()
      .set("command", Json::object()
                          .set("epochs", Json::integer(command.epochs))
                          .set("seed", Json::integer(command.seed))
                          .set("seeds", Json::integer(static_cast<int64_t>(r.size())))
                          .set("model", Json::string(command.model))
                          .set("data", Json::string(command.data))
                          .set("freeze_bn_after", Json::integer(command.freeze_bn_after))
                          .set("calibration_images", Json::integer(command.calibration_images)))
      .set("seeds", std::move(seeds))
      .set("accuracy", Json::object()
                           .set("article", Json::object()
                                               .set("float", Json::number(kArticleFloat))
                                               .set("qat", Json::number(kArticleQat))
                                               .set("int8", Json::number(kArticleInt8)))
                           .set("float", stats_json(column(r, &SeedResult::float_acc)))
                           .set("qat", stats_json(column(r, &SeedResult::qat_acc)))
                           .set("int8", stats_json(column(r, &SeedResult::int8_acc)))
                           .set("ptq", stats_json(column(r, &SeedResult::ptq_acc)))
                           .set("float_runtime", stats_json(column(r, &SeedResult::float_runtime_acc))))
      .set("size_bytes", Json::object()
                             .set("article_float", Json::integer(static_cast<int64_t>(kArticleFloatMB * 1e6)))
                             .set("article_int8", Json::integer(static_cast<int64_t>(kArticleInt8MB * 1e6)))
                             .set("float", Json::integer(static_cast<int64_t>(sz.float_bytes)))
                             .set("int8", Json::integer(static_cast<int64_t>(sz.int8_bytes)))
                             .set("ptq", Json::integer(static_cast<int64_t>(sz.ptq_bytes))))
      .set("inference", Json::object()
                            .set("batch1_parts", std::move(parts))
                            .set("batch256_images_per_second",
                                 Json::object().set("float", Json::number(t.batch256_ips[0])).set("int8", Json::number(t.batch256_ips[1]))))
      .set("training_seconds_per_epoch", Json::object()
                                             .set("article_float", Json::number(kArticleFloatEpoch))
                                             .set("article_qat", Json::number(kArticleQatEpoch))
                                             .set("float", stats_json(column(r, &SeedResult::float_epoch_s)))
                                             .set("qat", stats_json(column(r, &SeedResult::qat_epoch_s))))
      .set("machine", Json::object()
                          .set("cpu", Json::string(m.cpu))
                          .set("cores", Json::integer(m.cores))
                          .set("threads", Json::integer(m.threads))
                          .set("processes", Json::integer(m.processes))
                          .set("onednn", Json::string(m.onednn_version))
                          .set("isa", Json::string(m.isa))
                          .set("int8_primitives", Json::string(m.int8_implementations)));
}

}  // namespace qnet
