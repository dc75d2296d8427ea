#!/usr/bin/env bash
# Installs what mmsb needs on a fresh Debian machine, idempotently, and fast when all is there:
#   1. Debian packages (compiler, CMake, Ninja, oneTBB, GoogleTest, Google Benchmark),
#   2. a local virtual environment .venv with the Python build and test tools,
#   3. the mmsb package itself, editable, rebuilt only when C++ or build files changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(g++ cmake ninja-build libtbb-dev libgtest-dev libgmock-dev libbenchmark-dev python3-venv
              clang libclang-rt-14-dev libconcurrentqueue-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
req_hash=$(sha256sum requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat .venv/.req-hash 2>/dev/null)" != "$req_hash" ]; then
  echo "setup: installing Python tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  echo "$req_hash" > .venv/.req-hash
  rm -f .venv/.mmsb-built
fi

# Rebuild the extension only when a build input is newer than the last build.
stamp=.venv/.mmsb-built
if [ ! -f "$stamp" ] || [ -n "$(find CMakeLists.txt cmake cpp pyproject.toml -newer "$stamp" -print -quit)" ] \
   || ! .venv/bin/python -c "import mmsb._core" 2>/dev/null; then
  echo "setup: building mmsb (incremental in build/)"
  .venv/bin/python -m pip install -q --no-build-isolation --no-deps -e .
  touch "$stamp"
fi
