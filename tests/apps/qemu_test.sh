#!/usr/bin/env bash
# The default build on CPUs it was not built on, whatever CPU runs the tests: QEMU's user-mode
# emulator (Debian qemu-user 7.2) runs the binaries on an emulated AVX2-only CPU (-cpu Haswell:
# AVX2 + FMA, no AVX-512, no VNNI) and on an SSE4.2 one (-cpu Nehalem), about 100x slower than
# native. The CPUID there says what the CPU has, so qnet's dispatcher and oneDNN's must choose
# the AVX2 (or baseline) paths by themselves. Usage: qemu_test.sh BIN_DIR (needs MNIST).
set -u
bin="$1"
command -v qemu-x86_64 >/dev/null || { echo "FAIL qemu-x86_64 is not installed (Debian qemu-user; scripts/test installs it)"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"
haswell() { qemu-x86_64 -cpu Haswell "$@" 2> >(grep -v "TCG doesn't support" >&2); }
nehalem() { qemu-x86_64 -cpu Nehalem "$@" 2> >(grep -v "TCG doesn't support" >&2); }
cd "$tmp" || exit 1
kernel_tests="[core]~[slow]~[onednn],[layers]~[slow]~[onednn],[optim]~[slow]~[onednn],[quant]~[slow]~[onednn]"

# AVX2 only: on a host without AVX-512 (AMD Zen 3, Intel before Skylake-X) the native suite already
# runs these paths, and emulating them again would only double CI's longest test.
if ! grep -qw avx512f /proc/cpuinfo; then
  echo "skip Haswell: this CPU has no AVX-512, so the native suite ran the AVX2 and split-weights paths"
  "$bin/train" --qat --epochs 1 --validation-split 0.9 >train.log 2>&1  # the model the Nehalem checks run
  check "native: train --qat (188 steps) exits 0" test $? -eq 0
  "$bin/evaluate" model.qbin --json >native.json
else
QNET_ISA=avx512 haswell "$bin/qnet_tests" "[isa]" >skip.log
check "Haswell: the AVX-512 path is not offered (the suite skips itself, 77)" test $? -eq 77
haswell "$bin/qnet_tests" "$kernel_tests" >kernels.log
check "Haswell: the kernel tests pass on the path the dispatcher chose (avx2)" test $? -eq 0
haswell "$bin/qnet_tests" "[architectures],[mixed]" >architectures.log
check "Haswell: residual blocks, depthwise convs, folded BatchNormalization, average pooling and mixed bit widths are bit-exact in int8" test $? -eq 0
haswell "$bin/train" --qat --epochs 1 --validation-split 0.9 --metrics m.json >train.log 2>train.err
check "Haswell: train --qat (188 steps) exits 0" test $? -eq 0
check "... on the avx2 kernels" grep -q "threads, avx2 kernels" train.log
check "... and the 8-bit model runs on oneDNN's split-weights path" grep -q "(split-weights path)" train.log
fake=$(sed -n 's/.*"test_accuracy": \([0-9.]*\).*/\1/p' m.json)
int8=$(sed -n 's/.*"int8_test_accuracy": \([0-9.]*\).*/\1/p' m.json)
check "... its int8 accuracy ($int8) equals the fake-quantized one ($fake) to 0.001" \
  awk -v a="$int8" -v b="$fake" 'BEGIN { d = a - b; exit !(a > 0.5 && d <= 0.001 && d >= -0.001) }'
haswell "$bin/evaluate" model.qbin --json >haswell.json
"$bin/evaluate" model.qbin --json >native.json
check "Haswell: evaluate names the split-weights path" grep -q '"int8_path": "split-weights"' haswell.json
check "... and oneDNN's AVX2" grep -q '"onednn_isa": "AVX2"' haswell.json
acc() { sed -n 's/.*"accuracy": \([0-9.]*\).*/\1/p' "$1"; }
check "the same accuracy emulated and native ($(acc haswell.json), $(acc native.json))" test "$(acc haswell.json)" = "$(acc native.json)"
fi

# SSE4.2 only: the baseline kernels and oneDNN's SSE4.1 code.
QNET_ISA=avx2 nehalem "$bin/qnet_tests" "[isa]" >skip2.log
check "Nehalem: the AVX2 path is not offered" test $? -eq 77
nehalem "$bin/qnet_tests" "[isa],[core][grad]" >base.log
check "Nehalem: the dispatch and gradient tests pass on the baseline path" test $? -eq 0
nehalem "$bin/qnet_tests" "[architectures],[mixed]" >architectures2.log
check "Nehalem: the same architectures and mixed widths are bit-exact on oneDNN's SSE4.1 code" test $? -eq 0
nehalem "$bin/evaluate" model.qbin --json >nehalem.json
check "Nehalem: the int8 model runs (split-weights, SSE4.1) with the same accuracy" \
  bash -c 'grep -q "\"int8_path\": \"split-weights\"" nehalem.json && grep -q "\"onednn_isa\": \"SSE4.1\"" nehalem.json &&
           test "$(sed -n "s/.*\"accuracy\": \([0-9.]*\).*/\1/p" nehalem.json)" = "$(sed -n "s/.*\"accuracy\": \([0-9.]*\).*/\1/p" native.json)"'

finish
