#!/usr/bin/env bash
# Fuzzes the log parsers (segments, records, checkpoints: tests/fuzz/fuzz_log.cpp) with libFuzzer,
# ASan and UBSan for a bounded time, then exits non-zero if it found a crash.
#   scripts/fuzz.sh [seconds=30]
# Builds build/fuzz with clang (-DMMSB_BUILD_FUZZERS=ON, the engine instrumented too), regenerates
# a seed corpus of real segments and checkpoints made by the engine into build/fuzz/corpus (where
# libFuzzer also keeps what it discovers). A crash leaves its input as build/fuzz/crash-*
# (rerun: build/fuzz/tests/fuzz/fuzz_log build/fuzz/crash-...).
# Needs clang++ with the libFuzzer runtime (Debian: clang, libclang-rt-14-dev).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
out=build/fuzz
CC=clang CXX=clang++ cmake -S . -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMMSB_BUILD_FUZZERS=ON -DMMSB_WITH_CUDA=OFF -DMMSB_WITH_TBB=OFF \
  -DMMSB_SANITIZE=address,undefined >/dev/null
cmake --build "$out" --target fuzz_log -j "$(nproc)"
fuzzer="$out/tests/fuzz/fuzz_log"

mkdir -p "$out/corpus"
MMSB_FUZZ_SEEDS="$out/corpus" "$fuzzer"
status=0
"$fuzzer" "$out/corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$out/" -print_final_stats=1 || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzz.sh: the fuzzer found a problem (exit $status); see $out/crash-* / leak-* / timeout-*" >&2
fi
exit "$status"
