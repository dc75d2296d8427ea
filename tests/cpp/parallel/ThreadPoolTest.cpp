// ThreadPool::run_lanes: every lane exactly once, at most `threads` at a time, and the first
// exception rethrown only after every lane has run (callers rely on all partitions being done).
// Parameterized by thread count, so a failure names the pool size (1 takes a sequential path).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mmsb/parallel/ThreadPool.hpp"

namespace mmsb {
namespace {

const unsigned kLaneCounts[] = {0, 1, 2, 7, 64};

// Per-lane call counters for one run_lanes call.
class LaneCalls {
 public:
  explicit LaneCalls(unsigned lanes) : lanes_(lanes), calls_(std::make_unique<std::atomic<int>[]>(lanes + 1)) {
    for (unsigned i = 0; i <= lanes; ++i) calls_[i] = 0;
  }
  // Lanes outside [0, lanes) are counted in the extra slot.
  void hit(unsigned lane) { ++calls_[lane < lanes_ ? lane : lanes_]; }
  // "" when every lane ran exactly once, else which did not.
  std::string wrong() const {
    std::ostringstream out;
    for (unsigned i = 0; i < lanes_; ++i) {
      if (calls_[i] != 1) out << " lane " << i << " ran " << calls_[i] << "x;";
    }
    if (calls_[lanes_] != 0) out << " " << calls_[lanes_] << " calls with lane >= " << lanes_;
    return out.str();
  }

 private:
  unsigned lanes_;
  std::unique_ptr<std::atomic<int>[]> calls_;
};

class ThreadPoolTest : public ::testing::TestWithParam<unsigned> {};

TEST_P(ThreadPoolTest, EveryLaneExactlyOnce) {
  ThreadPool pool(GetParam());
  EXPECT_EQ(pool.threads(), GetParam());
  for (int rep = 0; rep < 3; ++rep) {  // a pool is reusable
    for (unsigned lanes : kLaneCounts) {
      LaneCalls calls(lanes);
      pool.run_lanes(lanes, [&](unsigned lane) { calls.hit(lane); });
      EXPECT_EQ(calls.wrong(), "") << lanes << " lanes";
    }
  }
}

TEST_P(ThreadPoolTest, ExceptionRethrownAfterAllLanesFinish) {
  ThreadPool pool(GetParam());
  for (unsigned lanes : kLaneCounts) {
    if (lanes == 0) continue;
    const unsigned bad = lanes / 2;
    LaneCalls calls(lanes);
    try {
      pool.run_lanes(lanes, [&](unsigned lane) {
        calls.hit(lane);
        if (lane == bad) throw std::runtime_error("lane " + std::to_string(lane));
      });
      ADD_FAILURE() << "no exception; " << lanes << " lanes";
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), "lane " + std::to_string(bad));
    }
    EXPECT_EQ(calls.wrong(), "") << lanes << " lanes, lane " << bad << " threw";
  }
}

TEST_P(ThreadPoolTest, OneOfSeveralExceptionsIsRethrown) {
  ThreadPool pool(GetParam());
  LaneCalls calls(16);
  try {
    pool.run_lanes(16, [&](unsigned lane) {
      calls.hit(lane);
      if (lane % 3 == 1) throw std::runtime_error(std::to_string(lane));
    });
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::stoi(e.what()) % 3, 1);
  }
  EXPECT_EQ(calls.wrong(), "");
}

TEST_P(ThreadPoolTest, AtMostThreadsLanesRunAtOnce) {
  ThreadPool pool(GetParam());
  std::atomic<int> running{0};
  std::atomic<int> peak{0};
  pool.run_lanes(24, [&](unsigned) {
    const int now = ++running;
    int seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
    // Long enough that lanes would overlap if more threads than allowed were running them.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    --running;
  });
  EXPECT_GE(peak.load(), 1);
  EXPECT_LE(peak.load(), static_cast<int>(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Threads, ThreadPoolTest, ::testing::Values(1u, 2u, 4u),
                         [](const ::testing::TestParamInfo<unsigned>& param) {
                           return "threads" + std::to_string(param.param);
                         });

TEST(ThreadPoolDefaultsTest, ZeroMeansHardwareThreads) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.threads(), ThreadPool::hardware_threads());
  EXPECT_GE(ThreadPool::hardware_threads(), 1u);
  const std::string backend = ThreadPool::backend();
  EXPECT_TRUE(backend == "tbb" || backend == "std::thread") << backend;
}

}  // namespace
}  // namespace mmsb
