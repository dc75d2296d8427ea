// Event delivery (Bus::set_event_sink): a sink gets the events of every commit made after it is
// set, in commit order, whichever thread set it, and none after it is cleared; a transaction's
// events arrive at its commit. Commits without a sink skip delivery altogether, so these tests
// pin down that skipping never drops what a sink should get.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/engine/Bus.hpp"

namespace mmsb {
namespace {

using test::bytes_of;

constexpr std::uint32_t kAll = 0xFFFFFFFFu;

PageSpec spec_of(std::uint64_t size) {
  PageSpec s;
  s.size = size;
  return s;
}

// What a sink received, safe to read from the test thread.
struct Received {
  std::mutex mutex;
  std::vector<BusEvent> events;

  Bus::EventSink sink() {
    return [this](std::span<const BusEvent> batch) {
      const std::lock_guard g(mutex);
      events.insert(events.end(), batch.begin(), batch.end());
    };
  }
  std::vector<Lsn> delta_lsns() {
    const std::lock_guard g(mutex);
    std::vector<Lsn> out;
    for (const BusEvent& e : events) {
      if (e.kind == EventKind::DeltaApplied) out.push_back(e.lsn);
    }
    return out;
  }
};

TEST(BusEventsTest, ASinkSetBetweenCommitsGetsEveryLaterEventInCommitOrder) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(64)).id;
  for (int i = 0; i < 3; ++i) bus.write(id, 0, bytes_of(std::string(8, static_cast<char>('a' + i))));
  Received got;
  bus.set_event_sink(got.sink(), kAll);
  const Lsn before = bus.lsn();
  bus.write(id, 8, bytes_of("xy"));
  bus.write(id, 16, bytes_of("zw"));
  EXPECT_EQ(got.delta_lsns(), (std::vector<Lsn>{before + 1, before + 2}));
  const std::lock_guard g(got.mutex);
  ASSERT_EQ(got.events.size(), 2u);
  EXPECT_EQ(got.events[1].page, id);
  EXPECT_EQ(got.events[1].epoch, 5u);
}

TEST(BusEventsTest, AClearedSinkGetsNothingMore) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(64)).id;
  Received got;
  bus.set_event_sink(got.sink(), kAll);
  bus.write(id, 0, bytes_of("a"));
  bus.set_event_sink(nullptr, kAll);
  bus.write(id, 0, bytes_of("b"));
  EXPECT_EQ(got.delta_lsns(), (std::vector<Lsn>{2}));
}

TEST(BusEventsTest, ATransactionsEventsArriveAtItsCommit) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(64)).id;
  Received got;
  bus.set_event_sink(got.sink(), kAll);
  bus.begin_transaction();
  bus.write(id, 0, bytes_of("a"));
  bus.write(id, 1, bytes_of("b"));
  EXPECT_TRUE(got.delta_lsns().empty());
  bus.commit_transaction();
  EXPECT_EQ(got.delta_lsns(), (std::vector<Lsn>{2, 3}));
}

// A sink that throws (the bindings' Ctrl-C in a handler) ends that delivery and leaves the call
// that delivered; the commit stands and the next commit's events are delivered.
TEST(BusEventsTest, WhatTheSinkThrowsLeavesTheCallAfterItsCommit) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(64)).id;
  Received got;
  bool stop = true;
  bus.set_event_sink([&](std::span<const BusEvent> batch) {
    if (stop) throw std::runtime_error("stop");
    got.sink()(batch);
  }, kAll);
  EXPECT_THROW(bus.write(id, 0, bytes_of("a")), std::runtime_error);
  EXPECT_EQ(bus.lsn(), 2u);
  EXPECT_EQ(bus.page(id).epoch.load(), 1u);
  stop = false;
  bus.write(id, 1, bytes_of("b"));
  EXPECT_EQ(got.delta_lsns(), (std::vector<Lsn>{3}));
  EXPECT_TRUE(bus.verify().ok);
}

// The commit that follows a sink set on another thread reads "a sink is set" after taking and
// releasing the commit lock the setter released: it delivers (TSan checks the flag's accesses).
TEST(BusEventsTest, ASinkSetOnAnotherThreadGetsTheCommitsThatFollow) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(64)).id;
  for (int round = 0; round < 50; ++round) {
    Received got;
    std::atomic<bool> set{false};
    std::thread setter([&] {
      bus.set_event_sink(got.sink(), kAll);
      set.store(true, std::memory_order_release);
    });
    while (!set.load(std::memory_order_acquire)) std::this_thread::yield();
    const Lsn lsn = bus.lsn() + 1;
    bus.write(id, 0, bytes_of("r"));
    setter.join();
    ASSERT_EQ(got.delta_lsns(), (std::vector<Lsn>{lsn})) << "round " << round;
    bus.set_event_sink(nullptr, kAll);
  }
}

// A handler that subscribes or cancels replaces the sink from inside a delivery, which holds the
// delivery lock: the batch running goes on, the next one goes to the new sink (it deadlocked).
TEST(BusEventsTest, ASinkReplacedFromInsideItselfTakesEffectForTheNextBatch) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(64)).id;
  Received first, second;
  bus.set_event_sink([&](std::span<const BusEvent> batch) {
    first.sink()(batch);
    bus.set_event_sink(second.sink(), kAll);
    bus.write(id, 1, bytes_of("b"));  // delivered by the loop this call runs inside
  }, kAll);
  bus.write(id, 0, bytes_of("a"));
  EXPECT_EQ(first.delta_lsns(), (std::vector<Lsn>{2}));
  EXPECT_EQ(second.delta_lsns(), (std::vector<Lsn>{3}));
}

// Replacing the sink from another thread while a delivery runs waits for that delivery, through
// the blocking hooks (the bindings release the GIL there, which the delivering handler may need).
TEST(BusEventsTest, ASinkReplacedDuringAnotherThreadsDeliveryWaitsThroughTheHooks) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(64)).id;
  static std::atomic<int> waits{0};
  waits = 0;
  bus.set_blocking_hooks({[]() -> void* {
                            ++waits;
                            return nullptr;
                          },
                          [](void*) {}});
  std::atomic<bool> inside{false}, replaced{false};
  Received got;
  bus.set_event_sink([&](std::span<const BusEvent> batch) {
    got.sink()(batch);
    inside.store(true);
    for (int i = 0; i < 200 && !replaced.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }, kAll);
  std::thread writer([&] { bus.write(id, 0, bytes_of("a")); });
  while (!inside.load()) std::this_thread::yield();
  bus.set_event_sink(nullptr, kAll);  // waits until the handler above returns
  replaced.store(true);
  writer.join();
  EXPECT_GE(waits.load(), 1);
  bus.write(id, 1, bytes_of("b"));
  EXPECT_EQ(got.delta_lsns(), (std::vector<Lsn>{2}));
}

// The thread delivering takes the events of commits other threads make meanwhile, after its
// own, in commit order; those threads return without waiting for it. A sink that waits for
// another thread's commit (a handler joining a worker that writes) used to deadlock: the worker
// waited to deliver behind the sink.
TEST(BusEventsTest, ASinkWaitingForAnotherThreadsCommitGetsItsEventsNext) {
  Bus bus;
  const PageId a = bus.create_page(spec_of(64)).id;
  const PageId b = bus.create_page(spec_of(64)).id;
  Received got;
  std::vector<std::thread::id> delivered_on;
  std::atomic<bool> worker_returned{false};
  bool returned_while_delivering = false;
  std::thread worker;
  bus.set_event_sink([&](std::span<const BusEvent> batch) {
    got.sink()(batch);
    delivered_on.push_back(std::this_thread::get_id());
    if (batch.front().page != a) return;
    worker = std::thread([&] {
      bus.write(b, 0, bytes_of("w"));
      worker_returned.store(true);
    });
    // Bounded: a regression fails here instead of hanging the suite.
    for (int i = 0; i < 5000 && !worker_returned.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    returned_while_delivering = worker_returned.load();
  }, kAll);
  bus.write(a, 0, bytes_of("m"));
  worker.join();
  EXPECT_TRUE(returned_while_delivering);
  EXPECT_EQ(got.delta_lsns(), (std::vector<Lsn>{3, 4}));
  ASSERT_EQ(delivered_on.size(), 2u);
  EXPECT_EQ(delivered_on[1], std::this_thread::get_id());  // the worker's event came on this thread
}

}  // namespace
}  // namespace mmsb
