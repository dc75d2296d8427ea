#include "mmsb/cuda/ReplicaWire.hpp"

#include <algorithm>
#include <cstring>

#include "mmsb/core/Error.hpp"

namespace mmsb::cuda {

WireHeader plan_wire(std::span<const ReplicaRow> rows, std::uint64_t tick, std::vector<WireRow>& table) {
  table.resize(rows.size());
  std::uint64_t at = rows.size() * sizeof(WireRow);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    at += (rows[i].offset % kWireLane + kWireLane - at % kWireLane) % kWireLane;
    table[i] = {rows[i].page, rows[i].offset, rows[i].length, at};
    at += rows[i].length;
  }
  return {rows.size(), at, tick};
}

void pack_wire(std::span<const WireRow> table, std::span<const std::byte> payload, std::span<std::byte> body) {
  const std::size_t table_bytes = table.size_bytes();
  if (table_bytes > 0) std::memcpy(body.data(), table.data(), table_bytes);
  std::uint64_t from = 0;
  std::uint64_t end = table_bytes;  // of the bytes written so far: padding between is zeroed
  for (const WireRow& w : table) {
    std::fill(body.begin() + static_cast<std::ptrdiff_t>(end), body.begin() + static_cast<std::ptrdiff_t>(w.source),
              std::byte{0});
    if (w.length > 0) std::memcpy(body.data() + w.source, payload.data() + from, w.length);
    from += w.length;
    end = w.source + w.length;
  }
}

void check_wire_header(const WireHeader& h, std::uint64_t expected_tick) {
  if (h.tick != expected_tick || h.rows > h.body_bytes / sizeof(WireRow)) {
    fail(ErrorCode::Internal, "Replicator.receive: malformed batch header (tick ", h.tick, ", expected ",
         expected_tick, "; ", h.rows, " rows in ", h.body_bytes, " bytes)");
  }
}

void wire_runs(std::span<const WireRow> table, const WireHeader& h, std::span<const std::uint64_t> page_sizes,
               std::span<std::byte* const> pages, std::vector<DeviceRun>& out) {
  const std::size_t before = out.size();
  const std::uint64_t table_bytes = table.size_bytes();
  out.reserve(before + table.size());
  for (std::size_t i = 0; i < table.size(); ++i) {
    const WireRow& w = table[i];
    // Each comparison is arranged so that no sum can wrap: every field is the sender's.
    const bool fits = w.page < page_sizes.size() && w.offset <= page_sizes[w.page] &&
                      w.length <= page_sizes[w.page] - w.offset && w.source >= table_bytes &&
                      w.source <= h.body_bytes && w.length <= h.body_bytes - w.source;
    if (!fits) {
      out.resize(before);
      fail(ErrorCode::Internal, "Replicator.receive: row ", i, " of tick ", h.tick, " does not fit (page ", w.page,
           ", ", w.length, " bytes at offset ", w.offset, ", payload at ", w.source, " of ", h.body_bytes, ")");
    }
    out.push_back({pages[w.page] + w.offset, w.source, w.length});
  }
}

}  // namespace mmsb::cuda
