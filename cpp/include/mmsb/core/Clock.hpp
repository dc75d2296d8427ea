#pragma once
#include <cstdint>

namespace mmsb {

/// Wall clock in nanoseconds since the Unix epoch (for delta timestamps; never used for ordering).
std::uint64_t wall_clock_ns() noexcept;
/// Monotonic clock in nanoseconds (for durations).
std::uint64_t monotonic_ns() noexcept;

}  // namespace mmsb
