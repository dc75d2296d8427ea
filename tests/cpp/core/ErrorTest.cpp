// Error codes are a binding contract (python/mmsb/errors.py mirrors them by number and class
// name), and fail() is how every layer builds its messages.
#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "TestUtil.hpp"
#include "mmsb/core/Error.hpp"

namespace mmsb {
namespace {

// The full table: numeric value and Python class name, as errors.py defines them.
const std::pair<ErrorCode, std::pair<int, std::string_view>> kCodes[] = {
    {ErrorCode::InvalidArgument, {0, "InvalidArgumentError"}},
    {ErrorCode::PageNotFound, {1, "PageNotFoundError"}},
    {ErrorCode::InvalidDelta, {2, "InvalidDeltaError"}},
    {ErrorCode::EpochConflict, {3, "EpochConflictError"}},
    {ErrorCode::GraphCycle, {4, "GraphCycleError"}},
    {ErrorCode::Graph, {5, "GraphError"}},
    {ErrorCode::Propagation, {6, "PropagationError"}},
    {ErrorCode::LogCorrupt, {7, "LogCorruptError"}},
    {ErrorCode::Durability, {8, "DurabilityError"}},
    {ErrorCode::BusLocked, {9, "BusLockedError"}},
    {ErrorCode::HistoryUnavailable, {10, "HistoryUnavailableError"}},
    {ErrorCode::QueueFull, {11, "QueueFullError"}},
    {ErrorCode::Closed, {12, "ClosedError"}},
    {ErrorCode::DeviceUnavailable, {13, "DeviceUnavailableError"}},
    {ErrorCode::OutOfMemory, {14, "OutOfMemoryError"}},
    {ErrorCode::Internal, {15, "MmsbError"}},
    {ErrorCode::ReadOnly, {16, "ReadOnlyError"}},
};

TEST(ErrorCodeTest, NumberingIsStable) {
  for (const auto& [code, expected] : kCodes) {
    EXPECT_EQ(static_cast<int>(code), expected.first) << expected.second;
  }
}

TEST(ErrorCodeTest, ClassNamesMatchPythonHierarchy) {
  std::set<std::string_view> seen;
  for (const auto& [code, expected] : kCodes) {
    EXPECT_EQ(std::string_view(error_class_name(code)), expected.second);
    seen.insert(error_class_name(code));
  }
  // Each code maps to its own class, so Python can tell every failure apart.
  EXPECT_EQ(seen.size(), std::size(kCodes));
}

TEST(ErrorCodeTest, UnknownCodeFallsBackToBaseClass) {
  EXPECT_EQ(std::string_view(error_class_name(static_cast<ErrorCode>(999))), "MmsbError");
}

TEST(ErrorTest, CarriesCodeAndMessage) {
  const Error e(ErrorCode::EpochConflict, "page 3 moved");
  EXPECT_EQ(e.code(), ErrorCode::EpochConflict);
  EXPECT_STREQ(e.what(), "page 3 moved");
  // Callers that only know the standard hierarchy still catch engine errors.
  const std::runtime_error& base = e;
  EXPECT_STREQ(base.what(), "page 3 moved");
}

TEST(FailTest, ComposesStreamableParts) {
  const std::string name = "weights";
  const std::string msg = test::expect_error(ErrorCode::InvalidDelta, [&] {
    fail(ErrorCode::InvalidDelta, "page ", 7, " (", name, ") at ", 'x', " ", std::string_view("sv"),
         " ", 2.5, " ", std::uint64_t{18446744073709551615ull});
  });
  EXPECT_EQ(msg, "page 7 (weights) at x sv 2.5 18446744073709551615");
}

TEST(FailTest, SinglePartAndCodeSurvive) {
  for (const auto& [code, expected] : kCodes) {
    const std::string msg = test::expect_error(code, [&] { fail(code, "only"); });
    EXPECT_EQ(msg, "only") << expected.second;
  }
}

TEST(FailTest, ThrowsEngineErrorType) {
  EXPECT_THROW(fail(ErrorCode::Closed, "closed"), Error);
  EXPECT_THROW(fail(ErrorCode::Closed, "closed"), std::runtime_error);
}

}  // namespace
}  // namespace mmsb
