#pragma once
/// Basic identifiers shared by every layer.
#include <cstdint>
#include <string_view>

namespace mmsb {

/// Page identity: assigned by the bus from 1 upward, never reused within a bus. 0 means "none".
using PageId = std::uint64_t;
/// Log sequence number: +1 per committed record that changes the bus. 0 is the empty bus.
using Lsn = std::uint64_t;
/// Per-page version: 0 at creation, +1 per committed delta to the page. Never goes backwards.
using Epoch = std::uint64_t;

/// Where a delta came from; kept with the delta for history and provenance.
enum class Source : std::uint8_t { User = 0, Propagation = 1, Replay = 2, Remote = 3 };

/// Whether `code` is a Source: the log's decoder and every call that takes one check it, so that
/// nothing a reader would refuse is ever written.
constexpr bool known_source(std::uint8_t code) noexcept { return code <= static_cast<std::uint8_t>(Source::Remote); }
/// Lower-case name used by the Python API ("user", "propagation", ...).
std::string_view source_name(Source s) noexcept;
/// Parses a name produced by source_name(); throws Error(InvalidArgument) on anything else.
Source parse_source(std::string_view name);

}  // namespace mmsb
