// Group commit (durability=fsync): concurrent committers share one fdatasync; a commit is
// acknowledged only once durable; a failed sync rolls back every commit it would have covered
// (and those written after it) so memory equals the durable state, and the directory reopens to
// exactly that state.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "log/LogTestUtil.hpp"
#include "mmsb/log/Log.hpp"
#include "mmsb/log/SegmentReader.hpp"

namespace mmsb {
namespace {

using namespace std::chrono_literals;

bool is_segment(const std::string& path) { return path.size() > 4 && path.ends_with(".log"); }

// Holds the first fdatasync of a segment until release() (the test calls it once every other
// committer's record is in the log), then lets it succeed or fail. Counts the segment writes and
// syncs from arming on.
class HeldSync final : public FileObserver {
 public:
  explicit HeldSync(bool fail_it) : fail_it_(fail_it) {}
  void arm() {
    std::lock_guard g(m_);
    armed_ = true;
    writes_ = 0;
  }
  void release() {
    std::lock_guard g(m_);
    released_ = true;
    cv_.notify_all();
  }
  void before_write(const std::string& path, std::uint64_t, std::span<const std::byte>) override {
    if (!is_segment(path)) return;
    std::lock_guard g(m_);
    ++writes_;
  }
  void before_sync(const std::string& path) override {
    if (!is_segment(path)) return;
    std::unique_lock g(m_);
    if (!armed_) return;
    ++syncs_;
    if (held_) return;
    held_ = true;
    held_cv_.notify_all();
    // The first sync covers the first writer only; the others write while it is held.
    timed_out_ = !cv_.wait_for(g, 20s, [&] { return released_; });
    if (fail_it_) fail(ErrorCode::Durability, "fdatasync of '", path, "' failed: Input/output error (injected)");
  }
  void before_truncate(const std::string&, std::uint64_t) override {}
  void before_rename(const std::string&, const std::string&) override {}
  int syncs() {
    std::lock_guard g(m_);
    return syncs_;
  }
  /// Waits (up to 20 s) until a sync is held: the first writer's record is in the log.
  bool wait_held() {
    std::unique_lock g(m_);
    return held_cv_.wait_for(g, 20s, [&] { return held_; });
  }
  int writes() {
    std::lock_guard g(m_);
    return writes_;
  }
  bool timed_out() {
    std::lock_guard g(m_);
    return timed_out_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_, held_cv_;
  const bool fail_it_;
  bool armed_ = false, held_ = false, released_ = false, timed_out_ = false;
  int writes_ = 0, syncs_ = 0;
};

struct ObserverGuard {
  explicit ObserverGuard(FileObserver* o) { set_file_observer(o); }
  ~ObserverGuard() { set_file_observer(nullptr); }
};

PageSpec raw_page(std::uint64_t size) {
  PageSpec s;
  s.size = size;
  return s;
}

// One 64-byte page per writer of race().
std::vector<PageId> writer_pages(Bus& bus, int others) {
  std::vector<PageId> pages;
  for (int i = 0; i <= others; ++i) pages.push_back(bus.create_page(raw_page(64)).id);
  return pages;
}

// One writer commits and its sync is held until `others` more writers have written their
// records; returns each writer's outcome (true: acknowledged).
std::vector<bool> race(Bus& bus, HeldSync& disk, const std::vector<PageId>& pages, int others) {
  std::vector<char> ok(pages.size(), 0);
  auto commit = [&](std::size_t i) {
    const test::Bytes data(8, std::byte(0x10 + i));
    try {
      if (i % 3 == 2) {  // a batch and a transaction park the same way as a write
        const std::uint64_t off = 8, len = 8;
        bus.apply_batch(DeltaBatchView{{&pages[i], 1}, {&off, 1}, {&len, 1}, data});
      } else if (i % 3 == 1) {
        bus.begin_transaction();
        bus.write(pages[i], 16, data);
        bus.commit_transaction();
      } else {
        bus.write(pages[i], 0, data);
      }
      ok[i] = 1;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Durability) << e.what();
    }
  };
  disk.arm();
  std::thread first(commit, 0);
  // The others start once the first writer's sync is held (a fixed sleep was too short for a
  // loaded machine under ASan: a later writer's record then came first, and the test with it).
  EXPECT_TRUE(disk.wait_held());
  std::vector<std::thread> rest;
  for (int i = 1; i <= others; ++i) rest.emplace_back(commit, static_cast<std::size_t>(i));
  // Every writer has started its segment write; each makes it, and registers it for a sync,
  // under the commit lock, which memory() then takes once: after it, every record is in the log.
  // (Releasing at the last write's start let a loaded machine begin the next sync without it.)
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (disk.writes() < static_cast<int>(pages.size()) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(1ms);
  }
  bus.memory();
  disk.release();
  first.join();
  for (std::thread& t : rest) t.join();
  return {ok.begin(), ok.end()};
}

TEST(GroupCommit, WritersArrivingDuringASyncShareTheNextOne) {
  constexpr int kOthers = 5;
  test::TempDir tmp;
  HeldSync disk(/*fail_it=*/false);
  test::DurableState before_close;
  {
    Bus bus(test::dir_options(tmp.path() + "/b", Durability::Fsync));
    const std::vector<PageId> pages = writer_pages(bus, kOthers);
    const Lsn lsn0 = bus.lsn();
    ObserverGuard guard(&disk);
    const std::vector<bool> ok = race(bus, disk, pages, kOthers);
    EXPECT_FALSE(disk.timed_out()) << "the other writers never wrote while the first sync was held";
    for (bool b : ok) EXPECT_TRUE(b);
    // The first sync covered the first writer; one more covered all the others.
    EXPECT_EQ(disk.syncs(), 2);
    EXPECT_EQ(bus.lsn(), lsn0 + kOthers + 1);
    before_close = test::durable_state(bus);
    bus.close();
  }
  Bus reopened(test::dir_options(tmp.path() + "/b", Durability::Fsync, /*must_exist=*/true));
  EXPECT_TRUE(test::same_durable(before_close, test::durable_state(reopened)));
}

TEST(GroupCommit, FailedSyncRollsBackEveryCommitItWouldHaveCovered) {
  constexpr int kOthers = 4;
  test::TempDir tmp;
  HeldSync disk(/*fail_it=*/true);
  test::DurableState before;
  {
    Bus bus(test::dir_options(tmp.path() + "/b", Durability::Fsync));
    const std::vector<PageId> pages = writer_pages(bus, kOthers);
    bus.write(pages[0], 0, test::Bytes(4, std::byte{1}));
    before = test::durable_state(bus);
    {
      ObserverGuard guard(&disk);
      const std::vector<bool> ok = race(bus, disk, pages, kOthers);
      EXPECT_FALSE(disk.timed_out());
      for (bool b : ok) EXPECT_FALSE(b) << "a commit the failed sync covered was acknowledged";
    }
    // Memory is the durable state again, and the bus keeps working.
    EXPECT_TRUE(test::same_durable(before, test::durable_state(bus)));
    bus.write(pages[1], 0, test::Bytes(4, std::byte{2}));
    before = test::durable_state(bus);
    bus.close();
  }
  Bus reopened(test::dir_options(tmp.path() + "/b", Durability::Fsync, /*must_exist=*/true));
  EXPECT_TRUE(test::same_durable(before, test::durable_state(reopened)));
  EXPECT_FALSE(reopened.recovery().truncated_tail) << reopened.recovery().tail_reason;
}

// A power loss during a group's sync may keep some of its records and lose others, in any
// order: recovery stops at the first one missing (no sync mark vouches for them) instead of
// reporting the valid records after it as corruption.
TEST(GroupCommit, GroupRecordsKeptOutOfOrderAreATornTail) {
  constexpr int kOthers = 4;
  test::TempDir tmp;
  const std::string dir = tmp.path() + "/b";
  HeldSync disk(/*fail_it=*/false);
  std::vector<PageId> pages;
  Lsn after_first = 0;
  test::Bytes first_page;
  {
    Bus bus(test::dir_options(dir, Durability::Fsync));
    pages = writer_pages(bus, kOthers);
    ObserverGuard guard(&disk);
    for (bool ok : race(bus, disk, pages, kOthers)) ASSERT_TRUE(ok);
    after_first = bus.lsn() - kOthers;
    first_page = test::Bytes(bus.page(pages[0]).data, bus.page(pages[0]).data + 64);
    // Dropped without close(): no final sync mark, as after a power loss.
  }
  const std::string seg = test::segment_files(dir).back();
  test::Bytes image = test::read_file(seg);
  const SegmentScan scan = scan_segment(seg);
  ASSERT_GE(scan.records.size(), static_cast<std::size_t>(kOthers + 1));
  // The group is the last kOthers records: lose its first one, keep the others.
  const ScannedRecord& lost = scan.records[scan.records.size() - kOthers];
  std::fill(image.begin() + static_cast<std::ptrdiff_t>(lost.offset),
            image.begin() + static_cast<std::ptrdiff_t>(lost.offset + logfmt::kRecordHeaderBytes + lost.header.body_bytes),
            std::byte{0});
  test::write_file(seg, image);
  Bus reopened(test::dir_options(dir, Durability::Fsync, /*must_exist=*/true));
  EXPECT_TRUE(reopened.recovery().truncated_tail);
  EXPECT_NE(reopened.recovery().tail_reason.find("never synced"), std::string::npos) << reopened.recovery().tail_reason;
  EXPECT_EQ(reopened.lsn(), after_first);
  EXPECT_TRUE(test::same_bytes(first_page, {reopened.page(pages[0]).data, 64}));
}

// Which thread ran each segment fdatasync; with fail_first, the first one fails.
class SyncThreads final : public FileObserver {
 public:
  explicit SyncThreads(bool fail_first) : fail_first_(fail_first) {}
  void before_write(const std::string&, std::uint64_t, std::span<const std::byte>) override {}
  void before_sync(const std::string& path) override {
    if (!is_segment(path)) return;
    std::lock_guard g(m_);
    threads_.push_back(std::this_thread::get_id());
    if (fail_first_ && threads_.size() == 1) fail(ErrorCode::Durability, "fdatasync of '", path, "' failed: Input/output error (injected)");
  }
  void before_truncate(const std::string&, std::uint64_t) override {}
  void before_rename(const std::string&, const std::string&) override {}
  std::vector<std::thread::id> threads() {
    std::lock_guard g(m_);
    return threads_;
  }

 private:
  std::mutex m_;
  const bool fail_first_;
  std::vector<std::thread::id> threads_;
};

// A batch of `rows` 64-byte rows filling page `id` from offset 0 with `fill`: 2048 rows make a
// record above Log::kEarlySyncBytes.
void fill_batch(Bus& bus, PageId id, std::size_t rows, std::byte fill) {
  std::vector<PageId> ids(rows, id);
  std::vector<std::uint64_t> offsets(rows), lengths(rows, 64);
  for (std::size_t i = 0; i < rows; ++i) offsets[i] = 64 * i;
  const test::Bytes payload(64 * rows, fill);
  bus.apply_batch(DeltaBatchView{ids, offsets, lengths, payload});
}

// A large batch's record has its fdatasync started on the log's helper thread as soon as it is
// written, so the disk works while the batch applies; a small commit's sync is led by its own
// committer (handing it over would cost more than the overlap saves).
TEST(GroupCommit, ALargeBatchIsSyncedByTheHelperAndASmallWriteInPlace) {
  static_assert(2048 * 64 > Log::kEarlySyncBytes);
  test::TempDir tmp;
  SyncThreads disk(/*fail_first=*/false);
  Bus bus(test::dir_options(tmp.path() + "/b", Durability::Fsync));
  const PageId big = bus.create_page(raw_page(2048 * 64)).id;
  ObserverGuard guard(&disk);
  fill_batch(bus, big, 2048, std::byte{7});
  std::vector<std::thread::id> syncs = disk.threads();
  ASSERT_EQ(syncs.size(), 1u) << "the committer synced again after the helper's sync";
  EXPECT_NE(syncs[0], std::this_thread::get_id());
  bus.write(big, 0, test::Bytes(8, std::byte{9}));
  syncs = disk.threads();
  ASSERT_EQ(syncs.size(), 2u);
  EXPECT_EQ(syncs[1], std::this_thread::get_id());
  EXPECT_EQ(bus.page(big).data[64], std::byte{7});
  EXPECT_EQ(bus.page(big).data[0], std::byte{9});
}

// The helper's sync failing rolls the batch back as any failed group sync does: the commit
// throws, memory is as before it, the bus goes on, and the directory reopens to that state.
TEST(GroupCommit, AFailedEarlySyncRollsBackTheLargeBatch) {
  test::TempDir tmp;
  const std::string dir = tmp.path() + "/b";
  test::DurableState before;
  {
    Bus bus(test::dir_options(dir, Durability::Fsync));
    const PageId big = bus.create_page(raw_page(2048 * 64)).id;
    fill_batch(bus, big, 2048, std::byte{1});
    before = test::durable_state(bus);
    {
      SyncThreads disk(/*fail_first=*/true);
      ObserverGuard guard(&disk);
      try {
        fill_batch(bus, big, 2048, std::byte{2});
        ADD_FAILURE() << "a batch whose sync failed was acknowledged";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::Durability) << e.what();
      }
      const std::vector<std::thread::id> syncs = disk.threads();
      ASSERT_FALSE(syncs.empty());
      EXPECT_NE(syncs[0], std::this_thread::get_id()) << "the failed sync was not the helper's";
    }
    EXPECT_TRUE(test::same_durable(before, test::durable_state(bus)));
    fill_batch(bus, big, 1024, std::byte{3});
    before = test::durable_state(bus);
    bus.close();
  }
  Bus reopened(test::dir_options(dir, Durability::Fsync, /*must_exist=*/true));
  EXPECT_TRUE(test::same_durable(before, test::durable_state(reopened)));
}

// Many threads, every commit kind, checkpoints on the way: every acknowledged commit is there
// after reopening, and memory equaled the log at close.
TEST(GroupCommit, ConcurrentWritersOfEveryKindReopenToTheSameState) {
  constexpr int kThreads = 4, kSteps = 60;
  test::TempDir tmp;
  test::DurableState at_close;
  std::atomic<int> acknowledged{0};
  {
    Bus bus(test::dir_options(tmp.path() + "/b", Durability::Fsync));
    std::vector<PageId> pages, big;
    for (int i = 0; i < kThreads; ++i) pages.push_back(bus.create_page(raw_page(256)).id);
    for (int i = 0; i < kThreads; ++i) big.push_back(bus.create_page(raw_page(2048 * 64)).id);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        test::Rng rng(t + 1);
        for (int s = 0; s < kSteps; ++s) {
          const test::Bytes data = test::random_bytes(rng, 1 + test::uniform(rng, 0, 31));
          const std::uint64_t off = test::uniform(rng, 0, 256 - data.size());
          switch (test::uniform(rng, 0, 6)) {
            case 0: {
              const std::uint64_t len = data.size();
              bus.apply_batch(DeltaBatchView{{&pages[t], 1}, {&off, 1}, {&len, 1}, data});
              break;
            }
            case 1:
              bus.begin_transaction();
              bus.write(pages[t], off, data);
              bus.set_metadata(pages[t], "step", MetaValue{std::to_string(s)});
              bus.commit_transaction();
              break;
            case 2: {  // a create and delete commit in place (no undo), syncing what is parked
              const PageId extra = bus.create_page(raw_page(32)).id;
              bus.delete_page(extra);
              break;
            }
            case 6:  // a record large enough to be synced by the helper while it applies
              fill_batch(bus, big[t], 2048, data[0]);
              break;
            case 3:
              if (t == 0 && s % 20 == 19) bus.checkpoint();
              [[fallthrough]];
            default:
              bus.write(pages[t], off, data);
          }
          acknowledged.fetch_add(1);
        }
      });
    }
    for (std::thread& th : threads) th.join();
    EXPECT_EQ(acknowledged.load(), kThreads * kSteps);
    const IntegrityReport report = bus.verify();
    EXPECT_TRUE(report.ok) << (report.problems.empty() ? "" : report.problems.front());
    at_close = test::durable_state(bus);
    bus.close();
  }
  Bus reopened(test::dir_options(tmp.path() + "/b", Durability::Fsync, /*must_exist=*/true));
  EXPECT_TRUE(test::same_durable(at_close, test::durable_state(reopened)));
}

}  // namespace
}  // namespace mmsb
