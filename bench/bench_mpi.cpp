// bench_mpi: what data-parallel training's exchange costs per step (core/distributed.h), against
// a plain MPI_Allreduce of the summed gradient, for the parameter counts of the documented models
// at batch 32, 128 and 512. Median microseconds of many steps; bytes each rank sends.
//
//   mpirun -np 2 build/bin/bench_mpi [--iterations 200]
//
// "running sum": what qnet does (MpiCommunicator::ordered_sum), the sum of every rank's per-chunk
// partial sums (4 images a chunk) passed from rank to rank in chunk order, then broadcast;
// "allgather of chunks": every rank gets all partials and adds them (the simple way, the base
// Communicator's); "allreduce": MPI_Allreduce(MPI_SUM) of one sum per rank, whose order of
// additions depends on the number of processes (what qnet avoids).
#include <algorithm>
#include <chrono>
#include <functional>

#include <fmt/format.h>

#include "apps/common.h"
#include "apps/distributed.h"
#include "core/kernels.h"
#include "dist/mpi_communicator.h"

using namespace qnet;

namespace {
double median_us(MPI_Comm comm, int iterations, const std::function<void()>& f) {
  std::vector<double> t;
  for (int i = 0; i < iterations; ++i) {
    MPI_Barrier(comm);
    const auto t0 = std::chrono::steady_clock::now();
    f();
    double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    MPI_Allreduce(MPI_IN_PLACE, &us, 1, MPI_DOUBLE, MPI_MAX, comm);  // the slowest rank's time
    t.push_back(us);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  Ranks& ranks = start_ranks(argc, argv);
  return run_app("bench_mpi", [&] {
    cxxopts::Options options("bench_mpi", "The cost of data-parallel training's exchange per step (run it with mpirun -np N)");
    options.add_options()("iterations", "Steps timed per figure, 10..100000", number_value("200"))("h,help", "Show this help");
    const std::optional<cxxopts::ParseResult> parsed = parse_args(options, argc, argv);
    if (!parsed) return 0;
    const int iterations = static_cast<int>(int_option(*parsed, "iterations", 10, 100000));
    if (!ranks.comm) throw UsageError("run it under mpirun, e.g. mpirun -np 2 bench_mpi");
    Communicator& comm = *ranks.comm;
    const int n = comm.size();
    struct Model {
      const char* name;
      int64_t parameters;
    };
    const Model models[] = {{"article", 20410}, {"Keras' convnet", 34826}, {"ResNet-8", 77754}};
    fmt::print("{} ranks; median of {} steps, the slowest rank's time\n\n", n, iterations);
    fmt::print("| model (parameters) | batch | qnet: running sum, us | allgather of chunks, us | allreduce, us | qnet / allreduce | "
               "bytes sent per rank: qnet, allgather, allreduce |\n");
    fmt::print("|---|---|---|---|---|---|---|\n");
    for (const Model& m : models)
      for (int64_t batch : {32, 128, 512}) {
        const int64_t W = m.parameters, chunks = (batch + kReductionChunk - 1) / kReductionChunk;
        std::vector<int64_t> per_rank(n), counts(n);
        for (int r = 0; r < n; ++r)
          per_rank[r] = (shard_of(batch, r, n).count + kReductionChunk - 1) / kReductionChunk, counts[r] = per_rank[r] * W;
        std::vector<float> local(counts[comm.rank()], 1.f), all(chunks * W), sum(W, 1.f);
        Communicator& gathering = comm;  // the base class's ordered_sum: allgather, then the sum in order
        const double chain_us = median_us(MPI_COMM_WORLD, iterations, [&] { comm.ordered_sum(local.data(), per_rank, W, sum.data()); });
        const double gather_us =
            median_us(MPI_COMM_WORLD, iterations, [&] { gathering.Communicator::ordered_sum(local.data(), per_rank, W, sum.data()); });
        const double reduce_us = median_us(MPI_COMM_WORLD, iterations, [&] {
          MPI_Allreduce(MPI_IN_PLACE, sum.data(), static_cast<int>(W), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        });
        // Sent per rank: the running sum once and (the last rank) the broadcast; the allgather, its
        // part to each other rank; a ring allreduce, 2 (n - 1) / n of the vector.
        const int64_t chain_bytes = W * 4, gather_bytes = counts[comm.rank()] * 4 * (n - 1), reduce_bytes = 2 * W * 4 * (n - 1) / n;
        fmt::print("| {} ({}) | {} | {:.0f} | {:.0f} | {:.0f} | {:.1f}x | {}, {}, {} |\n", m.name, W, batch, chain_us, gather_us, reduce_us,
                   chain_us / reduce_us, chain_bytes, gather_bytes, reduce_bytes);
      }
    return 0;
  });
}
