#!/usr/bin/env bash
# The int8 workflow end to end with real files: train --qat -> model.qbin -> evaluate, infer
# (good, bad and missing images), samples, quantize (PTQ). Needs MNIST (scripts/test fetches it).
# Usage: tools_test.sh BIN_DIR
set -u
bin="$1"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"
cd "$tmp" || exit 1

"$bin/train" --qat --epochs 1 --metrics q.json >train.log 2>&1
check "train --qat writes an int8 model.qbin of at most 21,500 bytes" test -f model.qbin -a "$(stat -c %s model.qbin)" -le 21500
check "train --qat keeps the QAT checkpoint" test -f model_qat.qbin
check "metrics hold int8_test_accuracy and model_bytes" grep -q '"int8_test_accuracy"' q.json
check "metrics model_bytes is the file size" grep -q "\"model_bytes\": $(stat -c %s model.qbin)" q.json

"$bin/train" --qat --observer tfmot --epochs 1 -o tfmot.qbin --checkpoint tfmot_qat.qbin >tfmot.log 2>&1
check "train --qat --observer tfmot trains and exports" test -s tfmot.qbin
"$bin/train" --qat --bits 4 --init model_qat.qbin --epochs 1 -o b4.qbin --checkpoint b4_qat.qbin >bits.log 2>&1
check "continuing an 8-bit QAT checkpoint with --bits 4 is refused, nothing written" \
  bash -c 'grep -q "was trained 8-bit" bits.log && [[ ! -e b4.qbin && ! -e b4_qat.qbin ]]'

"$bin/evaluate" model.qbin --json >eval.json
check "evaluate --json names the precision" grep -q '"precision": "int8"' eval.json
check "evaluate counts 10000 images" grep -q '"images": 10000' eval.json

# MNIST as the usual downloads: gzip-compressed, as NAME.gz or under the plain name; evaluate needs
# only the two test files (issue 13, item 10).
mnist="${QNET_DATA_DIR:-$HOME/.cache/qnet/mnist}"
mkdir -p gz plaingz
for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  gzip -c "$mnist/$f" >"gz/$f.gz"
  gzip -c "$mnist/$f" >"plaingz/$f"
done
"$bin/evaluate" model.qbin --json --data-dir gz >gz.json 2>gz.err
check "evaluate reads NAME.gz test files, without the training files" grep -q '"images": 10000' gz.json
check "... with the same accuracy" bash -c 'test "$(sed -n "s/.*\"accuracy\": \([0-9.]*\).*/\1/p" gz.json)" = "$(sed -n "s/.*\"accuracy\": \([0-9.]*\).*/\1/p" eval.json)"'
"$bin/evaluate" model.qbin --json --data-dir plaingz >plaingz.json 2>&1
check "evaluate reads gzip bytes under the plain names" grep -q '"images": 10000' plaingz.json
"$bin/evaluate" model.qbin --data-dir model.qbin >/dev/null 2>file.err
check "--data-dir FILE says it is not a folder" grep -q "data folder model.qbin is not a folder" file.err
check "... and does not suggest fetching into a file" bash -c '! grep -q fetch_mnist file.err'

# Without VNNI (oneDNN capped below it) the 8-bit model runs on the split-weight path, same answers.
native=$(sed -n 's/.*"accuracy": \([0-9.]*\).*/\1/p' eval.json)
for cap in AVX512_CORE AVX2; do
  ONEDNN_MAX_CPU_ISA=$cap "$bin/evaluate" model.qbin --json >"isa_$cap.json" 2>isa.txt
  check "an 8-bit int8 model runs where oneDNN has no VNNI ($cap)" test $? -eq 0
  check "evaluate --json names the split-weights path ($cap)" grep -q '"int8_path": "split-weights"' "isa_$cap.json"
  check "the same test accuracy as with VNNI ($cap)" grep -q "\"accuracy\": $native," "isa_$cap.json"
done
# A failure after training (here forced at the runtime evaluation) loses none of its files.
QNET_FAILPOINT=runtime-evaluation "$bin/train" --qat --epochs 1 -o lost.qbin --checkpoint lost_qat.qbin --metrics lost.json \
  >lost.log 2>lost.err
check "train --qat exits 1 when the int8 evaluation fails" test $? -eq 1
check "... after saving the int8 model and the QAT checkpoint" test -s lost.qbin -a -s lost_qat.qbin
check "... and the metrics, with the int8 accuracy null and the reason" \
  bash -c 'grep -q "\"int8_test_accuracy\": null" lost.json && grep -q "\"runtime_error\": \"failpoint runtime-evaluation\"" lost.json'
check "... and says so in one line" grep -q "saved to lost.qbin (QAT checkpoint lost_qat.qbin), but evaluating it" lost.err
"$bin/evaluate" lost.qbin >/dev/null
check "the model it kept runs" test $? -eq 0

"$bin/samples" --count 20 --out gray >/dev/null
"$bin/samples" --count 20 --out canvas --canvas >/dev/null
check "samples writes 20 + 20 PNGs" test "$(ls gray/*.png canvas/*.png | wc -l)" -eq 40
right=0
for f in gray/*.png canvas/*.png; do
  label=$(basename "$f" .png | cut -d_ -f2)
  digit=$("$bin/infer" model.qbin "$f" --json | sed -n 's/.*"digit": \([0-9]\).*/\1/p')
  [[ "$digit" == "$label" ]] && right=$((right + 1))
done
check "infer names at least 37 of the 40 sample digits ($right)" test "$right" -ge 37

echo "not a png" >bad.png
"$bin/infer" model.qbin gray/0000_7.png bad.png missing.png canvas/0001_2.png --json >out.json 2>err.txt
code=$?
check "infer exits non-zero when an image is bad" test "$code" -eq 1
check "infer still answers for the good images" test "$(grep -c '"digit"' out.json)" -eq 2
check "infer names the bad image and the problem" grep -q "bad.png: not a PNG" err.txt
check "infer names the missing image" grep -q "missing.png" err.txt
"$bin/infer" model.qbin canvas/0000_7.png --raw >/dev/null 2>raw.txt
code=$?
check "infer --raw refuses a non-28x28 image" test "$code" -eq 1
check "infer --raw says it needs 28x28" grep -q "needs a 28x28 image" raw.txt

"$bin/quantize" model_qat.qbin -o exported.qbin >/dev/null
check "quantize exports a QAT checkpoint to the same int8 file" cmp -s exported.qbin model.qbin
"$bin/train" --epochs 1 -o float.qbin >/dev/null 2>&1
"$bin/quantize" float.qbin -o ptq.qbin --calibration-images 500 --method percentile >ptq.log
check "quantize (PTQ) writes an int8 model" grep -q "int8 test accuracy" ptq.log
"$bin/evaluate" ptq.qbin --json >ptq.json
check "the PTQ model evaluates as int8" grep -q '"precision": "int8"' ptq.json
# Bits per layer (issue 23): --layer-bits gives a layer its own width; the file is mixed, evaluate runs it.
"$bin/quantize" float.qbin -o mixed.qbin --bits 3 --layer-bits conv2d=8 --calibration-images 500 >mixed.log 2>&1
check "quantize --bits 3 --layer-bits conv2d=8 writes a mixed-width model" grep -q "PTQ, mixed 3/8-bit" mixed.log
"$bin/evaluate" mixed.qbin --json >mixed.json
check "... that evaluates as int8" grep -q '"precision": "int8"' mixed.json
"$bin/quantize" float.qbin -o nolayer.qbin --layer-bits conv=8 >nolayer.log 2>&1
check "--layer-bits with an unknown layer is refused (exit 2), naming the layers that take bits" \
  bash -c "test $? -eq 2 && grep -q \"no layer 'conv' (expected NAME=N with N in 2..8 and NAME one of conv2d, dense)\" nolayer.log && test ! -e nolayer.qbin"
"$bin/quantize" model_qat.qbin -o qatbits.qbin --layer-bits conv2d=4 >qatbits.log 2>&1
check "--layer-bits with a QAT checkpoint is refused (exit 2)" bash -c "test $? -eq 2 && grep -q 'layer-bits applies to float models' qatbits.log"
# Float islands (issue 23): --keep-float keeps a layer's kernel in f32; the PTQ and the QAT export run.
"$bin/quantize" float.qbin -o island.qbin --bits 3 --keep-float conv2d --calibration-images 500 >island.log 2>&1
check "quantize --keep-float conv2d writes a model with a float island" grep -q "PTQ, 3-bit, 1 layer in float" island.log
"$bin/evaluate" island.qbin --json >island.json
check "... that evaluates as int8" grep -q '"precision": "int8"' island.json
"$bin/quantize" float.qbin -o all3.qbin --bits 3 --calibration-images 500 >all3.log 2>&1
"$bin/evaluate" all3.qbin --json >all3.json
check "... and scores above the same model all at 3 bits" \
  awk -v a="$(json_number island.json accuracy)" -v b="$(json_number all3.json accuracy)" 'BEGIN { exit !(a > b && b > 0.1) }'
"$bin/quantize" model_qat.qbin -o qatisland.qbin --keep-float dense >qatisland.log 2>&1
check "quantize --keep-float of a QAT checkpoint exports its Dense in f32 (a larger file)" \
  bash -c "grep -q '8-bit, 1 layer in float' qatisland.log && test \$(stat -c %s qatisland.qbin) -gt \$(stat -c %s model.qbin)"
"$bin/quantize" float.qbin -o nofloat.qbin --keep-float max_pool2d >nofloat.log 2>&1
check "--keep-float of a layer without weights is refused (exit 2), naming the layers with weights" \
  bash -c "test $? -eq 2 && grep -qF \"layer 'max_pool2d' (MaxPool2D) has no weights to keep in float (expected NAME[,NAME...] with each NAME one of conv2d, dense)\" nofloat.log && test ! -e nofloat.qbin"
"$bin/train" --qat --epochs 1 --model 'conv2d(12, 3, relu, bits=4) maxpool2d(2) flatten dense(10)' -o spec4.qbin --checkpoint spec4_qat.qbin \
  --metrics spec4.json >spec4.log 2>&1
check "train --qat with bits=4 in the spec trains a mixed 4/8-bit model" grep -q '"bit_widths": "mixed 4/8-bit"' spec4.json
check "... and its metrics say how this CPU runs it" grep -q '"runtime_path": "\(one-pass\|split-weights\)"' spec4.json
# --int8-target avx2 (issue 21): 7-bit codes, so the int8 file runs one pass on any CPU, and
# without VNNI (the AVX2 cap) where the 8-bit model above runs split.
"$bin/quantize" float.qbin -o avx2.qbin --int8-target avx2 --calibration-images 500 >avx2.log 2>&1
check "quantize --int8-target avx2 narrows the codes to 7 bits" grep -q "PTQ, mixed 7/8-bit for avx2" avx2.log
ONEDNN_MAX_CPU_ISA=AVX2 "$bin/evaluate" avx2.qbin --json >avx2.json
check "... and evaluates in one pass under the AVX2 cap" grep -q '"int8_path": "one-pass"' avx2.json
"$bin/quantize" model_qat.qbin -o qattarget.qbin --int8-target avx2 >qattarget.log 2>&1
check "--int8-target with a QAT checkpoint is refused (exit 2)" bash -c "test $? -eq 2 && grep -q 'int8-target applies to float models' qattarget.log"

"$bin/reproduce" --epochs 1 --out repro --timing-repeats 1 >repro.log 2>&1
check "reproduce writes the report, both charts and results.json" test -s repro/report.md -a -s repro/inference_time.svg -a -s repro/model_size.svg -a -s repro/results.json
check "the report has the four tables" test "$(grep -c '^## [1-4]\.' repro/report.md)" -eq 4
check "the report has the PTQ row" grep -q "post-training quantization" repro/report.md
check "results.json holds the int8 accuracy" grep -q '"int8": {' repro/results.json
check "the charts are SVG with a title" grep -q "Inference time per part" repro/inference_time.svg
check "reproduce shows its stages" grep -q "\[5/5\] writing the report" repro.log

QNET_FAILPOINT=reproduce-preflight timeout 60 "$bin/reproduce" --out early >early.log 2>early.err
check "reproduce checks that the machine runs both models before training" test $? -eq 1
check "... says so and that nothing was trained" grep -q "cannot run the models on oneDNN.*nothing was trained" early.err
check "... and trained nothing" bash -c '! grep -q "float training" early.log && test -z "$(ls early)"'
QNET_FAILPOINT=reproduce-int8 "$bin/reproduce" --epochs 1 --out broken --timing-repeats 1 >broken.log 2>broken.err
check "reproduce exits 1 when a stage fails" test $? -eq 1
check "... names the stage and the reason" grep -q "stage \[3/5\] seed 1: quantization-aware training, 1 epochs failed: failpoint reproduce-int8" broken.err
check "... keeps the models that finished" test -s broken/model_float.qbin -a -s broken/model_ptq.qbin -a -s broken/model.qbin
check "... and says where it stopped in partial.json" grep -q '"failed_stage": "\[3/5\]' broken/partial.json

finish
