#!/usr/bin/env bash
# GPU checks, run on a lent GPU machine (see README "GPU checks"): builds the C++ tests with CUDA
# and runs the CUDA suite plus a Python smoke check. Prints what it found; exits non-zero on any
# failure. Kept short: the device budget is minutes, not hours.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMMSB_BUILD_TESTS=ON -DMMSB_WITH_CUDA=ON >/dev/null
cmake --build build/gpu -j "$(nproc)" --target test_cuda
build/gpu/tests/cpp/test_cuda --gtest_brief=1
if [ -x .venv/bin/python ]; then
  .venv/bin/python -c "import mmsb; print(mmsb.build_info()); assert mmsb.cuda.is_available()"
fi
