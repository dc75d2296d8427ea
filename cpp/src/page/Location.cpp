#include "mmsb/page/Location.hpp"

#include <charconv>

namespace mmsb {

std::optional<int> location_ordinal(std::string_view location) noexcept {
  if (location == "cpu") return kCpuOrdinal;
  if (location == "unified") return kUnifiedOrdinal;
  constexpr std::string_view kPrefix = "cuda:";
  if (location.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  const std::string_view digits = location.substr(kPrefix.size());
  int n = -1;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  // One spelling per device: decimal digits only (from_chars takes a sign: "cuda:-0"), no leading 0.
  const bool canonical = !digits.empty() && (digits.front() >= '0' && digits.front() <= '9') &&
                         (digits.size() == 1 || digits.front() != '0');
  if (ec != std::errc{} || end != digits.data() + digits.size() || !canonical || n < 0) return std::nullopt;
  return n;
}

}  // namespace mmsb
