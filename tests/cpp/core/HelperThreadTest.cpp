// HelperThread: each start() runs the job once on the helper thread, and wait() returns after
// that run with its effects visible; a job's exception comes back from wait() and the next run
// goes on; the destructor lets a run in progress finish.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "mmsb/core/HelperThread.hpp"

namespace {

TEST(HelperThread, EachStartRunsTheJobOnceOnAnotherThreadAndWaitSeesItsEffects) {
  int runs = 0;  // plain: start() and wait() order the accesses
  std::thread::id ran_on;
  mmsb::HelperThread helper([&] {
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

TEST(HelperThread, AJobsExceptionComesBackFromWaitAndTheNextRunGoesOn) {
  int runs = 0;
  mmsb::HelperThread helper([&] {
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

TEST(HelperThread, TheDestructorLetsARunInProgressFinish) {
  std::atomic<bool> finished{false};
  {
    mmsb::HelperThread helper([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      finished.store(true);
    });
    helper.start();
  }
  EXPECT_TRUE(finished.load());
}

}  // namespace
