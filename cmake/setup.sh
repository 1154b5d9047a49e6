#!/usr/bin/env bash
# Installs the Debian packages quarot's build, tests, benchmarks and examples need.
# Idempotent and non-interactive; prints nothing when everything is already present.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config
  libeigen3-dev libxsimd-dev doctest-dev libbenchmark-dev
  # Baselines for the benchmarks only; the library itself does not depend on them.
  libopenblas-dev libdnnl-dev
  # (oneDNN's CMake package looks for OpenCL.)
  ocl-icd-opencl-dev opencl-c-headers
  # English text for the model pipeline's calibration and perplexity (fortune(6) files).
  fortunes
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ "${#missing[@]}" -eq 0 ]; then
  bash "$here/fetch_models.sh"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo_cmd=(sudo)
  else
    echo "cmake/setup.sh: missing packages (${missing[*]}) and not root, no sudo: install them by hand" >&2
    exit 1
  fi
fi

echo "cmake/setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

bash "$here/fetch_models.sh"
