#pragma once
/// HelperThread: a thread of its own that runs one fixed job each time its owner calls start(),
/// while the owner goes on with other work; wait() returns once that run is done, rethrowing what
/// the job threw. The log writes a large record on one while the commit applies the change, so
/// the write's kernel time and the apply overlap on two cores.
///
/// A run is handed over through a mutex and a condition variable; wait() first spins briefly,
/// since the owner usually calls it when the run is about to end, and a sleeping owner would add
/// a wake-up (tens of microseconds on a VM) to every commit.
///
/// Thread safety: one owner thread at a time calls start() and wait(), alternately (start, wait,
/// start, ...); the job runs on the helper thread only, and everything the owner wrote before
/// start() is visible to it, everything it wrote visible to the owner after wait().
#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace mmsb {

class HelperThread {
 public:
  /// Starts the thread. Throws std::system_error when the OS gives no thread.
  explicit HelperThread(std::function<void()> job);
  /// Waits for a run in progress, then stops the thread (an exception of that run is dropped).
  ~HelperThread();
  HelperThread(const HelperThread&) = delete;
  HelperThread& operator=(const HelperThread&) = delete;

  /// Begins one run of the job. Only with no run in progress (after construction or wait()).
  void start() noexcept;
  /// Blocks until the run begun by start() is done; rethrows the job's exception. Returns at once
  /// when no run was begun.
  void wait();
  /// Whether a run was begun and not yet waited for.
  bool running() const noexcept { return running_; }

 private:
  void loop() noexcept;

  std::function<void()> job_;
  std::mutex mutex_;
  std::condition_variable wake_;  // the helper's: a run was asked for, or stopping
  std::condition_variable done_cv_;
  std::atomic<bool> done_{true};
  bool asked_ = false;
  bool stopping_ = false;
  bool running_ = false;  // owner's view: begun and not yet waited for
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace mmsb
