#include "apps/distributed.h"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "apps/common.h"

#ifdef QNET_HAVE_MPI
#include "dist/mpi_communicator.h"
#endif

namespace qnet {

namespace {
Ranks g_ranks;

bool launched_by_mpirun() { return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr; }

#ifdef QNET_HAVE_MPI
std::unique_ptr<MpiCommunicator> g_comm;

void finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}
#endif
}  // namespace

int local_ranks() {
  const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int n = v ? std::atoi(v) : 1;
  return n >= 1 ? n : 1;
}

Ranks& start_ranks(int& argc, char**& argv) {
  if (!launched_by_mpirun()) return g_ranks;
#ifdef QNET_HAVE_MPI
  MPI_Init(&argc, &argv);
  std::atexit(finalize);
  g_comm = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
  g_ranks = {g_comm.get(), g_comm->rank(), g_comm->size()};
  if (g_ranks.size > 1) {
    set_error_prefix(fmt::format("rank {} of {}: ", g_ranks.rank, g_ranks.size));
    set_error_exit([](int code) { MPI_Abort(MPI_COMM_WORLD, code); });
  }
  if (!g_ranks.writer()) std::freopen("/dev/null", "w", stdout);  // rank 0 tells the progress
#else
  (void)argc, (void)argv;
  std::fprintf(stderr, "%s: error: started by mpirun, but this qnet was built without MPI (install libopenmpi-dev and rebuild: "
               "docs/performance.md)\n", argc > 0 ? argv[0] : "qnet");
  std::exit(1);
#endif
  return g_ranks;
}

}  // namespace qnet
