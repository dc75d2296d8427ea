// The run-copy kernel (cpp/src/cuda/RunCopy.cu) on its own: every pair of source and destination
// alignments modulo 16 (so each of its 16-, 8-, 4- and 1-byte word paths, with their head and tail
// bytes), run lengths around the word sizes, and average lengths that pick each lane-group width.
// The backends always stage a write's payload at its destination's alignment, so only the
// replication channel, applying a broadcast batch in place, reaches the narrower paths; without
// this test no test would. Runs where a CUDA runtime is built in (a GPU, or the tests' stand-in
// runtime); skips without a device.
#include <gtest/gtest.h>

#if __has_include("RunCopy.hpp")
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "RunCopy.hpp"
#include "TestUtil.hpp"

namespace mmsb::cuda {
namespace {

using test::Bytes;

// Device memory freed at scope exit.
struct DeviceBuffer {
  explicit DeviceBuffer(std::size_t n) {
    if (cudaMalloc(&p, n) != cudaSuccess) p = nullptr;
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  std::byte* data() const { return static_cast<std::byte*>(p); }
  void* p = nullptr;
};

class RunCopy : public ::testing::Test {
 protected:
  void SetUp() override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      cudaGetLastError();
      GTEST_SKIP() << "no CUDA device";
    }
  }

  // Copies `lengths[i]` bytes for every (source, destination) alignment pair, each run to its own
  // stretch of the destination, in one launch; the destination must then equal the host model.
  void check_every_alignment(const std::vector<std::uint64_t>& lengths) {
    constexpr std::uint64_t kLane = 16;
    std::uint64_t longest = 0;
    for (std::uint64_t n : lengths) longest = std::max(longest, n);
    const std::uint64_t slot = (longest + 2 * kLane + kLane - 1) / kLane * kLane;  // room for any misalignment
    const std::uint64_t runs = kLane * kLane * lengths.size();
    const std::uint64_t bytes = runs * slot;
    test::Rng rng(static_cast<std::uint64_t>(lengths.size() * 1000 + longest));
    const Bytes src_bytes = test::random_bytes(rng, bytes);
    const Bytes dst_before = test::random_bytes(rng, bytes);
    DeviceBuffer src(bytes), dst(bytes), table(runs * sizeof(DeviceCopyRun));
    ASSERT_TRUE(src.p && dst.p && table.p);
    ASSERT_EQ(cudaMemcpy(src.p, src_bytes.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(dst.p, dst_before.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
    std::vector<DeviceCopyRun> host_table;
    Bytes want = dst_before;
    std::uint64_t total = 0;
    std::uint64_t at = 0;  // the slot of the next run, in both buffers
    for (std::uint64_t length : lengths) {
      for (std::uint64_t s = 0; s < kLane; ++s) {
        for (std::uint64_t d = 0; d < kLane; ++d, at += slot) {
          host_table.push_back({dst.data() + at + d, src.data() + at + s, length});
          std::copy_n(src_bytes.begin() + static_cast<std::ptrdiff_t>(at + s), length,
                      want.begin() + static_cast<std::ptrdiff_t>(at + d));
          total += length;
        }
      }
    }
    ASSERT_EQ(cudaMemcpy(table.p, host_table.data(), runs * sizeof(DeviceCopyRun), cudaMemcpyHostToDevice),
              cudaSuccess);
    ASSERT_EQ(launch_run_copy(reinterpret_cast<const DeviceCopyRun*>(table.p), runs, total, nullptr), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    Bytes got(bytes);
    ASSERT_EQ(cudaMemcpy(got.data(), dst.p, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
    for (std::uint64_t r = 0; r < runs; ++r) {
      const std::uint64_t base = r * slot;
      ASSERT_TRUE(std::equal(got.begin() + static_cast<std::ptrdiff_t>(base),
                             got.begin() + static_cast<std::ptrdiff_t>(base + slot),
                             want.begin() + static_cast<std::ptrdiff_t>(base)))
          << "run " << r << ": " << host_table[r].length << " bytes, source at +" << r / kLane % kLane
          << ", destination at +" << r % kLane << " of a 16-byte word";
    }
  }
};

// Short runs (one lane a run): lengths around every word size, and empty runs.
TEST_F(RunCopy, ShortRunsAtEveryAlignment) { check_every_alignment({0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17}); }

// 64-byte rows (four lanes a run), as a batch of deltas writes them.
TEST_F(RunCopy, RowsAtEveryAlignment) { check_every_alignment({63, 64, 65}); }

// Long runs (16 and 32 lanes a run), whose words a lane group strides through.
TEST_F(RunCopy, LongRunsAtEveryAlignment) {
  check_every_alignment({250, 256, 261});
  check_every_alignment({1000, 4099});
}

}  // namespace
}  // namespace mmsb::cuda
#endif
