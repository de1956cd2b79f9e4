#!/usr/bin/env bash
# The programs' bad-input behaviour: one-line errors and non-zero exits, never a crash.
# Usage: cli_test.sh BIN_DIR [SANITIZERS]
set -u
bin="$1"
sanitizers="${2:-}"
failures=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect NAME EXIT_CODE PATTERN -- COMMAND...
expect() {
  local name="$1" code="$2" pattern="$3"
  shift 4
  "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  local lines
  lines=$(wc -l <"$tmp/err")
  if [[ $got -ne $code ]] || ! grep -q -- "$pattern" "$tmp/err" || [[ $lines -ne 1 ]]; then
    echo "FAIL $name: exit $got (expected $code), $lines stderr lines, stderr: $(head -c 300 "$tmp/err")"
    failures=$((failures + 1))
  else
    echo "ok   $name: $(cat "$tmp/err")"
  fi
}

mkdir -p "$tmp/empty" "$tmp/corrupt"
expect "unknown flag" 2 "bogus" -- "$bin/train" --bogus
expect "non-numeric epochs" 2 "ten" -- "$bin/train" --epochs ten
expect "zero epochs" 2 "expected an integer in 1..100000" -- "$bin/train" --epochs 0
expect "zero batch" 2 "batch-size '0'" -- "$bin/train" --batch-size 0
expect "negative lr" 2 "expected a number in (0, 10\]" -- "$bin/train" --lr -1
expect "split of 1" 2 "validation-split '1'" -- "$bin/train" --validation-split 1
expect "stray argument" 2 "unexpected argument" -- "$bin/train" extra
expect "bits without qat" 2 "need --qat" -- "$bin/train" --bits 4
expect "bits out of range" 2 "expected an integer in 2..8" -- "$bin/train" --qat --bits 9
expect "unknown observer" 2 "expected ema or tfmot" -- "$bin/train" --qat --observer minmax
expect "missing init model" 1 "cannot open" -- "$bin/train" --qat --init "$tmp/none.qbin" --data-dir "$tmp/corrupt"
echo "this text file is not a model, whatever its name says" >"$tmp/bad.qbin"
expect "corrupt init model" 1 "not a qbin model" -- "$bin/train" --qat --init "$tmp/bad.qbin"
expect "missing data" 1 "no training images file in .*empty (expected a name containing .train-images." -- "$bin/train" --data-dir "$tmp/empty"
mkdir -p "$tmp/mnist"
expect "missing data where MNIST is expected: the hint fetches it" 1 "for MNIST run scripts/fetch_mnist" -- "$bin/train" --data-dir "$tmp/mnist"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  head -c 2000 /dev/zero >"$tmp/corrupt/$f"
done
expect "corrupt data: the hint says what a data set's folder holds (not to fetch MNIST)" 1 "a data set's folder holds four IDX files" -- "$bin/train" --data-dir "$tmp/corrupt"

# The int8 tools (bad images with a real model are tested in tests/apps/infer_test.sh).
expect "infer: no arguments" 2 "missing MODEL" -- "$bin/infer"
expect "infer: no images" 2 "no images" -- "$bin/infer" "$tmp/bad.qbin"
expect "infer: bad model" 1 "not a qbin model" -- "$bin/infer" "$tmp/bad.qbin" x.png
expect "infer: missing model" 1 "cannot open" -- "$bin/infer" "$tmp/none.qbin" x.png
mkfifo "$tmp/fifo.qbin"
expect "infer: a FIFO as the model is refused, not waited on" 1 "not a regular file" -- timeout 20 "$bin/infer" "$tmp/fifo.qbin" x.png
expect "evaluate: a FIFO as the model is refused" 1 "not a regular file" -- timeout 20 "$bin/evaluate" "$tmp/fifo.qbin"
expect "evaluate: no model" 2 "missing MODEL" -- "$bin/evaluate"
expect "evaluate: zero batch" 2 "batch-size '0'" -- "$bin/evaluate" "$tmp/bad.qbin" --batch-size 0
expect "evaluate: bad model" 1 "not a qbin model" -- "$bin/evaluate" "$tmp/bad.qbin"
expect "quantize: no model" 2 "missing MODEL" -- "$bin/quantize"
expect "quantize: bad method" 2 "expected minmax or percentile" -- "$bin/quantize" "$tmp/bad.qbin" --method mse
expect "quantize: too many images" 2 "expected an integer in 1..60000" -- "$bin/quantize" "$tmp/bad.qbin" --calibration-images 70000
expect "quantize: overwrite input" 2 "overwrite the input" -- "$bin/quantize" "$tmp/bad.qbin" -o "$tmp/bad.qbin"
expect "quantize: bits past 8" 2 "expected an integer in 2..8" -- "$bin/quantize" "$tmp/bad.qbin" --bits 9
expect "train: layer bits without qat" 2 "need --qat" -- "$bin/train" --layer-bits conv2d=4
expect "train: keep-float without qat" 2 "need --qat" -- "$bin/train" --keep-float conv2d
expect "train: an int8 target without qat" 2 "need --qat" -- "$bin/train" --int8-target avx2
expect "train: an unknown int8 target" 2 "int8-target 'avx512' (expected vnni or avx2)" -- "$bin/train" --qat --int8-target avx512
expect "quantize: an unknown int8 target" 2 "expected vnni or avx2" -- "$bin/quantize" "$tmp/bad.qbin" --int8-target sse
expect "inspect: suggested 8 bits past avx2's 7" 2 "suggest-bits 8 with --int8-target avx2 (expected 2..7" -- "$bin/inspect" "$tmp/bad.qbin" --int8-target avx2 --suggest-bits 8
expect "inspect: target accuracy above 1" 2 "target-accuracy" -- "$bin/inspect" "$tmp/bad.qbin" --target-accuracy 1.5
expect "inspect: suggested bits past 8" 2 "expected an integer in 2..8" -- "$bin/inspect" "$tmp/bad.qbin" --suggest-bits 12
expect "samples: too many" 2 "10000 images" -- "$bin/samples" --first 9999 --count 2
expect "samples: zero" 2 "expected an integer in 1..100000" -- "$bin/samples" --count 0

# Numbers are parsed whole and range-checked before any narrowing (issue 13, items 4 and 5):
# each of these was cut, half-read or crashed before.
expect "epochs past 2^32 are not cut to 1" 2 "epochs '4294967297' (expected an integer in 1..100000)" -- "$bin/train" --epochs 4294967297
expect "bits past 2^32 are not cut to 7" 2 "bits '4294967303'" -- "$bin/train" --qat --bits 4294967303
expect "bits of 2^63-1 are not shown as -1" 2 "bits '9223372036854775807'" -- "$bin/train" --qat --bits 9223372036854775807
expect "an integer past int64 is refused" 2 "seed '99999999999999999999'" -- "$bin/train" --seed 99999999999999999999
expect "threads past 2^32 are not cut to 1" 2 "threads '4294967297'" -- "$bin/evaluate" "$tmp/bad.qbin" --threads 4294967297
expect "samples --first 2^63-1 is refused" 2 "first '9223372036854775807' (expected an integer in 0..2147483647)" -- "$bin/samples" --first 9223372036854775807 --count 10
expect "evaluate: a huge batch is refused, not allocated" 2 "batch-size '9223372036854775807'" -- "$bin/evaluate" "$tmp/bad.qbin" --batch-size 9223372036854775807
expect "lr with trailing letters" 2 "lr '0.001abc'" -- "$bin/train" --lr 0.001abc
expect "lr with a leading space" 2 "lr ' 3'" -- "$bin/train" --lr ' 3'
expect "infinite lr" 2 "lr '1e999'" -- "$bin/train" --lr 1e999
expect "nan lr" 2 "lr 'nan'" -- "$bin/train" --lr nan
expect "split with trailing letters" 2 "validation-split '3abc'" -- "$bin/train" --validation-split 3abc
expect "hexadecimal epochs" 2 "epochs '0x10'" -- "$bin/train" --epochs 0x10
expect "reproduce: seeds past the limit" 2 "seeds '5000'" -- "$bin/reproduce" --seeds 5000
max_threads=$((4 * $(getconf _NPROCESSORS_ONLN)))
expect "threads above 4 per core are refused" 2 "threads '$((max_threads + 1))' (expected an integer in 0..$max_threads)" -- "$bin/evaluate" "$tmp/bad.qbin" --threads $((max_threads + 1))
expect "threads 100000 are refused, not started" 2 "threads '100000'" -- "$bin/evaluate" "$tmp/bad.qbin" --threads 100000
expect "threads at the limit are accepted (the model is what fails)" 1 "not a qbin model" -- "$bin/evaluate" "$tmp/bad.qbin" --threads $max_threads

# --model: a bad spec points at its token (needs MNIST: the spec is built for the data's shape).
expect "train --model with an unknown layer names it and where" 2 "--model: at character 14 ('conv2x'): unknown layer" -- "$bin/train" --model 'conv2d(8, 3) conv2x'
expect "train --model and --init together" 2 "--model and --init both give the layers" -- "$bin/train" --model 'flatten dense(10)' --init "$tmp/bad.qbin"
expect "train --qat refuses a BatchNormalization that follows no layer with weights, before training" 2 \
  "^train: error: --qat: BatchNormalization 'batch_normalization' follows a ReLU (int8 folds" -- \
  "$bin/train" --qat --model 'conv2d(8, 3) relu batchnorm flatten dense(10)' --metrics "$tmp/never.json"
[[ ! -e "$tmp/never.json" ]] || { echo "FAIL ... and trained nothing"; failures=$((failures + 1)); }
expect "train --qat refuses a model whose logits come from inside a residual block" 2 "last layer with weights is inside 'residual'" -- \
  "$bin/train" --qat --model 'conv2d(10, 28) residual(conv2d(10, 1)) flatten'
expect "train --freeze-bn-after needs --qat" 2 "need --qat" -- "$bin/train" --freeze-bn-after 2
expect "train --model: a residual block whose branches disagree" 2 "the body gives \[14, 14, 8\] and the identity shortcut gives \[28, 28, 1\]" -- \
  "$bin/train" --model 'residual(conv2d(8, 3, stride=2, padding=same)) flatten dense(10)'
expect "reproduce --model: a bad spec, before any training" 2 "^reproduce: error: --model: at character 1 ('conv2x')" -- \
  "$bin/reproduce" --model 'conv2x' --out "$tmp/rep"
expect "reproduce --model: int8 refusals, before any training" 2 "^reproduce: error: --model: BatchNormalization 'batch_normalization' follows a ReLU" -- \
  "$bin/reproduce" --model 'conv2d(8, 3) relu batchnorm flatten dense(10)' --out "$tmp/rep"
# Resource limits, checked before any work (issue 22, items 4 and 5).
expect "train --model: a layer a model file cannot hold, refused before allocating it" 2 \
  "('dense'): Dense: 2835415040 parameters (11.3 GB), more than a model file holds (268173312 parameters, 1 GiB)" -- \
  timeout 20 "$bin/train" --model 'conv2d(64, 3) flatten dense(65536) dense(10)'
expect "train --model: a model whose layers together exceed a file, refused at the layer that does it" 2 \
  "the model holds 280825260 parameters up to here" -- timeout 60 "$bin/train" --model 'flatten dense(65536) dense(3500) dense(10)'
pads="zeropadding2d(64) zeropadding2d(64) zeropadding2d(64) zeropadding2d(64) zeropadding2d(64) zeropadding2d(64) zeropadding2d(64) zeropadding2d(64)"
expect "train: a model whose training needs more memory than the machine has, refused with the figures" 2 \
  "training this model at batch 65536 needs about 2471.8 GB (parameters .*, more than the .* GB available" -- \
  timeout 60 "$bin/train" --model "$pads flatten dense(10)" --batch-size 65536
# A memory limit (ulimit -v, as containers set) counts as what is available. Not under the sanitizers:
# their shadow memory is reserved as address space at start, which such a limit refuses.
if [[ -z $sanitizers ]]; then
  expect "train: a model whose training needs more memory than the limit allows, refused with the figures" 2 \
    "training this model at batch 32 needs about 2.4 GB" -- bash -c "ulimit -v 1500000; exec timeout 60 $bin/train --model '$pads flatten dense(10)'"
fi
expect "train --model whose last layer does not give the classes" 1 "^train: error: --model: the model takes \[28, 28, 1\] and gives \[12\]" -- "$bin/train" --model 'flatten dense(12)'

# Messages quote what the user gave as file names are quoted, and name their option (issue 22, items 7, 8, 13).
printf 'conv2d(8, 3)\0 flatten dense(10)' >"$tmp/nul.spec"
expect "a NUL byte in a spec file is shown escaped, not cut" 2 "at character 13 ('\\\\x00'): expected a layer name" -- "$bin/train" --model "$tmp/nul.spec"
expect "a non-ASCII character in a spec is shown whole and escaped" 2 "at character 2 ('\\\\xc3\\\\xb6')" -- "$bin/train" --model 'cönv2d(8, 3)'
printf 'conv2d(8, 3) \033[31m flatten' >"$tmp/esc.spec"
expect "an escape byte in a spec is shown escaped" 2 "('\\\\x1b')" -- "$bin/train" --model "$tmp/esc.spec"
printf '\xEF\xBB\xBFflatten dense(12)' >"$tmp/bom.spec"
expect "a UTF-8 byte order mark starting a spec file is read past" 1 "the model takes \[28, 28, 1\] and gives \[12\]" -- "$bin/train" --model "$tmp/bom.spec"
expect "a dropout rate that is 1 as a float is refused at its token" 2 "('0.99999999'): dropout rate (expected 0 <= rate < 1; this one is 1 as a 32-bit float)" -- \
  "$bin/train" --model 'flatten dropout(0.99999999) dense(10)'
expect "a validation split that leaves nothing to train on names the option" 2 "--validation-split 0.99999 leaves none of the 60000 training images" -- \
  "$bin/train" --validation-split 0.99999
expect "a missing spec file is named as such, not parsed as a spec" 2 "--model my_model.spec: no such file" -- "$bin/train" --model my_model.spec
expect "... also in a missing folder" 2 "--model ./missing/model.spec: no such file" -- "$bin/train" --model ./missing/model.spec
expect "... and a folder is a folder" 2 "is a folder (expected a model spec or a file holding one)" -- "$bin/train" --model "$tmp/empty"
expect "QNET_ISA's value is shown escaped" 1 "QNET_ISA=avx2\\\\x0a (expected avx512, avx2 or baseline)" -- env QNET_ISA=$'avx2\n' "$bin/train" --epochs 1
expect "HOME unset: no quiet ./.cache, the way out named" 1 "HOME is not set, so there is no ~/.cache/qnet/mnist: pass --data-dir DIR or set QNET_DATA_DIR" -- \
  env -u HOME -u QNET_DATA_DIR "$bin/train" --epochs 1

if "$bin/train" --help | grep -q -- "--validation-split"; then echo "ok   help"; else echo "FAIL help"; failures=$((failures + 1)); fi
echo "$failures failed"
[[ $failures -eq 0 ]]
