// Delta sources (names are the Python spelling, round-tripped through the log) and the run-time
// SIMD level.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "TestUtil.hpp"
#include "mmsb/core/Clock.hpp"
#include "mmsb/core/CpuFeatures.hpp"
#include "mmsb/core/Types.hpp"

namespace mmsb {
namespace {

const Source kSources[] = {Source::User, Source::Propagation, Source::Replay, Source::Remote};

TEST(SourceTest, NamesAreThePythonSpelling) {
  EXPECT_EQ(source_name(Source::User), "user");
  EXPECT_EQ(source_name(Source::Propagation), "propagation");
  EXPECT_EQ(source_name(Source::Replay), "replay");
  EXPECT_EQ(source_name(Source::Remote), "remote");
}

TEST(SourceTest, NumberingIsStable) {
  // Stored in log records: renumbering would misread old logs.
  EXPECT_EQ(static_cast<int>(Source::User), 0);
  EXPECT_EQ(static_cast<int>(Source::Propagation), 1);
  EXPECT_EQ(static_cast<int>(Source::Replay), 2);
  EXPECT_EQ(static_cast<int>(Source::Remote), 3);
}

TEST(SourceTest, ParseInvertsName) {
  for (Source s : kSources) EXPECT_EQ(parse_source(source_name(s)), s);
}

TEST(SourceTest, ParseRejectsAnythingElseNamingIt) {
  for (std::string_view bad : {"", "User", "USER", "users", " user", "user ", "prop", "Remote"}) {
    const std::string msg = test::expect_error(ErrorCode::InvalidArgument, [&] { parse_source(bad); });
    EXPECT_NE(msg.find(test::quoted(bad)), std::string::npos) << msg;
    EXPECT_NE(msg.find("user, propagation, replay, remote"), std::string::npos) << msg;
  }
}

TEST(SourceTest, ParseRejectsEmbeddedNul) {
  // A name with a NUL is not "user" even though a C string compare would stop there.
  const std::string_view with_nul("user\0", 5);
  test::expect_error(ErrorCode::InvalidArgument, [&] { parse_source(with_nul); });
}

TEST(SimdTest, LevelNames) {
  EXPECT_EQ(simd_level_name(SimdLevel::Scalar), "scalar");
  EXPECT_EQ(simd_level_name(SimdLevel::Avx2), "avx2");
}

TEST(SimdTest, LevelIsStableAndNamed) {
  const SimdLevel first = simd_level();
  EXPECT_EQ(simd_level(), first);
  const std::string_view name = simd_level_name(first);
  EXPECT_TRUE(name == "scalar" || name == "avx2") << name;
}

TEST(SimdTest, ScalarForcedByEnvironment) {
  // CTest runs this binary a second time with MMSB_SIMD=scalar (the simd_scalar.* tests).
  const char* forced = std::getenv("MMSB_SIMD");
  if (forced == nullptr || std::strcmp(forced, "scalar") != 0) {
    GTEST_SKIP() << "MMSB_SIMD=scalar not set for this run";
  }
  EXPECT_EQ(simd_level(), SimdLevel::Scalar);
}

TEST(SimdTest, EnvironmentIsReadOnlyOnce) {
  const SimdLevel before = simd_level();
  const char* old = std::getenv("MMSB_SIMD");
  const std::string saved = old != nullptr ? old : "";
  ::setenv("MMSB_SIMD", before == SimdLevel::Scalar ? "avx2" : "scalar", 1);
  const SimdLevel after = simd_level();
  if (old != nullptr) {
    ::setenv("MMSB_SIMD", saved.c_str(), 1);
  } else {
    ::unsetenv("MMSB_SIMD");
  }
  EXPECT_EQ(after, before);
}

TEST(ClockTest, MonotonicNeverGoesBack) {
  std::uint64_t prev = monotonic_ns();
  for (int i = 0; i < 1000; ++i) {
    const std::uint64_t now = monotonic_ns();
    ASSERT_GE(now, prev);
    prev = now;
  }
}

TEST(ClockTest, WallClockIsAfter2020) {
  EXPECT_GT(wall_clock_ns(), std::uint64_t{1577836800} * 1'000'000'000ull);
}

}  // namespace
}  // namespace mmsb
