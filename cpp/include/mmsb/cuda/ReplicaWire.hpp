#pragma once
/// The replication wire format of one tick (docs/format.md, "Replication wire format"): rank 0
/// lays a batch out (plan_wire, pack_wire); every other rank checks what it received before any
/// byte of it reaches a replica (check_wire_header, wire_runs). What a rank receives is treated as
/// hostile: a peer with a bug, other page sizes or another build must give a typed error, never
/// a write outside a replica page. Host code only, built in every configuration; fuzzed by
/// tests/fuzz/fuzz_replica_wire.cpp.
///
/// Layout, host byte order (every CUDA host is little endian): a WireHeader, broadcast alone;
/// then one body of header.body_bytes: `rows` WireRows, then the payload, each row's bytes at a
/// body position congruent to its page offset modulo kWireLane (the copy kernel then moves
/// 16-byte words), at most kWireLane - 1 bytes of zero padding before each.
///
/// Thread safety: pure functions of their arguments.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "mmsb/cuda/DeviceBackend.hpp"

namespace mmsb::cuda {

struct WireHeader {
  std::uint64_t rows = 0;        ///< row count
  std::uint64_t body_bytes = 0;  ///< the body: row table, padding and payload
  std::uint64_t tick = 0;        ///< 1 for the first batch a group sends, then +1 each
};
/// One row: `length` bytes at `offset` of replica page `page`, found at body position `source`.
struct WireRow {
  std::uint64_t page = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t source = 0;
};
static_assert(sizeof(WireHeader) == 24 && sizeof(WireRow) == 32, "the wire layout is fixed");

inline constexpr std::uint64_t kWireLane = 16;

/// One row of a tick's batch, as rank 0's caller gives it: `length` bytes at `offset` of replica
/// page `page`; its payload is the next `length` bytes of the batch payload.
struct ReplicaRow {
  std::uint64_t page = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

/// Rank 0: the row table of `rows` (replacing `table`'s content) and the header of tick `tick`.
/// The rows are assumed checked against the pages (Replicator::broadcast does). Throws
/// std::bad_alloc only.
WireHeader plan_wire(std::span<const ReplicaRow> rows, std::uint64_t tick, std::vector<WireRow>& table);

/// Rank 0: writes the body of `table` (from plan_wire) and `payload` (the rows' bytes in order)
/// into `body`, which holds the header's body_bytes. Padding bytes are zeroed.
void pack_wire(std::span<const WireRow> table, std::span<const std::byte> payload, std::span<std::byte> body);

/// Receiver: throws Error(Internal) naming the tick and sizes when `h` is not the header of tick
/// `expected_tick` or its rows cannot fit its body.
void check_wire_header(const WireHeader& h, std::uint64_t expected_tick);

/// Receiver: appends to `out` one run per row of `table` (a header that passed check_wire_header
/// and the body's first h.rows * 32 bytes), each row's replica address in `pages` (page i at
/// pages[i], holding page_sizes[i] bytes; both spans have one entry per page) with its payload's position in the body. Throws Error(Internal) naming
/// the first row whose page does not exist, whose bytes run past its page, or whose payload
/// lies outside the body or inside the row table; `out` is then as it was.
void wire_runs(std::span<const WireRow> table, const WireHeader& h, std::span<const std::uint64_t> page_sizes,
               std::span<std::byte* const> pages, std::vector<DeviceRun>& out);

}  // namespace mmsb::cuda
