// A model that is not the article's, defined with qnet's public API, trained with quantization-
// aware training, exported to an int8 .qbin and run on oneDNN's int8 primitives.
//
//   qat_example OUTPUT.qbin [MNIST_DIR]      (MNIST_DIR: default $QNET_DATA_DIR or ~/.cache/qnet/mnist)
#include <cstdio>
#include <memory>
#include <string>

#include <qnet/core/random.h>
#include <qnet/io/qbin.h>
#include <qnet/data/mnist.h>
#include <qnet/layers/layers.h>
#include <qnet/layers/sequential.h>
#include <qnet/optim/optimizer.h>
#include <qnet/optim/trainer.h>
#include <qnet/quant/export.h>
#include <qnet/quant/qat.h>
#include <qnet/quant/runtime/runtime.h>

int main(int argc, char** argv) {
  using namespace qnet;
  if (argc < 2) {
    std::fprintf(stderr, "usage: qat_example OUTPUT.qbin [MNIST_DIR]\n");
    return 2;
  }
  try {
    const Mnist mnist = load_mnist(mnist_dir(argc > 2 ? argv[2] : ""));

    // Two convolutions: Conv2D 8 3x3 + ReLU, MaxPool 2x2, Conv2D 16 3x3 + ReLU, MaxPool 2x2, Dense 10.
    Rng rng(7);
    Sequential model({28, 28, 1});
    model.add(std::make_unique<Conv2D>(Conv2DOptions{.in_channels = 1, .filters = 8}, rng));
    model.add(std::make_unique<ReLU>());
    model.add(std::make_unique<MaxPool2D>(Pool2dOptions{.window_h = 2, .window_w = 2}));
    model.add(std::make_unique<Conv2D>(Conv2DOptions{.in_channels = 8, .filters = 16}, rng));
    model.add(std::make_unique<ReLU>());
    model.add(std::make_unique<MaxPool2D>(Pool2dOptions{.window_h = 2, .window_w = 2}));
    model.add(std::make_unique<Flatten>());
    model.add(std::make_unique<Dense>(DenseOptions{.in_features = 5 * 5 * 16, .units = 10}, rng));
    std::printf("%s", model.summary().c_str());

    // QAT from the start: fake-quantized weights (per channel) and activations, 8 bits.
    prepare_qat(model, {.bits = 8, .observer = tfmot_observer()});
    Adam adam(model.parameters());
    FitOptions fit_options;
    fit_options.epochs = 1;
    fit(model, adam, mnist.train.slice(0, 24000), mnist.train.slice(54000, 6000), fit_options, rng);
    freeze_observers(model);
    const double fake_quantized = evaluate(model, mnist.test).accuracy;

    // Export to int8 and run the file as a user of qnet::runtime would.
    qbin::save(export_int8(model), argv[1]);
    const Runtime runtime(load_inference_model(argv[1]));
    const double int8 = evaluate(runtime, mnist.test, 256).accuracy;
    std::printf("QAT (fake-quantized) test accuracy %.4f; int8 on oneDNN (%s path) %.4f; saved %s\n", fake_quantized,
                runtime.int8_path(), int8, argv[1]);
    return int8 > 0.9 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qat_example: error: %s\n", e.what());
    return 1;
  }
}
