#include "mmsb/core/Clock.hpp"
#include "mmsb/core/CpuFeatures.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/core/Types.hpp"

#include <chrono>
#include <cstdlib>
#include <cstring>

namespace mmsb {

std::string_view source_name(Source s) noexcept {
  switch (s) {
    case Source::User: return "user";
    case Source::Propagation: return "propagation";
    case Source::Replay: return "replay";
    case Source::Remote: return "remote";
  }
  return "user";
}

Source parse_source(std::string_view name) {
  for (Source s : {Source::User, Source::Propagation, Source::Replay, Source::Remote}) {
    if (source_name(s) == name) return s;
  }
  fail(ErrorCode::InvalidArgument, "unknown delta source '", name,
       "'; expected one of: user, propagation, replay, remote");
}

const char* error_class_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::InvalidArgument: return "InvalidArgumentError";
    case ErrorCode::PageNotFound: return "PageNotFoundError";
    case ErrorCode::InvalidDelta: return "InvalidDeltaError";
    case ErrorCode::EpochConflict: return "EpochConflictError";
    case ErrorCode::GraphCycle: return "GraphCycleError";
    case ErrorCode::Graph: return "GraphError";
    case ErrorCode::Propagation: return "PropagationError";
    case ErrorCode::LogCorrupt: return "LogCorruptError";
    case ErrorCode::Durability: return "DurabilityError";
    case ErrorCode::BusLocked: return "BusLockedError";
    case ErrorCode::HistoryUnavailable: return "HistoryUnavailableError";
    case ErrorCode::QueueFull: return "QueueFullError";
    case ErrorCode::Closed: return "ClosedError";
    case ErrorCode::DeviceUnavailable: return "DeviceUnavailableError";
    case ErrorCode::OutOfMemory: return "OutOfMemoryError";
    case ErrorCode::Internal: return "MmsbError";
    case ErrorCode::ReadOnly: return "ReadOnlyError";
  }
  return "MmsbError";
}

namespace {
SimdLevel detect_simd() noexcept {
  const char* forced = std::getenv("MMSB_SIMD");
  if (forced != nullptr && std::strcmp(forced, "scalar") == 0) return SimdLevel::Scalar;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) return SimdLevel::Avx2;
#endif
  return SimdLevel::Scalar;
}
}  // namespace

SimdLevel simd_level() noexcept {
  static const SimdLevel level = detect_simd();
  return level;
}

std::string_view simd_level_name(SimdLevel level) noexcept {
  return level == SimdLevel::Avx2 ? "avx2" : "scalar";
}

std::uint64_t wall_clock_ns() noexcept {
  using namespace std::chrono;
  return static_cast<std::uint64_t>(
      duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count());
}

std::uint64_t monotonic_ns() noexcept {
  using namespace std::chrono;
  return static_cast<std::uint64_t>(
      duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count());
}

}  // namespace mmsb
