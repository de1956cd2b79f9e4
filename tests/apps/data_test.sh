#!/usr/bin/env bash
# Any IDX data set (issue 14, item 2), made here from MNIST's bytes with new IDX headers: its
# 28x28 images read as 56x14x1 ("tall", 1 channel) and as 14x28x2 (rank 4, 2 channels), gzip-
# compressed, EMNIST-style file names, and a --classes above the labels. train, evaluate, quantize,
# samples and infer take the shapes from the files. Needs MNIST (scripts/test fetches it).
# Usage: data_test.sh BIN_DIR
set -u
bin="$1"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"
cd "$tmp" || exit 1
mnist="${QNET_DATA_DIR:-$HOME/.cache/qnet/mnist}"

be32() { printf "\\x$(printf %02x $(($1 >> 24 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 & 255)))"; }
make_set() {  # DIR PREFIX DIMS...
  local dir="$1" prefix="$2"
  shift 2
  mkdir -p "$dir"
  local rank=$(( $# + 1 ))
  { printf '\x00\x00\x08'"\\x$(printf %02x $rank)"; be32 60000; for d in "$@"; do be32 "$d"; done
    tail -c +17 "$mnist/train-images-idx3-ubyte"; } | gzip -c >"$dir/${prefix}train-images-idx${rank}-ubyte.gz"
  { printf '\x00\x00\x08'"\\x$(printf %02x $rank)"; be32 10000; for d in "$@"; do be32 "$d"; done
    tail -c +17 "$mnist/t10k-images-idx3-ubyte"; } | gzip -c >"$dir/${prefix}test-images-idx${rank}-ubyte.gz"
  gzip -c "$mnist/train-labels-idx1-ubyte" >"$dir/${prefix}train-labels-idx1-ubyte.gz"
  cp "$mnist/t10k-labels-idx1-ubyte" "$dir/${prefix}test-labels-idx1-ubyte"
}
make_set tall "" 56 14
make_set multi "emnist-like-" 14 28 2

"$bin/train" --qat --epochs 1 --data-dir tall -o tall.qbin --checkpoint tall_qat.qbin --metrics tall.json >tall.log 2>&1
check "train --qat on 56x14x1 images from gzip files" test $? -eq 0
check "... builds the reference layers for that shape" grep -q "Training on 54000 images of \[56, 14, 1\] in 10 classes" tall.log
check "... and its int8 model is accurate (> 0.9)" bash -c 'grep -q "\"int8_test_accuracy\": 0\.9" tall.json'
check "... equal to the fake-quantized accuracy within 0.001" int8_matches_fake_quant tall.json
"$bin/evaluate" tall.qbin --data-dir tall --json >tall_eval.json
check "evaluate runs it on that test set" grep -q '"images": 10000' tall_eval.json
ONEDNN_MAX_CPU_ISA=AVX2 "$bin/evaluate" tall.qbin --data-dir tall --json >tall_avx2.json
check "... with the same accuracy on the split-weights path" same_accuracy tall_eval.json tall_avx2.json
"$bin/evaluate" tall.qbin >mnist_eval.txt 2>&1
check "evaluate refuses MNIST for a 56x14 model, naming both shapes" grep -q "the model takes 56x14x1 images, the data set has 28x28x1" mnist_eval.txt

"$bin/train" --qat --epochs 1 --data-dir multi --classes 12 -o multi.qbin --checkpoint multi_qat.qbin --metrics multi.json >multi.log 2>&1
check "train --qat on 14x28x2 images (rank-4 IDX, EMNIST-style names) with --classes 12" test $? -eq 0
check "... gives 12 outputs" grep -q "(None, 12)" multi.log
check "... and an accurate int8 model (> 0.9)" bash -c 'grep -q "\"int8_test_accuracy\": 0\.9" multi.json'
# A model with every layer form the spec allows deploys (issue 14, item 3): a conv with no ReLU
# (codes with a zero point) framed by ZeroPadding2D with that zero point, codes padded by a
# strided "same" conv, a standalone ReLU after pooling, hidden Dense layers with and without
# ReLU, Dropout.
spec='conv2d(16, 3, padding=same) zeropadding2d(1, left=0) maxpool2d(2) relu conv2d(16, 3, stride=2, padding=same) flatten dense(64, relu) dropout(0.3) dense(32) dense(12)'
"$bin/train" --qat --epochs 1 --data-dir multi --classes 12 --model "$spec" -o general.qbin --checkpoint general_qat.qbin --metrics general.json >general.log 2>&1
check "train --qat on a spec with convs and Dense layers without ReLU and hidden Dense layers" test $? -eq 0
check "... inserts the activations' quantizers" grep -q "quantize_2 (QatQuantize)" general.log
check "... and keeps the ZeroPadding2D" grep -q "zero_padding2d (ZeroPadding2D) *(None, 16, 29, 16)" general.log
check "... and its int8 model is accurate (> 0.9)" bash -c 'grep -q "\"int8_test_accuracy\": 0\.9" general.json'
check "... equal to the fake-quantized accuracy within 0.001" int8_matches_fake_quant general.json
"$bin/evaluate" general.qbin --data-dir multi --json >general_eval.json
ONEDNN_MAX_CPU_ISA=AVX2 "$bin/evaluate" general.qbin --data-dir multi --json >general_avx2.json
check "... with the same accuracy on the split-weights path" same_accuracy general_eval.json general_avx2.json
"$bin/train" --qat --epochs 1 --data-dir multi --classes 12 --init general_qat.qbin -o general_resumed.qbin --checkpoint general_ckpt.qbin >resume.log 2>&1
check "... and its QAT checkpoint (with Quantize records) resumes" test $? -eq 0

"$bin/train" --epochs 1 --data-dir multi -o multi_float.qbin >/dev/null 2>&1
"$bin/quantize" multi_float.qbin -o multi_ptq.qbin --data-dir multi >ptq.log 2>&1
check "quantize (PTQ) calibrates on that data set" grep -q "int8 test accuracy on the oneDNN runtime: 0\.9" ptq.log
"$bin/train" --data-dir multi --classes 5 >few.log 2>&1
check "--classes below a label is refused" grep -q "a label is 9, not below --classes 5" few.log
# Several channels (issue 22, item 11): samples writes them as gray + alpha PNGs (before: it
# failed, encode_png: 28x28x2, and left an empty folder), and infer reads them back as such.
"$bin/samples" --count 3 --data-dir multi --out multi_png >samples_multi.txt 2>&1
check "samples writes 2-channel test images as gray + alpha PNGs" test "$(ls multi_png/*.png 2>/dev/null | wc -l)" -eq 3
"$bin/infer" multi.qbin --raw multi_png/0000_7.png --json >infer_multi.json 2>&1
check "infer runs a 2-channel model on them (before: refused), naming the class" grep -q '"class": 7' infer_multi.json

"$bin/samples" --count 3 --data-dir tall --out tall_png >/dev/null
check "samples writes the test images at their size" test "$(ls tall_png/*.png | wc -l)" -eq 3
"$bin/infer" tall.qbin --raw tall_png/0000_7.png --json >tall_infer.json
check "infer --raw runs a 56x14 model on a 56x14 PNG, naming the class" grep -q '"class": 7' tall_infer.json
"$bin/infer" tall.qbin tall_png/0000_7.png >resized.txt
check "... and resizes other sizes plainly" grep -q "tall_png/0000_7.png: class" resized.txt

# A model from a spec file (comments, one layer a line) on the 56x14 data: trains and deploys.
printf '# two convs for tall images\nconv2d(8, 3, relu)\nmaxpool2d(2)\nconv2d(16, 3, relu)\nflatten\ndropout(0.25)\ndense(10)\n' >tall.spec
"$bin/train" --qat --epochs 1 --data-dir tall --model tall.spec -o spec.qbin --checkpoint spec_qat.qbin --metrics spec.json >spec.log 2>&1
check "train --model FILE builds the spec's layers" grep -q "dropout (Dropout)" spec.log
check "... and its int8 model (Dropout left out) is accurate (> 0.9)" bash -c 'grep -q "\"int8_test_accuracy\": 0\.9" spec.json'

# 1x1 images: the article's model cannot take them, and says so (before: "reference_model: input [1, 1, 1]").
mkdir -p dot
{ printf '\x00\x00\x08\x03'; be32 100; be32 1; be32 1; tail -c +17 "$mnist/train-images-idx3-ubyte" | head -c 100; } >dot/train-images-idx3-ubyte
{ printf '\x00\x00\x08\x01'; be32 100; tail -c +9 "$mnist/train-labels-idx1-ubyte" | head -c 100; } >dot/train-labels-idx1-ubyte
cp dot/train-images-idx3-ubyte dot/t10k-images-idx3-ubyte
cp dot/train-labels-idx1-ubyte dot/t10k-labels-idx1-ubyte
"$bin/train" --data-dir dot >dot.log 2>&1
check "1x1 images: the article's model refuses them, naming the size and the way out" \
  grep -q "the article's model takes images of at least 4x4; the data set's are 1x1: give a --model" dot.log
"$bin/train" --data-dir dot --model 'flatten dense(10)' --epochs 1 >dot2.log 2>&1
check "... and a model that takes them trains" test $? -eq 0

mkdir -p two
cp tall/*train-images* two/
cp tall/*train-images* two/x-train-images-idx3-ubyte.gz
"$bin/train" --data-dir two >two.log 2>&1
check "two candidate files are refused, both named" grep -q "2 training images files in two: .*(expected one)" two.log
finish
