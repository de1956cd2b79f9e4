#include "core/parallel.h"

#include <omp.h>

#include <thread>

namespace qnet {

namespace {
int g_threads = 0;
}

int max_hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

void set_num_threads(int threads) {
  g_threads = threads <= 0 ? max_hardware_threads() : threads;
  omp_set_num_threads(g_threads);
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

}  // namespace qnet
