// Running out of memory after a group commit's batch record is written (durability=fsync writes
// a batch alone before applying it, so its sync overlaps the apply): whichever allocation fails,
// the directory reopens cleanly to the state before the batch or after it, never with lsns used
// twice, and a bus that goes on writing never logs anything the reopened bus would not show.
//
// The allocation failures are injected by replacing the global operator new for this test binary:
// after arming, the N-th allocation on the arming thread throws std::bad_alloc. Unarmed it only
// forwards to malloc, so every other test of the binary runs as before.
#include <gtest/gtest.h>

#include <cstdlib>
#include <new>

#include "log/LogTestUtil.hpp"
#include "mmsb/log/Log.hpp"

namespace {
thread_local long t_allocations_left = 0;  // 0: never fail
}  // namespace

// The whole family, so that every new and delete pair meets in malloc and free (AddressSanitizer
// checks that they match). GCC cannot tell that these deletes free what these news took from malloc.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t bytes) {
  if (t_allocations_left > 0 && --t_allocations_left == 0) throw std::bad_alloc();
  if (void* p = std::malloc(bytes == 0 ? 1 : bytes)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t bytes) { return operator new(bytes); }
void* operator new(std::size_t bytes, const std::nothrow_t&) noexcept {
  try {
    return operator new(bytes);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t bytes, const std::nothrow_t& tag) noexcept { return operator new(bytes, tag); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace mmsb {
namespace {

constexpr std::size_t kRows = 2048;  // 2048 x 64 bytes: a record above Log::kEarlySyncBytes

// Arms the failure when the batch's record is written: the test then fails allocations made
// after the record is in the file, the window this test is about.
class ArmOnBigWrite final : public FileObserver {
 public:
  explicit ArmOnBigWrite(long nth) : nth_(nth) {}
  void before_write(const std::string& path, std::uint64_t, std::span<const std::byte> bytes) override {
    if (path.ends_with(".log") && bytes.size() >= kRows * 64 && !armed_) {
      armed_ = true;
      t_allocations_left = nth_;
    }
  }
  void before_sync(const std::string&) override {}
  void before_truncate(const std::string&, std::uint64_t) override {}
  void before_rename(const std::string&, const std::string&) override {}
  bool armed() const { return armed_; }

 private:
  const long nth_;
  bool armed_ = false;
};

struct ObserverGuard {
  explicit ObserverGuard(FileObserver* o) { set_file_observer(o); }
  ~ObserverGuard() { set_file_observer(nullptr); }
};

// Without event delivery the commit allocates after its record only to start the sync helper;
// with DeltaApplied events it also queues them, so a failure lands inside the apply.
class GroupCommitOutOfMemory : public ::testing::TestWithParam<bool> {};

TEST_P(GroupCommitOutOfMemory, AFailureAfterTheRecordIsWrittenNeverLeavesTheLogAhead) {
  const bool events = GetParam();
  std::vector<std::uint64_t> offsets(kRows), lengths(kRows, 64);
  for (std::size_t i = 0; i < kRows; ++i) offsets[i] = 64 * i;
  const test::Bytes batch_bytes(64 * kRows, std::byte{2}), later_bytes(8, std::byte{3});
  bool reached_the_end = false, any_failed = false;
  for (long nth = 1; nth <= 200 && !reached_the_end; ++nth) {
    SCOPED_TRACE("allocation " + std::to_string(nth) + " after the record is written fails");
    test::TempDir tmp;
    const std::string dir = tmp.path() + "/b";
    test::DurableState before, with_later;
    bool failed = false, poisoned = false;
    PageId id = 0;
    {
      // Installed before the bus and removed after it is gone: its sync helper (joined when the
      // bus closes) may still be syncing after a failed commit returns.
      ArmOnBigWrite arm(nth);
      ObserverGuard guard(&arm);
      PageSpec spec;
      spec.size = 64 * kRows;
      Bus bus(test::dir_options(dir, Durability::Fsync));
      id = bus.create_page(spec).id;
      if (events) {
        bus.set_event_sink([](std::span<const BusEvent>) {}, 1u << static_cast<unsigned>(EventKind::DeltaApplied));
      }
      const std::vector<PageId> ids(kRows, id);
      before = test::durable_state(bus);
      try {
        bus.apply_batch(DeltaBatchView{ids, offsets, lengths, batch_bytes});
      } catch (const std::bad_alloc&) {
        failed = true;
      }
      reached_the_end = t_allocations_left > 0;  // every allocation of the commit got through
      t_allocations_left = 0;
      ASSERT_TRUE(arm.armed());
      any_failed |= failed;
      if (failed) {
        // Memory is as before the batch: the transaction undid it.
        EXPECT_TRUE(test::same_durable(before, test::durable_state(bus)));
      }
      // A later commit: logged after the batch's record only if that record stays valid.
      try {
        bus.write(id, 0, later_bytes);
        with_later = test::durable_state(bus);
      } catch (const Error& e) {
        ASSERT_EQ(e.code(), ErrorCode::Durability) << e.what();
        ASSERT_TRUE(failed) << "a bus whose batch committed refused the next write: " << e.what();
        poisoned = true;
      }
      try {
        bus.close();
      } catch (const Error& e) {
        EXPECT_TRUE(poisoned) << e.what();
      }
    }
    Bus reopened(test::dir_options(dir, Durability::Fsync, /*must_exist=*/true));
    const test::DurableState got = test::durable_state(reopened);
    if (!poisoned) {
      EXPECT_TRUE(test::same_durable(with_later, got));
    } else {
      // The failed batch's record may have reached the disk: the reopened bus has it whole or not.
      const std::byte* data = reopened.page(id).data;
      if (data[0] != std::byte{2}) {
        EXPECT_TRUE(test::same_durable(before, got));
      } else {
        for (std::size_t i = 0; i < 64 * kRows; ++i) ASSERT_EQ(data[i], std::byte{2}) << "byte " << i;
        EXPECT_EQ(reopened.lsn(), before.bus.lsn + kRows);
      }
    }
  }
  EXPECT_TRUE(reached_the_end) << "the commit still ran out of allocations after 200";
  // Queuing the events allocates after the record is written: some failure must have reached
  // the caller, or this test exercised nothing of the apply.
  if (events) {
    EXPECT_TRUE(any_failed);
  }
}

INSTANTIATE_TEST_SUITE_P(Events, GroupCommitOutOfMemory, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "DeltaAppliedEvents" : "NoEvents"; });

}  // namespace
}  // namespace mmsb
