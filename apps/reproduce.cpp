// reproduce: the article's experiment end to end — float vs QAT vs int8 (and PTQ) on MNIST:
// accuracy, model size, inference time per test-set part, training time per epoch; and the same
// four tables for any model and data set.
//
//   build/bin/reproduce --epochs 10 --seed 1 --seeds 1 --out reproduction
//   build/bin/reproduce --model models/resnet8.spec --data-dir /usr/share/datasets/fashion-mnist --out resnet8
//
// Writes DIR/report.md (the article's four tables with an "article" and a "qnet" column),
// DIR/inference_time.svg and DIR/model_size.svg, DIR/results.json (every figure), and the models
// of the first seed (model_float.qbin, model_qat.qbin, model.qbin, model_ptq.qbin).
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "apps/common.h"
#include "apps/distributed.h"
#include "apps/reproduction.h"
#include "core/cpu.h"
#include "core/file_io.h"
#include "core/parallel.h"
#include "core/random.h"
#include "data/image_data.h"
#include "data/mnist.h"
#include "layers/model_spec.h"
#include "optim/trainer.h"
#include "quant/export.h"
#include "quant/qat.h"
#include "quant/runtime/runtime.h"

using namespace qnet;
namespace fs = std::filesystem;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string stage(int i, int n, const std::string& what) {
  return fmt::format("\n== [{}/{}] {}\n", i, n, what);
}

double train(Sequential& model, const Split& data, int epochs, int64_t freeze_bn_after, Rng& rng, Communicator* comm) {
  Adam adam(model.parameters());
  FitOptions fo;
  fo.epochs = epochs;
  fo.communicator = comm;  // mpirun -np N reproduce: each training on every rank (apps/distributed.h)
  if (freeze_bn_after > 0)
    fo.on_epoch_begin = [&](int epoch) {
      if (epoch == freeze_bn_after + 1) freeze_bn_statistics(model);
    };
  fo.progress = stdout_is_terminal() ? Progress::kBar : Progress::kPlain;
  std::vector<double> seconds;
  for (const EpochStats& e : fit(model, adam, data.train, data.validation, fo, rng)) seconds.push_back(e.seconds);
  return median(seconds);
}

// What can be checked before the long work, beyond the options, the output folder and the data:
// that oneDNN on this machine builds and runs the f32 and the int8 reference model (untrained,
// observers fed one batch; a few milliseconds). A failure here costs seconds, not a training run.
void preflight(const Split& data, const std::function<Sequential(Rng&)>& make_model) {
  try {
    failpoint("reproduce-preflight");
    Rng rng(0);
    Sequential model = make_model(rng);
    const Batch batch = data.train.batch(0, 32);
    Runtime(inference_model(to_qbin(model))).predict(data.validation.image(0), 1);
    prepare_qat(model, {.bits = 8, .observer = tfmot_observer()});
    {
      NoGradGuard no_grad;
      model.forward(Variable(batch.x, false));
    }
    const Runtime int8(inference_model(export_int8(model)));
    int8.predict(data.validation.image(0), 1);
    fmt::print("This machine runs the f32 and int8 models on oneDNN ({}, int8 path {})\n", onednn_isa(), int8.int8_path());
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("this machine cannot run the models on oneDNN ({}): {}; nothing was trained", onednn_isa(),
                                         e.what()));
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The article's speed test: the test set in 5 parts, each run image by image through both models.
Timing time_inference(const Runtime& f32, const Runtime& int8, const ImageSet& test, int repeats) {
  Timing t;
  const Runtime* rt[2] = {&f32, &int8};
  std::vector<float> output(static_cast<size_t>(f32.model().classes()));
  float* logits = output.data();
  const int64_t part = test.size() / kParts;
  for (const Runtime* r : rt) r->predict(test.image(0), 1), r->predict(test.image(0), 256);  // plans and JIT
  std::vector<double> samples[2][kParts], ips[2];
  for (int rep = 0; rep < repeats; ++rep)
    for (int p = 0; p < 2; ++p) {
      for (int k = 0; k < kParts; ++k) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t i = k * part; i < (k + 1) * part; ++i) rt[p]->predict(test.image(i), 1, logits);
        samples[p][k].push_back(seconds_since(t0));
      }
      const auto t0 = std::chrono::steady_clock::now();
      evaluate(*rt[p], test, 256);
      ips[p].push_back(static_cast<double>(test.size()) / seconds_since(t0));
    }
  t.part_images = part;
  for (int p = 0; p < 2; ++p) {
    for (int k = 0; k < kParts; ++k) t.part_s[p][k] = median(samples[p][k]);
    t.batch256_ips[p] = median(ips[p]);
  }
  return t;
}

// "AMD EPYC (family 26 model 2)": VMs often report only the brand, so the family and model
// numbers say which core it is (Zen 3 is family 25 model 1, Zen 4 family 25 model 17, ...).
std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string name = "unknown", family, model;
  for (std::string line; std::getline(in, line) && line.find(':') != std::string::npos;) {
    const std::string key = line.substr(0, line.find_first_of("\t:")), value = line.substr(std::min(line.size(), line.find(':') + 2));
    if (key == "model name") name = value;
    else if (key == "cpu family") family = value;
    else if (key == "model") model = value;
  }
  return family.empty() ? name : fmt::format("{} (family {} model {})", name, family, model);
}

Machine this_machine(const Runtime& int8) {
  const dnnl_version_t* v = dnnl_version();
  return {cpu_model(), static_cast<int>(std::thread::hardware_concurrency()), num_threads(),
          fmt::format("{}.{}.{}", v->major, v->minor, v->patch), fmt::format("{}, int8 path {}; qnet training kernels {}", onednn_isa(), int8.int8_path(), isa_name(active_isa())),
          fmt::format("{}", fmt::join(int8.implementations(1), ", "))};
}

int reproduce_main(int argc, char** argv, const Ranks& ranks) {
  cxxopts::Options options("reproduce", "Reproduce the article: float vs QAT vs int8 (and PTQ) on MNIST, with its tables and chart; "
                           "or the same tables for any model (--model) and IDX data set (--data-dir).");
  options.add_options()
      ("model", "The layers, as a spec or a file holding one (docs/tutorial.md; default: the article's model)",
       cxxopts::value<std::string>()->default_value(""))
      ("freeze-bn-after", "QAT: freeze the statistics of folded BatchNormalization layers after this epoch (0 = never)",
       number_value("0"))
      ("epochs", "Training epochs per model (the article: 10), 1..100000", number_value("10"))
      ("seed", "First seed, 0..2^62", number_value("1"))
      ("seeds", "Train with this many seeds (seed, seed+1, ...) and report mean and standard deviation, 1..1000",
       number_value("1"))
      ("out", "Folder for report.md, the charts, results.json and the models", cxxopts::value<std::string>()->default_value("reproduction"))
      ("timing-repeats", "Repeats of the inference timing (the median is reported), 1..1000", number_value("7"))
      ("calibration-images", "PTQ calibration images, 1..54000", number_value("1000"))
      ("h,help", "Show this help");
  add_data_dir_option(options);
  add_threads_option(options);
  const std::optional<cxxopts::ParseResult> parsed = parse_args(options, argc, argv);
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  ReproduceCommand command{.epochs = int_option(args, "epochs", 1, 100000),
                           .seed = int_option(args, "seed", 0, int64_t{1} << 62),
                           .seeds = int_option(args, "seeds", 1, 1000),
                           .calibration_images = int_option(args, "calibration-images", 1, 54000),
                           .freeze_bn_after = int_option(args, "freeze-bn-after", 0, 100000)};
  command.model = args["model"].as<std::string>();
  if (args.count("model") && command.model.empty()) throw UsageError("--model '' (expected a model spec or a file holding one)");
  command.spec = spec_option_text(command.model);
  if (args.count("data-dir")) command.data = args["data-dir"].as<std::string>();
  const int timing_repeats = static_cast<int>(int_option(args, "timing-repeats", 1, 1000));
  const int epochs = static_cast<int>(command.epochs);
  const int64_t first_seed = command.seed, seeds = command.seeds;
  const fs::path out = args["out"].as<std::string>();
  use_threads_option(args);
  if (ranks.writer()) prepare_output_folder(out.string(), "--out");
  const ImageData mnist = load_image_data(mnist_dir(args["data-dir"].as<std::string>()));
  const Split data = split_validation(mnist.train, 0.1);
  if (command.calibration_images > data.train.size())
    throw UsageError(fmt::format("--calibration-images {} (the training split has {} images)", command.calibration_images, data.train.size()));
  const Shape shape = mnist.train.image_shape();
  const auto make_model = [&](Rng& rng) {
    if (command.spec.empty()) return reference_model(shape, mnist.classes, rng);
    try {
      return model_from_spec(command.spec, shape, rng);
    } catch (const SpecError& e) {
      throw UsageError(fmt::format("--model: {}", e.what()));
    }
  };
  {
    Rng rng(0);
    Sequential model = make_model(rng);  // spec errors and a wrong class count now, before any training
    if (model.output_shape(shape) != Shape{mnist.classes})
      throw UsageError(fmt::format("--model gives {} (expected the data's {} classes)", shape_str(model.output_shape(shape)), mnist.classes));
    Sequential qat = make_model(rng);
    try {
      prepare_qat(qat, {.bits = 8, .observer = tfmot_observer()});  // what int8 cannot hold is refused here
    } catch (const std::invalid_argument& e) {
      throw UsageError(fmt::format("--model: {}", without_function_name(e.what())));
    }
    check_training_memory(qat, shape, 32);
    command.summary = model.summary();
    command.classes = mnist.classes, command.test_images = mnist.test.size();
  }
  preflight(data, make_model);

  const int stages = static_cast<int>(3 * seeds + 2);
  int done = 0;
  std::string current;  // the stage running now, named if it fails
  auto begin_stage = [&](const std::string& what) {
    current = fmt::format("[{}/{}] {}", ++done, stages, what);
    fmt::print("{}", stage(done, stages, what));
  };
  std::vector<SeedResult> results;
  try {
    for (int64_t seed = first_seed; seed < first_seed + seeds; ++seed) {
      SeedResult r{.seed = seed};
      const bool keep = seed == first_seed;  // the first seed's models are saved and timed
      begin_stage(fmt::format("seed {}: float training, {} epochs", seed, epochs));
      Rng rng(static_cast<uint64_t>(seed));
      Sequential float_model = make_model(rng);
      r.float_epoch_s = train(float_model, data, epochs, 0, rng, ranks.comm);
      if (!ranks.writer()) {  // the other ranks train the QAT model with rank 0, and leave the rest to it
        Rng qrng(static_cast<uint64_t>(seed));
        Sequential qat_model = make_model(qrng);
        prepare_qat(qat_model, {.bits = 8, .observer = tfmot_observer()});
        train(qat_model, data, epochs, command.freeze_bn_after, qrng, ranks.comm);
        continue;
      }
      r.float_acc = evaluate(float_model, mnist.test).accuracy;
      if (keep) save_model(float_model, (out / "model_float.qbin").string());
      r.float_runtime_acc = evaluate(Runtime(inference_model(to_qbin(float_model))), mnist.test, 256).accuracy;

      begin_stage(fmt::format("seed {}: post-training quantization of the float model", seed));
      calibrate_ptq(float_model, data.train.slice(0, command.calibration_images), {});
      const qbin::Model ptq = export_int8(float_model);
      if (keep) qbin::save(ptq, (out / "model_ptq.qbin").string());
      r.ptq_acc = evaluate(Runtime(inference_model(ptq)), mnist.test, 256).accuracy;

      begin_stage(fmt::format("seed {}: quantization-aware training, {} epochs", seed, epochs));
      Rng qrng(static_cast<uint64_t>(seed));
      Sequential qat_model = make_model(qrng);
      prepare_qat(qat_model, {.bits = 8, .observer = tfmot_observer()});  // train --qat's default
      r.qat_epoch_s = train(qat_model, data, epochs, command.freeze_bn_after, qrng, ranks.comm);
      freeze_observers(qat_model);
      r.qat_acc = evaluate(qat_model, mnist.test).accuracy;
      const qbin::Model int8 = export_int8(qat_model);
      if (keep) save_model(qat_model, (out / "model_qat.qbin").string()), qbin::save(int8, (out / "model.qbin").string());
      failpoint("reproduce-int8");
      r.int8_acc = evaluate(Runtime(inference_model(int8)), mnist.test, 256).accuracy;
      fmt::print("seed {}: float {:.4f}, QAT {:.4f}, int8 {:.4f}, PTQ {:.4f}\n", seed, r.float_acc, r.qat_acc, r.int8_acc, r.ptq_acc);
      results.push_back(r);
    }

    if (!ranks.writer()) return 0;
    begin_stage("inference time: 5 parts of the test set, image by image, float and int8");
    const Runtime f32(load_inference_model((out / "model_float.qbin").string()));
    const Runtime int8(load_inference_model((out / "model.qbin").string()));
    const Timing timing = time_inference(f32, int8, mnist.test, timing_repeats);
    begin_stage("writing the report");
    const Sizes sizes{fs::file_size(out / "model_float.qbin"), fs::file_size(out / "model.qbin"), fs::file_size(out / "model_ptq.qbin")};
    Machine machine = this_machine(int8);
    machine.processes = ranks.size;
    const std::string report = report_md(results, sizes, timing, machine, command);
    write_file_atomic((out / "report.md").string(), report);
    write_file_atomic((out / "inference_time.svg").string(), inference_chart(timing, command.data));
    write_file_atomic((out / "model_size.svg").string(), size_chart(sizes, command.article()));
    write_file_atomic((out / "results.json").string(), results_json(results, sizes, timing, machine, command).dump() + "\n");
    fmt::print("\n{}\nWrote {}/report.md, inference_time.svg, model_size.svg, results.json and the models\n", report, out.string());
    return 0;
  } catch (const std::exception& e) {
    // Keep what finished: the models already saved stay, and partial.json holds the finished seeds.
    if (!ranks.writer()) throw;  // rank 0 writes; this rank's error ends the job (apps/distributed.h)
    Json finished = Json::array();
    for (const SeedResult& r : results)
      finished.push(Json::object()
                        .set("seed", Json::integer(r.seed))
                        .set("float", Json::number(r.float_acc))
                        .set("qat", Json::number(r.qat_acc))
                        .set("int8", Json::number(r.int8_acc))
                        .set("ptq", Json::number(r.ptq_acc)));
    write_file_atomic((out / "partial.json").string(),
                      Json::object().set("failed_stage", Json::string(current)).set("error", Json::string(e.what()))
                          .set("finished_seeds", std::move(finished)).dump() + "\n");
    fmt::print(stderr, "reproduce: stage {} failed: {}; the models saved so far and partial.json are in {}\n", current, e.what(),
               out.string());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Ranks& ranks = start_ranks(argc, argv);
  return run_app("reproduce", [&] { return reproduce_main(argc, argv, ranks); });
}
