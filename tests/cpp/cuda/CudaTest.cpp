// The CUDA leaf: without a device every call degrades cleanly; with one, the run-scatter kernel
// must produce exactly the bytes of the host apply.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Cuda.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"

namespace {

TEST(Cuda, AvailabilityIsConsistent) {
  EXPECT_GE(mmsb::cuda::device_count(), 0);
  EXPECT_EQ(mmsb::cuda::is_available(), mmsb::cuda::compiled() && mmsb::cuda::device_count() > 0);
  if (mmsb::cuda::compiled()) {
    EXPECT_FALSE(mmsb::cuda::runtime_version().empty());
  }
}

TEST(Cuda, DeviceCallWithoutDeviceRaisesDeviceUnavailable) {
  if (mmsb::cuda::is_available()) GTEST_SKIP() << "a CUDA device is present";
  std::vector<std::byte> page(64);
  const std::vector<std::byte> data(8, std::byte{1});
  try {
    mmsb::cuda::apply_on_device(0, mmsb::Delta::at(1, 0, data), page);
    FAIL() << "expected DeviceUnavailable";
  } catch (const mmsb::Error& e) {
    EXPECT_EQ(e.code(), mmsb::ErrorCode::DeviceUnavailable);
  }
  EXPECT_EQ(page, std::vector<std::byte>(64));
}

// With or without devices: an ordinal past the last device is refused with a message naming it
// (tests/python/test_gpu.py checks the same through the extension module, where it once crashed).
TEST(Cuda, OrdinalPastTheLastDeviceRaisesDeviceUnavailable) {
  const int ordinal = mmsb::cuda::device_count() + 7;
  const std::string location = "cuda:" + std::to_string(ordinal);
  try {
    mmsb::cuda::device_backend(location);
    FAIL() << "expected DeviceUnavailable";
  } catch (const mmsb::Error& e) {
    EXPECT_EQ(e.code(), mmsb::ErrorCode::DeviceUnavailable);
    const std::string message = e.what();  // CUDA builds name the location, host-only ones the device
    EXPECT_TRUE(message.find(location) != std::string::npos ||
                message.find("CUDA device " + std::to_string(ordinal)) != std::string::npos)
        << message;
  }
}

TEST(Cuda, ScatterKernelMatchesHostApply) {
  if (!mmsb::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 50; ++trial) {
    const std::size_t size = 1 + rng() % 100'000;
    std::vector<std::byte> host(size);
    for (auto& b : host) b = static_cast<std::byte>(rng());
    std::vector<std::uint64_t> offsets, lengths;
    std::vector<std::byte> payload;
    for (int r = 0; r < 1 + static_cast<int>(rng() % 40); ++r) {
      const std::uint64_t off = rng() % size;
      const std::uint64_t len = rng() % (size - off + 1);
      offsets.push_back(off);
      lengths.push_back(len);
      for (std::uint64_t i = 0; i < len; ++i) payload.push_back(static_cast<std::byte>(rng()));
    }
    const mmsb::Delta d = mmsb::Delta::runs(1, offsets, lengths, payload);
    std::vector<std::byte> device = host;
    d.apply_to(host.data());
    mmsb::cuda::apply_on_device(0, d, device);
    ASSERT_EQ(device, host) << "trial " << trial;
  }
}

}  // namespace
