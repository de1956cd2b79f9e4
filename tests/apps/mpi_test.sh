#!/usr/bin/env bash
# `mpirun -np N train` as a user runs it (issue 24): the trained files are the same bytes on 1, 2
# and 4 processes (and without mpirun), float and QAT; only rank 0 writes; a rank that cannot
# read the data stops every rank before training; a rank killed mid-epoch stops the others within
# 10 s and leaves the last saved model whole.
# Usage: mpi_test.sh BIN_DIR [SANITIZERS]
set -u
bin="$(cd "$1" && pwd)"
sanitize="${2:-}"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"
cd "$tmp" || exit 1
if ! command -v mpirun >/dev/null; then
  echo "FAIL mpirun is not installed (scripts/test installs openmpi-bin and libopenmpi-dev)"
  exit 1
fi
if ! "$bin/train" --help >/dev/null 2>&1; then echo "FAIL train does not run"; exit 1; fi

# As root (OpenMPI refuses otherwise), more processes than cores, and shared memory between the
# processes without the cross-memory attach that containers often forbid (docs/performance.md).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
run() { timeout 300 mpirun "$@"; }

# 7,200 training images of 32: 225 steps; the rest of the 60,000 validates.
common=(--epochs 1 --validation-split 0.88 --threads 1)
# Every kind of sum over the batch and every random draw: kernel gradients, BatchNormalization
# (folded under QAT), dropout, noise, average pooling, Dense.
spec='gaussiannoise(0.1) conv2d(6, 3) batchnorm relu depthwiseconv2d(3, relu) maxpool2d(2) conv2d(8, 3, relu) averagepooling2d(2) flatten dropout(0.3) dense(10)'

"$bin/train" "${common[@]}" -o alone.qbin >alone.log 2>&1
check "float: train without mpirun exits 0" test $? -eq 0
for np in 1 2 4; do
  run -np $np "$bin/train" "${common[@]}" -o float$np.qbin --metrics float$np.json >float$np.log 2>&1
  check "float: mpirun -np $np train exits 0" test $? -eq 0
  check "float: -np $np gives the same model file, byte for byte, as one process" cmp -s alone.qbin float$np.qbin
  check "float: -np $np prints the test accuracy once (rank 0 alone)" test "$(grep -c "^Test accuracy" float$np.log)" -eq 1
  check "float: -np $np wrote its metrics" test -s float$np.json
done
check "float: -np 4 says it trains on 4 processes" grep -q "on 4 processes" float4.log
run -np 2 "$bin/train" "${common[@]}" --threads 2 -o float2t2.qbin >float2t2.log 2>&1
check "float: -np 2 with 2 threads each gives the same file too" cmp -s alone.qbin float2t2.qbin

for np in 1 2 4; do
  # batch 35: an epoch's last batch of 25 images splits unevenly (a chunk of 1 image)
  run -np $np "$bin/train" "${common[@]}" --qat --batch-size 35 --model "$spec" -o qat$np.qbin --checkpoint ckpt$np.qbin >qat$np.log 2>&1
  check "QAT: mpirun -np $np train --qat exits 0" test $? -eq 0
done
check "QAT: -np 2 and -np 4 give -np 1's int8 file, byte for byte" bash -c "cmp -s qat1.qbin qat2.qbin && cmp -s qat1.qbin qat4.qbin"
check "QAT: and its checkpoint (weights, observed ranges, BatchNormalization statistics)" \
  bash -c "cmp -s ckpt1.qbin ckpt2.qbin && cmp -s ckpt1.qbin ckpt4.qbin"

# reproduce: the article's experiment on 2 processes gives one process's four model files
# (a minute of a 2-core machine; not under the sanitizers, which make it ten).
if [[ -z $sanitize ]]; then
  "$bin/reproduce" --epochs 1 --timing-repeats 1 --threads 1 --out rp1 >rp1.log 2>&1
  check "reproduce without mpirun exits 0" test $? -eq 0
  run -np 2 "$bin/reproduce" --epochs 1 --timing-repeats 1 --out rp2 >rp2.log 2>&1
  check "mpirun -np 2 reproduce exits 0" test $? -eq 0
  for f in model_float.qbin model_ptq.qbin model_qat.qbin model.qbin; do
    check "reproduce: -np 2 gives one process's $f, byte for byte" cmp -s rp1/$f rp2/$f
  done
  check "reproduce: the report names the 2 processes" grep -q "each of 2 training processes" rp2/report.md
fi

# A rank that cannot read the data: every rank stops before training, the error names the rank.
run -np 1 "$bin/train" "${common[@]}" -o bad.qbin : -np 1 "$bin/train" "${common[@]}" --data-dir "$tmp/nowhere" -o bad.qbin \
  >bad.log 2>&1
code=$?
check "a rank without data: mpirun exits non-zero" test $code -ne 0 -a $code -ne 124
check "a rank without data: the error names rank 1 and the folder" grep -q "train: error: rank 1 of 2: .*nowhere" bad.log
check "a rank without data: nothing trained or written" bash -c "! grep -q '^Epoch' bad.log && ! test -e bad.qbin"

# Kill one rank mid-training: the others stop within 10 s; the model of the last epoch is whole.
# The job's ranks carry a mark of this test run in their environment, so another MPI job on the
# machine (another test run, a user's) is never taken for this one.
export QNET_MPI_TEST_MARK="kill-$$-$RANDOM"
run -np 2 -x QNET_MPI_TEST_MARK "$bin/train" --epochs 1000 --validation-split 0.88 --threads 1 -o killed.qbin >killed.log 2>&1 &
job=$!
for _ in $(seq 600); do [[ -s killed.qbin ]] && break; sleep 0.1; done
check "kill: the first epoch's model is saved" test -s killed.qbin
victim="" ranks=()
for pid in $(pgrep -x train || true); do  # this job's ranks: the train processes with the mark
  grep -qz "^QNET_MPI_TEST_MARK=$QNET_MPI_TEST_MARK$" "/proc/$pid/environ" 2>/dev/null || continue
  ranks+=("$pid")
  grep -qz "^OMPI_COMM_WORLD_RANK=1$" "/proc/$pid/environ" 2>/dev/null && victim=$pid
done
# A rank still running (not a zombie: where nothing reaps them, the dead stay listed).
alive() { for pid in "${ranks[@]}"; do [[ $(ps -o stat= -p "$pid" 2>/dev/null) == [^Z]* ]] && return 0; done; return 1; }
check "kill: rank 1's process found" test -n "$victim"
start=$(date +%s.%N)
[[ -n $victim ]] && kill -9 "$victim"
for _ in $(seq 300); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
stopped=$(date +%s.%N)
sleep 0.5
left=no
alive && left=yes && kill -9 "${ranks[@]}" 2>/dev/null
kill -0 "$job" 2>/dev/null && kill -9 "$job"
wait "$job"
code=$?
check "kill: mpirun stops within 10 s of the kill, non-zero (took $(awk -v a="$start" -v b="$stopped" 'BEGIN { printf "%.1f", b - a }') s)" \
  awk -v a="$start" -v b="$stopped" -v c="$code" 'BEGIN { exit !(b - a <= 10 && c != 0) }'
check "kill: no rank of the job is left (of ${#ranks[@]})" test $left = no -a ${#ranks[@]} -eq 2
check "kill: the saved model is whole (evaluate reads it)" "$bin/evaluate" killed.qbin --json
check "kill: no temporary file is left beside it" bash -c "! ls killed.qbin.tmp.* >/dev/null 2>&1"
finish
