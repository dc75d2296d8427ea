// PageTable: id assignment, name uniqueness, spec validation, deletion with pins, and record /
// data stability (views hold raw pointers into both).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/page/PageTable.hpp"

namespace mmsb {
namespace {

PageSpec raw(std::uint64_t size, std::string name = {}) {
  PageSpec s;
  s.size = size;
  s.name = std::move(name);
  return s;
}

PageSpec typed(std::uint64_t size, DType dtype, std::vector<std::uint64_t> shape = {}) {
  PageSpec s;
  s.size = size;
  s.dtype = dtype;
  s.shape = std::move(shape);
  return s;
}

// What a failed call must leave untouched.
struct TableState {
  PageId next_id;
  std::uint64_t live;
  std::uint64_t live_blocks;
  std::uint64_t requested;
  bool operator==(const TableState&) const = default;
};
TableState state_of(const PageTable& t) {
  const PageTableStats s = t.stats();
  return {t.next_id(), t.live_count(), s.arena.live_blocks, s.arena.requested_bytes};
}

TEST(PageTableTest, IdsStartAtOneAndIncrease) {
  PageTable t;
  EXPECT_EQ(t.next_id(), 1u);
  for (PageId want = 1; want <= 10; ++want) {
    PageRecord& r = t.create(raw(want * 10));
    EXPECT_EQ(r.id, want);
    EXPECT_EQ(r.size, want * 10);
    EXPECT_EQ(r.epoch.load(), 0u);
    EXPECT_EQ(r.dtype, DType::Raw);
  }
  EXPECT_EQ(t.live_count(), 10u);
  EXPECT_EQ(t.find(0), nullptr);
  EXPECT_EQ(t.find(11), nullptr);
}

TEST(PageTableTest, IdsNeverReusedAfterErase) {
  PageTable t;
  std::vector<PageId> seen;
  for (int round = 0; round < 50; ++round) {
    const PageId id = t.create(raw(64)).id;
    EXPECT_TRUE(std::find(seen.begin(), seen.end(), id) == seen.end()) << id;
    seen.push_back(id);
    if (round % 2 == 0) t.erase(id);
  }
  EXPECT_EQ(seen.back(), 50u);
  EXPECT_EQ(t.live_count(), 25u);
}

TEST(PageTableTest, NewPagesAreZeroFilledAndAligned) {
  PageTable t;
  for (std::uint64_t n : {1u, 63u, 4097u, 300'000u}) {
    const PageRecord& r = t.create(raw(n));
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(r.data) % 64, 0u);
    EXPECT_TRUE(std::all_of(r.data, r.data + n, [](std::byte b) { return b == std::byte{0}; }));
  }
}

TEST(PageTableTest, DuplicateNameRejectedAndTableUnchanged) {
  PageTable t;
  const PageId a = t.create(raw(16, "a")).id;
  const TableState before = state_of(t);
  const std::string msg = test::expect_error(ErrorCode::InvalidArgument, [&] { t.create(raw(32, "a")); });
  EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
  EXPECT_EQ(state_of(t), before);
  EXPECT_EQ(t.find_name("a"), a);
  EXPECT_EQ(t.get(a).size, 16u);
  // The failed create did not consume an id.
  EXPECT_EQ(t.create(raw(8, "b")).id, a + 1);
}

TEST(PageTableTest, NameFreedByEraseCanBeReused) {
  PageTable t;
  const PageId a = t.create(raw(16, "x")).id;
  t.erase(a);
  EXPECT_EQ(t.find_name("x"), 0u);
  const PageId b = t.create(raw(16, "x")).id;
  EXPECT_NE(a, b);
  EXPECT_EQ(t.find_name("x"), b);
}

TEST(PageTableTest, ValidateRejectsBadSpecs) {
  PageTable t;
  t.create(raw(8, "taken"));
  PageSpec too_many_dims = typed(1, DType::UInt8, std::vector<std::uint64_t>(33, 1));
  const std::pair<PageSpec, const char*> bad[] = {
      {raw(0), "at least 1 byte"},
      {raw(PageTable::kMaxPageSize + 1), "exceeds the limit"},
      {typed(10, DType::Float32), "not a multiple"},
      {typed(16, DType::Float32, {3}), "shape holds 3"},
      {typed(16, DType::Float32, {2, 3}), "shape holds 6"},
      {typed(16, DType::Int16, {0}), "shape holds 0"},
      {typed(64, DType::Float64, {std::uint64_t{1} << 40, std::uint64_t{1} << 40}), "too large"},
      {too_many_dims, "dimensions"},
      {[] { PageSpec s = raw(16); s.shape = {16}; return s; }(), "needs a dtype"},
      {raw(8, std::string(1025, 'n')), "1025 bytes"},
      {raw(8, "taken"), "already used"},
  };
  const TableState before = state_of(t);
  for (const auto& [spec, needle] : bad) {
    const std::string msg = test::expect_error(ErrorCode::InvalidArgument, [&] { t.validate(spec); });
    EXPECT_NE(msg.find(needle), std::string::npos) << "want '" << needle << "' in: " << msg;
    test::expect_error(ErrorCode::InvalidArgument, [&] { t.create(spec); });
    EXPECT_EQ(state_of(t), before) << needle;
  }
}

TEST(PageTableTest, ValidateAcceptsGoodSpecs) {
  PageTable t;
  t.validate(raw(PageTable::kMaxPageSize));
  t.validate(typed(24, DType::Float64, {3}));
  t.validate(typed(24, DType::Float32, {2, 3}));
  t.validate(typed(16, DType::Complex128));
  t.validate(raw(1, std::string(1024, 'n')));
  EXPECT_EQ(t.next_id(), 1u);
}

TEST(PageTableTest, TypedPageGetsOneDimensionalDefaultShape) {
  PageTable t;
  const PageId id = t.create(typed(40, DType::Int32)).id;
  ASSERT_NE(t.info(id), nullptr);
  EXPECT_EQ(t.info(id)->shape, std::vector<std::uint64_t>{10});
  EXPECT_EQ(t.get(id).dtype, DType::Int32);
  const PageId anon = t.create(raw(40)).id;
  EXPECT_EQ(t.info(anon), nullptr) << "anonymous raw pages carry no cold info";
}

TEST(PageTableTest, EraseMakesPageUnreachable) {
  PageTable t;
  const PageId id = t.create(raw(64, "gone")).id;
  t.erase(id);
  EXPECT_EQ(t.find(id), nullptr);
  EXPECT_EQ(t.info(id), nullptr);
  EXPECT_EQ(t.live_count(), 0u);
  const std::string msg = test::expect_error(ErrorCode::PageNotFound, [&] { t.get(id); });
  EXPECT_NE(msg.find("deleted"), std::string::npos) << msg;
  test::expect_error(ErrorCode::PageNotFound, [&] { t.erase(id); });
  const std::string unknown = test::expect_error(ErrorCode::PageNotFound, [&] { t.get(99); });
  EXPECT_NE(unknown.find("99"), std::string::npos) << unknown;
  EXPECT_EQ(unknown.find("deleted"), std::string::npos) << "never-created ids are not 'deleted'";
  test::expect_error(ErrorCode::PageNotFound, [&] { t.get(0); });
}

TEST(PageTableTest, EraseWithoutPinsFreesData) {
  PageTable t;
  const PageId id = t.create(raw(1000)).id;
  EXPECT_EQ(t.stats().arena.live_blocks, 1u);
  t.erase(id);
  EXPECT_EQ(t.stats().arena.live_blocks, 0u);
  EXPECT_EQ(t.stats().arena.requested_bytes, 0u);
}

TEST(PageTableTest, PinKeepsDataAliveUntilLastUnpin) {
  PageTable t;
  PageRecord& r = t.create(raw(1000));
  const PageId id = r.id;
  std::memset(r.data, 0x5A, r.size);
  std::byte* data = r.data;
  PageTable::pin(r);
  PageTable::pin(r);
  t.erase(id);
  EXPECT_EQ(t.find(id), nullptr);
  EXPECT_EQ(t.stats().arena.live_blocks, 1u) << "pinned data freed at erase";
  // A new page of the same class must not be handed the pinned block.
  PageRecord& other = t.create(raw(1000));
  EXPECT_NE(other.data, data);
  std::memset(other.data, 0x11, other.size);
  EXPECT_TRUE(std::all_of(data, data + 1000, [](std::byte b) { return b == std::byte{0x5A}; }));
  t.unpin(r);
  EXPECT_EQ(t.stats().arena.live_blocks, 2u) << "freed while still pinned once";
  EXPECT_TRUE(std::all_of(data, data + 1000, [](std::byte b) { return b == std::byte{0x5A}; }));
  t.unpin(r);
  EXPECT_EQ(t.stats().arena.live_blocks, 1u) << "last unpin must free the data";
}

TEST(PageTableTest, UnpinOfLivePageFreesNothing) {
  PageTable t;
  PageRecord& r = t.create(raw(64));
  PageTable::pin(r);
  t.unpin(r);
  EXPECT_EQ(t.stats().arena.live_blocks, 1u);
  EXPECT_NE(t.find(r.id), nullptr);
}

TEST(PageTableTest, ForEachLiveVisitsInIdOrderSkippingErased) {
  PageTable t;
  for (int i = 0; i < 20; ++i) t.create(raw(8));
  for (PageId id : {1u, 5u, 6u, 20u}) t.erase(id);
  std::vector<PageId> seen;
  t.for_each_live([&](PageRecord& r) { seen.push_back(r.id); });
  std::vector<PageId> want;
  for (PageId id = 1; id <= 20; ++id) {
    if (id != 1 && id != 5 && id != 6 && id != 20) want.push_back(id);
  }
  EXPECT_EQ(seen, want);
}

// Skipped ids (a checkpoint's next id, a log's creation far ahead) become used-and-deleted ids;
// whole chunks of them take no memory, pages on either side of a gap work as usual, and a gap
// within one chunk, across a chunk boundary or up to the last id all keep the table consistent.
TEST(PageTableTest, ReservedIdGapsAreDeletedIdsAndWholeChunksCostNothing) {
  constexpr PageId K = PageTable::kChunkRecords;
  struct Case {
    PageId below;  // reserve_ids_below(below) after page 1 (and 2, 3) exist
    std::uint64_t chunks;  // record chunks allocated once a page is created after the gap
  };
  for (const Case c : {Case{10, 1}, Case{K, 1}, Case{K + 1, 2}, Case{3 * K + 7, 2},
                       Case{PageTable::kMaxPageId, 2}}) {
    SCOPED_TRACE("reserve below " + std::to_string(c.below));
    PageTable t;
    for (int i = 0; i < 3; ++i) t.create(raw(8));
    t.erase(2);
    t.reserve_ids_below(c.below);
    EXPECT_EQ(t.next_id(), c.below);
    for (const PageId id : {PageId{2}, PageId{4}, c.below / 2, c.below - 1}) {
      if (id > 3 || id == 2) {
        EXPECT_EQ(t.find(id), nullptr) << id;
      }
    }
    PageRecord& r = t.create(raw(16));
    EXPECT_EQ(r.id, c.below);
    EXPECT_EQ(t.find(c.below), &r);
    // prefetch() (batch validation's, on ids not yet checked) takes any id: ones in skipped
    // chunks, past the last, 0; ASan would see a read outside the chunk list.
    for (const PageId id : {PageId{0}, PageId{1}, c.below / 2, c.below, c.below + 1, PageTable::kMaxPageId + 1,
                            ~PageId{0}}) {
      t.prefetch(id);
    }
    EXPECT_EQ(t.find(1)->id, 1u);
    EXPECT_EQ(t.find(c.below - 1) == nullptr, c.below - 1 != 3);
    std::vector<PageId> live;
    t.for_each_live([&](PageRecord& p) { live.push_back(p.id); });
    EXPECT_EQ(live, (std::vector<PageId>{1, 3, c.below}));
    const PageTableStats s = t.stats();
    EXPECT_EQ(s.record_bytes + s.record_slack_bytes, c.chunks * K * sizeof(PageRecord));
    std::vector<std::string> problems;
    t.check_consistency(problems);
    EXPECT_TRUE(problems.empty()) << problems.front();
  }
}

TEST(PageTableTest, IdsPastTheLastAreRefusedAndTheTableIsUnchanged) {
  PageTable t;
  t.create(raw(8));
  const TableState before = state_of(t);
  const std::string msg = test::expect_error(ErrorCode::InvalidArgument,
                                             [&] { t.reserve_ids_below(PageTable::kMaxPageId + 2); });
  EXPECT_NE(msg.find(std::to_string(PageTable::kMaxPageId)), std::string::npos) << msg;
  EXPECT_EQ(state_of(t), before);
  t.reserve_ids_below(PageTable::kMaxPageId);
  EXPECT_EQ(t.create(raw(8)).id, PageTable::kMaxPageId);
  const TableState full = state_of(t);
  test::expect_error(ErrorCode::InvalidArgument, [&] { t.create(raw(8)); });
  EXPECT_EQ(state_of(t), full);
}

std::string page_name(std::size_t i) {
  std::string name = "p";
  name += std::to_string(i);
  return name;
}

TEST(PageTableTest, RecordsAndDataNeverMove) {
  // More pages than one record chunk, so chunk growth is covered.
  constexpr std::size_t kPages = 10'000;
  PageTable t;
  std::vector<PageRecord*> records;
  std::vector<std::byte*> datas;
  for (std::size_t i = 0; i < kPages; ++i) {
    PageRecord& r = t.create(raw(1 + i % 200, i % 3 == 0 ? page_name(i) : ""));
    std::memset(r.data, static_cast<int>(i & 0xFF), r.size);
    records.push_back(&r);
    datas.push_back(r.data);
  }
  for (std::size_t i = 0; i < kPages; ++i) {
    const PageId id = i + 1;
    ASSERT_EQ(t.find(id), records[i]) << id;
    ASSERT_EQ(records[i]->data, datas[i]) << id;
    const std::byte want{static_cast<std::uint8_t>(i & 0xFF)};
    ASSERT_TRUE(std::all_of(datas[i], datas[i] + records[i]->size, [&](std::byte b) { return b == want; }))
        << "page " << id << " was overwritten";
    if (i % 3 == 0) {
      ASSERT_EQ(t.find_name(page_name(i)), id);
    }
  }
  EXPECT_EQ(t.stats().live_pages, kPages);
}

TEST(PageTableTest, InfoForUpdateCreatesInfo) {
  PageTable t;
  const PageId id = t.create(raw(8)).id;
  t.info_for_update(id).metadata["k"] = MetaValue{"v", false};
  ASSERT_NE(t.info(id), nullptr);
  EXPECT_EQ(t.info(id)->metadata.at("k").value, "v");
  EXPECT_EQ(t.get(id).has_info, 1);
  t.erase(id);
  test::expect_error(ErrorCode::PageNotFound, [&] { t.info_for_update(id); });
}

std::uintptr_t slab_of(const std::byte* p) {
  return reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{Arena::kSlabBytes} - 1);
}

bool filled_with(const PageRecord& r, std::uint8_t value) {
  return std::all_of(r.data, r.data + r.size, [&](std::byte b) { return b == std::byte{value}; });
}

// The GC path: deleting most named pages, then trim(), gives their slabs back (but not the slab
// of a deleted page still pinned by a view), shrinks the name index, and leaves every surviving
// page, name and info exactly as it was.
TEST(PageTableTest, TrimReleasesSlabsOfDeletedPagesOnly) {
  constexpr std::size_t kPages = 8192;  // 2 KiB pages: 1024 per slab, 8 slabs
  constexpr PageId kKeepFrom = 8001;    // pages 1..8000 are deleted
  constexpr PageId kPinned = 100;
  PageTable t;
  std::vector<PageRecord*> records;
  for (std::size_t i = 0; i < kPages; ++i) {
    PageSpec spec = typed(2048, DType::UInt8);
    spec.name = page_name(i + 1);
    PageRecord& r = t.create(spec);
    std::memset(r.data, static_cast<int>((i + 1) & 0xFF), r.size);
    records.push_back(&r);
  }
  PageRecord& pinned = *records[kPinned - 1];
  std::byte* pinned_data = pinned.data;
  PageTable::pin(pinned);
  std::map<std::uintptr_t, bool> slab_in_use;  // every slab -> holds a live or pinned page
  for (PageRecord* r : records) {
    const bool keep = r->id >= kKeepFrom || r->id == kPinned;
    slab_in_use[slab_of(r->data)] |= keep;
  }
  ASSERT_EQ(slab_in_use.size(), 8u);
  const std::uint64_t expect_released = static_cast<std::uint64_t>(
      std::count_if(slab_in_use.begin(), slab_in_use.end(), [](const auto& kv) { return !kv.second; }));
  ASSERT_EQ(expect_released, 6u);
  for (PageId id = 1; id < kKeepFrom; ++id) t.erase(id);
  const PageInfo* kept_info = t.info(kKeepFrom);
  ASSERT_NE(kept_info, nullptr);

  const PageTableStats before = t.stats();
  const ArenaTrim trimmed = t.trim();
  const PageTableStats after = t.stats();
  EXPECT_EQ(trimmed.slabs_released, expect_released);
  EXPECT_EQ(trimmed.bytes_released, expect_released * Arena::kSlabBytes);
  EXPECT_EQ(after.arena.reserved_bytes, before.arena.reserved_bytes - trimmed.bytes_released);
  EXPECT_EQ(after.arena.live_blocks, before.arena.live_blocks);
  EXPECT_EQ(after.arena.live_blocks, kPages - kKeepFrom + 2) << "live pages plus the pinned one";
  EXPECT_LT(after.name_index_bytes, before.name_index_bytes / 4) << "name buckets not shrunk";

  EXPECT_EQ(t.info(kKeepFrom), kept_info) << "info moved by the index shrink";
  for (PageId id = kKeepFrom; id <= kPages; ++id) {
    ASSERT_EQ(t.find_name(page_name(id)), id);
    ASSERT_NE(t.info(id), nullptr);
    ASSERT_EQ(t.info(id)->shape, std::vector<std::uint64_t>{2048});
    ASSERT_TRUE(filled_with(t.get(id), static_cast<std::uint8_t>(id & 0xFF))) << "page " << id;
  }
  EXPECT_EQ(t.find_name(page_name(1)), 0u);
  EXPECT_EQ(pinned.data, pinned_data);
  EXPECT_TRUE(filled_with(pinned, kPinned & 0xFF)) << "pinned page data lost by trim";
  std::vector<std::string> problems;
  t.check_consistency(problems);
  EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems.front());

  // Nothing more to give back until the pin goes; then its slab goes too.
  EXPECT_EQ(t.trim().slabs_released, 0u);
  t.unpin(pinned);
  EXPECT_EQ(t.trim().slabs_released, 1u);
  EXPECT_EQ(t.stats().arena.reserved_bytes, after.arena.reserved_bytes - Arena::kSlabBytes);

  // The table still creates zero-filled pages, into fresh slabs and into freed blocks alike.
  for (int i = 0; i < 3000; ++i) {
    PageRecord& r = t.create(raw(2048, page_name(kPages + 1 + i)));
    ASSERT_TRUE(filled_with(r, 0)) << "new page " << r.id;
    std::memset(r.data, 0xEE, r.size);
  }
  for (PageId id = kKeepFrom; id <= kPages; ++id) {
    ASSERT_TRUE(filled_with(t.get(id), static_cast<std::uint8_t>(id & 0xFF))) << "page " << id;
  }
  problems.clear();
  t.check_consistency(problems);
  EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems.front());
}

TEST(PageTableTest, TrimOfAFullTableReleasesNothing) {
  PageTable t;
  EXPECT_EQ(t.trim().bytes_released, 0u);
  for (int i = 0; i < 100; ++i) t.create(raw(100, page_name(i)));
  const PageTableStats before = t.stats();
  const ArenaTrim trimmed = t.trim();
  EXPECT_EQ(trimmed.slabs_released, 0u);
  EXPECT_EQ(trimmed.bytes_released, 0u);
  EXPECT_EQ(t.stats().arena.reserved_bytes, before.arena.reserved_bytes);
  EXPECT_EQ(t.stats().name_index_bytes, before.name_index_bytes) << "a small index is left alone";
  EXPECT_EQ(t.find_name(page_name(42)), 43u);
}

// Records of deleted pages are released a chunk at a time, once every id of the chunk is deleted
// and unpinned: their ids then read as deleted, a pinned record keeps its chunk until its last
// unpin, an undeleted page (a rolled-back transaction) keeps it live, and the table goes on.
TEST(PageTableTest, DeadRecordsAreReleasedInWholeChunksOnceUnpinned) {
  constexpr PageId kChunk = PageTable::kChunkRecords;
  PageTable t;
  for (PageId i = 0; i < 4 * kChunk + 10; ++i) t.create(raw(64));
  const auto erase_range = [&](PageId from, PageId to) {
    for (PageId id = from; id <= to; ++id) t.erase(id);
  };
  PageRecord& pinned = t.get(2 * kChunk + 7);  // chunk 2
  PageTable::pin(pinned);
  PageRecord& undone = t.get(3 * kChunk + 9);  // chunk 3: deleted, pinned, undeleted
  PageTable::pin(undone);
  erase_range(1, kChunk);                  // chunk 0 whole
  erase_range(kChunk + 1, 2 * kChunk - 1);  // chunk 1 but its last id
  erase_range(2 * kChunk + 1, 3 * kChunk);
  erase_range(3 * kChunk + 1, 4 * kChunk);
  t.undelete(undone.id, std::nullopt);
  t.unpin(undone);
  const PageTableStats before = t.stats();
  const std::uint64_t chunk_bytes = kChunk * sizeof(PageRecord);
  EXPECT_EQ(t.release_dead_records(), chunk_bytes) << "chunk 0 alone";
  EXPECT_EQ(t.stats().record_bytes, before.record_bytes - chunk_bytes);
  EXPECT_EQ(t.stats().live_pages, before.live_pages);
  for (const PageId id : {PageId{1}, kChunk}) {
    EXPECT_EQ(t.find(id), nullptr);
    EXPECT_EQ(t.slot_if_any(id), nullptr);
    const std::string msg = test::expect_error(ErrorCode::PageNotFound, [&] { t.get(id); });
    EXPECT_NE(msg.find("was deleted"), std::string::npos) << msg;
    t.prefetch(id);
  }
  EXPECT_EQ(t.release_dead_records(), 0u) << "nothing more until the pin goes";
  EXPECT_TRUE(pinned.deleted());
  t.unpin(pinned);
  EXPECT_EQ(t.release_dead_records(), chunk_bytes) << "chunk 2 after its last unpin";
  // Chunk 3 again wholly deleted: listed a second time, released once.
  t.erase(undone.id);
  EXPECT_EQ(t.release_dead_records(), chunk_bytes);
  EXPECT_EQ(t.release_dead_records(), 0u);
  EXPECT_NE(t.find(2 * kChunk), nullptr) << "chunk 1 keeps its live page";
  // The table goes on: new ids, and every live page where it was.
  const PageId next = t.create(raw(64)).id;
  EXPECT_EQ(next, 4 * kChunk + 11);
  std::vector<PageId> live;
  t.for_each_live([&](PageRecord& r) { live.push_back(r.id); });
  std::vector<PageId> want{2 * kChunk};
  for (PageId id = 4 * kChunk + 1; id <= next; ++id) want.push_back(id);
  EXPECT_EQ(live, want);
  std::vector<std::string> problems;
  t.check_consistency(problems);
  EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems.front());
  // Ids skipped by a gap count as deleted: a chunk of them and deleted pages is released too.
  PageTable gap;
  gap.create(raw(8));
  gap.reserve_ids_below(kChunk);  // ids 2 .. kChunk - 1 skipped
  gap.create(raw(8));             // id kChunk, the chunk's last
  gap.create(raw(8));             // the next chunk
  gap.erase(1);
  EXPECT_EQ(gap.release_dead_records(), 0u);
  gap.erase(kChunk);
  EXPECT_EQ(gap.release_dead_records(), chunk_bytes);
  EXPECT_EQ(gap.find(kChunk + 1)->id, kChunk + 1);
}

// The last unpin of a deleted page may run on any thread while the owner releases dead records:
// a chunk goes only after each such unpin has freed its page's data and let go of the record.
// (TSan runs this: a release racing with an unpin's last touch of the record is reported.)
TEST(PageTableConcurrentTest, LastUnpinsOnAnotherThreadNeverLoseTheirRecord) {
  constexpr PageId kChunk = PageTable::kChunkRecords;
  for (int round = 0; round < 20; ++round) {
    PageTable t;
    std::vector<PageRecord*> records;
    for (PageId i = 0; i < 2 * kChunk; ++i) records.push_back(&t.create(raw(64)));
    for (PageRecord* r : records) PageTable::pin(*r);
    for (PageId id = 1; id <= 2 * kChunk; ++id) t.erase(id);
    std::thread unpinner([&] {
      for (PageRecord* r : records) EXPECT_TRUE(t.unpin(*r));
    });
    std::uint64_t released = 0;
    while (released < 2 * kChunk * sizeof(PageRecord)) {
      released += t.release_dead_records();
      std::this_thread::yield();
    }
    unpinner.join();
    EXPECT_EQ(t.stats().arena.live_blocks, 0u);
    EXPECT_EQ(t.stats().record_bytes, 0u);
  }
}

}  // namespace
}  // namespace mmsb
