// Semiring names, the dtype and weight checks, and the law checker: the laws hold for every
// supported semiring and dtype, and the checker reports violations — with the values — of
// deliberately broken operations (it is templated on the operations, see SemiringOps.hpp).
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "../../../cpp/src/graph/SemiringOps.hpp"
#include "SemiringCombos.hpp"
#include "TestUtil.hpp"
#include "mmsb/graph/Semiring.hpp"

namespace mmsb {
namespace {

using test::expect_error;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr std::int32_t kMax32 = std::numeric_limits<std::int32_t>::max();

std::string first(const SemiringLawReport& r) { return r.ok() ? "(no violations)" : r.violations.front(); }
bool mentions(const SemiringLawReport& r, const std::string& text) {
  for (const std::string& v : r.violations) {
    if (v.find(text) != std::string::npos) return true;
  }
  return false;
}

using Combo = test::SemiringCombo;
using test::combo_name;
using test::supported_combos;

class SemiringLawComboTest : public ::testing::TestWithParam<Combo> {};
TEST_P(SemiringLawComboTest, LawsHold) {
  const auto [s, d] = GetParam();
  const SemiringLawReport report = check_semiring_laws(s, d, 5000, 42);
  EXPECT_EQ(report.checks, 5000u * 11u);
  EXPECT_TRUE(report.ok()) << first(report);
}
INSTANTIATE_TEST_SUITE_P(Supported, SemiringLawComboTest, ::testing::ValuesIn(supported_combos()),
                         combo_name);

TEST(SemiringNamesTest, RoundTripAndUnknownNameListsNames) {
  EXPECT_EQ(semiring_name(SemiringKind::SumProduct), "sum_product");
  EXPECT_EQ(semiring_name(SemiringKind::Boolean), "boolean");
  for (SemiringKind s : kAllSemirings) EXPECT_EQ(parse_semiring(semiring_name(s)), s);
  const std::string msg = expect_error(ErrorCode::InvalidArgument, [] { parse_semiring("tropical"); });
  EXPECT_NE(msg.find("tropical"), std::string::npos) << msg;
  EXPECT_NE(msg.find("min_plus"), std::string::npos) << msg;
}

TEST(SemiringDTypeTest, SupportMatrixAndRejection) {
  for (SemiringKind s : kAllSemirings) {
    for (DType d : {DType::Int32, DType::Int64, DType::Float32, DType::Float64}) {
      EXPECT_TRUE(semiring_supports(s, d));
    }
    for (DType d : {DType::Raw, DType::Int8, DType::UInt32, DType::Float16, DType::Complex64}) {
      EXPECT_FALSE(semiring_supports(s, d));
    }
  }
  EXPECT_TRUE(semiring_supports(SemiringKind::Boolean, DType::Bool));
  EXPECT_TRUE(semiring_supports(SemiringKind::MaxMin, DType::Bool));
  for (SemiringKind s : {SemiringKind::SumProduct, SemiringKind::MinPlus, SemiringKind::MaxPlus}) {
    EXPECT_FALSE(semiring_supports(s, DType::Bool));
    const std::string msg =
        expect_error(ErrorCode::InvalidArgument, [s] { check_semiring_dtype(s, DType::Bool); });
    EXPECT_NE(msg.find(semiring_name(s)), std::string::npos) << msg;
    EXPECT_NE(msg.find("bool"), std::string::npos) << msg;
  }
  const std::string msg = expect_error(ErrorCode::InvalidArgument,
                                       [] { check_semiring_dtype(SemiringKind::MaxMin, DType::UInt16); });
  EXPECT_NE(msg.find("uint16"), std::string::npos) << msg;
  expect_error(ErrorCode::InvalidArgument,
               [] { check_semiring_laws(SemiringKind::MinPlus, DType::Bool, 10, 1); });
}

TEST(SemiringWeightTest, RejectsWeightsTheDTypeCannotHold) {
  auto rejected = [](SemiringKind s, DType d, double w, const char* names) {
    const std::string msg = expect_error(ErrorCode::InvalidArgument, [&] { check_semiring_weight(s, d, w); });
    EXPECT_NE(msg.find(names), std::string::npos) << msg;
    EXPECT_NE(msg.find(semiring_name(s)), std::string::npos) << msg;
    EXPECT_NE(msg.find(dtype_name(d)), std::string::npos) << msg;
  };
  rejected(SemiringKind::SumProduct, DType::Int32, 0.5, "weight 0.5");
  rejected(SemiringKind::Boolean, DType::Bool, 2.0, "weight 2");
  rejected(SemiringKind::MaxMin, DType::Bool, 0.5, "weight 0.5");
  rejected(SemiringKind::MinPlus, DType::Int32, 1e30, "weight 1e+30");
  rejected(SemiringKind::MaxPlus, DType::Int32, 2147483648.0, "weight 2147483648");
  rejected(SemiringKind::SumProduct, DType::Int64, 9223372036854775808.0, "weight 9223372036854775808");
  rejected(SemiringKind::SumProduct, DType::Int64, kInf, "weight inf");
  rejected(SemiringKind::SumProduct, DType::Float32, 1e39, "weight 1e+39");
  for (SemiringKind s : kAllSemirings) {
    for (DType d : test::kSemiringDTypes) {
      if (semiring_supports(s, d)) rejected(s, d, kNaN, "NaN");
    }
  }
  expect_error(ErrorCode::InvalidArgument,
               [] { check_semiring_weight(SemiringKind::MinPlus, DType::Bool, 1.0); });
}

TEST(SemiringWeightTest, AcceptsRepresentableWeights) {
  EXPECT_NO_THROW(check_semiring_weight(SemiringKind::SumProduct, DType::Int32, -2147483648.0));
  EXPECT_NO_THROW(check_semiring_weight(SemiringKind::SumProduct, DType::Int32, 2147483647.0));
  EXPECT_NO_THROW(check_semiring_weight(SemiringKind::MaxPlus, DType::Int64, -9223372036854775808.0));
  EXPECT_NO_THROW(check_semiring_weight(SemiringKind::Boolean, DType::Bool, 0.0));
  EXPECT_NO_THROW(check_semiring_weight(SemiringKind::MaxMin, DType::Bool, 1.0));
  EXPECT_NO_THROW(check_semiring_weight(SemiringKind::SumProduct, DType::Float32, 0.1));  // rounds
  EXPECT_NO_THROW(check_semiring_weight(SemiringKind::SumProduct, DType::Float64, -kInf));
  // ±inf are the integer tropical semirings' own infinities (max/min of the type).
  EXPECT_NO_THROW(check_semiring_weight(SemiringKind::MinPlus, DType::Int32, kInf));
  EXPECT_NO_THROW(check_semiring_weight(SemiringKind::MaxMin, DType::Int64, -kInf));
}

// ---- the law checker on deliberately broken operations ----
struct SubtractingAdd : semiring_detail::SumProduct<std::int32_t> {
  static std::int32_t add(std::int32_t a, std::int32_t b) noexcept { return a - b; }
};
struct UnsaturatedMinPlus : semiring_detail::MinPlus<std::int32_t> {
  static std::int32_t mul(std::int32_t a, std::int32_t b) noexcept { return semiring_detail::wrap_add(a, b); }
};
struct WrongOne : semiring_detail::MaxMin<double> {
  static double one() noexcept { return 0.0; }
};

TEST(SemiringLawCheckerTest, ReportsBrokenOperationsWithTheirValues) {
  semiring_detail::SampleSpace<std::int32_t> ints{-1000, 1000, 1, {}};
  const auto sub = semiring_detail::check_laws<SubtractingAdd>(ints, 200, 7, 0.0);
  EXPECT_FALSE(sub.ok());
  EXPECT_TRUE(mentions(sub, "commutativity of ⊕ fails for (a, b) = (")) << first(sub);
  EXPECT_TRUE(mentions(sub, "associativity of ⊕"));
  EXPECT_FALSE(mentions(sub, "associativity of ⊗"));
  // Capped: 32 messages and a count of the rest.
  ASSERT_EQ(sub.violations.size(), semiring_detail::kMaxViolations + 1);
  EXPECT_NE(sub.violations.back().find("more violations"), std::string::npos);

  // Without saturation +inf is not absorbing: inf ⊗ a = inf fails, naming inf.
  ints.specials = {kMax32};
  const auto unsat = semiring_detail::check_laws<UnsaturatedMinPlus>(ints, 500, 7, 0.0);
  EXPECT_TRUE(mentions(unsat, "annihilation 0 ⊗ a = 0")) << first(unsat);
  EXPECT_TRUE(mentions(unsat, "2147483647"));
  EXPECT_TRUE(semiring_detail::check_laws<semiring_detail::MinPlus<std::int32_t>>(ints, 500, 7, 0.0).ok());

  const semiring_detail::SampleSpace<double> dyadic{-64, 64, 8, {-kInf, kInf}};
  const auto wrong_one = semiring_detail::check_laws<WrongOne>(dyadic, 200, 7, 0.0);
  EXPECT_TRUE(mentions(wrong_one, "identity 1 ⊗ a = a"));
}

TEST(SemiringLawCheckerTest, FloatToleranceGovernsInexactSumProduct) {
  // Tenths are not dyadic: (a + b) + c and a + (b + c) differ in the last bit for some triples.
  // Positive, so that no sum cancels to near zero where a relative tolerance means nothing.
  const semiring_detail::SampleSpace<double> tenths{1, 1000, 10, {}};
  using Ops = semiring_detail::SumProduct<double>;
  const auto exact = semiring_detail::check_laws<Ops>(tenths, 2000, 3, 0.0);
  EXPECT_FALSE(exact.ok());
  EXPECT_TRUE(mentions(exact, "associativity of ⊕") || mentions(exact, "distributivity"));
  EXPECT_TRUE(semiring_detail::check_laws<Ops>(tenths, 2000, 3, 1e-9).ok());
}

}  // namespace
}  // namespace mmsb
