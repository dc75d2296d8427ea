// The recompute half of the DeviceBackend contract, on a GPU ("real") and on the emulation, for
// device and managed ("unified") memory:
// reduce() leaves exactly the bytes semiring_reduce computes on the host, for every semiring and
// dtype, weighted or not, from 0 to 4 parents; diff() gives exactly diff_runs' runs, at sizes
// around the mask kernel's 32-byte words and 8 KiB chunks, and reads back only the mask of the
// chunks that changed. Floating inputs are finite (subnormals included): a NaN result is NaN on
// both sides, but its payload bits are not specified across processors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "BackendFixture.hpp"
#include "mmsb/core/Crc32c.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/delta/Diff.hpp"
#include "mmsb/graph/Semiring.hpp"

namespace mmsb::cuda {
namespace {

using test::Bytes;
using test::kMiB;
using test::random_bytes;
using test::Rng;
using test::uniform;
// Inside TEST bodies `Run` names testing::Test::Run, hence the alias.
using Runs = std::vector<mmsb::Run>;

class DeviceCompute : public test::Backend {
 protected:
  // Writes `bytes` into a fresh block of `b`.
  DevicePool::Block upload(DeviceBackend& b, const Bytes& bytes) {
    const DevicePool::Block block = take(b, std::max<std::uint64_t>(bytes.size(), 1));
    const DeviceRun whole{block.data, 0, bytes.size()};
    b.write({&whole, 1}, bytes);
    return block;
  }
};

INSTANTIATE_TEST_SUITE_P(Cuda, DeviceCompute, ::testing::Values(true, false), test::name_of);

template <class T>
Bytes as_bytes(const std::vector<T>& v) {
  Bytes out(v.size() * sizeof(T));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// Element values of `dtype`: full-range bit patterns for integers and bool (wrapping and
// saturation get exercised), finite reals for floats, with some subnormals and zeros of both signs.
Bytes random_elements(Rng& rng, DType dtype, std::uint64_t count) {
  auto real = [&]() -> double {
    switch (uniform(rng, 0, 9)) {
      case 0: return 0.0;
      case 1: return -0.0;
      case 2: return std::ldexp(static_cast<double>(uniform(rng, 1, 1000)), -140);  // float32 subnormal
      default: return std::uniform_real_distribution<double>(-1e3, 1e3)(rng);
    }
  };
  if (dtype == DType::Float32) {
    std::vector<float> v(count);
    for (float& x : v) x = static_cast<float>(real());
    return as_bytes(v);
  }
  if (dtype == DType::Float64) {
    std::vector<double> v(count);
    for (double& x : v) x = real() * (uniform(rng, 0, 1) == 0 ? 1.0 : 1e-300);  // float64 subnormals too
    return as_bytes(v);
  }
  return random_bytes(rng, count * dtype_itemsize(dtype));
}

double random_weight(Rng& rng, SemiringKind s, DType dtype) {
  const bool tropical = s == SemiringKind::MinPlus || s == SemiringKind::MaxPlus || s == SemiringKind::MaxMin;
  if (dtype == DType::Bool) return static_cast<double>(uniform(rng, 0, 1));
  if (tropical && uniform(rng, 0, 7) == 0 && dtype != DType::Float32 && dtype != DType::Float64) {
    return uniform(rng, 0, 1) == 0 ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
  }
  if (dtype == DType::Int32 || dtype == DType::Int64) return static_cast<double>(uniform(rng, 0, 10)) - 5.0;
  return std::uniform_real_distribution<double>(-4.0, 4.0)(rng);
}

// Device memory, and managed memory (whose backend computes on the host once the device is idle).
constexpr const char* kLocations[] = {"cuda:0", "unified"};

TEST_P(DeviceCompute, ReduceGivesTheHostReducesBytes) {
  for (const char* where : kLocations) {
    SCOPED_TRACE(where);
    DeviceBackend& b = device_backend(where);
    Rng rng(11);
    constexpr DType kTypes[] = {DType::Int32, DType::Int64, DType::Float32, DType::Float64, DType::Bool};
    for (SemiringKind s : kAllSemirings) {
      for (DType dtype : kTypes) {
        if (!semiring_supports(s, dtype)) continue;
        for (std::uint64_t count : {std::uint64_t{1}, std::uint64_t{37}, std::uint64_t{5000}, std::uint64_t{300'001}}) {
          const std::size_t k = uniform(rng, 0, 4);
          std::vector<double> weights;
          if (k > 0 && uniform(rng, 0, 1) == 0) {
            for (std::size_t i = 0; i < k; ++i) weights.push_back(random_weight(rng, s, dtype));
          }
          std::vector<Bytes> host(k);
          std::vector<const std::byte*> on_host, on_device;
          for (std::size_t i = 0; i < k; ++i) {
            host[i] = random_elements(rng, dtype, count);
            on_host.push_back(host[i].data());
            on_device.push_back(upload(b, host[i]).data);
          }
          const std::uint64_t bytes = count * dtype_itemsize(dtype);
          Bytes want(bytes);
          semiring_reduce(s, dtype, on_host, weights, want.data(), count);
          const DevicePool::Block out = upload(b, random_bytes(rng, bytes));
          b.reduce(s, dtype, on_device, weights, out.data, count);
          ASSERT_EQ(read_all(b, out, bytes), want)
              << semiring_name(s) << " on " << dtype_name(dtype) << ", " << count << " elements, " << k << " parents"
              << (weights.empty() ? "" : ", weighted");
        }
      }
    }
  }
}

// `old` with one change pattern applied.
Bytes changed(Rng& rng, const Bytes& old, int pattern) {
  Bytes now = old;
  const std::uint64_t n = old.size();
  auto flip = [&](std::uint64_t i) {
    if (i < n) now[i] ^= static_cast<std::byte>(uniform(rng, 1, 255));
  };
  switch (pattern) {
    case 0: break;  // nothing
    case 1:         // a few scattered bytes
      for (int i = 0; i < 5; ++i) flip(uniform(rng, 0, n - 1));
      break;
    case 2:  // bytes next to mask words and chunk edges
      for (std::uint64_t edge : {std::uint64_t{31}, std::uint64_t{32}, std::uint64_t{8191}, std::uint64_t{8192},
                                 std::uint64_t{16383}, n - 1}) {
        flip(edge);
      }
      break;
    case 3:  // runs with gaps around the coalescing gap
      for (std::uint64_t i = uniform(rng, 0, 40); i < n;) {
        const std::uint64_t len = uniform(rng, 1, 50);
        for (std::uint64_t j = 0; j < len; ++j) flip(i + j);
        i += len + kCoalesceGap + uniform(rng, 0, 3) - 2 + (uniform(rng, 0, 20) == 0 ? 20'000 : 0);
      }
      break;
    default:  // one dense stretch
      for (std::uint64_t i = uniform(rng, 0, n - 1), end = std::min(n, i + uniform(rng, 1, 40'000)); i < end; ++i) {
        if (uniform(rng, 0, 9) != 0) flip(i);
      }
      break;
  }
  return now;
}

TEST_P(DeviceCompute, DiffGivesTheHostRuns) {
  for (const char* where : kLocations) {
    SCOPED_TRACE(where);
    DeviceBackend& b = device_backend(where);
    Rng rng(12);
    for (std::uint64_t n : {std::uint64_t{1}, std::uint64_t{31}, std::uint64_t{32}, std::uint64_t{33},
                            std::uint64_t{8191}, std::uint64_t{8192}, std::uint64_t{8193}, std::uint64_t{100'000},
                            3 * kMiB + 5}) {
      for (int pattern = 0; pattern < 5; ++pattern) {
        const Bytes old = random_bytes(rng, n);
        const Bytes now = changed(rng, old, pattern);
        Runs want;
        diff_runs(old.data(), now.data(), n, want);
        const DevicePool::Block a = upload(b, old);
        const DevicePool::Block c = upload(b, now);
        Runs got{{7, 1}};  // appended to, never merged into
        b.diff(a.data, c.data, n, got);
        ASSERT_EQ(got.front(), (mmsb::Run{7, 1}));
        got.erase(got.begin());
        ASSERT_EQ(got, want) << n << " bytes, pattern " << pattern;
      }
    }
  }
}

TEST_P(DeviceCompute, DiffReadsBackOnlyTheMaskOfChangedChunks) {
  DeviceBackend& b = device_backend("cuda:0");
  Rng rng(13);
  const std::uint64_t n = 4 * kMiB;
  const Bytes old = random_bytes(rng, n);
  Bytes now = old;
  now[12345] ^= std::byte{1};
  now[3 * kMiB] ^= std::byte{2};
  const DevicePool::Block a = upload(b, old);
  const DevicePool::Block c = upload(b, now);
  const DeviceCounters before = b.counters();
  Runs runs;
  b.diff(a.data, c.data, n, runs);
  EXPECT_EQ(runs, (Runs{{12345, 1}, {3 * kMiB, 1}}));
  // A flag per 8 KiB chunk, then the mask words of the two changed chunks.
  const std::uint64_t chunks = n / 8192;
  EXPECT_EQ(b.counters().bytes_to_host - before.bytes_to_host, chunks + 2 * (8192 / 8));
  EXPECT_EQ(b.counters().transfers - before.transfers, 1u);
}

// The device checksum is the host's CRC32C at every length around its 64 KiB blocks.
TEST_P(DeviceCompute, Crc32cOfDeviceMemoryIsTheHostsCrc) {
  for (const char* where : kLocations) {
    SCOPED_TRACE(where);
    DeviceBackend& b = device_backend(where);
    Rng rng(14);
    for (std::uint64_t n : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{65'535}, std::uint64_t{65'536},
                            std::uint64_t{65'537}, std::uint64_t{3 * 65'536 + 100}, 5 * kMiB + 3}) {
      const Bytes bytes = random_bytes(rng, n);
      const DevicePool::Block block = upload(b, bytes);
      EXPECT_EQ(b.crc32c(block.data, n), crc32c(bytes.data(), n)) << n << " bytes";
    }
  }
}

}  // namespace
}  // namespace mmsb::cuda
