#pragma once
/// HelperThread: a thread of its own that runs its one job each time its owner calls start(),
/// while the owner goes on with other work; wait() returns once every run begun is done,
/// rethrowing what a run threw. The log checksums and writes a large record on one while the
/// commit validates and applies the change, so that work and the write's kernel time overlap on
/// two cores.
///
/// Each run gets the number start() was given (which part of its work the job is to do), and
/// runs begun while one is in progress queue behind it, in order (at most kMaxQueued). A run is
/// handed over through a mutex and a condition variable; wait() first spins briefly, since the
/// owner usually calls it when the run is about to end, and a sleeping owner would add a wake-up
/// (tens of microseconds on a VM) to every commit. For the same reason a run begun with
/// `more_soon` leaves the helper spinning for a while after it, awake for the run the owner is
/// about to begin.
///
/// Thread safety: one owner thread at a time calls start() and wait(); the job runs on the helper
/// thread only, one run after another. Everything the owner wrote before a start() is visible to
/// that run, everything the runs wrote visible to the owner after wait().
#include <array>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace mmsb {

class HelperThread {
 public:
  /// Runs begun and not yet taken by the helper, at most.
  static constexpr unsigned kMaxQueued = 4;

  /// Starts the thread. Throws std::system_error when the OS gives no thread.
  explicit HelperThread(std::function<void(unsigned)> job);
  /// Waits for the runs begun, then stops the thread (their exceptions are dropped).
  ~HelperThread();
  HelperThread(const HelperThread&) = delete;
  HelperThread& operator=(const HelperThread&) = delete;

  /// Begins one run of the job with `what`, after the runs already begun. `more_soon`: the owner
  /// will begin another run shortly after this one ends (the helper stays awake a while for it).
  /// At most kMaxQueued runs may wait to be taken (the owner's bound; asserted in debug builds).
  void start(unsigned what = 0, bool more_soon = false) noexcept;
  /// Blocks until every run begun is done; rethrows the first exception one of them threw (the
  /// others are dropped). Returns at once when none was begun since the last wait().
  void wait();
  /// Whether runs were begun and not yet waited for.
  bool running() const noexcept { return running_; }

 private:
  void loop() noexcept;
  /// After a run begun with more_soon: spins until the next run is begun, for a while at most.
  void linger() noexcept;

  std::function<void(unsigned)> job_;
  std::mutex mutex_;
  std::condition_variable wake_;  // the helper's: a run was begun, or stopping
  std::condition_variable done_cv_;
  std::array<unsigned, kMaxQueued> queue_{};  // `what` of the runs begun, not yet taken
  std::array<bool, kMaxQueued> soon_{};
  unsigned head_ = 0, queued_ = 0;            // under mutex_
  std::atomic<unsigned> begun_{0};            // runs begun, ever (the lingering helper reads it)
  std::atomic<unsigned> finished_{0};         // runs done, ever
  bool stopping_ = false;
  bool running_ = false;  // owner's view: begun and not yet waited for
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace mmsb
