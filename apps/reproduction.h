// The reproduction's results and how `reproduce` writes them (report.md, SVG charts, JSON).
//
//   std::string md = report_md(results, sizes, timing, machine, args);
//   write_file_atomic("inference_time.svg", inference_chart(timing, 2000));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "apps/common.h"

namespace qnet {

// The article's figures (../shared/notes/peers.md).
inline constexpr double kArticleFloat = 0.9821, kArticleQat = 0.9834, kArticleInt8 = 0.9832;
inline constexpr double kArticleFloatMB = 0.0809, kArticleInt8MB = 0.0238;
inline constexpr double kArticleFloatEpoch = 17, kArticleQatEpoch = 20;
inline constexpr int kParts = 5;  // the article splits the test set into 5 parts

struct SeedResult {
  int64_t seed = 0;
  double float_acc = 0, float_runtime_acc = 0, qat_acc = 0, int8_acc = 0, ptq_acc = 0;
  double float_epoch_s = 0, qat_epoch_s = 0;  // medians over the epochs
};

struct Timing {
  double part_s[2][kParts] = {};  // [f32, int8][part]: seconds, batch 1, median of repeats
  double batch256_ips[2] = {};    // images per second at batch 256
  int64_t part_images = 0;
};

struct Sizes {
  uintmax_t float_bytes = 0, int8_bytes = 0, ptq_bytes = 0;
};

struct Machine {
  std::string cpu;
  int cores = 0, threads = 0;
  std::string onednn_version, isa, int8_implementations;
  int processes = 1;  // mpirun -np N: the training ran on N processes of `threads` threads
};

// What the report repeats of the command line.
struct ReproduceCommand {
  int64_t epochs = 10, seed = 1, seeds = 1, calibration_images = 1000, freeze_bn_after = 0;
  std::string model = "";    // --model as given ("" for the article's model)
  std::string spec = "";     // the spec it holds
  std::string data = "MNIST";  // --data-dir as given, or MNIST
  std::string summary = "";  // the model's summary
  int64_t classes = 10, test_images = 10000;
  // The article's columns: its model on MNIST. Other models or data sets get qnet's figures only.
  bool article() const { return model.empty() && data == "MNIST"; }
};

std::string report_md(const std::vector<SeedResult>& results, const Sizes& sizes, const Timing& timing, const Machine& machine,
                      const ReproduceCommand& command);
std::string inference_chart(const Timing& timing, const std::string& data);
std::string size_chart(const Sizes& sizes, bool article);
Json results_json(const std::vector<SeedResult>& results, const Sizes& sizes, const Timing& timing, const Machine& machine,
                  const ReproduceCommand& command);

}  // namespace qnet
