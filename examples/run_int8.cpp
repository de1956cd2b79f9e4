// Inference only, linked against qnet::runtime (no training code): loads a .qbin model, f32 or
// int8, and reports its accuracy on the MNIST test set.
//
//   run_int8 MODEL.qbin [MNIST_DIR]
#include <cstdio>

#include <qnet/data/mnist.h>
#include <qnet/quant/runtime/runtime.h>

int main(int argc, char** argv) {
  using namespace qnet;
  if (argc < 2) {
    std::fprintf(stderr, "usage: run_int8 MODEL.qbin [MNIST_DIR]\n");
    return 2;
  }
  try {
    const Runtime runtime(load_inference_model(argv[1]));
    const ImageSet test = load_mnist_test(mnist_dir(argc > 2 ? argv[2] : ""));
    const RuntimeEvaluation e = evaluate(runtime, test, 256);
    std::printf("%s: %s, test accuracy %.4f on %lld images (oneDNN %s, %s path)\n", argv[1], precision_name(runtime.model().precision),
                e.accuracy, static_cast<long long>(e.images), onednn_isa().c_str(), runtime.int8_path());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "run_int8: error: %s\n", e.what());
    return 1;
  }
}
