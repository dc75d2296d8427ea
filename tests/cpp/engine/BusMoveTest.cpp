// Bus::move_page (p.to): a page moved between the host and (emulated) devices keeps exactly the
// reference model's bytes, epochs and last lsns, costs one lsn, is logged so that reopening,
// checkpoints and time travel put it back where it was at each lsn, and every refusal (a bad or
// missing location, a transaction, a live export, a failed log write, a read-only bus) changes
// nothing. The emulated devices store bytes inverted, so a move that copied device memory as if
// it were host memory would show wrong bytes.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "engine/BusState.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/log/PosixFile.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::EmulatedDevices;
using test::random_bytes;
using test::RefModel;
using test::Rng;
using test::uniform;

const char* const kLocations[] = {"cpu", "cuda:0", "cuda:1"};

struct Move {
  Lsn lsn;
  PageId page;
  std::string location;
};

// Random writes, batches and moves on `bus` and `model`; returns every move that committed.
std::vector<Move> random_moves(Rng& rng, Bus& bus, RefModel& model, int steps) {
  const auto pages = test::model_pages(model);
  std::vector<Move> moves;
  for (int step = 0; step < steps; ++step) {
    const auto target = pages[uniform(rng, 0, pages.size() - 1)];
    const PageId id = target.first;
    switch (const int kind = static_cast<int>(uniform(rng, 0, 2))) {
      case 0:
      case 1:
        test::random_write_or_batch(rng, bus, model, pages, target, kind == 1, 200);
        break;
      default: {
        const std::string to = kLocations[uniform(rng, 0, 2)];
        const bool was_there = bus.page_info(id).location == to;
        EXPECT_EQ(bus.move_page(id, to), !was_there) << "page " << id << " to " << to;
        if (!was_there) {
          model.bump_lsn();
          moves.push_back({model.lsn(), id, to});
        }
        EXPECT_EQ(bus.page_info(id).location, to);
        EXPECT_EQ(bus.device_place(bus.page(id)).on_device, to != "cpu");
        break;
      }
    }
  }
  return moves;
}

std::vector<std::string> locations(Bus& bus) {
  std::vector<std::string> out;
  for (PageId id : bus.page_ids()) out.push_back(bus.page_info(id).location);
  return out;
}

TEST(BusMoveTest, MovedPagesKeepTheModelsBytesAndReopenWhereTheyWere) {
  EmulatedDevices devices;
  test::TempDir dir;
  Rng rng(23);
  RefModel model;
  std::vector<Move> moves;
  std::vector<std::string> where;
  {
    Bus bus(test::dir_options(dir.path(), Durability::Flush));
    for (int i = 0; i < 8; ++i) {
      PageSpec spec;
      spec.size = uniform(rng, 1, 3) == 1 ? uniform(rng, 1, 64) : uniform(rng, 65, 5000);
      spec.location = kLocations[i % 3];
      model.create(bus.create_page(spec).id, spec.size);
    }
    moves = random_moves(rng, bus, model, 120 / test::kSanitizerScale);
    bus.checkpoint();  // the reopen starts from it: the moves before it come from its image
    const auto more = random_moves(rng, bus, model, 60 / test::kSanitizerScale);
    moves.insert(moves.end(), more.begin(), more.end());
    ASSERT_TRUE(test::same_as_model(bus, model));
    EXPECT_TRUE(bus.verify().ok);
    where = locations(bus);
    ASSERT_GE(moves.size(), 4u);  // about one step in five moves a page
  }
  Bus reopened(test::dir_options(dir.path(), Durability::Flush, /*must_exist=*/true));
  EXPECT_TRUE(test::same_as_model(reopened, model));
  EXPECT_EQ(locations(reopened), where);
  for (PageId id : reopened.page_ids()) {
    EXPECT_EQ(reopened.device_place(reopened.page(id)).on_device, reopened.page_info(id).location != "cpu");
  }
  EXPECT_TRUE(reopened.verify().ok);
  // The past, replayed on the host, names where each page was at each move's lsn.
  for (std::size_t i = 0; i < moves.size(); i += 3) {
    const std::shared_ptr<Bus> past = reopened.at(moves[i].lsn);
    EXPECT_EQ(past->page_info(moves[i].page).location, moves[i].location) << "at lsn " << moves[i].lsn;
    EXPECT_FALSE(past->device_place(past->page(moves[i].page)).on_device);
    if (moves[i].lsn > 1) {
      const std::shared_ptr<Bus> before = reopened.at(moves[i].lsn - 1);
      EXPECT_NE(before->page_info(moves[i].page).location, moves[i].location) << "at lsn " << moves[i].lsn - 1;
    }
  }
}

TEST(BusMoveTest, InMemoryBusMovesAndTravelsBackInTime) {
  EmulatedDevices devices;
  Rng rng(5);
  Bus bus(BusOptions{2});
  RefModel model;
  for (int i = 0; i < 5; ++i) {
    PageSpec spec;
    spec.size = uniform(rng, 1, 3000);
    model.create(bus.create_page(spec).id, spec.size);
  }
  const std::vector<Move> moves = random_moves(rng, bus, model, 80 / test::kSanitizerScale);
  ASSERT_TRUE(test::same_as_model(bus, model));
  EXPECT_TRUE(bus.verify().ok);
  ASSERT_FALSE(moves.empty());
  const Move& m = moves.back();
  EXPECT_EQ(bus.at(m.lsn)->page_info(m.page).location, m.location);
}

class BusMoveErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PageSpec spec;
    spec.size = 100;
    spec.name = "p";
    page_ = bus_.create_page(spec, Bytes(100, std::byte{7})).id;
    ASSERT_TRUE(bus_.move_page(page_, "cuda:0"));
    bus_.write(page_, 3, Bytes(5, std::byte{9}));
  }
  std::string expect_unchanged(ErrorCode code, const std::function<void()>& fn) {
    const test::BusState before = test::capture(bus_);
    const std::string msg = test::expect_error(code, fn);
    EXPECT_TRUE(test::same_state(before, test::capture(bus_))) << "after: " << msg;
    EXPECT_TRUE(bus_.device_place(bus_.page(page_)).on_device) << msg;
    return msg;
  }
  EmulatedDevices devices_;
  Bus bus_;
  PageId page_ = 0;
};

TEST_F(BusMoveErrorTest, BadOrMissingLocations) {
  EXPECT_NE(expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.move_page(page_, "gpu"); }).find("gpu"),
            std::string::npos);
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.move_page(page_, "cuda:x"); });
  expect_unchanged(ErrorCode::DeviceUnavailable, [&] { bus_.move_page(page_, "cuda:7"); });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.move_page(page_ + 10, "cpu"); });
  // Already there: no commit, not an error.
  const test::BusState before = test::capture(bus_);
  EXPECT_FALSE(bus_.move_page(page_, "cuda:0"));
  EXPECT_TRUE(test::same_state(before, test::capture(bus_)));
}

TEST_F(BusMoveErrorTest, InsideATransaction) {
  bus_.begin_transaction();
  bus_.write(page_, 0, Bytes(1, std::byte{1}));
  const std::string msg = test::expect_error(ErrorCode::InvalidArgument, [&] { bus_.move_page(page_, "cpu"); });
  EXPECT_NE(msg.find("transaction"), std::string::npos) << msg;
  bus_.rollback_transaction();
  expect_unchanged(ErrorCode::InvalidArgument, [&] {
    bus_.begin_transaction();
    try {
      bus_.move_page(page_, "cpu");
    } catch (...) {
      bus_.rollback_transaction();
      throw;
    }
  });
}

TEST_F(BusMoveErrorTest, WhileExported) {
  const PageRecord& r = bus_.page(page_);
  bus_.add_export(r);
  bus_.add_export(r);
  const std::string msg = expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.move_page(page_, "cpu"); });
  EXPECT_NE(msg.find("2 view(s)"), std::string::npos) << msg;
  bus_.drop_export(r);
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.move_page(page_, "cuda:1"); });
  bus_.drop_export(r);
  const Bytes before = test::page_state(bus_, r).bytes;
  EXPECT_TRUE(bus_.move_page(page_, "cpu"));
  EXPECT_EQ(test::page_state(bus_, bus_.page(page_)).bytes, before);
}

TEST_F(BusMoveErrorTest, ReadOnlyPast) {
  const std::shared_ptr<Bus> past = bus_.at(bus_.lsn());
  const test::BusState before = test::capture(*past);
  test::expect_error(ErrorCode::ReadOnly, [&] { past->move_page(page_, "cpu"); });
  EXPECT_TRUE(test::same_state(before, test::capture(*past)));
}

// Fails the next write to any file: the move's Location record.
class FailingWrites final : public FileObserver {
 public:
  void before_write(const std::string& path, std::uint64_t, std::span<const std::byte>) override {
    fail(ErrorCode::Durability, "write to '", path, "' failed: Input/output error (injected)");
  }
  void before_sync(const std::string&) override {}
  void before_truncate(const std::string&, std::uint64_t) override {}
  void before_rename(const std::string&, const std::string&) override {}
};

TEST(BusMoveTest, FailedLogWriteLeavesThePageWhereItWas) {
  EmulatedDevices devices;
  test::TempDir dir;
  for (const char* from : {"cpu", "cuda:0"}) {
    const std::string path = dir.path() + "/" + from;
    PageId id = 0;
    test::BusState before;
    {
      Bus bus(test::dir_options(path, Durability::Flush));
      PageSpec spec;
      spec.size = 64;
      spec.location = from;
      id = bus.create_page(spec, Bytes(64, std::byte{3})).id;
      before = test::capture(bus);
      const std::uint64_t device_bytes = bus.memory().device_bytes;
      FailingWrites disk;
      set_file_observer(&disk);
      const std::string msg = test::expect_error(ErrorCode::Durability, [&] {
        bus.move_page(id, std::string(from) == "cpu" ? "cuda:1" : "cpu");
      });
      set_file_observer(nullptr);
      EXPECT_TRUE(test::same_state(before, test::capture(bus))) << msg;
      EXPECT_EQ(bus.device_place(bus.page(id)).on_device, std::string(from) != "cpu");
      EXPECT_EQ(bus.memory().device_bytes, device_bytes) << "the new block was not freed";
    }
    Bus reopened(test::dir_options(path, Durability::Flush, /*must_exist=*/true));
    test::BusState after = test::capture(reopened);
    after.stats = before.stats;  // counters start at 0 in a new process
    EXPECT_TRUE(test::same_state(before, after));
  }
}

}  // namespace
}  // namespace mmsb
