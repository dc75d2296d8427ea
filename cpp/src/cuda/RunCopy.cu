// The run-copy kernel behind every device transfer (see RunCopy.hpp).
//
// Why this shape. The workload that matters is many short runs (64-byte deltas) scattered over a
// large memory, where a kernel is bound by how many independent memory requests are in flight,
// not by arithmetic. So:
//  - A run is copied by a group of G lanes of one warp, G a power of two sized from the average
//    run length so that one pass of the group moves about one run (64-byte runs: 4 lanes x 16
//    bytes). One warp then serves 32/G runs at once, instead of one warp per run leaving most
//    lanes idle (one block per run, the previous design, used 4 of 128 threads on such runs).
//  - Each lane moves the widest word the run's relative alignment allows: 16-byte vectors when
//    src and dst agree modulo 16 (the backend lays out its staging buffer so that they always
//    do), else 8, 4 or 1 bytes; the unaligned head and tail bytes go one byte per lane.
//  - A grid-stride loop over runs with just enough blocks to fill every multiprocessor (about 40
//    registers a thread, no spills: 6 blocks of 256 per Hopper multiprocessor) keeps all warps
//    resident; the groups walk the table in order, so neighbouring groups read neighbouring
//    table entries and staging bytes (coalesced), and only the page side is scattered.
//  - Keeping several runs in flight per lane group (all loads of 4 runs before their stores) was
//    tried on an H200 and changed nothing (1.02-1.03 TB/s against 1.04), so one run a step stays.
//  - Runs of any length are correct, but a very long run keeps one group busy while the others
//    finish: callers cut long runs into pieces of kRunCopyPieceBytes to keep the load even.
#include <algorithm>
#include <bit>

#include "KernelLaunch.hpp"
#include "RunCopy.hpp"

namespace mmsb::cuda {
namespace {

constexpr unsigned kThreads = 256;
constexpr unsigned kMaxGroup = 32;

using Byte = unsigned char;

// Lanes [0, G) of a group copy [begin, end) of a run, one W-byte word per lane per step.
template <class Word, unsigned G>
__device__ __forceinline__ void copy_words(Byte* __restrict__ dst, const Byte* __restrict__ src,
                                           std::uint64_t words, unsigned lane) {
  auto* d = reinterpret_cast<Word*>(dst);
  const auto* s = reinterpret_cast<const Word*>(src);
  for (std::uint64_t i = lane; i < words; i += G) d[i] = __ldg(s + i);
}

template <unsigned G>
__device__ __forceinline__ void copy_bytes(Byte* __restrict__ dst, const Byte* __restrict__ src,
                                           std::uint64_t n, unsigned lane) {
  for (std::uint64_t i = lane; i < n; i += G) dst[i] = __ldg(src + i);
}

// Copies one run: head bytes up to the word boundary, whole words, tail bytes.
template <class Word, unsigned G>
__device__ __forceinline__ void copy_run_as(Byte* dst, const Byte* src, std::uint64_t length, unsigned lane) {
  constexpr std::uint64_t kWord = sizeof(Word);
  const std::uint64_t misaligned = (kWord - reinterpret_cast<std::uintptr_t>(dst) % kWord) % kWord;
  const std::uint64_t head = length < misaligned ? length : misaligned;
  const std::uint64_t words = (length - head) / kWord;
  const std::uint64_t body = words * kWord;
  copy_bytes<G>(dst, src, head, lane);
  copy_words<Word, G>(dst + head, src + head, words, lane);
  copy_bytes<G>(dst + head + body, src + head + body, length - head - body, lane);
}

template <unsigned G>
__device__ __forceinline__ void copy_run(const DeviceCopyRun& run, unsigned lane) {
  auto* dst = reinterpret_cast<Byte*>(run.dst);
  const auto* src = reinterpret_cast<const Byte*>(run.src);
  const auto skew = reinterpret_cast<std::uintptr_t>(dst) ^ reinterpret_cast<std::uintptr_t>(src);
  if (skew % 16 == 0) {
    copy_run_as<uint4, G>(dst, src, run.length, lane);
  } else if (skew % 8 == 0) {
    copy_run_as<unsigned long long, G>(dst, src, run.length, lane);
  } else if (skew % 4 == 0) {
    copy_run_as<unsigned, G>(dst, src, run.length, lane);
  } else {
    copy_bytes<G>(dst, src, run.length, lane);
  }
}

template <unsigned G>
__global__ void __launch_bounds__(kThreads) run_copy(const DeviceCopyRun* __restrict__ table, std::uint64_t count) {
  const unsigned lane = threadIdx.x % G;
  const std::uint64_t groups = static_cast<std::uint64_t>(gridDim.x) * (kThreads / G);
  std::uint64_t r = (static_cast<std::uint64_t>(blockIdx.x) * kThreads + threadIdx.x) / G;
  for (; r < count; r += groups) {
    const DeviceCopyRun run = table[r];  // the G lanes read the same entry: one request
    copy_run<G>(run, lane);
  }
}

// As many blocks as the multiprocessors hold at once (fewer for a small table): every warp is
// resident from the start and the grid-stride loop spreads the runs.
template <unsigned G>
cudaError_t launch_group(const DeviceCopyRun* table, std::uint64_t count, unsigned sms, cudaStream_t stream) {
  int per_sm = 0;
  if (const cudaError_t s = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, run_copy<G>, kThreads, 0);
      s != cudaSuccess) {
    return s;
  }
  const std::uint64_t needed = (count + kThreads / G - 1) / (kThreads / G);
  const std::uint64_t resident = std::uint64_t{sms} * static_cast<unsigned>(std::max(per_sm, 1));
  const auto blocks = static_cast<unsigned>(std::min(needed, resident));
  return launch_kernel(run_copy<G>, blocks, kThreads, stream, table, count);
}

}  // namespace

cudaError_t launch_run_copy(const DeviceCopyRun* table, std::uint64_t count, std::uint64_t total_bytes,
                            cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  int device = 0;
  int sms = 0;
  if (const cudaError_t s = cudaGetDevice(&device); s != cudaSuccess) return s;
  if (const cudaError_t s = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device); s != cudaSuccess) {
    return s;
  }
  // Lanes per run: enough 16-byte words to cover the average run in one pass.
  const std::uint64_t words = std::max<std::uint64_t>(1, (total_bytes / count + 15) / 16);
  const auto group = static_cast<unsigned>(std::min<std::uint64_t>(std::bit_ceil(words), kMaxGroup));
  const auto n = static_cast<unsigned>(sms);
  switch (group) {
    case 1: return launch_group<1>(table, count, n, stream);
    case 2: return launch_group<2>(table, count, n, stream);
    case 4: return launch_group<4>(table, count, n, stream);
    case 8: return launch_group<8>(table, count, n, stream);
    case 16: return launch_group<16>(table, count, n, stream);
    default: return launch_group<32>(table, count, n, stream);
  }
}

}  // namespace mmsb::cuda
