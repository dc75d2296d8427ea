#pragma once
/// Delta: a change to one page as canonical byte runs plus their payload.
///
/// Invariant: runs are sorted by offset, non-empty, non-overlapping and non-adjacent (touching
/// runs are merged), and payload.size() equals the sum of run lengths, in run order. Every
/// constructor establishes it, so two deltas with the same effect have the same representation.
/// Thread safety: a Delta is a value; concurrent const use is safe.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "mmsb/core/Types.hpp"

namespace mmsb {

struct Run {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t end() const noexcept { return offset + length; }
  bool operator==(const Run&) const = default;
};

class Delta {
 public:
  Delta() = default;

  /// One run of `data` at `offset`. Throws Error(InvalidDelta) if offset + size overflows.
  static Delta at(PageId page, std::uint64_t offset, std::span<const std::byte> data);
  /// at() into `out`, reusing its buffers (every single write of a bus goes through one); the
  /// commit fields are reset as by diff_into. On Error(InvalidDelta) `out` is unchanged; on
  /// std::bad_alloc it is unspecified but valid.
  static void at_into(Delta& out, PageId page, std::uint64_t offset, std::span<const std::byte> data);
  /// Many runs; `payload` holds their bytes back to back in the given order. Overlapping runs
  /// resolve per byte to the last one given (as if applied in order). Throws Error(InvalidDelta)
  /// if the column lengths differ, the lengths do not sum to payload.size(), or a run overflows.
  static Delta runs(PageId page, std::span<const std::uint64_t> offsets,
                    std::span<const std::uint64_t> lengths, std::span<const std::byte> payload);
  /// Byte mask over [0, mask.size()): a nonzero byte marks a byte to write. `data` is either dense
  /// (data.size() == mask.size(); the marked positions are taken) or sparse (data.size() == number
  /// of marked bytes, in order). Throws Error(InvalidDelta) for any other size.
  static Delta masked(PageId page, std::span<const std::uint8_t> mask, std::span<const std::byte> data);
  /// As masked(), with the mask packed 8 positions per byte (bit i of byte j marks byte 8j + i)
  /// covering [0, extent). Set bits at or past `extent` are rejected.
  static Delta masked_packed(PageId page, std::span<const std::uint8_t> bits, std::uint64_t extent,
                             std::span<const std::byte> data);
  /// The bytes of `now` that differ from `old` (same length), as runs (nearby runs coalesced when
  /// that stores fewer bytes; see diff_runs). Equal inputs give an empty delta.
  static Delta diff(PageId page, std::span<const std::byte> old, std::span<const std::byte> now);
  /// diff() into `out`, reusing its buffers (a propagation wave diffs every recompute); the
  /// commit fields (source, timestamp, lsn, epoch, expect_epoch) are reset.
  static void diff_into(Delta& out, PageId page, std::span<const std::byte> old, std::span<const std::byte> now);
  /// Makes `out` the delta of `runs` (sorted and disjoint, as a diff gives them) with its payload
  /// buffer sized for their bytes, which the caller fills (a diff computed on a device reads the
  /// changed bytes straight into it); the commit fields are reset as by diff_into. Returns the
  /// payload buffer. Throws Error(InvalidDelta) for runs out of order, overlapping or past 2^64
  /// (out unchanged), std::bad_alloc (out is then unspecified but valid).
  static std::span<std::byte> assign_runs(Delta& out, PageId page, std::span<const Run> runs);

  PageId page_id() const noexcept { return page_; }
  const std::vector<Run>& run_list() const noexcept { return runs_; }
  std::span<const std::byte> payload() const noexcept { return payload_; }
  bool empty() const noexcept { return runs_.empty(); }
  /// One past the last byte written (0 when empty).
  std::uint64_t extent() const noexcept { return runs_.empty() ? 0 : runs_.back().end(); }
  /// The size the page must have: extent(), or more when at() or runs() was given an empty run
  /// past the written bytes (an empty write still names a position, which must exist).
  std::uint64_t reach() const noexcept { return std::max(reach_, extent()); }

  /// Writes the runs into `page` (which must hold at least extent() bytes).
  void apply_to(std::byte* page) const noexcept;

  std::optional<Epoch> expect_epoch;  ///< commit fails with EpochConflict unless the page has it
  Source source = Source::User;
  std::uint64_t timestamp_ns = 0;  ///< assigned at commit
  Lsn lsn = 0;                     ///< assigned at commit
  Epoch epoch = 0;                 ///< resulting page epoch, assigned at commit

 private:
  Delta(PageId page, std::vector<Run> runs, std::vector<std::byte> payload)
      : page_(page), runs_(std::move(runs)), payload_(std::move(payload)) {}
  friend Delta merge(const Delta& first, const Delta& second);
  void reset_commit_fields() noexcept;

  PageId page_ = 0;
  std::vector<Run> runs_;
  std::vector<std::byte> payload_;
  std::uint64_t reach_ = 0;  // the largest run end given to at() or runs(), empty runs included
};

/// The delta equivalent to applying `first` then `second` (per-byte last writer wins).
/// Throws Error(InvalidDelta) if they target different pages.
Delta merge(const Delta& first, const Delta& second);

}  // namespace mmsb
