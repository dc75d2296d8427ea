// The NCCL loader and the checks a Replicator makes before it touches a device: they run on every
// machine. The oracle for "NCCL is installed" is this test's own dlopen, not the loader's.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstring>
#include <regex>
#include <string>

#include "TestUtil.hpp"
#include "mmsb/cuda/Cuda.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/cuda/Nccl.hpp"
#include "mmsb/cuda/Replicator.hpp"
#include "mmsb/engine/BuildInfo.hpp"

#if __has_include(<cuda_runtime.h>) && __has_include(<nccl.h>) && !defined(MMSB_FAKE_CUDA)
#include <nccl.h>
// The loader declares NCCL's types itself (the build must not need nccl.h); where the header is
// at hand, its ABI is checked against them.
static_assert(sizeof(ncclUniqueId) == sizeof(mmsb::cuda::NcclUniqueId));
static_assert(static_cast<int>(mmsb::cuda::NcclResult::Success) == ncclSuccess);
static_assert(static_cast<int>(mmsb::cuda::NcclResult::InProgress) == ncclInProgress);
static_assert(static_cast<int>(mmsb::cuda::NcclDataType::Uint8) == ncclUint8);
static_assert(static_cast<int>(mmsb::cuda::NcclDataType::Uint64) == ncclUint64);
static_assert(sizeof(ncclResult_t) == sizeof(mmsb::cuda::NcclResult));
static_assert(sizeof(ncclDataType_t) == sizeof(mmsb::cuda::NcclDataType));
#endif

namespace mmsb::cuda {
namespace {

using test::expect_error;

// Whether a libnccl with ncclGetVersion can be loaded, found independently of the loader.
bool nccl_installed() {
  for (const char* name : NcclLibrary::kDefaultNames) {
    if (void* h = dlopen(name, RTLD_NOW | RTLD_LOCAL)) {
      const bool ok = dlsym(h, "ncclGetVersion") != nullptr;
      dlclose(h);
      if (ok) return true;
    }
  }
  return false;
}

TEST(NcclLoader, AvailableIffBuiltInLibraryLoadsAndDeviceIsUsable) {
  const bool installed = nccl_installed();
  EXPECT_EQ(nccl_available(), build_info().nccl && installed && is_available());
  EXPECT_EQ(nccl_version().empty(), !installed);
}

TEST(NcclLoader, VersionIsMajorMinorPatch) {
  if (!nccl_installed()) GTEST_SKIP() << "libnccl is not installed";
  const std::string v = nccl_version();
  EXPECT_TRUE(std::regex_match(v, std::regex(R"(([1-9][0-9]*)\.[0-9]+\.[0-9]+)"))) << v;
  EXPECT_EQ(nccl_library().version(), v);
}

TEST(NcclLoader, MissingLibraryNamesEveryNameTried) {
  const char* names[] = {"libmmsb-no-such-nccl.so.7", "libmmsb-no-such-nccl.so"};
  const std::string msg = expect_error(ErrorCode::DeviceUnavailable, [&] { NcclLibrary lib(names); });
  EXPECT_NE(msg.find("libmmsb-no-such-nccl.so.7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("; libmmsb-no-such-nccl.so: "), std::string::npos) << msg;
}

TEST(NcclLoader, LibraryWithoutNcclNamesTheMissingFunction) {
  const char* names[] = {"libc.so.6"};
  const std::string msg = expect_error(ErrorCode::DeviceUnavailable, [&] { NcclLibrary lib(names); });
  EXPECT_NE(msg.find("libc.so.6: loaded, but has no function ncclGetVersion"), std::string::npos) << msg;
}

TEST(NcclLoader, FallsBackToTheNextName) {
  if (!nccl_installed()) GTEST_SKIP() << "libnccl is not installed";
  const char* names[] = {"libmmsb-no-such-nccl.so.7", "libc.so.6", "libnccl.so.2"};
  NcclLibrary lib(names);
  EXPECT_EQ(lib.name(), "libnccl.so.2");
  EXPECT_EQ(lib.version(), nccl_version());
}

TEST(NcclLoader, CheckQuotesNcclsErrorString) {
  if (!nccl_installed()) GTEST_SKIP() << "libnccl is not installed";
  const NcclLibrary& lib = nccl_library();
  lib.check(NcclResult::Success, "ncclNothing");
  constexpr auto kInvalidArgument = static_cast<NcclResult>(4);  // ncclInvalidArgument
  const std::string msg = expect_error(ErrorCode::DeviceUnavailable, [&] { lib.check(kInvalidArgument, "ncclThing"); });
  EXPECT_EQ(msg.rfind("ncclThing failed: ", 0), 0u) << msg;
  EXPECT_NE(msg.find(lib.get_error_string(kInvalidArgument)), std::string::npos) << msg;
  EXPECT_NE(msg.find("(NCCL error 4)"), std::string::npos) << msg;
}

TEST(NcclLoader, UniqueIdsAreFresh) {
  if (!nccl_installed()) GTEST_SKIP() << "libnccl is not installed";
  const NcclUniqueId a = Replicator::unique_id();
  const NcclUniqueId b = Replicator::unique_id();
  EXPECT_NE(std::memcmp(a.internal, b.internal, sizeof a.internal), 0);
}

TEST(NcclLoader, UniqueIdNeedsNccl) {
  if (nccl_installed()) GTEST_SKIP() << "libnccl is installed";
  expect_error(ErrorCode::DeviceUnavailable, [] { Replicator::unique_id(); });
}

TEST(ReplicatorArguments, RefusedBeforeAnyDeviceCall) {
  const NcclUniqueId id{};
  const auto refused = [&](int nranks, int rank, int ordinal, std::vector<std::uint64_t> sizes, const char* says) {
    const std::string msg = expect_error(ErrorCode::InvalidArgument, [&] { Replicator(nranks, rank, id, ordinal, sizes); });
    EXPECT_NE(msg.find(says), std::string::npos) << msg;
  };
  refused(0, 0, 0, {64}, "nranks must be at least 1, got 0");
  refused(-3, 0, 0, {64}, "nranks must be at least 1, got -3");
  refused(2, 2, 0, {64}, "rank 2 is outside [0, 2)");
  refused(2, -1, 0, {64}, "rank -1 is outside [0, 2)");
  refused(1, 0, -1, {64}, "ordinal must be >= 0, got -1");
  refused(1, 0, 0, {}, "at least one page");
  refused(1, 0, 0, {64, 0, 8}, "page 1 has 0 bytes");
}

TEST(ReplicatorArguments, WithoutDeviceConstructionIsDeviceUnavailable) {
  if (is_available()) GTEST_SKIP() << "a CUDA device is present";
  ASSERT_EQ(emulated_devices(), 0);
  expect_error(ErrorCode::DeviceUnavailable, [] { Replicator(1, 0, NcclUniqueId{}, 0, {64}); });
}

}  // namespace
}  // namespace mmsb::cuda
