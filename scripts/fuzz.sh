#!/usr/bin/env bash
# Fuzzes the engine's parsers with libFuzzer, ASan and UBSan, each target for a bounded time, then
# exits non-zero if any found a crash:
#   fuzz_log           the log's files: segments, records, checkpoints, and a bus recovering from
#                      crafted records (tests/fuzz/fuzz_log.cpp)
#   fuzz_replica_wire  what a replica receives each tick (tests/fuzz/fuzz_replica_wire.cpp)
#   scripts/fuzz.sh [seconds per target=30]
# Builds build/fuzz with clang (-DMMSB_BUILD_FUZZERS=ON, the engine instrumented too), regenerates
# each target's seed corpus from real output of the engine into build/fuzz/corpus/<target> (where
# libFuzzer also keeps what it discovers). A crash leaves its input as build/fuzz/<target>-crash-*
# (rerun: build/fuzz/tests/fuzz/<target> build/fuzz/<target>-crash-...).
# Needs clang++ with the libFuzzer runtime (Debian: clang, libclang-rt-14-dev).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
out=build/fuzz
targets=(fuzz_log fuzz_replica_wire)
CC=clang CXX=clang++ cmake -S . -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMMSB_BUILD_FUZZERS=ON -DMMSB_WITH_CUDA=OFF -DMMSB_WITH_TBB=OFF \
  -DMMSB_SANITIZE=address,undefined >/dev/null
cmake --build "$out" --target "${targets[@]}" -j "$(nproc)"

status=0
for target in "${targets[@]}"; do
  fuzzer="$out/tests/fuzz/$target"
  corpus="$out/corpus/$target"
  mkdir -p "$corpus"
  MMSB_FUZZ_SEEDS="$corpus" "$fuzzer"
  "$fuzzer" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$out/$target-" -print_final_stats=1 || {
    code=$?
    echo "fuzz.sh: $target found a problem (exit $code); see $out/$target-crash-* / leak-* / timeout-*" >&2
    status=$code
  }
done
exit "$status"
