// train: trains the article's MNIST CNN and saves it as a .qbin model.
//
//   build/bin/train --epochs 10 --seed 1 --metrics m.json     # float, -> model_float.qbin
#include <fmt/format.h>

#include "apps/common.h"
#include "core/file_io.h"
#include "core/parallel.h"
#include "data/mnist.h"
#include "layers/sequential.h"
#include "optim/trainer.h"

using namespace qnet;

namespace {

Json metrics_json(const cxxopts::ParseResult& args, const std::vector<EpochStats>& history, const Evaluation& test) {
  Json epochs = Json::array();
  for (const EpochStats& e : history)
    epochs.push(Json::object()
                    .set("epoch", Json::integer(e.epoch))
                    .set("seconds", Json::number(e.seconds))
                    .set("loss", Json::number(e.loss))
                    .set("accuracy", Json::number(e.accuracy))
                    .set("val_loss", Json::number(e.val_loss))
                    .set("val_accuracy", Json::number(e.val_accuracy)));
  return Json::object()
      .set("mode", Json::string("float"))
      .set("seed", Json::integer(args["seed"].as<int64_t>()))
      .set("threads", Json::integer(num_threads()))
      .set("test_accuracy", Json::number(test.accuracy))
      .set("test_loss", Json::number(test.loss))
      .set("epochs", std::move(epochs));
}

int train_main(int argc, char** argv) {
  cxxopts::Options options("train", "Train the article's MNIST CNN (Conv2D 12 3x3 + ReLU, MaxPool 2x2, Dense 10) with Adam.");
  options.add_options()
      ("epochs", "Number of epochs", cxxopts::value<int64_t>()->default_value("10"))
      ("batch-size", "Images per training step", cxxopts::value<int64_t>()->default_value("32"))
      ("lr", "Adam learning rate", cxxopts::value<double>()->default_value("0.001"))
      ("seed", "Seed of every random choice (init, shuffling)", cxxopts::value<int64_t>()->default_value("1"))
      ("validation-split", "Fraction of the training set, taken from its end, held out for validation",
       cxxopts::value<double>()->default_value("0.1"))
      ("data-dir", "Folder with the MNIST IDX files (default $QNET_DATA_DIR or ~/.cache/qnet/mnist)",
       cxxopts::value<std::string>()->default_value(""))
      ("threads", "Threads (0 = all cores)", cxxopts::value<int64_t>()->default_value("0"))
      ("o,output", "Where to save the trained model", cxxopts::value<std::string>()->default_value("model_float.qbin"))
      ("metrics", "Write the metrics as JSON to this path", cxxopts::value<std::string>()->default_value(""))
      ("h,help", "Show this help");
  const cxxopts::ParseResult args = options.parse(argc, argv);
  if (args.count("help")) {
    fmt::print("{}\n", options.help());
    return 0;
  }
  if (!args.unmatched().empty()) throw UsageError(fmt::format("unexpected argument '{}'", args.unmatched()[0]));
  require_int_at_least(args, "epochs", 1);
  require_int_at_least(args, "batch-size", 1);
  require_int_at_least(args, "threads", 0);
  require_int_at_least(args, "seed", 0);
  require_positive_finite(args, "lr");
  const double split = args["validation-split"].as<double>();
  if (!(split >= 0.0 && split < 1.0))
    throw UsageError(fmt::format("--validation-split {} (expected a fraction in [0, 1))", split));
  const std::string output = args["output"].as<std::string>();
  if (output.empty()) throw UsageError("--output is empty (expected a file path)");

  set_num_threads(static_cast<int>(args["threads"].as<int64_t>()));
  const Mnist mnist = load_mnist(mnist_dir(args["data-dir"].as<std::string>()));
  const Split data = split_validation(mnist.train, split);

  const uint64_t seed = static_cast<uint64_t>(args["seed"].as<int64_t>());
  Rng rng(seed);
  Sequential model = mnist_reference_model(rng);
  fmt::print("{}", model.summary());
  fmt::print("Training on {} images, validating on {}; seed {}, {} threads\n", data.train.size(), data.validation.size(),
             seed, num_threads());

  Adam adam(model.parameters(), {.lr = static_cast<float>(args["lr"].as<double>())});
  FitOptions fo;
  fo.epochs = static_cast<int>(args["epochs"].as<int64_t>());
  fo.batch_size = args["batch-size"].as<int64_t>();
  fo.progress = stdout_is_terminal() ? Progress::kBar : Progress::kPlain;
  fo.on_epoch_end = [&](const EpochStats&) { save_model(model, output); };  // the last good model is always on disk
  const std::vector<EpochStats> history = fit(model, adam, data.train, data.validation, fo, rng);

  const Evaluation test = evaluate(model, mnist.test);
  fmt::print("Test accuracy: {:.4f} - test loss: {:.4f}\nSaved the float model to {}\n", test.accuracy, test.loss, output);
  if (const std::string path = args["metrics"].as<std::string>(); !path.empty()) {
    write_file_atomic(path, metrics_json(args, history, test).dump() + "\n");
    fmt::print("Wrote metrics to {}\n", path);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_app("train", [&] { return train_main(argc, argv); });
}
