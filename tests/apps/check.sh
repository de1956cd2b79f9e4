# Shared by the shell tests (sourced): a scratch folder removed at exit, `check NAME CONDITION...`
# that prints ok/FAIL and counts failures, and `finish` that prints the count and sets the exit code.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
check() {
  local name="$1"
  shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; failures=$((failures + 1)); fi
}
finish() {
  echo "$failures failed"
  [[ $failures -eq 0 ]]
}
# json_number FILE KEY: the first number written as "KEY": N in FILE (empty if none).
json_number() { sed -n "s/.*\"$2\": \([0-9.eE+-]*\).*/\1/p" "$1" 2>/dev/null | head -1; }
# int8_matches_fake_quant METRICS_JSON: train's int8 test accuracy is above 0.9 and within 0.001
# of the fake-quantized one (fails if either is missing).
int8_matches_fake_quant() {
  local q i
  q=$(json_number "$1" test_accuracy) i=$(json_number "$1" int8_test_accuracy)
  [[ -n $q && -n $i ]] && awk -v q="$q" -v i="$i" 'BEGIN { d = q - i; exit !(i > 0.9 && d < 0.001 && d > -0.001) }'
}
# same_accuracy A_JSON B_JSON: evaluate --json gave the same accuracy twice (fails if missing).
same_accuracy() {
  local a b
  a=$(json_number "$1" accuracy) b=$(json_number "$2" accuracy)
  [[ -n $a && $a == "$b" ]]
}
