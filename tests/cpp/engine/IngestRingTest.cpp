// IngestRing: order and wraparound, all-or-nothing pushes, capacity rules, close and blocking,
// the stop at a reserved-but-unpublished slot, and a multi-producer stress run in which every
// item must come out exactly once and each producer's items in its own order.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/engine/IngestRing.hpp"

namespace mmsb {
namespace {

using Ring = IngestRing<std::uint64_t>;

std::vector<std::uint64_t> iota(std::uint64_t from, std::size_t n) {
  std::vector<std::uint64_t> v(n);
  std::iota(v.begin(), v.end(), from);
  return v;
}

std::vector<std::uint64_t> drain_vec(Ring& ring) {
  std::vector<std::uint64_t> out;
  ring.drain_all(out);
  return out;
}

// Exposes the two halves of a push so a run can stay reserved but unpublished.
class HoldingRing : public Ring {
 public:
  using Ring::Ring;
  std::uint64_t reserve(std::uint64_t n) {
    std::uint64_t first = 0;
    EXPECT_EQ(try_reserve(n, first), Reserve::Ok);
    return first;
  }
  void finish(std::uint64_t first, std::span<const std::uint64_t> items) { publish(first, items); }
};

TEST(IngestRingTest, OrderAndWraparoundOverManyLaps) {
  Ring ring(8);
  std::mt19937_64 rng(7);
  std::uint64_t next_in = 0, next_out = 0;
  std::vector<std::uint64_t> buf(8);
  for (int step = 0; step < 5000; ++step) {  // over 1,000 laps of an 8-slot ring
    const std::size_t free = ring.capacity() - ring.size_approx();
    const std::size_t n = std::uniform_int_distribution<std::size_t>(0, free)(rng);
    ASSERT_TRUE(ring.try_push(iota(next_in, n)));
    next_in += n;
    const std::size_t want = std::uniform_int_distribution<std::size_t>(0, 8)(rng);
    const std::size_t got = ring.drain(std::span(buf).first(want));
    ASSERT_EQ(got, std::min<std::uint64_t>(want, next_in - next_out));
    for (std::size_t i = 0; i < got; ++i) ASSERT_EQ(buf[i], next_out++) << "step " << step;
  }
  EXPECT_EQ(drain_vec(ring), iota(next_out, next_in - next_out));
  EXPECT_EQ(ring.size_approx(), 0u);
  EXPECT_GT(next_in, 1000 * ring.capacity()) << "too few laps to test wraparound";
}

TEST(IngestRingTest, BulkIsAllOrNothingWhenNearlyFull) {
  Ring ring(16);
  ASSERT_TRUE(ring.try_push(iota(0, 13)));
  EXPECT_FALSE(ring.try_push(iota(100, 4)));  // 3 free: none of the 4 goes in
  EXPECT_EQ(ring.size_approx(), 13u);
  EXPECT_TRUE(ring.try_push(iota(13, 3)));  // exactly the 3 free slots
  EXPECT_EQ(ring.size_approx(), 16u);
  EXPECT_EQ(drain_vec(ring), iota(0, 16));
  // A bulk that straddles the end of the slot array lands contiguously in order.
  ASSERT_TRUE(ring.try_push(iota(16, 10)));
  std::vector<std::uint64_t> six(6);
  ASSERT_EQ(ring.drain(six), 6u);
  ASSERT_TRUE(ring.try_push(iota(26, 12)));
  EXPECT_EQ(drain_vec(ring), iota(22, 16));
}

TEST(IngestRingTest, TryPushWhenFullLeavesStateUnchanged) {
  Ring ring(4);
  ASSERT_TRUE(ring.try_push(iota(0, 4)));
  EXPECT_EQ(ring.high_water(), 4u);
  EXPECT_FALSE(ring.try_push(std::uint64_t{99}));
  EXPECT_FALSE(ring.try_push(iota(99, 2)));
  EXPECT_TRUE(ring.try_push(std::span<const std::uint64_t>()));  // empty: trivially all
  EXPECT_EQ(ring.size_approx(), 4u);
  EXPECT_EQ(drain_vec(ring), iota(0, 4));
  std::vector<std::uint64_t> buf(4);
  EXPECT_EQ(ring.drain(buf), 0u);
  EXPECT_TRUE(ring.try_push(std::uint64_t{4}));
  EXPECT_EQ(drain_vec(ring), iota(4, 1));
}

TEST(IngestRingTest, HighWaterTracksLargestSizeSinceReset) {
  Ring ring(64);
  ASSERT_TRUE(ring.try_push(iota(0, 5)));
  ASSERT_TRUE(ring.try_push(iota(5, 20)));
  EXPECT_EQ(ring.high_water(), 25u);
  drain_vec(ring);
  EXPECT_EQ(ring.high_water(), 25u);  // a drain does not lower it
  ring.reset_high_water();
  EXPECT_EQ(ring.high_water(), 0u);
  ASSERT_TRUE(ring.push(iota(25, 3)));
  EXPECT_EQ(ring.high_water(), 3u);
}

TEST(IngestRingTest, CapacityIsRoundedAndCheckedAndSoIsThePushSize) {
  EXPECT_EQ(Ring(1).capacity(), 1u);
  EXPECT_EQ(Ring(3).capacity(), 4u);
  EXPECT_EQ(Ring(1000).capacity(), 1024u);
  EXPECT_EQ(Ring(1024).capacity(), 1024u);
  for (std::size_t bad : {std::size_t{0}, Ring::kMaxCapacity + 1, ~std::size_t{0}}) {
    try {
      Ring ring(bad);
      ADD_FAILURE() << "capacity " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
  }
  Ring ring(5);  // 8 slots
  const auto nine = iota(0, 9);
  for (bool blocking : {false, true}) {
    try {
      blocking ? ring.push(nine) : ring.try_push(nine);
      ADD_FAILURE() << "a push larger than the ring was accepted, blocking=" << blocking;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find("9 items"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(ring.size_approx(), 0u);
  EXPECT_TRUE(ring.push(iota(0, 8)));  // exactly the capacity is fine
}

TEST(IngestRingTest, CarriesStructItems) {
  struct Item {
    std::uint32_t page;
    std::uint16_t tag;
    double value;
    bool operator==(const Item&) const = default;
  };
  IngestRing<Item> ring(4);
  const std::vector<Item> in = {{1, 2, 0.5}, {3, 4, -1.0}, {5, 6, 1e300}};
  ASSERT_TRUE(ring.try_push(in));
  std::vector<Item> out = {{9, 9, 9.0}};
  EXPECT_EQ(ring.drain_all(out), 3u);
  EXPECT_EQ(out, (std::vector<Item>{{9, 9, 9.0}, {1, 2, 0.5}, {3, 4, -1.0}, {5, 6, 1e300}}));
}

TEST(IngestRingTest, DrainStopsAtReservedButUnpublishedSlot) {
  HoldingRing ring(8);
  ASSERT_TRUE(ring.try_push(iota(0, 2)));
  const std::uint64_t held = ring.reserve(2);  // positions 2, 3: reserved, not published
  EXPECT_EQ(held, 2u);
  ASSERT_TRUE(ring.try_push(iota(4, 2)));  // published behind the hole
  EXPECT_EQ(ring.size_approx(), 6u);
  EXPECT_EQ(drain_vec(ring), iota(0, 2));
  EXPECT_EQ(drain_vec(ring), std::vector<std::uint64_t>{});  // 4 and 5 wait for the hole
  EXPECT_FALSE(ring.try_push(iota(6, 5)));                    // the hole still takes room
  const auto hole = iota(2, 2);
  ring.finish(held, hole);
  EXPECT_EQ(drain_vec(ring), iota(2, 4));
}

TEST(IngestRingTest, BlockedProducerResumesWhenTheConsumerDrains) {
  Ring ring(8);
  ASSERT_TRUE(ring.try_push(iota(0, 8)));
  std::atomic<bool> done{false};
  std::thread producer([&] {
    EXPECT_TRUE(ring.push(iota(8, 5)));
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(done.load());
  std::vector<std::uint64_t> out, buf(4);
  ASSERT_EQ(ring.drain(buf), 4u);  // 4 free: not yet enough for 5
  out.insert(out.end(), buf.begin(), buf.end());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(done.load());
  while (out.size() < 13) {
    ring.drain_all(out);
    std::this_thread::yield();
  }
  producer.join();
  EXPECT_EQ(out, iota(0, 13));
}

TEST(IngestRingTest, CloseWakesBlockedProducersAndKeepsItemsDrainable) {
  Ring ring(4);
  ASSERT_TRUE(ring.try_push(iota(0, 3)));
  std::atomic<int> returned_false{0};
  std::vector<std::thread> producers;
  for (int i = 0; i < 3; ++i) {
    producers.emplace_back([&] {
      if (!ring.push(iota(100, 2))) ++returned_false;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(ring.closed());
  ring.close();
  for (auto& t : producers) t.join();
  EXPECT_EQ(returned_false.load(), 3);
  EXPECT_TRUE(ring.closed());
  EXPECT_FALSE(ring.try_push(std::uint64_t{7}));
  EXPECT_FALSE(ring.push(std::uint64_t{7}));
  EXPECT_EQ(drain_vec(ring), iota(0, 3));
  EXPECT_EQ(ring.size_approx(), 0u);
}

// 4 producers push their numbered items in random bulks (1..64), blocking or trying, into a ring
// that is full most of the time, while the consumer drains in random amounts. With 64 slots a
// bulk of 64 needs the ring empty: the blocking path runs constantly.
class IngestRingStress : public ::testing::TestWithParam<std::size_t> {};

TEST_P(IngestRingStress, EveryItemOnceInProducerOrder) {
  constexpr std::uint64_t kPerProducer = 250'000;  // ~0.1 s, also under TSan
  constexpr unsigned kProducers = 4;
  constexpr std::size_t kMaxBulk = 64;
  Ring ring(GetParam());
  std::atomic<std::uint64_t> try_failures{0};
  std::vector<std::thread> producers;
  for (unsigned p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      std::mt19937_64 rng(1000 + p);
      std::vector<std::uint64_t> bulk;
      for (std::uint64_t seq = 0; seq < kPerProducer;) {
        const std::size_t n = std::min<std::uint64_t>(
            std::uniform_int_distribution<std::size_t>(1, kMaxBulk)(rng), kPerProducer - seq);
        bulk.clear();
        for (std::size_t i = 0; i < n; ++i) bulk.push_back(std::uint64_t{p} << 32 | (seq + i));
        if (rng() % 2 == 0) {
          ASSERT_TRUE(ring.push(bulk));
        } else {
          while (!ring.try_push(bulk)) {  // the same bulk again: order must hold
            ++try_failures;
            std::this_thread::yield();
          }
        }
        seq += n;
      }
    });
  }
  std::vector<std::uint64_t> next(kProducers, 0);
  std::vector<std::uint64_t> buf(2 * kMaxBulk);
  std::mt19937_64 rng(99);
  std::uint64_t received = 0;
  bool ok = true;
  while (received < kProducers * kPerProducer && ok) {
    const std::size_t want = std::uniform_int_distribution<std::size_t>(1, buf.size())(rng);
    const std::size_t got = ring.drain(std::span(buf).first(want));
    for (std::size_t i = 0; i < got && ok; ++i) {
      const std::uint64_t p = buf[i] >> 32, seq = buf[i] & 0xffff'ffffu;
      ok = p < kProducers && seq == next[p];
      EXPECT_TRUE(ok) << "item " << received + i << ": producer " << p << " seq " << seq;
      if (ok) ++next[p];
    }
    received += got;
    if (got == 0) std::this_thread::yield();
  }
  if (!ok) ring.close();  // let blocked producers return before joining
  for (auto& t : producers) t.join();
  ASSERT_TRUE(ok);
  for (unsigned p = 0; p < kProducers; ++p) EXPECT_EQ(next[p], kPerProducer) << "producer " << p;
  EXPECT_EQ(drain_vec(ring), std::vector<std::uint64_t>{});
  // A reservation of n always sees at least n reserved slots, and bulks of 64 were pushed.
  EXPECT_LE(ring.high_water(), ring.capacity());
  EXPECT_GE(ring.high_water(), kMaxBulk);
  RecordProperty("try_push_failures", std::to_string(try_failures.load()));
}

INSTANTIATE_TEST_SUITE_P(Capacity, IngestRingStress, ::testing::Values(1024, 64));

}  // namespace
}  // namespace mmsb
