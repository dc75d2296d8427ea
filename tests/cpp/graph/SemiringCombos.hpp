#pragma once
// The (semiring, dtype) pairs the reduce kernel supports, as GoogleTest parameters named
// "<semiring>_<dtype>": shared by the kernel tests (SemiringTest.cpp) and the law checks
// (SemiringLawTest.cpp), so both cover the same set.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "mmsb/graph/Semiring.hpp"
#include "mmsb/page/DType.hpp"

namespace mmsb::test {

inline constexpr DType kSemiringDTypes[] = {DType::Int32, DType::Int64, DType::Float32, DType::Float64, DType::Bool};

using SemiringCombo = std::tuple<SemiringKind, DType>;

inline std::vector<SemiringCombo> supported_combos() {
  std::vector<SemiringCombo> out;
  for (SemiringKind s : kAllSemirings) {
    for (DType d : kSemiringDTypes) {
      if (semiring_supports(s, d)) out.emplace_back(s, d);
    }
  }
  return out;
}

inline std::string combo_name(const ::testing::TestParamInfo<SemiringCombo>& info) {
  return std::string(semiring_name(std::get<0>(info.param))) + "_" + std::string(dtype_name(std::get<1>(info.param)));
}

}  // namespace mmsb::test
