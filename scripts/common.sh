# Shared by scripts/demo and scripts/test: install what is missing, build, fetch MNIST.
# Sourced, not run. Every step says what it does; any failure stops the script.
set -euo pipefail

QNET_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QNET_BUILD="${QNET_BUILD:-$QNET_ROOT/build}"
# ocl-icd-opencl-dev: oneDNN's dnnl-config.cmake calls find_package(OpenCL), and libdnnl-dev only
# recommends it (a fresh machine with --no-install-recommends lacks it). qemu-user: the tests run
# a build on an emulated AVX2-only CPU (qemu-x86_64 -cpu Haswell). dataset-fashion-mnist: the
# models of models/ are tested (and reproduced) on Fashion-MNIST (/usr/share/datasets/fashion-mnist).
# libeigen3-dev: the Dense layer's input gradient (core/kernels/products.cpp). openmpi-bin,
# libopenmpi-dev: `mpirun -np N train` (core/distributed.h; qnet builds without them too).
QNET_PACKAGES=(g++ cmake make pkg-config libdnnl-dev ocl-icd-opencl-dev catch2 libfmt-dev libcxxopts-dev
  libpng-dev zlib1g-dev libeigen3-dev qemu-user dataset-fashion-mnist openmpi-bin libopenmpi-dev)

qnet_say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs the Debian packages that are not installed yet (and npm when no npm is on PATH).
qnet_install_packages() {
  local missing=() p
  for p in "${QNET_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [[ ${#missing[@]} -eq 0 ]]; then
    qnet_say "Debian packages: all present"
    return
  fi
  qnet_say "Installing missing Debian packages: ${missing[*]}"
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

qnet_build() {
  qnet_say "Building (Release) in $QNET_BUILD"
  cmake -S "$QNET_ROOT" -B "$QNET_BUILD" -DCMAKE_BUILD_TYPE="${QNET_BUILD_TYPE:-Release}" -DQNET_NATIVE="${QNET_NATIVE:-OFF}" "$@" >/dev/null
  local targets=()
  [[ -n "${QNET_BUILD_TARGETS:-}" ]] && targets=(--target $QNET_BUILD_TARGETS)
  if ! cmake --build "$QNET_BUILD" -j"$(nproc)" "${targets[@]}" >"$QNET_BUILD/build.log" 2>&1; then
    grep -E "error|Error" "$QNET_BUILD/build.log" | head -40 >&2
    echo "build failed: the full log is $QNET_BUILD/build.log" >&2
    exit 1
  fi
  grep -E "warning" "$QNET_BUILD/build.log" >&2 || true
}

qnet_fetch_mnist() { "$QNET_ROOT/scripts/fetch_mnist"; }
