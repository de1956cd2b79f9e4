#!/usr/bin/env bash
# The documented models of models/ (issue 20) as a user runs them, on Fashion-MNIST (Debian's
# dataset-fashion-mnist; scripts/test installs it): a short QAT run of each gives an int8 model
# whose accuracy equals the fake-quantized one, on the one-pass and the split-weights path; a
# short float run gives the same accuracy on the f32 runtime (BatchNormalization folded there).
# Usage: models_test.sh BIN_DIR SOURCE_DIR
set -u
bin="$1"
models="$2/models"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"
cd "$tmp" || exit 1
fashion=/usr/share/datasets/fashion-mnist
check "Fashion-MNIST is installed (Debian dataset-fashion-mnist)" test -f "$fashion/train-images-idx3-ubyte.gz" || { finish; exit 1; }

# within JSON KEY_A KEY_B MIN: both numbers present, A above MIN, |A - B| <= 0.001.
within() {
  local a b
  a=$(json_number "$1" "$2") b=$(json_number "$1" "$3")
  [[ -n $a && -n $b ]] && awk -v a="$a" -v b="$b" -v m="$4" 'BEGIN { d = a - b; exit !(a > m && d <= 0.001 && d >= -0.001) }'
}

specs=("$models"/resnet8.spec "$models"/mobilenet.spec)
check "models/ holds resnet8.spec and mobilenet.spec" test -f "${specs[0]}" -a -f "${specs[1]}"
for spec in "$models"/*.spec; do
  name=$(basename "$spec" .spec)
  # 27,000 training images (the first half), one epoch: enough steps for the moving statistics
  # of BatchNormalization (momentum 0.99) to follow the weights.
  "$bin/train" --qat --epochs 1 --validation-split 0.5 --model "$spec" --data-dir "$fashion" -o "$name.qbin" \
    --checkpoint "${name}_qat.qbin" --metrics "$name.json" >"$name.log" 2>&1
  check "$name: train --qat exits 0" test $? -eq 0
  check "$name: its int8 accuracy equals the fake-quantized one to 0.001 (and is above 0.7)" \
    within "$name.json" int8_test_accuracy test_accuracy 0.7
  check "$name: the int8 file holds no BatchNormalization (folded)" bash -c "test -s $name.qbin && ! grep -q BatchNormalization $name.qbin"
  "$bin/evaluate" "$name.qbin" --data-dir "$fashion" --json >"$name.eval.json" 2>&1
  ONEDNN_MAX_CPU_ISA=AVX2 "$bin/evaluate" "$name.qbin" --data-dir "$fashion" --json >"$name.avx2.json" 2>&1
  check "$name: evaluate gives the same accuracy on the split-weights path (AVX2 cap)" same_accuracy "$name.eval.json" "$name.avx2.json"
  "$bin/quantize" "${name}_qat.qbin" -o "${name}_from_checkpoint.qbin" --data-dir "$fashion" >"$name.quantize.log" 2>&1
  check "$name: quantize re-exports the QAT checkpoint to the same int8 file" cmp -s "$name.qbin" "${name}_from_checkpoint.qbin"

  "$bin/train" --epochs 1 --validation-split 0.5 --model "$spec" --data-dir "$fashion" -o "${name}_float.qbin" \
    --metrics "${name}_float.json" >"${name}_float.log" 2>&1
  check "$name: float training exits 0" test $? -eq 0
  check "$name: the f32 runtime (BatchNormalization folded) gives the training graph's accuracy to 0.001" \
    within "${name}_float.json" runtime_test_accuracy test_accuracy 0.5
done
finish
