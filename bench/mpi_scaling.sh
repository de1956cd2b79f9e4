#!/usr/bin/env bash
# Epoch seconds of data-parallel training on this machine (docs/performance.md, "Data-parallel
# training on MPI"): for the article's model, Keras' convnet and the ResNet-8, float and QAT, one
# round = `train --threads 2`, `mpirun -np 2 train --threads 1`, `train --threads 1`, one after
# another; prints one line per model and mode and round:
#   ROUND MODEL MODE SECONDS_1x2 SECONDS_2x1 SECONDS_1x1 KB_SENT_PER_STEP
# Usage: bench/mpi_scaling.sh [ROUNDS] (default 5; BIN=build/bin). Nothing else should run meanwhile.
set -u
rounds="${1:-5}"
bin="$(cd "${BIN:-$(dirname "$0")/../build/bin}" && pwd)"
models="$(cd "$(dirname "$0")/../models" && pwd)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
keras='conv2d(32, 3, relu) maxpool2d(2) conv2d(64, 3, relu) maxpool2d(2) flatten dropout(0.5) dense(10)'
seconds() { sed -n 's/.*"seconds": \([0-9.e-]*\).*/\1/p' "$1" | head -1; }
for round in $(seq "$rounds"); do
  for model in article keras resnet8; do
    case $model in
      article) args=(--epochs 1) ;;
      keras) args=(--epochs 1 --validation-split 0.9 --model "$keras") ;;
      resnet8) args=(--epochs 1 --validation-split 0.95 --model "$models/resnet8.spec" --data-dir /usr/share/datasets/fashion-mnist) ;;
    esac
    for mode in float qat; do
      qat=() ck=()
      [[ $mode == qat ]] && qat=(--qat) ck=(--checkpoint ck.qbin)  # apart from every -o below
      rm -f a.json b.json c.json p2.log
      "$bin/train" "${args[@]}" "${qat[@]}" --threads 2 -o a.qbin "${ck[@]}" --metrics a.json >/dev/null 2>&1
      mpirun -np 2 "$bin/train" "${args[@]}" "${qat[@]}" --threads 1 -o b.qbin "${ck[@]}" --metrics b.json >p2.log 2>&1
      "$bin/train" "${args[@]}" "${qat[@]}" --threads 1 -o c.qbin "${ck[@]}" --metrics c.json >/dev/null 2>&1
      kb=$(grep -a "Rank 0 sent" p2.log | sed 's/.*sent \([0-9.]*\) KB.*/\1/')
      echo "$round $model $mode $(seconds a.json) $(seconds b.json) $(seconds c.json) $kb"
    done
  done
done
