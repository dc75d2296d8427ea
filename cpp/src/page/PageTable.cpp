#include "mmsb/page/PageTable.hpp"

#include <algorithm>
#include <cstring>
#include <new>

#include "mmsb/core/Error.hpp"

namespace mmsb {
namespace {
constexpr std::size_t kMaxNameBytes = 1024;
constexpr std::size_t kMaxDims = 32;

// Erase never shrinks an unordered_map's bucket array, so after a mass deletion it keeps one
// pointer per bucket of the peak size. Shrinking only past 4x what the live entries need (and
// past a small floor) makes the O(size) rehash rare enough to be amortized over the deletions.
template <class Map>
void shrink_if_sparse(Map& map) noexcept {
  const double needed = static_cast<double>(map.size()) / double{map.max_load_factor()};
  if (map.bucket_count() <= 1024 || static_cast<double>(map.bucket_count()) <= 4 * needed) return;
  try {
    map.rehash(0);  // the smallest bucket count for the current size
  } catch (const std::bad_alloc&) {
    // Keeping the larger array is correct, only less frugal.
  }
}
}  // namespace

void PageTable::validate(const PageSpec& spec) const {
  validate_layout(spec);
  if (!spec.name.empty()) {
    if (PageId other = find_name(spec.name)) {
      fail(ErrorCode::InvalidArgument, "page name '", spec.name, "' is already used by page ",
           other, "; names are unique within a bus");
    }
  }
}

void PageTable::validate_layout(const PageSpec& spec) {
  if (!known_dtype(static_cast<std::uint8_t>(spec.dtype))) {
    fail(ErrorCode::InvalidArgument, "dtype code ", static_cast<unsigned>(spec.dtype), " is not a known dtype");
  }
  if (spec.size == 0) {
    fail(ErrorCode::InvalidArgument, "page size must be at least 1 byte; got 0");
  }
  if (spec.size > kMaxPageSize) {
    fail(ErrorCode::InvalidArgument, "page size ", spec.size, " bytes exceeds the limit of ",
         kMaxPageSize, " bytes (1 TiB); split the state into several pages");
  }
  if (spec.dtype == DType::Raw) {
    if (!spec.shape.empty()) {
      fail(ErrorCode::InvalidArgument, "a shape needs a dtype; raw pages are flat bytes");
    }
  } else {
    const std::size_t item = dtype_itemsize(spec.dtype);
    if (spec.shape.size() > kMaxDims) {
      fail(ErrorCode::InvalidArgument, "shape has ", spec.shape.size(), " dimensions; at most ",
           kMaxDims, " are supported");
    }
    if (spec.size % item != 0) {
      fail(ErrorCode::InvalidArgument, "page size ", spec.size, " is not a multiple of the ",
           dtype_name(spec.dtype), " item size ", item);
    }
    std::uint64_t elems = 1;
    for (std::uint64_t d : spec.shape) {
      if (d != 0 && elems > kMaxPageSize / d) {
        fail(ErrorCode::InvalidArgument, "shape is too large (more than 1 TiB of data)");
      }
      elems *= d;
    }
    if (!spec.shape.empty() && elems * item != spec.size) {
      fail(ErrorCode::InvalidArgument, "shape holds ", elems, " ", dtype_name(spec.dtype),
           " items (", elems * item, " bytes) but the page size is ", spec.size, " bytes");
    }
  }
  if (spec.name.size() > kMaxNameBytes) {
    fail(ErrorCode::InvalidArgument, "page name is ", spec.name.size(), " bytes; at most ",
         kMaxNameBytes, " are allowed");
  }
}

PageRecord& PageTable::create(const PageSpec& spec, std::uint8_t place) {
  validate(spec);
  if (next_id_ > kMaxPageId) {
    fail(ErrorCode::InvalidArgument, "this bus has used all ", kMaxPageId, " page ids (ids are never reused)");
  }
  ensure_next_chunk();
  const bool needs_info = spec.dtype != DType::Raw || !spec.name.empty() ||
                          !spec.metadata.empty() || spec.location != "cpu";
  Arena::Block block = place == 0 ? arena_.allocate(spec.size) : placement(place)->allocate(spec.size);
  const PageId id = next_id_;
  try {
    if (needs_info) {
      cold_dirty_ = true;
      PageInfo info{spec.name, spec.shape, spec.metadata, spec.location};
      if (spec.dtype != DType::Raw && info.shape.empty()) {
        info.shape.push_back(spec.size / dtype_itemsize(spec.dtype));
      }
      infos_.emplace(id, std::move(info));
    }
    if (!spec.name.empty()) names_.emplace(spec.name, id);
  } catch (...) {
    infos_.erase(id);
    release_block(place, block);
    throw;
  }
  PageRecord& r = slot(id);
  r.data = block.data;
  r.size = spec.size;
  r.requested = block.requested;
  r.size_class = block.size_class;
  r.slab = block.slab;
  r.dtype = spec.dtype;
  r.place = place;
  r.has_info = needs_info ? 1 : 0;
  r.epoch.store(0, std::memory_order_relaxed);
  r.last_lsn.store(0, std::memory_order_relaxed);
  r.refs.store(0, std::memory_order_relaxed);
  r.id = id;  // last: find() treats id 0 as an empty slot
  ++next_id_;
  ++live_;
  return r;
}

PageRecord& PageTable::restore(PageId id, const PageSpec& spec, std::span<const std::byte> data,
                               Epoch epoch, Lsn last_lsn, std::uint8_t place) {
  if (id < next_id_ || data.size() != spec.size) {
    fail(ErrorCode::InvalidArgument, "cannot restore page ", id, " (next id ", next_id_, ", ",
         data.size(), " bytes for a ", spec.size, "-byte page)");
  }
  reserve_ids_below(id);
  PageRecord& r = create(spec, place);
  if (place == 0) {
    std::memcpy(r.data, data.data(), data.size());
  } else {
    try {
      placement(place)->store(r.data, data);
    } catch (...) {
      discard_newest(r.id);
      throw;
    }
  }
  r.epoch.store(epoch, std::memory_order_relaxed);
  r.last_lsn.store(last_lsn, std::memory_order_relaxed);
  return r;
}

void PageTable::mark_skipped(PageRecord& r, PageId id) noexcept {
  // A used-and-deleted id: a slot that find() treats as deleted, never as empty.
  r.id = id;
  r.refs.store(PageRecord::kDeletedBit | PageRecord::kFreedBit, std::memory_order_relaxed);
}

// dead_chunks_ has room for every chunk (reserved as chunks_ grows): once deduplicated, a full
// list holds every chunk, `c` among them, so this never allocates.
void PageTable::count_dead(std::size_t c, int n) noexcept {
  dead_[c] = static_cast<std::uint16_t>(dead_[c] + n);
  if (n <= 0 || dead_[c] != kChunkRecords) return;
  if (dead_chunks_.size() == dead_chunks_.capacity()) dedupe_dead_chunks();
  if (dead_chunks_.size() < dead_chunks_.capacity()) dead_chunks_.push_back(c);
}

void PageTable::dedupe_dead_chunks() noexcept {
  std::sort(dead_chunks_.begin(), dead_chunks_.end());
  dead_chunks_.erase(std::unique(dead_chunks_.begin(), dead_chunks_.end()), dead_chunks_.end());
}

void PageTable::ensure_next_chunk() {
  const std::size_t c = (next_id_ - 1) / kChunkRecords;
  if (c < chunks_.size() && chunks_[c]) return;
  auto chunk = std::make_unique<PageRecord[]>(kChunkRecords);
  if (c == chunks_.size()) {
    dead_.reserve(c + 1);  // both grow or neither
    dead_chunks_.reserve(c + 1);
    chunks_.push_back(std::move(chunk));
    dead_.push_back(0);
    return;
  }
  const PageId first = c * kChunkRecords + 1;
  for (PageId id = first; id < next_id_; ++id) mark_skipped(chunk[id - first], id);
  chunks_[c] = std::move(chunk);
  count_dead(c, static_cast<int>(next_id_ - first));
  --skipped_chunks_;
}

void PageTable::reserve_ids_below(PageId id) {
  if (id <= next_id_) return;
  if (id - 1 > kMaxPageId) {
    fail(ErrorCode::InvalidArgument, "page id ", id - 1, " is past the largest page id ", kMaxPageId);
  }
  // Every chunk index up to id - 1's exists afterwards; the ones that only skipped ids fill stay
  // null. Room first, so that nothing changes if it cannot be had.
  const std::size_t last = (id - 2) / kChunkRecords;
  chunks_.reserve(last + 1);
  dead_.reserve(last + 1);
  dead_chunks_.reserve(last + 1);
  if (const std::size_t c = (next_id_ - 1) / kChunkRecords; c < chunks_.size() && chunks_[c]) {
    const PageId end = std::min<PageId>(id, (c + 1) * kChunkRecords + 1);
    for (PageId k = next_id_; k < end; ++k) mark_skipped(slot(k), k);
    count_dead(c, static_cast<int>(end - next_id_));
  }
  while (chunks_.size() <= last) {
    chunks_.emplace_back();
    dead_.push_back(0);
    ++skipped_chunks_;
  }
  next_id_ = id;
}

void PageTable::discard_newest(PageId id) noexcept {
  cold_dirty_ = true;  // cold-info bytes are recounted by the next stats()
  PageRecord& r = slot(id);
  if (const PageInfo* i = info(id); i != nullptr && !i->name.empty()) names_.erase(i->name);
  infos_.erase(id);
  free_data(r);
  r.id = 0;  // a never-used slot again
  r.size = 0;
  r.epoch.store(0, std::memory_order_relaxed);
  r.last_lsn.store(0, std::memory_order_relaxed);
  r.refs.store(0, std::memory_order_relaxed);
  --next_id_;
  --live_;
}

void PageTable::fail_not_found(PageId id) const {
  if (id != 0 && id < next_id_) {
    fail(ErrorCode::PageNotFound, "page ", id, " was deleted; page ids are never reused");
  }
  fail(ErrorCode::PageNotFound, "no page with id ", id, " (ids run from 1 to ", next_id_ - 1, ")");
}

PageId PageTable::find_name(std::string_view name) const noexcept {
  auto it = names_.find(std::string(name));
  return it == names_.end() ? 0 : it->second;
}

const PageInfo* PageTable::info(PageId id) const noexcept {
  auto it = infos_.find(id);
  return it == infos_.end() ? nullptr : &it->second;
}

PageInfo& PageTable::info_for_update(PageId id) {
  cold_dirty_ = true;  // cold-info bytes are recounted by the next stats()
  PageRecord& r = get(id);
  r.has_info = 1;
  return infos_[id];
}

void PageTable::erase(PageId id) {
  cold_dirty_ = true;  // cold-info bytes are recounted by the next stats()
  PageRecord& r = get(id);
  if (const PageInfo* i = info(id); i != nullptr && !i->name.empty()) names_.erase(i->name);
  infos_.erase(id);
  r.has_info = 0;
  --live_;
  count_dead((id - 1) / kChunkRecords, 1);
  const std::uint32_t before = r.refs.fetch_or(PageRecord::kDeletedBit, std::memory_order_acq_rel);
  if ((before & PageRecord::kPinMask) == 0) {
    free_data(r);
    r.refs.fetch_or(PageRecord::kFreedBit, std::memory_order_release);
  }
}

void PageTable::relocate(PageRecord& r, std::uint8_t place, const std::function<void(std::byte*)>& fill) {
  const Arena::Block block = place == 0 ? arena_.allocate(r.size) : placement(place)->allocate(r.size);
  try {
    fill(block.data);
  } catch (...) {
    release_block(place, block);
    throw;
  }
  const Arena::Block old{r.data, r.requested, r.size_class, r.slab};
  const std::uint8_t old_place = r.place;
  r.data = block.data;
  r.requested = block.requested;
  r.size_class = block.size_class;
  r.slab = block.slab;
  r.place = place;
  release_block(old_place, old);
}

void PageTable::set_location(PageId id, const std::string& location) {
  PageRecord& r = get(id);
  auto it = infos_.find(id);
  const bool plain = r.dtype == DType::Raw && location == "cpu" &&
                     (it == infos_.end() || (it->second.name.empty() && it->second.metadata.empty()));
  cold_dirty_ = true;  // cold-info bytes are recounted by the next stats()
  if (plain) {
    if (it != infos_.end()) infos_.erase(it);
    r.has_info = 0;
    return;
  }
  if (it == infos_.end()) it = infos_.emplace(id, PageInfo{}).first;
  it->second.location = location;
  r.has_info = 1;
}

void PageTable::undelete(PageId id, std::optional<PageInfo> info) {
  cold_dirty_ = true;  // cold-info bytes are recounted by the next stats()
  PageRecord& r = slot(id);
  r.refs.fetch_and(~PageRecord::kDeletedBit, std::memory_order_acq_rel);
  count_dead((id - 1) / kChunkRecords, -1);
  if (info) {
    if (!info->name.empty()) names_.emplace(info->name, id);
    infos_.emplace(id, std::move(*info));
    r.has_info = 1;
  }
  ++live_;
}

bool PageTable::unpin(PageRecord& r) noexcept {
  std::uint32_t before = r.refs.load(std::memory_order_relaxed);
  do {
    if ((before & PageRecord::kPinMask) == 0) return false;
  } while (!r.refs.compare_exchange_weak(before, before - 1, std::memory_order_acq_rel,
                                         std::memory_order_relaxed));
  if (before == (PageRecord::kDeletedBit | 1u)) {
    free_data(r);
    // The last touch of the record: release_dead_records may free it from here on.
    r.refs.fetch_or(PageRecord::kFreedBit, std::memory_order_release);
  }
  return true;
}

PageTable::~PageTable() {
  if (placements_.empty()) return;
  for_each_slot([&](PageRecord& r, PageId) {
    if (r.place != 0 && r.data != nullptr) free_data(r);
  });
}

void PageTable::free_data(PageRecord& r) noexcept {
  release_block(r.place, Arena::Block{r.data, r.requested, r.size_class, r.slab});
  r.data = nullptr;
}

void PageTable::release_block(std::uint8_t place, const Arena::Block& block) noexcept {
  if (place == 0) {
    arena_.release(block);
  } else {
    placement(place)->release(block);
  }
}

std::uint8_t PageTable::add_placement(std::shared_ptr<Placement> placement) {
  if (placements_.size() >= 255) fail(ErrorCode::InvalidArgument, "a bus holds pages in at most 255 locations");
  // Never reallocated after this: release() reads its page's slot from any thread, unlocked.
  placements_.reserve(255);
  placements_.push_back(std::move(placement));
  return static_cast<std::uint8_t>(placements_.size());
}

std::uint64_t PageTable::release_dead_records() noexcept {
  dedupe_dead_chunks();  // a chunk undeleted and deleted again is listed twice
  std::uint64_t released = 0;
  std::size_t kept = 0;
  for (const std::size_t c : dead_chunks_) {
    if (!chunks_[c] || dead_[c] != kChunkRecords) continue;  // released already, or undeleted since
    const PageRecord* chunk = chunks_[c].get();
    const bool freed = std::all_of(chunk, chunk + kChunkRecords, [](const PageRecord& r) {
      return r.refs.load(std::memory_order_acquire) == (PageRecord::kDeletedBit | PageRecord::kFreedBit);
    });
    if (!freed) {
      dead_chunks_[kept++] = c;  // pinned: looked at again next time
      continue;
    }
    chunks_[c].reset();
    ++skipped_chunks_;
    released += kChunkRecords * sizeof(PageRecord);
  }
  dead_chunks_.resize(kept);
  return released;
}

ArenaTrim PageTable::trim() noexcept {
  cold_dirty_ = true;  // cold-info bytes are recounted by the next stats()
  shrink_if_sparse(names_);
  shrink_if_sparse(infos_);
  return arena_.trim();
}

void PageTable::check_consistency(std::vector<std::string>& problems) {
  std::uint64_t live = 0;
  for_each_slot([&](PageRecord& r, PageId id) {
    if (r.id != id) {
      problems.push_back("page slot " + std::to_string(id) + " holds id " + std::to_string(r.id));
      return;
    }
    if (!r.live()) return;
    ++live;
    if (r.data == nullptr || r.size == 0) problems.push_back("live page " + std::to_string(id) + " has no data");
    if ((r.has_info != 0) != (infos_.count(id) != 0)) {
      problems.push_back("page " + std::to_string(id) + " info flag disagrees with the info table");
    }
  });
  if (live != live_) {
    problems.push_back("live page count " + std::to_string(live_) + " but " + std::to_string(live) + " live records");
  }
  for (const auto& [id, info] : infos_) {
    const PageRecord* r = find(id);
    if (r == nullptr) problems.push_back("orphan info for deleted or unknown page " + std::to_string(id));
  }
  for (const auto& [name, id] : names_) {
    const PageInfo* i = info(id);
    if (find(id) == nullptr || i == nullptr || i->name != name) {
      problems.push_back("orphan name '" + name + "' -> page " + std::to_string(id));
    }
  }
}

PageTableStats PageTable::stats() const {
  PageTableStats s;
  s.live_pages = live_;
  // Ids in skipped (unallocated) chunks take no record memory.
  s.record_bytes = (next_id_ - 1 - skipped_chunks_ * kChunkRecords) * sizeof(PageRecord);
  s.record_slack_bytes = (chunks_.size() - skipped_chunks_) * kChunkRecords * sizeof(PageRecord) - s.record_bytes;
  s.arena = arena_.stats();
  if (!cold_dirty_) {  // a walk over every named or typed page is too slow for each memory()
    s.info_bytes = cold_info_bytes_;
    s.name_index_bytes = cold_name_bytes_;
    return s;
  }
  for (const auto& [id, info] : infos_) {
    s.info_bytes += sizeof(std::pair<const PageId, PageInfo>) + 2 * sizeof(void*) +
                    info.name.capacity() + info.shape.capacity() * sizeof(std::uint64_t);
    for (const auto& [k, v] : info.metadata) {
      s.info_bytes += 4 * sizeof(void*) + sizeof(std::pair<const std::string, MetaValue>) +
                      k.capacity() + v.value.capacity();
    }
  }
  // An empty map's single bucket lives inside the map object (libstdc++): no heap bytes.
  s.name_index_bytes = names_.bucket_count() > 1 ? names_.bucket_count() * sizeof(void*) : 0;
  for (const auto& [name, id] : names_) {
    s.name_index_bytes += sizeof(std::pair<const std::string, PageId>) + sizeof(void*) + name.capacity();
  }
  cold_info_bytes_ = s.info_bytes;
  cold_name_bytes_ = s.name_index_bytes;
  cold_dirty_ = false;
  return s;
}

}  // namespace mmsb
