#!/usr/bin/env bash
# The installed library: `cmake --install` into a scratch prefix, then examples/ (a separate
# CMake project) finds it with find_package(qnet), builds against qnet::qnet and qnet::runtime,
# trains a two-conv model with QAT, exports it and runs the int8 file. Needs MNIST.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -u
build="$1"
src="$2"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"

cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1
check "cmake --install succeeds" test $? -eq 0
check "... installs qnetConfig.cmake and the targets" test -f "$tmp/prefix/lib/cmake/qnet/qnetConfig.cmake" -a -f "$tmp/prefix/lib/cmake/qnet/qnetTargets.cmake"
check "... the two libraries" test -f "$tmp/prefix/lib/libqnet.a" -a -f "$tmp/prefix/lib/libqnet_runtime.a"
check "... the headers under include/qnet" test -f "$tmp/prefix/include/qnet/layers/sequential.h" -a -f "$tmp/prefix/include/qnet/quant/runtime/runtime.h"
check "... and the programs" test -x "$tmp/prefix/bin/train" -a -x "$tmp/prefix/bin/infer"
if [[ -f "$build/libqnet_mpi.a" ]]; then  # built with MPI
  check "... with MPI: qnet::mpi's library and header" test -f "$tmp/prefix/lib/libqnet_mpi.a" -a -f "$tmp/prefix/include/qnet/dist/mpi_communicator.h"
fi

cmake -S "$src/examples" -B "$tmp/examples" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release >"$tmp/configure.log" 2>&1
check "examples/ configures with find_package(qnet)" test $? -eq 0
cmake --build "$tmp/examples" -j2 >"$tmp/build.log" 2>&1
check "examples/ builds against the installed qnet" test $? -eq 0 || tail -20 "$tmp/build.log"
"$tmp/examples/qat_example" "$tmp/two_conv.qbin" >"$tmp/qat.log" 2>&1
check "qat_example trains a two-conv model with QAT and its int8 file runs (accuracy > 0.9)" test $? -eq 0 || tail -5 "$tmp/qat.log"
check "... printing the model's summary" grep -q "conv2d_1 (Conv2D)" "$tmp/qat.log"
"$tmp/examples/run_int8" "$tmp/two_conv.qbin" >"$tmp/run.log" 2>&1
check "run_int8, linked with qnet::runtime only, runs the int8 file" grep -q "int8, test accuracy 0.9" "$tmp/run.log"
check "... with the accuracy qat_example measured" \
  test "$(sed -n 's/.*int8 on oneDNN ([a-z-]* path) \([0-9.]*\);.*/\1/p' "$tmp/qat.log")" = "$(sed -n 's/.*test accuracy \([0-9.]*\) on.*/\1/p' "$tmp/run.log")"
check "qnet::runtime carries no training code" bash -c '! nm -C "$0/examples/run_int8" | grep -q -E "qnet::(fit|Adam|prepare_qat|Conv2D::)"' "$tmp"
finish
