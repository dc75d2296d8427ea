// I/O errors injected at the N-th write or the N-th fdatasync, for every N of a workload (EIO,
// as a disk reports it, through the FileObserver hook): the failing call raises
// Error(Durability) and leaves the bus exactly as before it; the bus keeps working; closing and
// reopening gives exactly the state the bus had.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "log/LogTestUtil.hpp"

namespace mmsb {
namespace {

enum class Fault { Write, Sync };

class FaultyDisk final : public FileObserver {
 public:
  FaultyDisk(Fault fault, std::uint64_t at) : fault_(fault), at_(at) {}
  void before_write(const std::string& path, std::uint64_t, std::span<const std::byte>) override {
    maybe_fail(Fault::Write, path);
  }
  void before_sync(const std::string& path) override { maybe_fail(Fault::Sync, path); }
  void before_truncate(const std::string&, std::uint64_t) override {}
  void before_rename(const std::string&, const std::string&) override {}
  std::uint64_t count(Fault f) const noexcept { return f == Fault::Write ? writes_ : syncs_; }
  bool fired() const noexcept { return fired_; }

 private:
  void maybe_fail(Fault kind, const std::string& path) {
    std::uint64_t& n = kind == Fault::Write ? writes_ : syncs_;
    if (++n == at_ && kind == fault_) {
      fired_ = true;
      fail(ErrorCode::Durability, kind == Fault::Write ? "write to '" : "fdatasync of '", path,
           "' failed: Input/output error (injected)");
    }
  }
  Fault fault_;
  std::uint64_t at_;
  std::uint64_t writes_ = 0, syncs_ = 0;
  bool fired_ = false;
};

// A workload: set up on a fresh bus, it returns the step to run kSteps times.
using Workload = std::function<std::function<void(Bus&)>(Bus&)>;

Workload random_workload() {
  return [](Bus& bus) {
    auto work = std::make_shared<test::RandomWorkload>(bus, 5, "w", 0.1);
    return std::function<void(Bus&)>([work](Bus& b) { work->step(b); });
  };
}

// Batches of 64 KiB and more, which a flush or none log writes on its writer thread while they
// apply with their undo, and (`with_writes`) small writes between them.
Workload large_batches(bool with_writes) {
  return [with_writes](Bus& bus) {
    std::vector<std::pair<PageId, std::uint64_t>> pages;
    for (int i = 0; i < 4; ++i) pages.emplace_back(bus.create_page(PageSpec{std::uint64_t{1} << 16}).id, 1 << 16);
    auto rng = std::make_shared<test::Rng>(17);
    auto step = std::make_shared<int>(0);
    return std::function<void(Bus&)>([=](Bus& b) {
      if (with_writes && (*step)++ % 3 == 2) {
        b.write(pages[0].first, test::uniform(*rng, 0, 1000), test::random_bytes(*rng, 16));
      } else {
        const DeltaBatch batch = test::random_batch(*rng, pages, 3000, 64);
        ASSERT_GE(batch.view().payload.size(), Log::kOverlapBytes);
        b.apply_batch(batch.view());
      }
    });
  };
}

constexpr int kSteps = 25;

// How many writes (or syncs) the fault-free workload makes, closing included.
std::uint64_t count_ops(const std::string& dir, Durability durability, Fault fault, const Workload& workload) {
  FaultyDisk counter(fault, ~std::uint64_t{0});
  set_file_observer(&counter);
  {
    Bus bus(test::dir_options(dir, durability));
    const auto step = workload(bus);
    for (int i = 0; i < kSteps; ++i) step(bus);
    bus.close();
  }
  set_file_observer(nullptr);
  return counter.count(fault);
}

void inject_everywhere(Durability durability, Fault fault, const Workload& workload = random_workload()) {
  test::TempDir tmp;
  const std::uint64_t total = count_ops(tmp.path() + "/count", durability, fault, workload);
  ASSERT_GT(total, 3u);
  for (std::uint64_t n = 1; n <= total; ++n) {
    const std::string dir = tmp.path() + "/d" + std::to_string(n);
    FaultyDisk disk(fault, n);
    test::DurableState at_close;
    {
      set_file_observer(&disk);
      std::optional<Bus> bus;
      try {
        bus.emplace(test::dir_options(dir, durability));
      } catch (const Error& e) {  // the fault hit the opening of the directory itself
        set_file_observer(nullptr);
        ASSERT_EQ(e.code(), ErrorCode::Durability);
        continue;
      }
      std::function<void(Bus&)> step;
      try {
        step = workload(*bus);
      } catch (const Error& e) {  // the fault hit the workload's set-up
        set_file_observer(nullptr);
        ASSERT_EQ(e.code(), ErrorCode::Durability);
        continue;
      }
      bool failed = false;
      for (int i = 0; i < kSteps; ++i) {
        const test::DurableState before = test::durable_state(*bus);
        try {
          step(*bus);
        } catch (const Error& e) {
          ASSERT_FALSE(failed) << "a second failure after one injected fault: " << e.what();
          failed = true;
          ASSERT_EQ(e.code(), ErrorCode::Durability) << e.what();
          ASSERT_TRUE(test::same_durable(before, test::durable_state(*bus))) << "fault " << n << " step " << i;
        }
      }
      at_close = test::durable_state(*bus);
      try {
        bus->close();  // the fault may land on the final sync: every record is written by then
      } catch (const Error& e) {
        ASSERT_FALSE(failed) << e.what();
        ASSERT_EQ(e.code(), ErrorCode::Durability) << e.what();
        failed = true;
      }
      set_file_observer(nullptr);
      ASSERT_EQ(disk.fired(), failed) << "fault " << n << ": an injected error went unreported";
    }
    Bus reopened(test::dir_options(dir, durability, /*must_exist=*/true));
    ASSERT_TRUE(test::same_durable(at_close, test::durable_state(reopened))) << "fault " << n;
    ASSERT_FALSE(reopened.recovery().truncated_tail) << "fault " << n << ": " << reopened.recovery().tail_reason;
  }
}

TEST(InjectedIoError, EveryWriteFailureInFsyncMode) { inject_everywhere(Durability::Fsync, Fault::Write); }
TEST(InjectedIoError, EverySyncFailureInFsyncMode) { inject_everywhere(Durability::Fsync, Fault::Sync); }
TEST(InjectedIoError, EveryWriteFailureInFlushMode) { inject_everywhere(Durability::Flush, Fault::Write); }
TEST(InjectedIoError, EverySyncFailureInFlushMode) { inject_everywhere(Durability::Flush, Fault::Sync); }
// Large batches are written on the log's writer thread while they apply: a failed write there is
// undone like any other. In none mode only large batches (written at once, not gathered), so
// that every write the bus acknowledged is one a failure reports.
TEST(InjectedIoError, EveryWriteFailureOfOverlappedBatchesInFlushMode) {
  inject_everywhere(Durability::Flush, Fault::Write, large_batches(true));
}
TEST(InjectedIoError, EveryWriteFailureOfOverlappedBatchesInNoneMode) {
  inject_everywhere(Durability::None, Fault::Write, large_batches(false));
}

}  // namespace
}  // namespace mmsb
