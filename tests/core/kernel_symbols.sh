#!/usr/bin/env bash
# Checks the rule of core/kernels.h on one ISA's kernel objects: every symbol they define for
# the linker (global or weak) is in qnet::isa_ISA::. A std or Eigen template instantiated out
# of line there would be merged with the other ISAs' copies at link time, and the AVX-512 copy
# could then run on an AVX2 CPU (SIGILL). Usage: kernel_symbols.sh ISA "OBJ1;OBJ2;..."
set -u
isa="$1"
IFS=';' read -r -a objects <<<"$2"
[[ ${#objects[@]} -gt 0 ]] || { echo "FAIL no object files for $isa"; exit 1; }
bad=0
for o in "${objects[@]}"; do
  # nm -C: demangled; lower-case types are local symbols. Data, not code, and so harmless: DW.ref.*
  # (per-object exception-handling references) and __odr_asan.* (AddressSanitizer's markers).
  stray=$(nm -C --defined-only "$o" | awk '$2 ~ /[A-Z]|[uvw]/' | grep -v " qnet::isa_${isa}::" | grep -v " DW\.ref\.\| __odr_asan\.")
  defined=$(nm -C --defined-only "$o" | grep -c " qnet::isa_${isa}::")
  if [[ -n "$stray" ]]; then
    echo "FAIL $(basename "$o") defines symbols outside qnet::isa_${isa}:"
    echo "$stray" | head -20
    bad=1
  elif [[ "$defined" -eq 0 ]]; then
    echo "FAIL $(basename "$o") defines nothing in qnet::isa_${isa}"
    bad=1
  else
    echo "ok   $(basename "$o"): $defined symbols, all in qnet::isa_${isa}"
  fi
done
exit $bad
