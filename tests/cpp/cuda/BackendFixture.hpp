#pragma once
// The fixture and helpers of the DeviceBackend suites: each test runs on the real CUDA backends
// ("real", skipped without a GPU) and on the host-memory emulation ("emulated"), so the checks
// themselves run on every machine and the GPU check (scripts/gpu-check.sh) runs them on a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Cuda.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"

namespace mmsb::cuda::test {

using Bytes = std::vector<std::byte>;
using Rng = std::mt19937_64;

constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;

inline std::uint64_t uniform(Rng& rng, std::uint64_t lo, std::uint64_t hi) {
  return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
}

// Random bytes, eight per draw (the large-transfer tests fill hundreds of MiB).
inline Bytes random_bytes(Rng& rng, std::size_t n) {
  Bytes out(n);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  for (; i < n; ++i) out[i] = static_cast<std::byte>(rng());
  return out;
}

template <class F>
ErrorCode code_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no mmsb::Error thrown";
  return ErrorCode::Internal;
}

inline bool counters_equal(const DeviceCounters& a, const DeviceCounters& b) {
  return a.bytes_to_device == b.bytes_to_device && a.bytes_to_host == b.bytes_to_host &&
         a.bytes_copied == b.bytes_copied && a.transfers == b.transfers && a.kernels == b.kernels;
}

// A device block and the host model of its bytes.
struct Modelled {
  DevicePool::Block block;
  Bytes model;
};

// "real": the CUDA backends (skipped without a GPU); "emulated": the host-memory emulation.
class Backend : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (real()) {
      if (!is_available()) GTEST_SKIP() << "no CUDA device";
    } else {
      emulate_devices(1);
    }
  }
  void TearDown() override {
    for (auto& [b, block] : blocks_) b->release(block);
    if (!real()) emulate_devices(0);
  }
  bool real() const { return GetParam(); }

  DevicePool::Block take(DeviceBackend& b, std::uint64_t bytes) {
    blocks_.emplace_back(&b, b.allocate(bytes));
    return blocks_.back().second;
  }

  // Reads all of `block` back ([0, size)).
  static Bytes read_all(DeviceBackend& b, const DevicePool::Block& block, std::uint64_t size) {
    Bytes out(size);
    const DeviceRun whole{block.data, 0, size};
    b.read({&whole, 1}, out);
    return out;
  }

  std::vector<std::pair<DeviceBackend*, DevicePool::Block>> blocks_;
};

inline std::string name_of(const ::testing::TestParamInfo<bool>& info) { return info.param ? "real" : "emulated"; }

}  // namespace mmsb::cuda::test
