#pragma once
/// The places a page can live, as their location strings name them: "cpu", "unified" (managed
/// memory) and "cuda:N". One spelling per place (no leading zeros): a location names a page's
/// place, and "cuda:01" beside "cuda:1" would be two places. Shared by the API's checks, the log
/// decoder (a crafted record must not name a place no commit could) and the device registry.
#include <optional>
#include <string_view>

namespace mmsb {

inline constexpr int kCpuOrdinal = -2;
inline constexpr int kUnifiedOrdinal = -1;

/// kCpuOrdinal for "cpu", kUnifiedOrdinal for "unified", N >= 0 for "cuda:N"; nullopt for any
/// other string. Pure; any thread.
std::optional<int> location_ordinal(std::string_view location) noexcept;

}  // namespace mmsb
