#include "DevicePages.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"

namespace mmsb {
namespace {

// Past this many stale runs a mirror refresh reads the whole page: one large transfer beats
// thousands of tiny ones, and the list stays bounded however many writes pile up unread.
constexpr std::size_t kMaxStaleRuns = 4096;

struct FreeBytes {
  void operator()(std::byte* p) const noexcept { std::free(p); }
};

// The host copy of one device page and what of it is stale.
struct Mirror {
  std::unique_ptr<std::byte, FreeBytes> bytes;
  std::uint64_t size = 0;
  std::vector<Run> stale;
  bool whole = true;  // nothing valid yet, or too many stale runs to track
};

}  // namespace

// Device memory of one location, and the mirrors of the pages in it (keyed by device address, so
// a mirror lives exactly as long as its page's block: views of it stay valid after deletion).
class DevicePlacement final : public Placement {
 public:
  explicit DevicePlacement(cuda::DeviceBackend& backend) : backend_(backend) {}

  const std::string& location() const noexcept override { return backend_.location(); }
  cuda::DeviceBackend& backend() const noexcept { return backend_; }
  std::uint64_t requested() const noexcept { return requested_.load(std::memory_order_relaxed); }

  Arena::Block allocate(std::uint64_t bytes) override {
    const cuda::DevicePool::Block b = backend_.allocate(bytes);
    requested_.fetch_add(b.requested, std::memory_order_relaxed);
    return Arena::Block{b.data, b.requested, b.size_class, b.slab};
  }
  void release(const Arena::Block& block) noexcept override {
    {
      std::lock_guard g(mutex_);
      mirrors_.erase(block.data);
      lent_.erase(block.data);
    }
    requested_.fetch_sub(block.requested, std::memory_order_relaxed);
    backend_.release(cuda::DevicePool::Block{block.data, block.requested, block.size_class, block.slab});
  }
  void store(std::byte* dst, std::span<const std::byte> src) override {
    const cuda::DeviceRun run{dst, 0, src.size()};
    backend_.write({&run, 1}, src);
    std::lock_guard g(mutex_);
    if (auto it = mirrors_.find(dst); it != mirrors_.end()) it->second.whole = true;
  }

  // Records the bytes the rows of pages at `place` (this placement) write: one lock per call, one
  // lookup per run of rows on the same page; pages never mirrored have nothing to mark.
  void mark_stale(std::uint8_t place, std::span<const DeviceRow> rows) {
    std::lock_guard g(mutex_);
    if (mirrors_.empty()) return;
    std::byte* last = nullptr;
    Mirror* m = nullptr;
    for (const DeviceRow& row : rows) {
      if (row.place != place) continue;
      if (row.page_data() != last) {
        last = row.page_data();
        auto it = mirrors_.find(last);
        m = it == mirrors_.end() ? nullptr : &it->second;
      }
      if (m == nullptr || m->whole) continue;
      if (m->stale.size() >= kMaxStaleRuns) {
        m->whole = true;
        std::exchange(m->stale, {});  // freed, not just emptied
      } else {
        m->stale.push_back({row.offset, row.length});
      }
    }
  }

  // The page's mirror, created (all stale) on first use. The reference stays valid until the
  // block is released: unordered_map never moves its elements.
  Mirror& mirror(std::byte* data, std::uint64_t size) {
    std::lock_guard g(mutex_);
    auto [it, fresh] = mirrors_.try_emplace(data);
    if (fresh) {
      auto* p = static_cast<std::byte*>(std::aligned_alloc(64, (size + 63) / 64 * 64));
      if (p == nullptr) {
        mirrors_.erase(it);
        fail(ErrorCode::OutOfMemory, "no host memory for the ", size, "-byte mirror of a ", location(), " page");
      }
      it->second.bytes.reset(p);
      it->second.size = size;
    }
    return it->second;
  }

  // Managed memory handed to device code (a DLPack export): migrated there now, and back at the
  // host's next access through the bus (reclaim).
  void lend(std::byte* data, std::uint64_t size, void* stream) {
    backend_.prefetch(data, size, true, stream);
    std::lock_guard g(mutex_);
    lent_.insert(data);
  }
  void reclaim(std::byte* data, std::uint64_t size) {
    {
      std::lock_guard g(mutex_);
      if (lent_.erase(data) == 0) return;
    }
    backend_.prefetch(data, size, false, nullptr);
  }

  // A mirror with nothing stale, or nullptr.
  const std::byte* clean_mirror(std::byte* data) const {
    std::lock_guard g(mutex_);
    auto it = mirrors_.find(data);
    return it != mirrors_.end() && !it->second.whole && it->second.stale.empty() ? it->second.bytes.get() : nullptr;
  }

  std::uint64_t mirror_bytes() const {
    std::lock_guard g(mutex_);
    std::uint64_t n = 0;
    for (const auto& [data, m] : mirrors_) n += m.size;
    return n;
  }

 private:
  cuda::DeviceBackend& backend_;
  mutable std::mutex mutex_;
  std::unordered_map<std::byte*, Mirror> mirrors_;
  std::unordered_set<std::byte*> lent_;  // managed blocks migrated to the device (lend)
  std::atomic<std::uint64_t> requested_{0};  // released on any thread
};

std::uint8_t DevicePages::place(const std::string& location, bool host_only) {
  if (location == "cpu" || host_only) return 0;
  cuda::DeviceBackend& backend = cuda::device_backend(location);
  for (std::size_t i = 0; i < placements_.size(); ++i) {
    if (&placements_[i]->backend() == &backend) return places_[i];
  }
  active_ = active_ || !backend.host_accessible();
  auto p = std::make_shared<DevicePlacement>(backend);
  const std::uint8_t slot = table_.add_placement(p);
  device_places_[slot] = !backend.host_accessible();
  placements_.push_back(std::move(p));
  places_.push_back(slot);
  return slot;
}

DevicePlacement& DevicePages::placement_of(const PageRecord& r) const {
  return static_cast<DevicePlacement&>(*table_.placement(r.place));
}

std::vector<std::uint8_t> DevicePages::places_of(std::span<const DeviceRow> rows) {
  std::vector<std::uint8_t> places;
  for (const DeviceRow& row : rows) {
    if (!places.empty() && places.back() == row.place) continue;  // rows of one device in a row: no search
    if (std::find(places.begin(), places.end(), row.place) == places.end()) places.push_back(row.place);
  }
  return places;
}

std::vector<DeviceRow> DevicePages::rows_of(PageRecord& r, std::span<const Run> runs) {
  std::vector<DeviceRow> rows;
  rows.reserve(runs.size());
  std::uint64_t pos = 0;
  for (const Run& run : runs) {
    rows.push_back(DeviceRow::of(r, run.offset, pos, run.length));
    pos += run.length;
  }
  return rows;
}

std::span<const DeviceRow> DevicePages::device_rows(const DeltaBatchView& b) {
  rows_.clear();
  std::uint64_t pos = 0;
  for (std::size_t i = 0; i < b.rows(); ++i) {
    PageRecord& r = table_.record(b.page_ids[i]);
    if (on_device(r)) rows_.push_back(DeviceRow::of(r, b.offsets[i], pos, b.lengths[i]));
    pos += b.lengths[i];
  }
  return rows_;
}

void DevicePages::write(std::span<const DeviceRow> rows, std::span<const std::byte> host) {
  if (rows.empty()) return;
  const std::uint8_t first = rows.front().place;
  if (std::all_of(rows.begin(), rows.end(), [&](const DeviceRow& r) { return r.place == first; })) {
    return write_place(first, rows, host);  // the usual: one device, one transfer
  }
  // Several devices: one failing must not leave the others written (a failed change shows the
  // state before it). The bytes the earlier transfers overwrite are read first, and put back.
  const std::vector<std::uint8_t> places = places_of(rows);
  std::vector<DeviceRow> earlier;
  for (const DeviceRow& row : rows) {
    if (row.place != places.back()) earlier.push_back(row);
  }
  std::vector<std::byte> old(host.size());
  read(earlier, old);
  std::size_t written = 0;
  try {
    for (; written < places.size(); ++written) write_place(places[written], rows, host);
  } catch (...) {
    for (std::size_t k = 0; k < written; ++k) write_place(places[k], rows, old);
    throw;
  }
}

void DevicePages::write_place(std::uint8_t place, std::span<const DeviceRow> rows, std::span<const std::byte> host) {
  runs_.clear();
  for (const DeviceRow& row : rows) {
    if (row.place == place && row.length != 0) runs_.push_back({row.device, row.host_offset, row.length});
  }
  DevicePlacement& p = static_cast<DevicePlacement&>(*table_.placement(place));
  p.mark_stale(place, rows);
  const std::uint64_t bytes = cuda::resolve_overlaps(runs_, overlap_scratch_);
  p.backend().write(runs_, host);
  traffic_.bytes_written += bytes;
}

void DevicePages::write(PageRecord& r, const Delta& d) { write(rows_of(r, d.run_list()), d.payload()); }

void DevicePages::read(std::span<const DeviceRow> rows, std::span<std::byte> host) {
  std::vector<cuda::DeviceRun>& runs = runs_;
  for (const std::uint8_t place : places_of(rows)) {
    DevicePlacement& p = static_cast<DevicePlacement&>(*table_.placement(place));
    runs.clear();
    for (const DeviceRow& row : rows) {
      if (row.place != place || row.length == 0) continue;
      if (const std::byte* m = p.clean_mirror(row.page_data())) {
        std::memcpy(host.data() + row.host_offset, m + row.offset, row.length);
      } else {
        runs.push_back({row.device, row.host_offset, row.length});
      }
    }
    if (runs.empty()) continue;
    p.backend().read(runs, host);
    for (const cuda::DeviceRun& run : runs) traffic_.bytes_read += run.length;
  }
}

void DevicePages::read(PageRecord& r, std::span<const Run> runs, std::byte* out) {
  const std::vector<DeviceRow> rows = rows_of(r, runs);
  std::uint64_t total = 0;
  for (const Run& run : runs) total += run.length;
  read(rows, {out, total});
}

void DevicePages::copy_page(PageRecord& r, std::uint8_t place, std::byte* dst) {
  const bool to_device = device_place(place);
  std::vector<std::byte> staged(to_device ? r.size : 0);
  std::byte* host = to_device ? staged.data() : dst;
  if (on_device(r)) {
    const Run whole{0, r.size};
    read(r, {&whole, 1}, host);
  } else {
    std::memcpy(host, r.data, r.size);
  }
  if (to_device) {
    static_cast<DevicePlacement&>(*table_.placement(place)).store(dst, staged);
    traffic_.bytes_written += r.size;
  }
}

void DevicePages::lend_to_device(const PageRecord& r, void* stream) {
  if (r.place == 0 || on_device(r)) return;  // only managed memory migrates
  placement_of(r).lend(r.data, r.size, stream);
  lent_ = true;
}

void DevicePages::reclaim(const PageRecord& r) {
  if (r.place != 0 && !on_device(r)) placement_of(r).reclaim(r.data, r.size);
}

bool DevicePages::computes_on_device(const PageRecord& out, std::span<const PageRecord* const> parents) const noexcept {
  if (!on_device(out)) return false;
  return std::all_of(parents.begin(), parents.end(), [&](const PageRecord* p) { return p->place == out.place; });
}

void DevicePages::recompute(PageId id, const RecomputeSpec& fn, std::span<const double> weights,
                            const PageRecord& out, std::span<const PageRecord* const> parents, Delta& delta) {
  cuda::DeviceBackend& backend = placement_of(out).backend();
  // A copy's new bytes are its parent's: diffed in place, no scratch.
  const bool copy = fn.kind == RecomputeKind::Copy;
  const cuda::DevicePool::Block scratch = copy ? cuda::DevicePool::Block{} : backend.allocate(out.size);
  struct Release {
    cuda::DeviceBackend& backend;
    const cuda::DevicePool::Block& block;
    ~Release() {
      if (block.data != nullptr) backend.release(block);
    }
  } release{backend, scratch};
  std::byte* const now = copy ? parents.front()->data : scratch.data;
  if (!copy) {
    parent_data_.clear();
    for (const PageRecord* p : parents) parent_data_.push_back(p->data);
    backend.reduce(fn.semiring, out.dtype, parent_data_, weights, scratch.data, out.size / dtype_itemsize(out.dtype));
  }
  diff_on_device(id, out, now, delta);
  ++traffic_.device_recomputes;
}

void DevicePages::diff_on_device(PageId id, const PageRecord& out, std::byte* now, Delta& delta) {
  cuda::DeviceBackend& backend = placement_of(out).backend();
  diff_runs_.clear();
  backend.diff(out.data, now, out.size, diff_runs_);
  const std::span<std::byte> payload = Delta::assign_runs(delta, id, diff_runs_);
  runs_.clear();
  std::uint64_t at = 0;
  for (const Run& r : diff_runs_) {
    runs_.push_back({now + r.offset, at, r.length});
    at += r.length;
  }
  if (!runs_.empty()) backend.read(runs_, payload);
  traffic_.bytes_read += payload.size();
}

std::unique_ptr<DeviceStaging> DevicePages::stage(const PageRecord& r) {
  cuda::DeviceBackend& backend = placement_of(r).backend();
  auto staging = std::make_unique<DeviceStaging>(backend, backend.allocate(r.size), r.id,
                                                 r.epoch.load(std::memory_order_relaxed), r.place, r.size);
  backend.copy(staging->data(), r.data, r.size);
  return staging;
}

const std::byte* DevicePages::host_bytes(const PageRecord& r) {
  DevicePlacement& p = placement_of(r);
  Mirror& m = p.mirror(r.data, r.size);
  std::vector<cuda::DeviceRun> runs;
  if (m.whole) {
    runs.push_back({r.data, 0, r.size});
  } else {
    std::sort(m.stale.begin(), m.stale.end(), [](const Run& a, const Run& b) { return a.offset < b.offset; });
    for (const Run& s : m.stale) {
      if (s.length == 0) continue;
      if (!runs.empty() && runs.back().host_offset + runs.back().length >= s.offset) {
        runs.back().length = std::max(runs.back().length, s.offset + s.length - runs.back().host_offset);
      } else {
        runs.push_back({r.data + s.offset, s.offset, s.length});
      }
    }
  }
  if (!runs.empty()) {
    p.backend().read(runs, {m.bytes.get(), r.size});
    ++traffic_.mirror_syncs;
    for (const cuda::DeviceRun& run : runs) traffic_.mirror_bytes_synced += run.length;
  }
  // Only now: a failed read leaves the mirror marked stale.
  m.whole = false;
  m.stale.clear();
  return m.bytes.get();
}

std::uint64_t DevicePages::scratch_bytes() const noexcept {
  return rows_.capacity() * sizeof(DeviceRow) +
         (runs_.capacity() + overlap_scratch_.sorted.capacity() + overlap_scratch_.spare.capacity()) *
             sizeof(cuda::DeviceRun) +
         overlap_scratch_.granules.capacity() * sizeof(std::uint64_t) +
         overlap_scratch_.regions.capacity() * sizeof(overlap_scratch_.regions[0]) +
         diff_runs_.capacity() * sizeof(Run) + parent_data_.capacity() * sizeof(const std::byte*);
}

void DevicePages::release_scratch() noexcept {
  std::exchange(rows_, {});  // not `= {}`: that keeps a vector's capacity
  std::exchange(runs_, {});
  std::exchange(overlap_scratch_, {});
  std::exchange(diff_runs_, {});
  std::exchange(parent_data_, {});
}

std::uint64_t DevicePages::device_bytes() const {
  std::uint64_t n = 0;
  for (const auto& p : placements_) n += p->requested();
  return n;
}

DevicePlace DevicePages::device_place_of(const PageRecord& r) const {
  const cuda::DeviceBackend& b = placement_of(r).backend();
  return DevicePlace{!b.host_accessible(), b.host_accessible(), b.ordinal(), b.emulated()};
}

std::uint64_t DevicePages::mirror_bytes() const {
  std::uint64_t n = 0;
  for (const auto& p : placements_) n += p->mirror_bytes();
  return n;
}

}  // namespace mmsb
