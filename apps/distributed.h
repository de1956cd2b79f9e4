// `mpirun -np N train ...`: the programs' side of data-parallel training (core/distributed.h).
//
//   int main(int argc, char** argv) {
//     Ranks& ranks = start_ranks(argc, argv);      // MPI_Init when launched by mpirun
//     return run_app("train", [&] { ... fo.communicator = ranks.comm; if (ranks.writer()) save(...); });
//   }
//
// A program started by mpirun (OpenMPI's OMPI_COMM_WORLD_SIZE in its environment) joins the job
// if qnet was built with MPI, and refuses to run otherwise (N copies would each train alone and
// write the same files). Rank 0 alone prints progress and writes files; the others print nothing
// but errors. An error on any rank is printed with the rank's number and stops every rank
// (MPI_Abort); a rank killed by a signal makes mpirun stop the others.
#pragma once

#include <memory>

#include "core/distributed.h"

namespace qnet {

struct Ranks {
  Communicator* comm = nullptr;  // null: one process
  int rank = 0, size = 1;
  bool writer() const { return rank == 0; }
};

Ranks& start_ranks(int& argc, char**& argv);

// The processes of this job on this machine (1 without mpirun): what --threads 0 divides the
// cores among.
int local_ranks();

}  // namespace qnet
