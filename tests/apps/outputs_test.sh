#!/usr/bin/env bash
# Output paths (issue 13, items 1-3, 7 and 10): devices, FIFOs and symlinks given as outputs,
# validation before a file is replaced, paths compared as files, and every output location
# checked before the work. Each case failed before its fix. Needs MNIST (scripts/test fetches it).
# Usage: outputs_test.sh BIN_DIR
set -u
bin="$1"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"
cd "$tmp" || exit 1

# one_line_error CODE PATTERN -- COMMAND...: exits CODE with one stderr line matching PATTERN,
# in less than 20 s (the checks come before training).
one_line_error() {
  local code="$1" pattern="$2"
  shift 3
  timeout 20 "$@" >out.txt 2>err.txt
  local got=$?
  [[ $got -eq $code && $(wc -l <err.txt) -eq 1 ]] && grep -q -- "$pattern" err.txt || {
    echo "     exit $got, stderr: $(head -c 300 err.txt)"
    return 1
  }
}

"$bin/train" --epochs 1 -o f.qbin >/dev/null 2>&1
"$bin/train" --qat --init f.qbin --epochs 1 -o q.qbin --checkpoint q_qat.qbin >/dev/null 2>&1
check "set-up: a float and an int8 model" test -s f.qbin -a -s q.qbin

mkdir -p devtest out
if [[ $(id -u) -eq 0 ]]; then
  mknod devtest/null c 1 3
  check "quantize -o DEVICE is refused" one_line_error 1 "devtest/null: not a regular file" -- "$bin/quantize" f.qbin -o devtest/null
  check "... and the device node stays a device" test -c devtest/null
  check "train --metrics DEVICE is refused before training" one_line_error 1 "not a regular file" -- "$bin/train" --metrics devtest/null
fi
mkfifo devtest/fifo
check "quantize -o FIFO is refused" one_line_error 1 "devtest/fifo: not a regular file" -- "$bin/quantize" f.qbin -o devtest/fifo
check "... and the FIFO stays a FIFO" test -p devtest/fifo
check "train -o FOLDER is refused before training" one_line_error 1 "a folder" -- "$bin/train" -o devtest

cp q.qbin q_before.qbin
ln -s ../q.qbin out/link.qbin
"$bin/quantize" f.qbin -o out/link.qbin >/dev/null 2>&1
check "quantize -o SYMLINK writes through: the link stays" test -L out/link.qbin
check "... and its target holds the new model" bash -c 'test -s q.qbin && ! cmp -s q.qbin q_before.qbin'
check "... which is a valid int8 model" bash -c '"$0/evaluate" out/link.qbin --json | grep -q "\"precision\": \"int8\""' "$bin"
"$bin/train" --qat --init f.qbin --epochs 1 -o q.qbin --checkpoint q_qat.qbin >/dev/null 2>&1  # restore q.qbin

cp q.qbin out/keep.qbin
QNET_FAILPOINT=quantize-validation "$bin/quantize" f.qbin -o out/keep.qbin >/dev/null 2>err.txt
check "quantize exits 1 when the new model fails validation" test $? -eq 1
check "... says that nothing was written" grep -q "nothing written, out/keep.qbin left as it was" err.txt
check "... and the good model is still there, byte for byte" cmp -s q.qbin out/keep.qbin
check "quantize -o '' is refused by name" one_line_error 1 "-o '': an empty path" -- "$bin/quantize" f.qbin -o ''
check "quantize -o ./INPUT is refused" one_line_error 2 "would overwrite the input model" -- "$bin/quantize" f.qbin -o ./out/../f.qbin

cp q_qat.qbin out/a.qbin
check "train --checkpoint ./out/a.qbin -o out/a.qbin: one file, refused" \
  one_line_error 2 "are the same file" -- "$bin/train" --qat --init f.qbin --checkpoint ./out/a.qbin -o out/a.qbin
check "... and the checkpoint is untouched" cmp -s q_qat.qbin out/a.qbin
check "train --qat -o INIT is refused (the int8 export would replace it)" \
  one_line_error 2 "is the --init model" -- "$bin/train" --qat --init ./f.qbin -o f.qbin --checkpoint c.qbin
check "train --metrics equal to -o is refused" one_line_error 2 "also a model path" -- "$bin/train" -o m.qbin --metrics ./m.qbin

check "train -o into a missing folder fails before training" one_line_error 1 "folder nodir does not exist" -- "$bin/train" -o nodir/m.qbin
check "train -o under /proc fails before training" one_line_error 1 "cannot create a file in folder /proc" -- "$bin/train" -o /proc/m.qbin
check "train --metrics into a missing folder fails before training" \
  one_line_error 1 "out/nodir does not exist" -- "$bin/train" --metrics out/nodir/m.json
check "train --checkpoint into a missing folder fails before training" \
  one_line_error 1 "does not exist" -- "$bin/train" --qat --checkpoint nodir/c.qbin
check "reproduce --out FILE fails before training" one_line_error 1 "not a folder" -- "$bin/reproduce" --out f.qbin
check "samples --out FILE fails at once" one_line_error 1 "not a folder" -- "$bin/samples" --out f.qbin
check "no temporaries are left by the checks" bash -c '! ls -a . out devtest | grep -q "\.tmp\."'

# A save killed by SIGKILL leaves its temporary; the next save of the same file removes it.
sleep 300 &
sleeper=$!
cp f.qbin "m.qbin.tmp.$sleeper.0"
kill -9 $sleeper
wait $sleeper 2>/dev/null
"$bin/train" --epochs 1 -o m.qbin >/dev/null 2>&1
check "the next save removes a dead process's temporary" test ! -e "m.qbin.tmp.$sleeper.0" -a -s m.qbin

finish
