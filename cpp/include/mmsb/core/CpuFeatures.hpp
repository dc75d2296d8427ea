#pragma once
/// Run-time CPU feature detection, so one binary uses AVX2 where present and stays correct on
/// older x86-64 and other architectures.
#include <string_view>

namespace mmsb {

enum class SimdLevel { Scalar, Avx2 };

/// Best SIMD level usable by this process; detected once, thread safe. The environment variable
/// MMSB_SIMD=scalar forces the portable path (tests use it to cover both).
SimdLevel simd_level() noexcept;
std::string_view simd_level_name(SimdLevel level) noexcept;

}  // namespace mmsb
