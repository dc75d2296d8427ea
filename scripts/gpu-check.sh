#!/usr/bin/env bash
# GPU checks, one prepared run for a machine with a CUDA device (see README "GPU checks"; the
# device tool lends an H200 for minutes, so this takes about 5 minutes on 16 cores). Stages, each
# run even when an earlier one failed:
#   device   nvidia-smi: name, memory, driver
#   build    configure with CUDA (architectures 90 + PTX) and build only what the checks need:
#            test_cuda, bench_gpu_apply, bench_replicator and the mmsb._core extension
#   cpp      the C++ CUDA suite (backends, run-copy kernel, NCCL with one rank); a test skipped
#            for "no CUDA device" fails the stage, since this machine has one
#   python   the Python tests marked gpu or nccl, against this build: python/mmsb and the new
#            _core staged in /tmp and put on PYTHONPATH (nothing is installed or downloaded, no
#            environment is changed; the .venv's Python is used when it has the test tools,
#            else python3)
#   bench    bench_gpu_apply (the run-copy kernel and DeviceBackend::write against a
#            device-to-device copy), bench_replicator (one-rank NCCL ticks) and
#            `mmsb bench --only gpu` (apply_batch against CuPy; a reduce wave on the device against
#            the host and CuPy by hand)
# Output goes to stdout and to $OUT (or <build>/check): gpu-check.log, gpu-check.json (each
# stage's status and seconds, the device, the benchmark figures), test_cuda.json,
# pytest-gpu.xml, bench_gpu_apply.json, bench_gpu.json.
# GoogleTest: used from the system when CMake finds it; else from Debian packages in .gpu-deps/
# (`apt-get download libgtest-dev libgmock-dev` on a Debian machine), unpacked under /tmp.
# Exit status: 0 when every stage passed, 1 otherwise.
#
# --fake: the same build, cpp and python stages on a machine without a GPU, against the tests'
# stand-in CUDA runtime (tests/fake_cuda, MMSB_FAKE_CUDA=ON: host memory the host cannot touch,
# late streams, kernels on host threads) in build/gpu-fake. No device stage, and the bench stage
# runs the benchmarks small for their checks alone (bench_smoke). `make test` runs it,
# so the script and the CUDA code it checks stay working.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FAKE=0
if [ "${1:-}" = --fake ]; then
  FAKE=1
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--fake]" >&2
  exit 2
fi
BUILD=${MMSB_GPU_BUILD:-$ROOT/build/gpu$([ "$FAKE" = 1 ] && echo -fake)}  # another folder, to try the script elsewhere
OUT_DIR=${OUT:-$BUILD/check}
JOBS=$(nproc)
mkdir -p "$OUT_DIR"

STAGES=()
# stage NAME FUNCTION: runs FUNCTION, records its status and seconds, and never stops the script
# (FUNCTION runs without errexit: each one returns its own failures).
stage() {
  local name=$1 fn=$2 t0=$SECONDS rc=0
  echo
  echo "=== $name"
  "$fn" || rc=$?
  local status=ok
  [ "$rc" -eq 0 ] || status="failed (exit $rc)"
  STAGES+=("$name|$status|$((SECONDS - t0))")
  echo "=== $name: $status, $((SECONDS - t0)) s"
}

pick_python() {
  local py
  for py in "$ROOT/.venv/bin/python" python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c "import numpy, pytest, pybind11" 2>/dev/null; then
      command -v "$py"
      return 0
    fi
  done
  return 1
}

# Succeeds when CMake finds GoogleTest with CMAKE_PREFIX_PATH=$1.
gtest_found() {
  local probe rc=0
  probe=$(mktemp -d /tmp/mmsb-gtest-probe.XXXXXX)
  printf 'cmake_minimum_required(VERSION 3.20)\nproject(probe CXX)\nfind_package(GTest REQUIRED)\n' \
    > "$probe/CMakeLists.txt"
  cmake -S "$probe" -B "$probe/build" -DCMAKE_PREFIX_PATH="$1" >/dev/null 2>&1 || rc=$?
  rm -rf "$probe"
  return $rc
}

device() {
  command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found"; return 1; }
  nvidia-smi || return 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1 > "$OUT_DIR/.device"
}

PY=""
BUILT=()
PREFIX_PATH=""
TESTS=OFF
PYEXT=OFF
build() {
  PY=$(pick_python) || { echo "no Python with numpy, pytest and pybind11"; PY=""; }
  local has_headers="import os, sysconfig; assert os.path.isfile(sysconfig.get_paths()['include'] + '/Python.h')"
  if [ -n "$PY" ] && "$PY" -c "$has_headers"; then
    PYEXT=ON
    echo "Python: $PY"
  else
    echo "no usable Python with development headers: no extension, no Python stages"
  fi
  if gtest_found ""; then
    TESTS=ON
  elif compgen -G ".gpu-deps/*.deb" >/dev/null; then
    local deps=/tmp/mmsb-gpu-deps deb
    rm -rf "$deps" && mkdir -p "$deps"
    for deb in .gpu-deps/*.deb; do dpkg -x "$deb" "$deps"; done
    PREFIX_PATH=$deps/usr
    if gtest_found "$PREFIX_PATH"; then TESTS=ON; echo "GoogleTest: from .gpu-deps"; fi
  fi
  [ "$TESTS" = ON ] || echo "GoogleTest not found (carry .gpu-deps/: libgtest-dev + libgmock-dev .debs): no C++ tests"
  local cuda=(-DMMSB_WITH_CUDA=ON -DMMSB_BUILD_BENCHMARKS=ON) targets=(bench_gpu_apply bench_replicator)
  if [ "$FAKE" = 1 ]; then cuda=(-DMMSB_FAKE_CUDA=ON -DMMSB_BUILD_BENCHMARKS=ON) targets=(bench_gpu_apply); fi
  local args=(-DCMAKE_BUILD_TYPE=Release "${cuda[@]}" -DMMSB_BUILD_TESTS=$TESTS -DMMSB_BUILD_PYTHON=$PYEXT
              -DCMAKE_PREFIX_PATH="$PREFIX_PATH")
  if command -v ninja >/dev/null; then args+=(-G Ninja); fi
  if [ "$PYEXT" = ON ]; then
    args+=(-DPython_EXECUTABLE="$PY" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)")
  fi
  cmake -S . -B "$BUILD" "${args[@]}" || return 1
  # One target at a time (the first builds the engine they share), so that one failing target
  # leaves the checks of the others running, and no stale binary of an earlier run is used.
  local target rc=0
  if [ "$TESTS" = ON ]; then targets+=(test_cuda); fi
  if [ "$PYEXT" = ON ]; then targets+=(_core); fi
  for target in "${targets[@]}"; do
    if cmake --build "$BUILD" -j "$JOBS" --target "$target"; then BUILT+=("$target"); else rc=1; fi
  done
  echo "built: ${BUILT[*]:-nothing}"
  # The kernels must carry sm_90 code and compute_90 PTX.
  if [ "$FAKE" = 0 ] && command -v cuobjdump >/dev/null && built bench_gpu_apply >/dev/null; then
    cuobjdump --list-elf --list-ptx "$BUILD/benchmarks/cpp/bench_gpu_apply" | grep -oE "sm_90|compute_90" | sort -u
  fi
  return $rc
}

# Succeeds when the build stage built TARGET in this run.
built() {
  [[ " ${BUILT[*]:-} " == *" $1 "* ]] || { echo "$1 was not built"; return 1; }
}

# The folder of the nvidia-nccl wheel in $PY's environment, or nothing.
nccl_wheel() {
  [ -n "$PY" ] || return 0
  "$PY" -c "import nvidia.nccl as n; print(list(n.__path__)[0])" 2>/dev/null || true
}

cpp() {
  built test_cuda || return 1
  local log=/tmp/mmsb-test_cuda.log rc=0 unseen
  timeout 300 "$BUILD/tests/cpp/test_cuda" --gtest_output="json:$OUT_DIR/test_cuda.json" > "$log" 2>&1 || rc=$?
  grep -vE "^\[ +(RUN|OK) +\]" "$log" | tail -80
  unseen=$(grep -c "no CUDA device" "$log" || true)
  if [ "$unseen" -gt 0 ]; then echo "$unseen tests did not see the CUDA device"; return 1; fi
  return $rc
}

PYSTAGE=""
# shellcheck source=scripts/staged-python.sh
source "$ROOT/scripts/staged-python.sh"
# python/mmsb and this build's _core, copied to /tmp: the package the Python stages import.
make_stage() {
  built _core || return 1
  stage_package "$BUILD"
}

python_tests() {
  make_stage || return 1
  staged_python 60 -c "import sys, mmsb; print(mmsb.__file__); print(mmsb.build_info())
sys.exit(0 if mmsb.__file__.startswith(sys.argv[1]) and mmsb.cuda.is_available() else 3)" "$PYSTAGE" || {
    echo "the staged mmsb is not the one imported, or it sees no CUDA device"
    return 1
  }
  local files
  # Marked in the file, or through conftest's any_devices fixture (its cuda case is marked gpu).
  files=$(grep -lE "pytest\.mark\.(gpu|nccl)|any_devices" tests/python/test_*.py | tr '\n' ' ')
  [ -n "$files" ] || { echo "no test file marks gpu or nccl tests"; return 1; }
  echo "test files: $files"
  # shellcheck disable=SC2086  # one word per file
  staged_python 400 -m pytest -p no:cacheprovider -m "gpu or nccl" $files -q -rs --junitxml="$OUT_DIR/pytest-gpu.xml"
}

bench() {
  local rc=0
  if built bench_gpu_apply; then
    timeout 240 "$BUILD/benchmarks/cpp/bench_gpu_apply" --json "$OUT_DIR/bench_gpu_apply.json" || rc=1
  else
    rc=1
  fi
  # One-rank NCCL replication; 77: no NCCL to load (reported, not a failure of this stage).
  if built bench_replicator; then
    local brc=0
    timeout 120 "$BUILD/benchmarks/cpp/bench_replicator" || brc=$?
    if [ "$brc" -ne 0 ] && [ "$brc" -ne 77 ]; then rc=1; fi
  else
    rc=1
  fi
  if [ -n "$PYSTAGE" ]; then
    staged_python 300 -m mmsb bench --only gpu --no-plots --no-progress --json "$OUT_DIR/bench_gpu.json" || rc=1
  else
    echo "mmsb bench --only gpu: not run (no extension)"
    rc=1
  fi
  return $rc
}

# --fake: bench_gpu_apply on 4096 runs and `mmsb bench --only gpu --quick`, for their checks
# alone (the bytes of every variant, epochs, mirror traffic, the device's reduce against the
# host's); their timings mean nothing on the stand-in runtime, so they go to *_fake.json files,
# which gpu-check.json does not fold in.
bench_smoke() {
  local rc=0
  if built bench_gpu_apply; then
    timeout 240 "$BUILD/benchmarks/cpp/bench_gpu_apply" --runs 4096 --reps 1 \
      --json "$OUT_DIR/bench_gpu_apply_fake.json" || rc=1
  else
    rc=1
  fi
  if [ -n "$PYSTAGE" ]; then
    staged_python 300 -m mmsb bench --only gpu --quick --no-plots --no-progress \
      --json "$OUT_DIR/bench_gpu_fake.json" || rc=1
  else
    echo "mmsb bench --only gpu: not run (no extension)"
    rc=1
  fi
  return $rc
}

# Folds the stages and the figures into gpu-check.json (argv: folder, then NAME|STATUS|SECONDS).
SUMMARY_PY='
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
stages = [dict(zip(("name", "status", "seconds"), a.split("|"))) for a in sys.argv[2:]]
try:
    with open(os.path.join(out, ".device")) as f:
        device = f.read().strip()
except OSError:
    device = None
report = {"device": device, "fake_runtime": os.environ.get("MMSB_GPU_CHECK_FAKE") == "1", "stages": stages, "passed": all(s["status"] == "ok" for s in stages),
          "bench_gpu_apply": load("bench_gpu_apply.json"),
          "bench_gpu": ((load("bench_gpu.json") or {}).get("categories") or {}).get("gpu")}
tests = load("test_cuda.json")
if tests:
    report["test_cuda"] = {k: tests.get(k) for k in ("tests", "failures", "disabled", "errors", "time")}
with open(os.path.join(out, "gpu-check.json"), "w") as f:
    json.dump(report, f, indent=2)
print("  wrote " + os.path.join(out, "gpu-check.json"))
'

summary() {
  local failed=0 s name status seconds
  echo
  echo "=== summary"
  for s in "${STAGES[@]}"; do
    IFS='|' read -r name status seconds <<< "$s"
    printf '  %-8s %-18s %4s s\n' "$name" "$status" "$seconds"
    [ "$status" = ok ] || failed=1
  done
  MMSB_GPU_CHECK_FAKE=$FAKE "${PY:-python3}" -c "$SUMMARY_PY" "$OUT_DIR" "${STAGES[@]}" || echo "  (no gpu-check.json)"
  rm -f "$OUT_DIR/.device"
  return $failed
}

main() {
  echo "mmsb gpu-check: $(date -u +%FT%TZ), $JOBS cores, output in $OUT_DIR"
  echo "tree: $(git rev-parse --short HEAD 2>/dev/null || echo "no git")," \
    "$(git status --short 2>/dev/null | wc -l) changed files"
  # The toolkit's usual home, for machines whose PATH lacks it.
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
  if [ "$FAKE" = 1 ]; then
    echo "--fake: the stand-in CUDA runtime; no device stage, and the bench stage checks bytes only"
  else
    stage device device
  fi
  stage build build
  # libnccl.so.2 of the nvidia-nccl wheel, for the dlopen() of the NCCL tests.
  local nccl
  nccl=$(nccl_wheel)
  if [ -n "$nccl" ] && [ -d "$nccl/lib" ]; then
    export LD_LIBRARY_PATH="$nccl/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  stage cpp cpp
  stage python python_tests
  if [ "$FAKE" = 1 ]; then stage bench bench_smoke; else stage bench bench; fi
  summary
}

main 2>&1 | tee "$OUT_DIR/gpu-check.log"
exit "${PIPESTATUS[0]}"
