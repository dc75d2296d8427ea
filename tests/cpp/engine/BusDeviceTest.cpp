// Device pages through the whole commit path, on two kinds of devices: "emulated", the host
// emulation (cuda::emulate_devices), which stores bytes inverted, so a path that touched device
// memory directly instead of through the backend would show wrong bytes; and "cuda", the CUDA
// backends, on a machine with two GPUs or in a build against the tests' stand-in runtime
// (MMSB_FAKE_CUDA, whose device memory the host cannot touch). The oracle is the reference
// model: the same writes, batches (host and device rows mixed, overlapping), transactions and
// rollbacks must leave exactly its bytes, epochs and lsns. Runs under ASan too (mirror lifetimes).
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "engine/BusState.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Cuda.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/delta/Diff.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/engine/DeviceStaging.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::EmulatedDevices;
using test::random_bytes;
using test::RefModel;
using test::Rng;
using test::uniform;

// Random commits on `bus` and `model`; every page id in `pages` lives in both.
void random_commits(Rng& rng, Bus& bus, RefModel& model, int steps) {
  for (int step = 0; step < steps; ++step) {
    const auto pages = test::model_pages(model);
    const auto target = pages[uniform(rng, 0, pages.size() - 1)];
    const PageId id = target.first;
    switch (const int kind = static_cast<int>(uniform(rng, 0, 3))) {
      case 0:
      case 1:
        test::random_write_or_batch(rng, bus, model, pages, target, kind == 1, 300);
        break;
      case 2: {  // a transaction mixing a write and a batch, committed
        const DeltaBatch b = test::random_batch(rng, pages, 20, 16);
        const Bytes data = random_bytes(rng, 1);
        bus.begin_transaction();
        bus.write(id, 0, data);
        bus.apply_batch(b.view());
        bus.commit_transaction();
        model.write(id, 0, data);
        model.apply_batch(b.view());
        break;
      }
      default: {  // the same, rolled back: nothing may remain on any device
        const DeltaBatch b = test::random_batch(rng, pages, 50, 32);
        bus.begin_transaction();
        bus.write(id, 0, random_bytes(rng, 1));
        bus.apply_batch(b.view());
        bus.rollback_transaction();
        break;
      }
    }
  }
}

// The devices "cuda:0", "cuda:1" and "unified" of a test: emulated, or the CUDA backends (skipped
// without two devices).
class BusDevice : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (!GetParam()) {
      emulated_.emplace();
    } else if (cuda::device_count() < 2) {
      GTEST_SKIP() << "needs two CUDA devices";
    }
  }
 private:
  std::optional<EmulatedDevices> emulated_;
};

std::string device_kind(const ::testing::TestParamInfo<bool>& p) { return p.param ? "cuda" : "emulated"; }

INSTANTIATE_TEST_SUITE_P(Devices, BusDevice, ::testing::Bool(), device_kind);

TEST_P(BusDevice, DevicePagesCommitExactlyTheModelsBytes) {
  Rng rng(17);
  Bus bus(BusOptions{2});
  RefModel model;
  const char* locations[] = {"cuda:0", "cpu", "cuda:1", "cuda:0"};
  for (int i = 0; i < 12; ++i) {
    PageSpec spec;
    spec.size = uniform(rng, 1, 3) == 1 ? uniform(rng, 1, 64) : uniform(rng, 65, 9000);
    spec.location = locations[i % 4];
    const PageId id = bus.create_page(spec).id;
    model.create(id, spec.size);
  }
  random_commits(rng, bus, model, 300 / test::kSanitizerScale);
  ASSERT_TRUE(test::same_as_model(bus, model));
  const DeviceTraffic t = bus.device_traffic();
  EXPECT_GT(t.bytes_written, 0u);
  EXPECT_GT(t.mirror_bytes_synced, 0u);
  EXPECT_TRUE(bus.verify().ok);
  // Deleted while a pin holds it: the mirror outlives deletion like host memory does.
  const PageId first = test::model_pages(model).front().first;
  PageRecord& pinned = bus.pin(first);
  const Bytes before(bus.host_bytes(pinned), bus.host_bytes(pinned) + pinned.size);
  bus.delete_page(first);
  EXPECT_EQ(Bytes(bus.host_bytes(pinned), bus.host_bytes(pinned) + pinned.size), before);
  bus.unpin(pinned);
}

// Batches of thousands of rows, past the sizes where resolve_overlaps sorts by radix: whole
// 64-byte slots (some repeated, as a batch rewriting a slot) and, in some batches, rows of any
// length among them; mixed with host rows. Each kind of overlap resolution must leave the
// model's bytes and epochs.
TEST_P(BusDevice, LargeBatchesRepeatingSlotsCommitExactlyTheModelsBytes) {
  Rng rng(23);
  Bus bus(BusOptions{2});
  RefModel model;
  const char* locations[] = {"cuda:0", "cuda:1", "cpu", "cuda:0", "cuda:0"};
  std::vector<std::pair<PageId, std::uint64_t>> pages;
  for (const char* location : locations) {
    PageSpec spec;
    spec.size = 64 << 10;
    spec.location = location;
    pages.emplace_back(bus.create_page(spec).id, spec.size);
    model.create(pages.back().first, spec.size);
  }
  for (int round = 0; round < 12 / test::kSanitizerScale + 1; ++round) {
    DeltaBatch b;
    const bool odd_rows = round % 3 == 2;
    for (int i = 0; i < 4000; ++i) {
      const auto& [id, size] = pages[uniform(rng, 0, pages.size() - 1)];
      if (odd_rows && uniform(rng, 0, 9) == 0) {
        const std::uint64_t off = uniform(rng, 0, size - 1);
        b.add(id, off, random_bytes(rng, uniform(rng, 1, std::min<std::uint64_t>(size - off, 200))));
      } else {
        b.add(id, uniform(rng, 0, 300) * 64, random_bytes(rng, 64));  // 301 slots: many repeats
      }
    }
    bus.apply_batch(b.view());
    model.apply_batch(b.view());
    ASSERT_TRUE(test::same_as_model(bus, model)) << "round " << round;
  }
}

TEST_P(BusDevice, ReopenedDirectoryHasTheSameDevicePages) {
  test::TempDir dir;
  Rng rng(23);
  RefModel model;
  {
    Bus bus(BusOptions{.threads = 1, .path = dir.path()});
    for (int i = 0; i < 6; ++i) {
      PageSpec spec;
      spec.size = uniform(rng, 1, 5000);
      spec.location = i % 2 == 0 ? "cuda:1" : "cpu";
      model.create(bus.create_page(spec).id, spec.size);
    }
    random_commits(rng, bus, model, 60);
    bus.checkpoint();
    random_commits(rng, bus, model, 60);
  }
  Bus reopened(BusOptions{.threads = 1, .path = dir.path(), .must_exist = true});
  EXPECT_TRUE(test::same_as_model(reopened, model));
  EXPECT_EQ(reopened.page_info(1).location, "cuda:1");
  EXPECT_TRUE(reopened.device_place(reopened.page(1)).on_device);
  EXPECT_TRUE(reopened.verify().ok);
}

TEST_P(BusDevice, MissingDeviceRefusesTheCreateAndChangesNothing) {
  Bus bus;
  PageSpec spec;
  spec.size = 64;
  spec.location = "cuda:7";
  try {
    bus.create_page(spec);
    FAIL() << "expected DeviceUnavailable";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::DeviceUnavailable);
  }
  EXPECT_EQ(bus.lsn(), 0u);
  EXPECT_EQ(bus.page_count(), 0u);
}

// The buffers a device batch keeps for the next one are a cache: counted by memory(), freed by gc().
TEST_P(BusDevice, DeviceBatchBuffersAreCountedAndFreedByGc) {
  Bus bus(BusOptions{1});
  PageSpec spec;
  spec.size = 1 << 20;
  spec.location = "cuda:0";
  const PageId id = bus.create_page(spec).id;
  constexpr std::size_t kRows = 20'000;
  DeltaBatch b;
  const Bytes row(8, std::byte{7});
  for (std::size_t i = 0; i < kRows; ++i) b.add(id, (kRows - 1 - i) * 16, row);  // unsorted: the sort's buffers too
  const std::uint64_t before = bus.memory().cache_bytes;
  bus.apply_batch(b.view());
  const std::uint64_t grown = bus.memory().cache_bytes - before;
  // Rows (32 bytes each), runs, and the radix sort's two buffers: at least 4 run sizes a row.
  EXPECT_GE(grown, kRows * 4 * sizeof(cuda::DeviceRun));
  const GcReport g = bus.gc();
  EXPECT_GE(g.cache_bytes_freed, grown);
  EXPECT_LE(bus.memory().cache_bytes, before);
}

// The editor of a staging copy, as device code would be: writes through the device's backend.
void edit_staged(const DeviceStaging& s, std::uint64_t offset, const Bytes& data) {
  const cuda::DeviceRun run{s.data() + offset, 0, data.size()};
  s.backend().write({&run, 1}, data);
}

ErrorCode code_of_commit(Bus& bus, const DeviceStaging& s) {
  try {
    bus.commit_staged(s);
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "commit_staged did not throw";
  return ErrorCode::Internal;
}

// An edit on the device commits exactly the changed bytes, diffed there: no mirror is read.
TEST_P(BusDevice, AnEditOnTheDeviceCommitsItsChangedBytesAsOneDelta) {
  Rng rng(31);
  Bus bus(BusOptions{1});
  PageSpec spec;
  spec.size = 50'000;
  spec.location = "cuda:0";
  const Bytes initial = random_bytes(rng, spec.size);
  const PageId id = bus.create_page(spec, initial).id;
  Bytes want = initial;
  for (int round = 0; round < 4; ++round) {
    const auto staging = bus.stage_on_device(id);
    EXPECT_EQ(staging->epoch(), bus.page(id).epoch.load());
    for (int k = 0; k < 5; ++k) {
      const std::uint64_t off = uniform(rng, 0, spec.size - 100);
      const Bytes data = random_bytes(rng, uniform(rng, 1, round == 3 ? 99 : 20));
      edit_staged(*staging, off, data);
      std::copy(data.begin(), data.end(), want.begin() + static_cast<std::ptrdiff_t>(off));
    }
    const Bytes before = test::page_state(bus, bus.page(id)).bytes;
    const DeviceTraffic t0 = bus.device_traffic();
    EXPECT_TRUE(bus.commit_staged(*staging));
    EXPECT_EQ(bus.device_traffic().mirror_syncs, t0.mirror_syncs);
    const auto history = bus.history(id);
    std::vector<mmsb::Run> runs;
    diff_runs(before.data(), want.data(), want.size(), runs);
    EXPECT_EQ(history.back().runs, runs);
    EXPECT_EQ(test::page_state(bus, bus.page(id)).bytes, want);
  }
  // Nothing changed: nothing committed.
  const auto same = bus.stage_on_device(id);
  const Lsn lsn = bus.lsn();
  EXPECT_FALSE(bus.commit_staged(*same));
  EXPECT_EQ(bus.lsn(), lsn);
}

// A move changes no byte and no epoch: an edit whose page went away and came back to the same
// device is diffed against the page's new block and commits the edit's bytes, nothing else.
TEST_P(BusDevice, AnEditOfAPageMovedAwayAndBackCommitsItsChangedBytes) {
  Rng rng(33);
  Bus bus(BusOptions{1});
  PageSpec spec;
  spec.size = 4096;
  spec.location = "cuda:0";
  const Bytes initial = random_bytes(rng, spec.size);
  const PageId id = bus.create_page(spec, initial).id;
  const auto staging = bus.stage_on_device(id);
  const Bytes data = random_bytes(rng, 16);
  edit_staged(*staging, 100, data);
  bus.move_page(id, "cpu");
  bus.move_page(id, "cuda:0");
  const Epoch epoch = bus.page(id).epoch.load();
  EXPECT_TRUE(bus.commit_staged(*staging));
  Bytes want = initial;
  std::copy(data.begin(), data.end(), want.begin() + 100);
  EXPECT_EQ(test::page_state(bus, bus.page(id)).bytes, want);
  EXPECT_EQ(bus.page(id).epoch.load(), epoch + 1);
  std::vector<mmsb::Run> runs;
  diff_runs(initial.data(), want.data(), want.size(), runs);
  EXPECT_EQ(bus.history(id).back().runs, runs);
}

// A staging copy taken before another commit, or before a move, commits nothing; a page not in
// device memory is not staged; a staging copy outlives its bus.
TEST_P(BusDevice, AnEditOnTheDeviceIsRefusedWithNothingChanged) {
  Rng rng(32);
  auto bus = std::make_unique<Bus>(BusOptions{1});
  PageSpec spec;
  spec.size = 4096;
  spec.location = "cuda:0";
  const PageId id = bus->create_page(spec).id;
  PageSpec host_spec;
  host_spec.size = 64;
  const PageId on_host = bus->create_page(host_spec).id;

  auto staging = bus->stage_on_device(id);
  edit_staged(*staging, 10, random_bytes(rng, 8));
  bus->write(id, 100, random_bytes(rng, 4));  // someone else commits first
  test::BusState before = test::capture(*bus);
  EXPECT_EQ(code_of_commit(*bus, *staging), ErrorCode::EpochConflict);
  EXPECT_TRUE(test::same_state(before, test::capture(*bus)));
  EXPECT_FALSE(bus->commit_staged(*bus->stage_on_device(id)));  // a fresh copy commits nothing

  staging = bus->stage_on_device(id);
  edit_staged(*staging, 0, random_bytes(rng, 8));
  bus->move_page(id, "cuda:1");
  before = test::capture(*bus);
  EXPECT_EQ(code_of_commit(*bus, *staging), ErrorCode::InvalidArgument);
  EXPECT_TRUE(test::same_state(before, test::capture(*bus)));

  try {
    bus->stage_on_device(on_host);
    FAIL() << "a cpu page was staged on a device";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
  }
  staging = bus->stage_on_device(id);
  bus.reset();  // the staging copy gives its block back after the bus is gone
  staging.reset();
}

// A change whose device transfer fails inside a transaction (explicit, or the group commit of
// durability=fsync) is undone row by row, to the state before the call: host rows applied before
// the transfer failed get their earlier (non-zero) bytes back, a page written twice in a batch its
// epoch and last lsn from before the first of them. An explicit transaction goes on without the
// failed call: what it committed, and what the directory reopens to, is the rest of it.
// Emulated devices only: the failure is injected (cuda::fail_emulated_write).
TEST(BusDeviceTest, AChangeWhoseTransferFailsInATransactionIsUndoneToBeforeTheCall) {
  EmulatedDevices devices;
  Rng rng(41);
  for (Durability durability : {Durability::Fsync, Durability::Flush}) {
    SCOPED_TRACE(durability_name(durability));
    test::TempDir tmp;
    const std::string dir = tmp.path() + "/b";
    PageSpec dev_spec;
    dev_spec.size = 4096;
    dev_spec.location = "cuda:0";
    test::DurableState committed;
    {
      Bus bus(test::dir_options(dir, durability));
      const PageId dev = bus.create_page(dev_spec).id;
      const PageId host = bus.create_page(PageSpec{4096}).id;
      bus.write(host, 0, random_bytes(rng, 4096));
      bus.write(dev, 0, random_bytes(rng, 4096));

      const std::vector<PageId> ids{host, dev, host, host};
      const std::vector<std::uint64_t> offsets{0, 64, 32, 1024}, lengths{64, 64, 64, 64};
      const Bytes payload = random_bytes(rng, 256);
      const DeltaBatchView batch{ids, offsets, lengths, payload};
      const auto failing = [&](const std::function<void()>& change) {
        const test::BusState before = test::capture(bus);
        cuda::fail_emulated_write(1);
        test::expect_error(ErrorCode::DeviceUnavailable, change);
        cuda::fail_emulated_write(0);
        EXPECT_TRUE(test::same_state(before, test::capture(bus)));
      };
      const bool explicit_txn = durability == Durability::Flush;
      if (explicit_txn) bus.begin_transaction();
      bus.write(host, 8, random_bytes(rng, 8));
      failing([&] { bus.apply_batch(batch); });
      failing([&] { bus.write(dev, 8, random_bytes(rng, 8)); });
      // Outside a transaction a create is written before it applies (LoggedAheadTest covers it).
      if (explicit_txn) failing([&] { bus.create_page(dev_spec, random_bytes(rng, 4096)); });
      bus.write(host, 16, random_bytes(rng, 8));
      if (explicit_txn) bus.commit_transaction();
      bus.apply_batch(batch);  // the bus goes on
      committed = test::durable_state(bus);
    }
    Bus reopened(test::dir_options(dir, durability, /*must_exist=*/true));
    EXPECT_TRUE(test::same_durable(committed, test::durable_state(reopened)));
  }
}

// Prefetch hints for managed memory: lent to device code (a DLPack export), a unified page is
// migrated back once before the host next reads or writes it through the bus; other pages never
// migrate, and nothing is hinted for pages never lent.
TEST_P(BusDevice, UnifiedPagesLentToDeviceCodeComeBackBeforeTheHostUsesThem) {
  Bus bus(BusOptions{1});
  PageSpec spec;
  spec.size = 4096;
  spec.location = "unified";
  const PageId u = bus.create_page(spec).id;
  spec.location = "cuda:0";
  const PageId d = bus.create_page(spec).id;
  spec.location = "cpu";
  const PageId h = bus.create_page(spec).id;
  const cuda::DeviceBackend& managed = cuda::device_backend("unified");
  const auto hints = [&] { return managed.counters().prefetches; };
  const std::uint64_t h0 = hints();
  const Bytes one(8, std::byte{1});
  bus.write(u, 0, one);
  bus.host_bytes(bus.page(u));
  EXPECT_EQ(hints(), h0);  // never lent: no hint
  bus.prefetch_for_device(u, nullptr);
  EXPECT_EQ(hints(), h0 + 1);
  bus.prefetch_for_device(d, nullptr);  // device and host memory do not migrate
  bus.prefetch_for_device(h, nullptr);
  EXPECT_EQ(hints(), h0 + 1);
  const Bytes seen(bus.host_bytes(bus.page(u)), bus.host_bytes(bus.page(u)) + 8);
  EXPECT_EQ(seen, one);
  EXPECT_EQ(hints(), h0 + 2);  // back to the host once, before the read
  bus.prefetch_for_device(u, nullptr);
  bus.write(u, 8, one);
  EXPECT_EQ(hints(), h0 + 4);  // and before a write
  bus.prefetch_for_device(u, nullptr);
  DeltaBatch b;
  b.add(h, 0, one);
  b.add(u, 16, one);
  bus.apply_batch(b.view());
  EXPECT_EQ(hints(), h0 + 6);  // and before a batch row
  bus.apply_batch(b.view());
  EXPECT_EQ(hints(), h0 + 6);
}

}  // namespace
}  // namespace mmsb
