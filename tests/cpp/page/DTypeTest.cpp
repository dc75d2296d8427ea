// DType metadata must agree with NumPy (views and DLPack exports are built from it) and every
// mapping must round-trip.
#include <gtest/gtest.h>

#include <optional>
#include <set>
#include <string>
#include <utility>

#include "TestUtil.hpp"
#include "mmsb/page/DType.hpp"

namespace mmsb {
namespace {

struct Expected {
  DType type;
  const char* name;
  char kind;
  std::size_t itemsize;
};
// What numpy.dtype(name).kind / .itemsize report.
const Expected kTable[] = {
    {DType::Raw, "raw", 'V', 1},           {DType::Bool, "bool", 'b', 1},
    {DType::Int8, "int8", 'i', 1},         {DType::Int16, "int16", 'i', 2},
    {DType::Int32, "int32", 'i', 4},       {DType::Int64, "int64", 'i', 8},
    {DType::UInt8, "uint8", 'u', 1},       {DType::UInt16, "uint16", 'u', 2},
    {DType::UInt32, "uint32", 'u', 4},     {DType::UInt64, "uint64", 'u', 8},
    {DType::Float16, "float16", 'f', 2},   {DType::Float32, "float32", 'f', 4},
    {DType::Float64, "float64", 'f', 8},   {DType::Complex64, "complex64", 'c', 8},
    {DType::Complex128, "complex128", 'c', 16},
};

TEST(DTypeTest, TableMatchesNumpy) {
  for (const Expected& e : kTable) {
    EXPECT_EQ(dtype_name(e.type), e.name);
    EXPECT_EQ(dtype_kind(e.type), e.kind) << e.name;
    EXPECT_EQ(dtype_itemsize(e.type), e.itemsize) << e.name;
  }
}

TEST(DTypeTest, EnumValuesIndexTheTable) {
  // The enum is stored in log records; its order is part of the format.
  for (std::size_t i = 0; i < std::size(kTable); ++i) {
    EXPECT_EQ(static_cast<std::size_t>(kTable[i].type), i) << kTable[i].name;
  }
}

TEST(DTypeTest, NameRoundTrips) {
  for (const Expected& e : kTable) EXPECT_EQ(parse_dtype(dtype_name(e.type)), e.type) << e.name;
}

TEST(DTypeTest, KindAndItemsizeRoundTripForTypedDTypes) {
  std::set<std::pair<char, std::size_t>> seen;
  for (const Expected& e : kTable) {
    if (e.type == DType::Raw) continue;  // raw is bytes, not a NumPy scalar type
    EXPECT_EQ(dtype_from_kind(dtype_kind(e.type), dtype_itemsize(e.type)), e.type) << e.name;
    EXPECT_TRUE(seen.emplace(e.kind, e.itemsize).second) << "ambiguous (kind, itemsize) for " << e.name;
  }
}

TEST(DTypeTest, FromKindRejectsUnsupported) {
  const std::pair<char, std::size_t> bad[] = {
      {'f', 3}, {'f', 1}, {'f', 16}, {'i', 3}, {'i', 16}, {'u', 0}, {'b', 2},
      {'c', 4}, {'c', 32}, {'x', 4}, {'U', 4}, {'O', 8}, {'V', 1}, {'M', 8},
  };
  for (const auto& [kind, size] : bad) {
    const std::string msg =
        test::expect_error(ErrorCode::InvalidArgument, [&] { dtype_from_kind(kind, size); });
    // The message names what was asked for and what is supported.
    EXPECT_NE(msg.find(std::string("'") + kind + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(size) + " bytes"), std::string::npos) << msg;
    EXPECT_NE(msg.find("supported"), std::string::npos) << msg;
  }
}

TEST(DTypeTest, FindDTypeOnlyKnowsTypedNames) {
  for (const Expected& e : kTable) {
    if (e.type == DType::Raw) {
      EXPECT_FALSE(find_dtype(e.name).has_value());
    } else {
      EXPECT_EQ(find_dtype(e.name), std::optional<DType>(e.type)) << e.name;
    }
  }
  EXPECT_FALSE(find_dtype("float128").has_value());
}

TEST(DTypeTest, ParseRejectsUnknownNames) {
  for (const char* bad : {"", "float", "Float32", "float128", "int", "f4", "complex", "raw "}) {
    const std::string msg = test::expect_error(ErrorCode::InvalidArgument, [&] { parse_dtype(bad); });
    EXPECT_NE(msg.find(std::string("'") + bad + "'"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace mmsb
