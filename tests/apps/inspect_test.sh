#!/usr/bin/env bash
# inspect end to end (quant/debugger.h): the report, charts and JSON of a QAT model and of PTQ at 3
# bits, the int8 runtime bit-identical with the reference layer by layer, and bad input refused.
# Needs MNIST (scripts/test fetches it). Usage: inspect_test.sh BIN_DIR
set -u
bin="$1"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"
cd "$tmp" || exit 1

"$bin/train" --qat --epochs 1 --validation-split 0.8 -o q.qbin --checkpoint q_qat.qbin >train.log 2>&1
"$bin/train" --epochs 1 --validation-split 0.8 -o f.qbin >float.log 2>&1
"$bin/inspect" q_qat.qbin --images 300 --out qat >qat.log 2>&1
check "inspect of a QAT checkpoint exits 0" test $? -eq 0
for f in report.md inspection.json sqnr.svg sensitivity.svg histograms/conv2d_activation.svg histograms/conv2d_weights.svg \
         histograms/dense_weights.svg; do
  check "... writes $f" test -s "qat/$f"
done
check "... on 300 images" grep -q '"images": 300' qat/inspection.json
check "... the oneDNN runtime's logits are the reference's" grep -q '"runtime_matches_reference": "yes"' qat/inspection.json
check "... the fake-quantized and int8 accuracies agree within 0.002" \
  awk -v q="$(json_number qat/inspection.json accuracy_fake_quant)" -v i="$(json_number qat/inspection.json accuracy_int8_reference)" \
  'BEGIN { d = q - i; exit !(q > 0.8 && d < 0.002 && d > -0.002) }'
# Per layer: the int8 output's SQNR against float equals the fake-quantized one's to 0.1 dB.
sqnr_pairs=$(paste -d ' ' <(grep -o '"sqnr_fake_quant_db": [0-9.]*' qat/inspection.json | cut -d ' ' -f 2) \
                          <(grep -o '"sqnr_int8_db": [0-9.]*' qat/inspection.json | cut -d ' ' -f 2))
check "... four layers compared (conv2d, max_pool2d, flatten, dense)" test "$(echo "$sqnr_pairs" | grep -c .)" -eq 4
check "... and each one's int8 SQNR is its fake-quantized SQNR" \
  awk '{ d = $1 - $2; if (d > 0.1 || d < -0.1 || $1 < 20) bad = 1 } END { exit bad }' <<<"$sqnr_pairs"
check "... the report ranks the layers by sensitivity" grep -q '^| 1 | ' qat/report.md

"$bin/inspect" f.qbin --bits 3 --images 300 --out ptq --json >ptq.json 2>ptq.err
check "inspect of a float model (3-bit PTQ) prints its JSON" bash -c 'head -c 1 ptq.json | grep -q "{"'
check "... PTQ at 3 bits loses accuracy the report shows" \
  awk -v f="$(json_number ptq.json accuracy_float)" -v q="$(json_number ptq.json accuracy_fake_quant)" 'BEGIN { exit !(f - q > 0.01) }'
check "... and every layer in float recovers some of it" \
  bash -c "grep -o '\"accuracy_with_this_layer_float\": [0-9.]*' ptq.json | awk -v q=$(json_number ptq.json accuracy_fake_quant) '{ if (\$2 + 0 > q + 0) n++ } END { exit !(n == 2) }'"
"$bin/inspect" f.qbin --bits 3 --images 300 --out ptq_again --float f.qbin >/dev/null 2>&1
check "... the same figures again with --float naming the file (deterministic)" \
  bash -c "test -s ptq_again/inspection.json && diff <(grep -v float_model ptq.json) <(grep -v float_model ptq_again/inspection.json)"
# The suggestion: widths that reach the target (by default the float accuracy less 0.01), and what
# PTQ with those --layer-bits scores on the same images.
lb=$(sed -n 's/.*"suggested_layer_bits": "\([^"]*\)".*/\1/p' ptq.json)
check "... suggests --layer-bits for the sensitive layers ($lb)" bash -c "[[ '$lb' == *=8* ]] && grep -q '\"target_met\": \"yes\"' ptq.json"
"$bin/inspect" f.qbin --bits 3 --layer-bits "$lb" --images 300 --out mixed --json >mixed.json 2>mixed.err
last=$(grep -o '"accuracy": [0-9.]*' ptq.json | tail -1 | cut -d ' ' -f 2)
check "... which score what it said ($last) when applied" test "$(json_number mixed.json accuracy_fake_quant)" = "$last"
check "... as a mixed-width model, bit-identical on the runtime" \
  bash -c "grep -q '\"bits\": \"mixed 3/8-bit\"' mixed.json && grep -q '\"runtime_matches_reference\": \"yes\"' mixed.json"
check "... already at the target: nothing to suggest" bash -c "grep -q '\"suggestion\": \[\],' mixed.json && grep -q '\"target_met\": \"yes\"' mixed.json"
# --suggest-float: the same search keeping layers in float; its --keep-float list, applied, scores what it said.
"$bin/inspect" f.qbin --bits 3 --suggest-float --images 300 --out pf --json >pf.json 2>pf.err
kf=$(sed -n 's/.*"suggested_keep_float": "\([^"]*\)".*/\1/p' pf.json)
check "inspect --suggest-float suggests layers to keep in float ($kf)" bash -c "[[ -n '$kf' && '$kf' != *=* ]] && grep -q 'Suggested float layers' pf/report.md"
"$bin/inspect" f.qbin --bits 3 --keep-float "$kf" --images 300 --out kept --json >kept.json 2>kept.err
last=$(grep -o '"accuracy": [0-9.]*' pf.json | tail -1 | cut -d ' ' -f 2)
check "... which score what it said ($last) when applied, bit-identical on the runtime" \
  bash -c "test '$(json_number kept.json accuracy_fake_quant)' = '$last' && grep -q '\"runtime_matches_reference\": \"yes\"' kept.json && grep -q 'float island' kept/report.md"
"$bin/inspect" f.qbin --suggest-float --suggest-bits 4 --out bad >sf.log 2>&1
check "--suggest-float with --suggest-bits is refused (exit 2)" bash -c "test $? -eq 2 && grep -q 'suggest-float and --suggest-bits' sf.log"

"$bin/inspect" q.qbin --out bad >int8.log 2>&1
check "an int8 model is refused with what to give instead (exit 1)" \
  bash -c "test $? -eq 1 && grep -q 'is an int8 model.*QAT checkpoint it was exported from' int8.log && test \$(wc -l <int8.log) -eq 1"
"$bin/inspect" q_qat.qbin --bits 4 --out bad >bits.log 2>&1
check "--bits with a QAT checkpoint is refused (exit 2)" bash -c "test $? -eq 2 && grep -q 'applies to float models' bits.log"
# A QAT checkpoint trained for --int8-target avx2: given the same option, inspect keeps its
# suggestion within avx2's 7 bits and its fix command carries the option.
"$bin/train" --qat --bits 4 --int8-target avx2 --epochs 1 --validation-split 0.9 -o a4.qbin --checkpoint a4_qat.qbin >a4train.log 2>&1
"$bin/inspect" a4_qat.qbin --int8-target avx2 --target-accuracy 1 --images 300 --out a4 >a4.log 2>&1
check "inspect --int8-target avx2 of an avx2 QAT checkpoint suggests 7 bits and a train command for avx2" \
  bash -c "test $? -eq 0 && grep -q 'train --qat --int8-target avx2 --init FLOAT_MODEL --layer-bits [a-z0-9_]*=7' a4.log && grep -q '\"suggested_bits\": 7' a4/inspection.json"
"$bin/inspect" q_qat.qbin --images 0 --out bad >images.log 2>&1
check "--images 0 is refused (exit 2)" bash -c "test $? -eq 2 && grep -q 'images' images.log"
"$bin/inspect" --out bad >missing.log 2>&1
check "a missing MODEL is refused (exit 2)" bash -c "test $? -eq 2 && grep -q 'missing MODEL' missing.log"
cp f.qbin f.keep
"$bin/inspect" q_qat.qbin --out f.qbin >out.log 2>&1
check "--out naming a file is refused, the file kept" bash -c "test $? -ne 0 && test \$(wc -l <out.log) -eq 1 && cmp -s f.qbin f.keep"
"$bin/train" --epochs 1 --validation-split 0.95 --model 'conv2d(4, 3) flatten dense(10)' --data-dir "${QNET_DATA_DIR:-$HOME/.cache/qnet/mnist}" -o other.qbin >/dev/null 2>&1
"$bin/inspect" q_qat.qbin --float other.qbin --out other >other.log 2>&1
check "a --float model of other layers still runs, comparing where the names meet" test $? -eq 0
finish
