#!/usr/bin/env bash
# Where a 10k-node propagation wave spends its instructions and its cache misses, per recomputed
# page: runs the Mmsb/wave/workload:2 row of bench_propagation (10,000 pages of 64 bytes, 9,900
# reduce(sum_product) pages with fan-in 2-4; see benchmarks/cpp/bench_propagation.cpp) under
# valgrind's callgrind with a simulated cache whose last level is this machine's L2, collecting
# only inside Bus::apply_batch (the write and the wave it starts, not the graph's construction).
#
# Why: on a shared VM wall times swing by a third from minute to minute, while instruction and
# simulated-miss counts repeat exactly, so before/after pairs of a change compare reliably. The
# simulated misses are not the cost (sequential streams are prefetched, random reads are not);
# read them with a perf profile (docs/architecture.md, "Where a large wave's time goes").
#
# Usage: scripts/profile-wave.sh [BENCH_BINARY] [OUT_FILE]
#   BENCH_BINARY  default build/release/benchmarks/cpp/bench_propagation (make test-cpp builds it)
#   OUT_FILE      the callgrind profile, default build/profile-wave.callgrind (open it with
#                 callgrind_annotate or kcachegrind for line-level detail)
# Takes about a minute; needs valgrind (Debian: apt-get install valgrind; only this script uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${1:-build/release/benchmarks/cpp/bench_propagation}
OUT=${2:-build/profile-wave.callgrind}
[ -x "$BENCH" ] || { echo "no benchmark binary at $BENCH (run make test-cpp, or pass its path)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

l2=$(getconf LEVEL2_CACHE_SIZE 2>/dev/null || echo 0)
[ "${l2:-0}" -gt 0 ] || l2=524288
mkdir -p "$(dirname "$OUT")"
valgrind --tool=callgrind --cache-sim=yes --LL="$l2,8,64" --toggle-collect='mmsb::Bus::apply_batch*' \
  --callgrind-out-file="$OUT" "$BENCH" --benchmark_filter='^Mmsb/wave/workload:2' --benchmark_min_time=10 \
  >/dev/null 2>&1

# Normalised by the recomputes callgrind counted (Google Benchmark's warm-up runs are collected
# too, so its iteration count would not do).
callgrind_annotate --tree=caller --show=Ir,DLmr,DLmw --sort=Ir "$OUT" 2>/dev/null |
  python3 -c '
import re, sys
text = sys.stdin.read()
calls = re.search(r"< [^\n]*recompute_batch_locked[^\n]*\(([\d,]+)x\)[^\n]*\n\s*[\d,]+ [^\n]*\*  [^\n]*commit_recompute_locked", text)
totals = re.search(r"^\s*([\d,]+) \(100.0%\)\s+([\d,]+) \(100.0%\)\s+([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", text, re.M)
if not calls or not totals:
    sys.exit("could not find the recompute count or the totals in the callgrind report")
n = int(calls.group(1).replace(",", ""))
ir, rd, wr = (int(totals.group(i).replace(",", "")) for i in (1, 2, 3))
print(f"recomputed pages: {n:,}  (L2 simulated: '"$l2"' bytes)")
print(f"per recomputed page: {ir / n:,.0f} instructions, {rd / n:.1f} L2 read misses, {wr / n:.1f} L2 write misses")
'
echo
echo "functions by L2 read misses (self, whole run):"
callgrind_annotate --show=Ir,DLmr,DLmw --sort=DLmr "$OUT" 2>/dev/null |
  awk '/file:function/ {on = 1; next} on && NF == 0 {exit} on' | head -15 | cut -c1-200
