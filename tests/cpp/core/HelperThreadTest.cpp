// HelperThread: each start() runs the job once on the helper thread, with the number it was
// given; runs begun while one is in progress queue behind it in order; wait() returns after all
// of them with their effects visible; a job's exception comes back from wait() and the next run
// goes on; the destructor lets the runs begun finish.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mmsb/core/HelperThread.hpp"

namespace {

TEST(HelperThread, EachStartRunsTheJobOnceOnAnotherThreadAndWaitSeesItsEffects) {
  int runs = 0;  // plain: start() and wait() order the accesses
  std::thread::id ran_on;
  mmsb::HelperThread helper([&](unsigned) {
    ++runs;
    ran_on = std::this_thread::get_id();
  });
  EXPECT_FALSE(helper.running());
  helper.wait();  // nothing begun: returns at once
  for (int i = 1; i <= 100; ++i) {
    helper.start();
    EXPECT_TRUE(helper.running());
    helper.wait();
    EXPECT_FALSE(helper.running());
    ASSERT_EQ(runs, i);
  }
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(HelperThread, RunsBegunDuringOneQueueInOrderAndWaitCoversThemAll) {
  std::vector<unsigned> seen;  // written by the helper only; read after wait()
  std::atomic<bool> release{false};
  mmsb::HelperThread helper([&](unsigned what) {
    if (what == 0) {
      while (!release.load()) std::this_thread::yield();  // holds the first run until all are queued
    }
    seen.push_back(what);
  });
  for (int round = 0; round < 50; ++round) {
    seen.clear();
    release.store(false);
    helper.start(0, /*more_soon=*/true);
    helper.start(1);
    helper.start(2, /*more_soon=*/true);
    release.store(true);
    helper.wait();
    ASSERT_EQ(seen, (std::vector<unsigned>{0, 1, 2})) << "round " << round;
    // A run begun while the helper lingers after a more_soon run is taken as well.
    helper.start(3, /*more_soon=*/true);
    helper.wait();
    helper.start(4);
    helper.wait();
    ASSERT_EQ(seen, (std::vector<unsigned>{0, 1, 2, 3, 4})) << "round " << round;
  }
}

TEST(HelperThread, AJobsExceptionComesBackFromWaitAndTheNextRunGoesOn) {
  int runs = 0;
  mmsb::HelperThread helper([&](unsigned) {
    if (++runs == 2) throw std::runtime_error("run 2 failed");
  });
  helper.start();
  helper.wait();
  helper.start();
  try {
    helper.wait();
    FAIL() << "the job's exception was lost";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "run 2 failed");
  }
  helper.start();
  EXPECT_NO_THROW(helper.wait());
  EXPECT_EQ(runs, 3);
}

TEST(HelperThread, AFailedRunIsReportedOnceTheRunsQueuedAfterItAreDone) {
  std::atomic<int> runs{0};
  mmsb::HelperThread helper([&](unsigned what) {
    ++runs;
    if (what == 1) throw std::runtime_error("first of the queue failed");
  });
  helper.start(1, /*more_soon=*/true);
  helper.start(2);
  EXPECT_THROW(helper.wait(), std::runtime_error);
  EXPECT_EQ(runs.load(), 2);  // the run after the failed one still ran before wait() returned
  EXPECT_FALSE(helper.running());
}

TEST(HelperThread, TheDestructorLetsTheRunsBegunFinish) {
  std::atomic<int> finished{0};
  {
    mmsb::HelperThread helper([&](unsigned) {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      ++finished;
    });
    helper.start(0, /*more_soon=*/true);
    helper.start(1);
  }
  EXPECT_EQ(finished.load(), 2);
}

}  // namespace
