#pragma once
// DevicePages: the bus's side of pages that live in device memory. It registers one Placement per
// location with the page table, moves bytes between host and device through the location's
// DeviceBackend, and keeps each device page's host mirror: a host copy refreshed on demand by
// reading back only the runs written since its last refresh, so reads (views, snapshots,
// checkpoints, recomputes on the host) never copy the whole page again after the first time.
//
// "unified" pages live in managed memory the host addresses directly: they get a placement (the
// memory comes from the backend) but no mirror and no transfers; on_device() is false for them.
// Thread safety: called under the bus commit lock; a placement's release (and its mirror's) may
// run on any thread (the last unpin of a deleted page).
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/delta/Delta.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/engine/DeviceStaging.hpp"
#include "mmsb/graph/Recompute.hpp"
#include "mmsb/page/PageTable.hpp"

namespace mmsb {

class DevicePlacement;

/// One row of a multi-page write: `length` bytes of the call's host buffer at `host_offset` go to
/// `offset` in a page of `place`, at `device`. It holds all a transfer needs, so the rows of a
/// batch are looked up in the page table once, not again for each pass over them.
struct DeviceRow {
  std::byte* device;  ///< the page's data + offset
  std::uint64_t offset;
  std::uint64_t host_offset;
  std::uint64_t length;
  std::uint8_t place;

  static DeviceRow of(const PageRecord& r, std::uint64_t offset, std::uint64_t host_offset,
                      std::uint64_t length) noexcept {
    return {r.data + offset, offset, host_offset, length, r.place};
  }
  /// The page's data (its block's address: the key of its mirror).
  std::byte* page_data() const noexcept { return device - offset; }
};

class DevicePages {
 public:
  explicit DevicePages(PageTable& table) : table_(table) {}

  /// The table's place for `location`: 0 for "cpu" or for any location when `host_only` (a
  /// read-only view of history keeps every page on the host); otherwise the location's
  /// placement, registered on first use. Throws Error(InvalidArgument) for a malformed location,
  /// Error(DeviceUnavailable) when no device serves it.
  std::uint8_t place(const std::string& location, bool host_only);
  /// True when the page's bytes are in device memory the host cannot address.
  bool on_device(const PageRecord& r) const noexcept { return device_place(r.place); }
  bool device_place(std::uint8_t place) const noexcept { return device_places_[place]; }

  /// Writes rows (in order; a later row wins where rows of one page overlap) from `host`, one
  /// transfer per device. Marks the rows' bytes stale in the mirrors. Rows on several devices:
  /// when a transfer throws, those before it are undone (their bytes read back first), so the
  /// devices hold what they held unless that undo fails too.
  void write(std::span<const DeviceRow> rows, std::span<const std::byte> host);
  /// A delta's runs into its page.
  void write(PageRecord& r, const Delta& d);
  /// Reads rows from their device pages into `host` (one transfer per device); a page whose
  /// mirror is up to date is read from the mirror instead.
  void read(std::span<const DeviceRow> rows, std::span<std::byte> host);
  /// Copies the runs of page `r` into `out`, one after another (a transaction's undo).
  void read(PageRecord& r, std::span<const Run> runs, std::byte* out);
  /// Rows writing `runs` of page `r` from a host buffer holding their bytes one after another.
  static std::vector<DeviceRow> rows_of(PageRecord& r, std::span<const Run> runs);
  /// The rows of batch `b` (checked: every page exists) that go to device pages, in row order,
  /// with host offsets into the batch's payload. Valid until the next call.
  std::span<const DeviceRow> device_rows(const DeltaBatchView& b);
  /// Whether any page of this bus may be on a device (a device location was used): batches check
  /// their rows only then.
  bool active() const noexcept { return active_; }
  /// The page's bytes on the host: the mirror, refreshed first (only the runs written since the
  /// last refresh are read back). Valid while the page's data lives; later writes leave it stale
  /// until the next call.
  const std::byte* host_bytes(const PageRecord& r);
  /// The host bytes of any page: its own data, or a device page's refreshed mirror.
  const std::byte* readable(const PageRecord& r) {
    if (on_device(r)) return host_bytes(r);
    host_access(r);
    return r.data;
  }
  /// Device code is about to use page `r` (a DLPack export to a CUDA consumer): a page in managed
  /// memory migrates to its device, queued on `stream`, until the host's next access through the
  /// bus (host_access). Other pages are left alone. Throws Error(DeviceUnavailable).
  void lend_to_device(const PageRecord& r, void* stream);
  /// The host is about to read or write page `r` in place: a managed page lent to device code
  /// migrates back first. One test when nothing was ever lent.
  void host_access(const PageRecord& r) {
    if (lent_) reclaim(r);
  }
  /// Whether any page was ever lent (batches check their rows only then).
  bool lent() const noexcept { return lent_; }

  /// Whether a built-in recompute of `out` from `parents` runs on the device: `out` lives in
  /// device memory the host cannot address, and every parent in the same device's memory.
  bool computes_on_device(const PageRecord& out, std::span<const PageRecord* const> parents) const noexcept;
  /// Runs the built-in recompute `fn` (copy, or reduce with `weights`) of page `id` (record
  /// `out`) from `parents` where they live (computes_on_device), into a scratch block of that
  /// device, and makes `delta` its diff against `out`'s bytes there. Only the changed bytes (and
  /// the diff's change mask) cross to the host: no mirror is read or refreshed, and `out` is not
  /// written. Throws Error(DeviceUnavailable / OutOfMemory); the scratch block is freed either way.
  void recompute(PageId id, const RecomputeSpec& fn, std::span<const double> weights, const PageRecord& out,
                 std::span<const PageRecord* const> parents, Delta& delta);

  /// Makes `delta` the diff of page `id` (record `out`, on a device) against `now`, device memory
  /// of the same device and size, computed there: only the change mask and the changed bytes are
  /// read back. Throws Error(DeviceUnavailable).
  void diff_on_device(PageId id, const PageRecord& out, std::byte* now, Delta& delta);
  /// A copy of device page `r` in a fresh block of its device (an edit on the device). Throws
  /// Error(OutOfMemory / DeviceUnavailable), nothing allocated then.
  std::unique_ptr<DeviceStaging> stage(const PageRecord& r);

  /// Copies all of page `r`'s bytes into `dst`, a fresh block of `place` (0: the host arena) not
  /// yet any page's: read from the device (or its clean mirror) or the host once, written once;
  /// counted in traffic(). Throws Error(DeviceUnavailable / OutOfMemory) as read() and write().
  void copy_page(PageRecord& r, std::uint8_t place, std::byte* dst);

  DeviceTraffic traffic() const noexcept { return traffic_; }
  /// Host bytes held by mirrors of device pages (live, or deleted and still pinned).
  std::uint64_t mirror_bytes() const;
  /// Bytes asked for by the blocks of this bus's pages outside the host arena.
  std::uint64_t device_bytes() const;
  /// Where page `r` (place != 0) lives.
  DevicePlace device_place_of(const PageRecord& r) const;
  /// Host bytes held by the per-call buffers kept between batches (a cache: bus.memory()).
  std::uint64_t scratch_bytes() const noexcept;
  /// Frees those buffers (gc); the next batch with device rows grows them again.
  void release_scratch() noexcept;

 private:
  DevicePlacement& placement_of(const PageRecord& r) const;
  void reclaim(const PageRecord& r);
  static std::vector<std::uint8_t> places_of(std::span<const DeviceRow> rows);
  // write() of the rows that go to device `place` (one transfer).
  void write_place(std::uint8_t place, std::span<const DeviceRow> rows, std::span<const std::byte> host);

  PageTable& table_;
  std::vector<std::shared_ptr<DevicePlacement>> placements_;  // registered ones, any kind
  std::vector<std::uint8_t> places_;                          // their places in the table
  DeviceTraffic traffic_;
  bool active_ = false;
  bool lent_ = false;  // lend_to_device ever ran
  std::array<bool, 256> device_places_{};  // by place: memory the host cannot address (asked per row)
  // Per-call buffers kept between calls: a batch of millions of rows would otherwise fault in
  // fresh pages for each of them on every call. They grow to the largest batch seen.
  std::vector<DeviceRow> rows_;
  std::vector<cuda::DeviceRun> runs_;
  cuda::OverlapScratch overlap_scratch_;
  std::vector<Run> diff_runs_;                // recompute(): the runs of its diff
  std::vector<const std::byte*> parent_data_;  // recompute(): the parents' device addresses
};

}  // namespace mmsb
