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
