#!/usr/bin/env bash
# Line and function coverage of the C++ engine and bindings (`make coverage`, 8-12 minutes on 2
# cores): a gcov build in build/coverage (Debug, -O0, the CUDA code on the tests' stand-in runtime
# so the device backends and kernels count too), every C++ suite, then the Python suite (not
# `slow`, not the notebooks, whose kernels import the .venv's mmsb) against that build's _core,
# then gcovr. Writes build/coverage/summary.txt (per file, with uncovered lines),
# build/coverage/functions.txt (functions no test entered) and build/coverage/coverage.json.
#
# Reading it: gcov often shows the line of a call that throws (mmsb::fail, [[noreturn]]) as never
# run even when a test reaches it, since the count of its block comes from the arcs leaving it;
# check such lines with a test before calling them untested. Counters are not atomic, so lines
# run by several threads at once may show less than they ran (and gcovr warns of negative hits).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build/coverage
PY=.venv/bin/python
JOBS=$(nproc)

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS="--coverage -O0" \
  -DCMAKE_EXE_LINKER_FLAGS=--coverage -DCMAKE_SHARED_LINKER_FLAGS=--coverage -DMMSB_BUILD_TESTS=ON \
  -DMMSB_BUILD_PYTHON=ON -DMMSB_FAKE_CUDA=ON -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
  -DPython_EXECUTABLE="$PWD/$PY" >/dev/null
cmake --build "$BUILD" -j "$JOBS"
find "$BUILD" -name '*.gcda' -delete  # counts from this run only

ctest --test-dir "$BUILD" -j "$JOBS" --output-on-failure

# shellcheck source=scripts/staged-python.sh
source scripts/staged-python.sh
stage_package "$BUILD"
# One process: xdist's workers would import the .venv's mmsb, not the staged one.
staged_python 3000 -m pytest -p no:cacheprovider -p no:xdist tests/python -q -m "not slow" -k "not notebook"
rm -rf "$PYSTAGE"

# The engine's, the extension's and the tests' objects (the tests run inline engine code of
# their own); not CMake's compiler probes, which left counts too.
"$PY" -m gcovr -r . --filter cpp/ --object-directory "$BUILD" -j "$JOBS" \
  --gcov-ignore-parse-errors=negative_hits.warn_once_per_file \
  --txt "$BUILD/summary.txt" --json "$BUILD/coverage.json" "$BUILD/cpp" "$BUILD/tests" 2>/dev/null
"$PY" - "$BUILD" <<'PYEOF'
import json, sys
build = sys.argv[1]
report = json.load(open(f"{build}/coverage.json"))
lines = [f"{f['file']}:{fn['lineno']}  {fn.get('demangled_name', fn.get('name'))}" for f in report["files"]
         for fn in f.get("functions", []) if fn.get("execution_count", 1) == 0]
open(f"{build}/functions.txt", "w").write("\n".join(lines) + "\n")
print(f"{len(lines)} functions no test entered: {build}/functions.txt")
PYEOF
tail -n 3 "$BUILD/summary.txt"
