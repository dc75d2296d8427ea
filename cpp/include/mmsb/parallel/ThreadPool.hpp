#pragma once
/// ThreadPool: runs `lanes` independent pieces of work on up to `threads` threads.
///
/// Backed by a oneTBB task_arena when built with TBB (MMSB_HAVE_TBB), else by short-lived
/// std::threads. Work is split by the caller into lanes (e.g. one per page partition), so results
/// never depend on which thread ran a lane or on how many threads exist. With TBB at most as many
/// threads as TBB's default concurrency (the cores) run at once, whatever `threads` says.
/// Thread safety: run_lanes may be called from one thread at a time per pool.
#include <cstddef>
#include <functional>
#include <memory>

namespace mmsb {

class ThreadPool {
 public:
  /// threads == 0 means one per hardware thread.
  explicit ThreadPool(unsigned threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  unsigned threads() const noexcept { return threads_; }
  /// Calls fn(lane) once for each lane in [0, lanes), possibly in parallel, and returns when all
  /// are done. The first exception thrown by a lane is rethrown after all lanes finish.
  void run_lanes(unsigned lanes, const std::function<void(unsigned)>& fn);

  static unsigned hardware_threads() noexcept;
  /// "tbb" or "std::thread".
  static const char* backend() noexcept;

 private:
  struct Impl;
  unsigned threads_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mmsb
