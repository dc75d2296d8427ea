// bench_replicator: a one-rank Replicator on device 0 (NCCL), timed with the wall clock around
// calls that return once the device is done.
//
//   tick, 64-byte rows   broadcast() of N 64-byte rows at random 64-byte-aligned offsets of
//                        1 GiB of replicas (16 pages of 64 MiB): validation, packing, the header
//                        and body broadcasts, overlap resolution, one copy kernel
//   backend write        DeviceBackend::write of the same runs into a block of the same pool (the
//                        engine's own apply path: the bound a one-rank tick pays NCCL on top of)
//   tick, one row        broadcast() of one 64-byte row: the fixed cost of a tick
//   hash                 hash() of the 1 GiB: read back and CRC32C
//
// Rates count payload bytes once (N x 64 per pass). Usage: bench_replicator [--rows N] [--reps R]
// Exit status: 0 measured, 77 no NCCL or CUDA device (skipped), 1 an error or wrong bytes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/cuda/Nccl.hpp"
#include "mmsb/cuda/Replicator.hpp"

namespace {

using namespace mmsb::cuda;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kPage = std::uint64_t{64} << 20;
constexpr std::uint64_t kPages = 16;
constexpr std::uint64_t kRow = 64;

// Seconds of each of `reps` calls of fn (after one warm-up), sorted.
template <class F>
std::vector<double> timed(int reps, F&& fn) {
  fn();
  std::vector<double> s;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    fn();
    s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  return s;
}

void report(const char* name, std::uint64_t bytes, const std::vector<double>& s) {
  const double median = s[s.size() / 2];
  std::printf("%-22s %10.1f us median  %8.2f GB/s median  %8.2f GB/s best\n", name, median * 1e6,
              static_cast<double>(bytes) / median / 1e9, static_cast<double>(bytes) / s.front() / 1e9);
}

int run(std::uint64_t rows, int reps) {
  std::mt19937_64 rng(1);
  std::vector<ReplicaRow> batch(rows);
  std::vector<DeviceRun> runs(rows);
  std::vector<std::byte> payload(rows * kRow);
  for (auto& b : payload) b = static_cast<std::byte>(rng());
  DeviceBackend& dev = device_backend("cuda:0");
  const DevicePool::Block block = dev.allocate(kPage * kPages);
  for (std::uint64_t i = 0; i < rows; ++i) {
    const std::uint64_t at = rng() % (kPage * kPages / kRow) * kRow;
    batch[i] = {at / kPage, at % kPage, kRow};
    runs[i] = {block.data + at, i * kRow, kRow};
  }
  std::sort(runs.begin(), runs.end(), [](const DeviceRun& a, const DeviceRun& b) { return a.device < b.device; });
  runs.erase(std::unique(runs.begin(), runs.end(), [](const DeviceRun& a, const DeviceRun& b) { return a.device == b.device; }),
             runs.end());

  Replicator rep(1, 0, Replicator::unique_id(), 0, std::vector<std::uint64_t>(kPages, kPage));
  std::printf("one-rank Replicator on cuda:0, NCCL %s: %llu rows of %llu bytes into %llu MiB\n",
              nccl_version().c_str(), static_cast<unsigned long long>(rows), static_cast<unsigned long long>(kRow),
              static_cast<unsigned long long>(kPage * kPages >> 20));
  report("tick, 64-byte rows", payload.size(), timed(reps, [&] { rep.broadcast(batch, payload); }));
  report("backend write", runs.size() * kRow, timed(reps, [&] { dev.write(runs, payload); }));
  const std::vector<ReplicaRow> one = {{0, 0, kRow}};
  report("tick, one row", kRow, timed(reps * 10, [&] {
           rep.broadcast(one, std::span(payload.data(), kRow));
         }));
  report("hash", kPage * kPages, timed(std::max(1, reps / 5), [&] { rep.hash(); }));

  // The last tick wrote the first row over the batch: page 0's first row now holds payload[0, 64).
  const std::vector<std::byte> page0 = rep.read(0);
  const bool ok = std::memcmp(page0.data(), payload.data(), kRow) == 0 && rep.check();
  dev.release(block);
  if (!ok) std::printf("WRONG BYTES in the replica\n");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t rows = std::uint64_t{1} << 20;
  int reps = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rows" && i + 1 < argc) {
      rows = std::stoull(argv[++i]);
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::stoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_replicator [--rows N] [--reps R]\n");
      return 1;
    }
  }
  if (!nccl_available()) {
    std::printf("bench_replicator: skipped (needs NCCL and a CUDA device)\n");
    return 77;
  }
  try {
    return run(rows, std::max(reps, 1));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_replicator: %s\n", e.what());
    return 1;
  }
}
