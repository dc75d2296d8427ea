// The DeviceBackend contract, checked on the real CUDA backends when a GPU is present and on the
// host-memory emulation everywhere (so the checks themselves run on every machine): random runs
// written then read back equal a host model byte for byte; copies; zero-filled blocks; counters;
// bad host ranges refused with nothing changed; transfers larger than the staging buffer; managed
// memory never asked beyond what the device has free; unknown devices refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "BackendFixture.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Cuda.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"

namespace mmsb::cuda {
namespace {

using test::Backend;
using test::Bytes;
using test::code_of;
using test::counters_equal;
using test::kMiB;
using test::Modelled;
using test::name_of;
using test::random_bytes;
using test::Rng;
using test::uniform;

INSTANTIATE_TEST_SUITE_P(Cuda, Backend, ::testing::Values(true, false), name_of);

TEST_P(Backend, DescribesItself) {
  DeviceBackend& b = device_backend("cuda:0");
  EXPECT_EQ(b.location(), "cuda:0");
  EXPECT_EQ(b.ordinal(), 0);
  EXPECT_FALSE(b.host_accessible());
  EXPECT_EQ(b.emulated(), !real());
  DeviceBackend& u = device_backend("unified");
  EXPECT_EQ(u.location(), "unified");
  EXPECT_TRUE(u.host_accessible());
  EXPECT_EQ(&device_backend("cuda:0"), &b) << "one backend per location, kept for the process";
}

TEST_P(Backend, RandomRunsReadBackAsTheHostModel) {
  DeviceBackend& b = device_backend("cuda:0");
  Rng rng(7);
  std::vector<Modelled> pages;
  for (const std::uint64_t size : std::vector<std::uint64_t>{1, 15, 64, 4097, 100'000, 70'001, 3 * kMiB + 5}) {
    pages.push_back({take(b, size), Bytes(size)});
  }
  for (int round = 0; round < 60; ++round) {
    // One call's runs over several pages: short and long, unaligned, some empty, overlapping
    // (resolved as the engine does: the later run wins), in random order.
    std::vector<DeviceRun> runs;
    Bytes host;
    const int n = static_cast<int>(uniform(rng, 0, round % 10 == 0 ? 5000 : 200));
    for (int i = 0; i < n; ++i) {
      Modelled& p = pages[uniform(rng, 0, pages.size() - 1)];
      const std::uint64_t size = p.model.size();
      const std::uint64_t off = uniform(rng, 0, size - 1);
      // Mostly short runs; one in twenty up to 300,000 bytes (cut into several kernel pieces).
      const std::uint64_t cap = std::min<std::uint64_t>(size - off, uniform(rng, 0, 19) == 0 ? 300'000 : 100);
      const std::uint64_t len = uniform(rng, 0, 9) == 0 ? 0 : uniform(rng, 1, cap);
      const Bytes data = random_bytes(rng, len);
      runs.push_back({p.block.data + off, host.size(), len});
      host.insert(host.end(), data.begin(), data.end());
      std::copy(data.begin(), data.end(), p.model.begin() + static_cast<std::ptrdiff_t>(off));
    }
    resolve_overlaps(runs);
    b.write(runs, host);
    // Whole pages, then a random gather of slices in one read.
    for (const Modelled& p : pages) ASSERT_EQ(read_all(b, p.block, p.model.size()), p.model) << "round " << round;
    std::vector<DeviceRun> gather;
    Bytes expect;
    for (int i = 0; i < 50; ++i) {
      const Modelled& p = pages[uniform(rng, 0, pages.size() - 1)];
      const std::uint64_t off = uniform(rng, 0, p.model.size() - 1);
      const std::uint64_t len = uniform(rng, 0, std::min<std::uint64_t>(p.model.size() - off, 40'000));
      gather.push_back({p.block.data + off, expect.size(), len});
      expect.insert(expect.end(), p.model.begin() + static_cast<std::ptrdiff_t>(off),
                    p.model.begin() + static_cast<std::ptrdiff_t>(off + len));
    }
    Bytes got(expect.size());
    b.read(gather, got);
    ASSERT_EQ(got, expect) << "round " << round;
  }
}

TEST_P(Backend, TransfersLargerThanTheStagingBufferAreSplit) {
  if (!real()) GTEST_SKIP() << "the staging split exists on a real device only";
  DeviceBackend& b = device_backend("cuda:0");
  Rng rng(11);
  // One run of 1.17 staging caps at an unaligned offset (300 MiB on a GPU), then 64-byte runs at
  // random slots, 1.25 caps of payload: both exceed the staging buffer.
  const std::uint64_t size = kStagingCapBytes / 16 * 25;
  const DevicePool::Block block = take(b, size);
  Bytes model(size);
  const Bytes big = random_bytes(rng, kStagingCapBytes / 64 * 75);
  const DeviceRun one{block.data + 3, 0, big.size()};
  DeviceCounters before = b.counters();
  b.write({&one, 1}, big);
  std::copy(big.begin(), big.end(), model.begin() + 3);
  EXPECT_GE(b.counters().kernels - before.kernels, 2u) << big.size() << " bytes went through one staging round";
  ASSERT_EQ(read_all(b, block, size), model);

  std::vector<std::uint32_t> slots(size / 64);
  std::iota(slots.begin(), slots.end(), 0u);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(kStagingCapBytes / 64 / 4 * 5);
  const Bytes payload = random_bytes(rng, slots.size() * 64);
  std::vector<DeviceRun> runs(slots.size());
  for (std::size_t i = 0; i < slots.size(); ++i) {
    runs[i] = {block.data + std::uint64_t{slots[i]} * 64, i * 64, 64};
    std::memcpy(model.data() + std::uint64_t{slots[i]} * 64, payload.data() + i * 64, 64);
  }
  std::sort(runs.begin(), runs.end(), [](const DeviceRun& x, const DeviceRun& y) { return x.device < y.device; });
  before = b.counters();
  b.write(runs, payload);
  EXPECT_GE(b.counters().kernels - before.kernels, 2u);
  ASSERT_EQ(read_all(b, block, size), model);
  // And the same runs gathered back in one read.
  Bytes got(payload.size());
  b.read(runs, got);
  ASSERT_EQ(got, payload);
}

TEST_P(Backend, CopyMovesBytesOnTheDevice) {
  DeviceBackend& b = device_backend("cuda:0");
  Rng rng(3);
  const std::uint64_t size = 5 * kMiB + 17;
  const DevicePool::Block src = take(b, size);
  const DevicePool::Block dst = take(b, size);
  const Bytes data = random_bytes(rng, size);
  const DeviceRun whole{src.data, 0, size};
  b.write({&whole, 1}, data);
  Bytes model(size);
  for (int i = 0; i < 20; ++i) {
    const std::uint64_t from = uniform(rng, 0, size - 1);
    const std::uint64_t to = uniform(rng, 0, size - 1);
    const std::uint64_t n = uniform(rng, 0, std::min(size - from, size - to));
    b.copy(dst.data + to, src.data + from, n);
    std::copy(data.begin() + static_cast<std::ptrdiff_t>(from), data.begin() + static_cast<std::ptrdiff_t>(from + n),
              model.begin() + static_cast<std::ptrdiff_t>(to));
    ASSERT_EQ(read_all(b, dst, size), model) << "copy " << i;
  }
}

TEST_P(Backend, BlocksAreZeroFilledAlsoWhenReused) {
  DeviceBackend& b = device_backend("cuda:0");
  Rng rng(5);
  for (const std::uint64_t size : std::vector<std::uint64_t>{100, 64 * 1024, 9 * kMiB}) {  // slab and large blocks
    for (int reuse = 0; reuse < 2; ++reuse) {
      const DevicePoolStats before = b.pool_stats();
      const DevicePool::Block block = b.allocate(size);
      EXPECT_GE(block.requested, size);
      EXPECT_EQ(b.pool_stats().live_blocks, before.live_blocks + 1);
      EXPECT_EQ(b.pool_stats().requested_bytes, before.requested_bytes + block.requested);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(block.data) % DevicePool::kAlignment, 0u);
      EXPECT_EQ(read_all(b, block, size), Bytes(size)) << size << " bytes, use " << reuse;
      const Bytes junk = random_bytes(rng, size);
      const DeviceRun whole{block.data, 0, size};
      b.write({&whole, 1}, junk);
      b.release(block);
      EXPECT_EQ(b.pool_stats().live_blocks, before.live_blocks);
      EXPECT_EQ(b.pool_stats().requested_bytes, before.requested_bytes);
    }
  }
}

TEST_P(Backend, CountersCountPayloadCallsAndKernels) {
  DeviceBackend& b = device_backend("cuda:0");
  const DevicePool::Block block = take(b, 10'000);
  const Bytes data(1000, std::byte{9});
  const std::vector<DeviceRun> runs{{block.data + 1, 0, 300}, {block.data + 500, 300, 0}, {block.data + 900, 300, 700}};
  const DeviceCounters c0 = b.counters();
  b.write(runs, data);
  const DeviceCounters c1 = b.counters();
  EXPECT_EQ(c1.bytes_to_device - c0.bytes_to_device, 1000u);
  EXPECT_EQ(c1.transfers - c0.transfers, 1u);
  EXPECT_EQ(c1.kernels - c0.kernels, real() ? 1u : 0u) << "one scatter kernel per write";
  Bytes back(1000);
  b.read(runs, back);
  EXPECT_EQ(back, data);
  const DeviceCounters c2 = b.counters();
  EXPECT_EQ(c2.bytes_to_host - c1.bytes_to_host, 1000u);
  EXPECT_EQ(c2.kernels - c1.kernels, real() ? 1u : 0u) << "one gather kernel per read";
  b.copy(block.data + 5000, block.data, 4000);
  const DeviceCounters c3 = b.counters();
  EXPECT_EQ(c3.bytes_copied - c2.bytes_copied, 4000u);
  EXPECT_EQ(c3.transfers - c0.transfers, 3u);
  EXPECT_EQ(c3.bytes_to_device, c1.bytes_to_device);
  b.write({}, {});
  EXPECT_EQ(b.counters().transfers, c3.transfers + 1) << "an empty write is still a call";
  EXPECT_EQ(b.counters().kernels, c3.kernels) << "an empty write launches nothing";
}

TEST_P(Backend, RunOutsideTheHostBufferIsRefusedAndChangesNothing) {
  DeviceBackend& b = device_backend("cuda:0");
  const DevicePool::Block block = take(b, 4096);
  const Bytes data(100, std::byte{1});
  const DeviceRun good{block.data, 0, 100};
  b.write({&good, 1}, data);
  const DeviceCounters before = b.counters();
  // The bad run comes last: the good one before it must not be written either.
  const std::vector<DeviceRun> bad{{block.data + 200, 0, 50}, {block.data + 300, 60, 41}};
  const Bytes other(100, std::byte{2});
  EXPECT_EQ(code_of([&] { b.write(bad, other); }), ErrorCode::InvalidArgument);
  Bytes into(100);
  EXPECT_EQ(code_of([&] { b.read(bad, into); }), ErrorCode::InvalidArgument);
  const DeviceRun past{block.data, ~std::uint64_t{0} - 5, 10};  // host_offset + length overflows
  EXPECT_EQ(code_of([&] { b.write({&past, 1}, other); }), ErrorCode::InvalidArgument);
  EXPECT_TRUE(counters_equal(b.counters(), before));
  Bytes expect(4096);
  std::fill_n(expect.begin(), 100, std::byte{1});
  EXPECT_EQ(read_all(b, block, 4096), expect);
  EXPECT_EQ(into, Bytes(100));
}

TEST_P(Backend, ConcurrentTransfersToDisjointBlocks) {
  DeviceBackend& b = device_backend("cuda:0");
  constexpr int kThreads = 4;
  const std::uint64_t size = 2 * kMiB + 3;
  std::vector<DevicePool::Block> blocks;
  for (int t = 0; t < kThreads; ++t) blocks.push_back(take(b, size));
  std::vector<Bytes> want(kThreads);
  std::vector<Bytes> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(100 + t);
      want[t] = Bytes(size);
      for (int i = 0; i < 30; ++i) {
        const std::uint64_t off = uniform(rng, 0, size - 1);
        const Bytes data = random_bytes(rng, uniform(rng, 1, std::min<std::uint64_t>(size - off, 70'000)));
        const DeviceRun r{blocks[t].data + off, 0, data.size()};
        b.write({&r, 1}, data);
        std::copy(data.begin(), data.end(), want[t].begin() + static_cast<std::ptrdiff_t>(off));
      }
      got[t] = read_all(b, blocks[t], size);
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(got[t], want[t]) << "thread " << t;
}

TEST_P(Backend, UnifiedMemoryIsHostAccessible) {
  DeviceBackend& u = device_backend("unified");
  const DevicePool::Block block = take(u, 1000);
  const Bytes zeros(1000);
  EXPECT_EQ(std::memcmp(block.data, zeros.data(), 1000), 0) << "zero-filled, readable in place";
  const Bytes data(300, std::byte{7});
  const DeviceRun r{block.data + 10, 0, 300};
  u.write({&r, 1}, data);
  EXPECT_EQ(block.data[10], std::byte{7});
  EXPECT_EQ(block.data[309], std::byte{7});
  EXPECT_EQ(block.data[310], std::byte{0});
  Bytes back(300);
  u.read({&r, 1}, back);
  EXPECT_EQ(back, data);
  u.copy(block.data + 600, block.data + 10, 300);
  EXPECT_EQ(std::memcmp(block.data + 600, data.data(), 300), 0);
  EXPECT_EQ(u.counters().kernels, 0u);
}

TEST_P(Backend, UnifiedAllocationBeyondFreeDeviceMemoryIsRefused) {
  if (!real()) GTEST_SKIP() << "the emulation has no device memory to compare with";
  DeviceBackend& u = device_backend("unified");
  const DevicePoolStats before = u.pool_stats();
  // Far more than any GPU has: refused from cudaMemGetInfo's figures, before any allocation.
  const std::uint64_t huge = std::uint64_t{1} << 50;
  try {
    u.allocate(huge);
    FAIL() << "expected OutOfMemory";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::OutOfMemory);
    EXPECT_NE(std::string(e.what()).find("free"), std::string::npos) << e.what();
  }
  const DevicePoolStats after = u.pool_stats();
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes);
  EXPECT_EQ(after.live_blocks, before.live_blocks);
}

TEST(CudaBackendRegistry, UnknownOrdinalIsUnavailableEverywhere) {
  // Without CUDA in the build, without a driver or GPU, or with one: cuda:99 does not exist.
  EXPECT_EQ(code_of([] { device_backend("cuda:99"); }), ErrorCode::DeviceUnavailable);
  EXPECT_EQ(code_of([] { device_backend("cuda:x"); }), ErrorCode::InvalidArgument);
  if (!is_available()) {
    EXPECT_EQ(code_of([] { device_backend("cuda:0"); }), ErrorCode::DeviceUnavailable);
    EXPECT_EQ(code_of([] { device_backend("unified"); }), ErrorCode::DeviceUnavailable);
  }
}

}  // namespace
}  // namespace mmsb::cuda
