// A change logged outside a transaction (durability flush or none, the fast path: no undo kept)
// is written to the log before it is applied. When the apply then fails (here a device write,
// injected into the emulated devices), the log holds a change that memory does not. Before the
// fix the bus went on: a failed single write left its lsn to the next commit, so the directory
// held two records with one lsn, and a reopen no longer showed what the bus had acknowledged.
// Now the bus refuses every write until it is reopened, and the reopened directory shows the
// state before the failed change or with all of it, never a later write the bus refused.
// A device page created with content is the exception: its transfer comes before the record.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "TestUtil.hpp"
#include "engine/BusState.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/engine/Bus.hpp"

namespace mmsb {
namespace {

enum class Change { Write, Batch };

constexpr std::uint64_t kPage = 4096;

// Disarms the injected failure whatever the test does.
struct FailNextDeviceWrite {
  FailNextDeviceWrite() { cuda::fail_emulated_write(1); }
  ~FailNextDeviceWrite() { cuda::fail_emulated_write(0); }
};

PageSpec device_spec() {
  PageSpec spec;
  spec.size = kPage;
  spec.location = "cuda:0";
  return spec;
}

// Applies `change` to device page `dev`, each writing bytes of 7.
void apply_change(Bus& bus, Change change, PageId dev) {
  const test::Bytes sevens(64, std::byte{7});
  switch (change) {
    case Change::Write:
      bus.write(dev, 128, sevens);
      break;
    case Change::Batch: {
      const std::vector<PageId> ids{dev, dev};
      const std::vector<std::uint64_t> offsets{0, 1024}, lengths{32, 32};
      bus.apply_batch(DeltaBatchView{ids, offsets, lengths, sevens});
      break;
    }
  }
}

class LoggedAhead : public ::testing::TestWithParam<std::tuple<Durability, Change>> {};

TEST_P(LoggedAhead, AChangeFailingAfterItsRecordStopsWritesAndTheReopenedBusHasAllOrNoneOfIt) {
  const auto [durability, change] = GetParam();
  test::EmulatedDevices devices;
  test::TempDir tmp;
  const std::string dir = tmp.path() + "/b";
  test::DurableState before, with_change;
  PageId dev = 0, host = 0;
  {
    // What the directory would hold had the change succeeded, from a twin bus.
    test::TempDir twin_tmp;
    Bus twin(test::dir_options(twin_tmp.path() + "/b", durability));
    const PageId d = twin.create_page(device_spec()).id;
    twin.create_page(PageSpec{kPage});
    twin.write(d, 0, test::Bytes(16, std::byte{1}));
    apply_change(twin, change, d);
    with_change = test::durable_state(twin);
  }
  {
    Bus bus(test::dir_options(dir, durability));
    dev = bus.create_page(device_spec()).id;
    host = bus.create_page(PageSpec{kPage}).id;
    bus.write(dev, 0, test::Bytes(16, std::byte{1}));
    before = test::durable_state(bus);
    {
      FailNextDeviceWrite fail;
      test::expect_error(ErrorCode::DeviceUnavailable, [&] { apply_change(bus, change, dev); });
    }
    // The device write failed before moving a byte: the pages hold what they held.
    const test::Bytes dev_bytes = test::page_state(bus, bus.page(dev)).bytes;
    EXPECT_TRUE(test::same_bytes(before.bus.pages[0].bytes, dev_bytes));
    EXPECT_EQ(bus.page(dev).epoch.load(), before.bus.pages[0].epoch);
    // Every write is refused, naming why; reads go on.
    const std::string why = test::expect_error(ErrorCode::Durability, [&] {
      bus.write(host, 0, test::Bytes(8, std::byte{9}));
    });
    EXPECT_NE(why.find("reopen the bus"), std::string::npos) << why;
    test::expect_error(ErrorCode::Durability, [&] { bus.create_page(PageSpec{64}); });
    test::expect_error(ErrorCode::Durability, [&] { bus.set_metadata(host, "k", MetaValue{"v", false}); });
    test::expect_error(ErrorCode::Durability, [&] { bus.checkpoint(); });
    EXPECT_EQ(test::page_state(bus, bus.page(host)).bytes, test::Bytes(kPage, std::byte{0}));
    try {
      bus.close();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Durability) << e.what();
    }
  }
  Bus reopened(test::dir_options(dir, durability, /*must_exist=*/true));
  const test::DurableState got = test::durable_state(reopened);
  EXPECT_TRUE(test::same_durable(before, got) || test::same_durable(with_change, got))
      << "reopened at lsn " << got.bus.lsn << "; before the change " << before.bus.lsn << ", with it "
      << with_change.bus.lsn;
  // The reopened bus writes again, after whichever state it recovered.
  reopened.write(host, 0, test::Bytes(8, std::byte{9}));
  EXPECT_EQ(reopened.lsn(), got.bus.lsn + 1);
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<Durability, Change>>& info) {
  static const char* const kChanges[] = {"Write", "Batch"};
  return std::string(durability_name(std::get<0>(info.param))) + "_" + kChanges[static_cast<int>(std::get<1>(info.param))];
}

INSTANTIATE_TEST_SUITE_P(Modes, LoggedAhead,
                         ::testing::Combine(::testing::Values(Durability::Flush, Durability::None),
                                            ::testing::Values(Change::Write, Change::Batch)),
                         case_name);

// A device page's initial content is transferred before its creation is logged: a failed
// transfer is a failure before the record, so nothing is created and the bus goes on.
class DeviceContent : public ::testing::TestWithParam<Durability> {};

TEST_P(DeviceContent, AFailedTransferCreatesNothingAndTheBusGoesOn) {
  test::EmulatedDevices devices;
  test::TempDir tmp;
  const std::string dir = tmp.path() + "/b";
  test::DurableState before;
  PageId host = 0;
  {
    Bus bus(test::dir_options(dir, GetParam()));
    host = bus.create_page(PageSpec{kPage}).id;
    before = test::durable_state(bus);
    {
      FailNextDeviceWrite fail;
      test::expect_error(ErrorCode::DeviceUnavailable,
                         [&] { bus.create_page(device_spec(), test::Bytes(kPage, std::byte{7})); });
    }
    EXPECT_TRUE(test::same_durable(before, test::durable_state(bus)));
    EXPECT_TRUE(bus.verify().ok);
    // Not stopped: the next creation takes the lsn and id the failed one would have had.
    const PageId dev = bus.create_page(device_spec(), test::Bytes(kPage, std::byte{7})).id;
    EXPECT_EQ(dev, host + 1);
    EXPECT_EQ(bus.lsn(), before.bus.lsn + 2);
    bus.close();
  }
  Bus reopened(test::dir_options(dir, GetParam(), /*must_exist=*/true));
  EXPECT_EQ(reopened.lsn(), before.bus.lsn + 2);
  EXPECT_EQ(test::page_state(reopened, reopened.page(host + 1)).bytes, test::Bytes(kPage, std::byte{7}));
}

std::string durability_case(const ::testing::TestParamInfo<Durability>& info) {
  return std::string(durability_name(info.param));
}

INSTANTIATE_TEST_SUITE_P(Modes, DeviceContent, ::testing::Values(Durability::Flush, Durability::None),
                         durability_case);

// An in-memory bus keeps its history as log records too: a change failing after its record is
// kept would leave time travel showing a state the bus never held, so it stops taking writes.
TEST(LoggedAheadInMemory, AFailedDeviceWriteStopsWritesButNotReads) {
  test::EmulatedDevices devices;
  Bus bus(BusOptions{2});
  const PageId dev = bus.create_page(device_spec()).id;
  const PageId host = bus.create_page(PageSpec{kPage}).id;
  bus.write(host, 0, test::Bytes(8, std::byte{3}));
  {
    FailNextDeviceWrite fail;
    test::expect_error(ErrorCode::DeviceUnavailable, [&] { bus.write(dev, 0, test::Bytes(8, std::byte{7})); });
  }
  const std::string why = test::expect_error(ErrorCode::Durability, [&] {
    bus.write(host, 0, test::Bytes(8, std::byte{9}));
  });
  EXPECT_NE(why.find("in-memory"), std::string::npos) << why;
  EXPECT_EQ(bus.page(host).data[0], std::byte{3});
  EXPECT_EQ(test::page_state(bus, bus.page(dev)).bytes, test::Bytes(kPage, std::byte{0}));
}

// Where a transaction holds the change (fsync's group commit, an explicit transaction), its
// record is written only after it applied: a failure undoes it and the bus goes on.
TEST(LoggedAheadTransaction, AFailureInsideATransactionIsUndoneAndTheBusGoesOn) {
  test::EmulatedDevices devices;
  for (Durability durability : {Durability::Fsync, Durability::Flush}) {
    SCOPED_TRACE(durability_name(durability));
    test::TempDir tmp;
    const std::string dir = tmp.path() + "/b";
    test::DurableState after;
    {
      Bus bus(test::dir_options(dir, durability));
      const PageId dev = bus.create_page(device_spec()).id;
      const PageId host = bus.create_page(PageSpec{kPage}).id;
      const test::DurableState before = test::durable_state(bus);
      {
        FailNextDeviceWrite fail;
        test::expect_error(ErrorCode::DeviceUnavailable, [&] {
          if (durability == Durability::Fsync) {
            bus.write(dev, 0, test::Bytes(8, std::byte{7}));
          } else {
            bus.begin_transaction();
            try {
              bus.write(host, 0, test::Bytes(8, std::byte{5}));
              bus.write(dev, 0, test::Bytes(8, std::byte{7}));
            } catch (...) {
              bus.rollback_transaction();
              throw;
            }
          }
        });
      }
      EXPECT_TRUE(test::same_durable(before, test::durable_state(bus)));
      bus.write(host, 0, test::Bytes(8, std::byte{9}));
      after = test::durable_state(bus);
    }
    Bus reopened(test::dir_options(dir, durability, /*must_exist=*/true));
    EXPECT_TRUE(test::same_durable(after, test::durable_state(reopened)));
  }
}

}  // namespace
}  // namespace mmsb
