#include "mmsb/parallel/ThreadPool.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if MMSB_HAVE_TBB
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/task_arena.h>
#endif

namespace mmsb {

struct ThreadPool::Impl {
#if MMSB_HAVE_TBB
  // No more than TBB may run at once (the cores, unless a global_control says otherwise): an
  // arena asking for more gets no more workers, only a warning on stderr at its first use.
  explicit Impl(unsigned threads)
      : arena(std::min(static_cast<int>(threads), oneapi::tbb::info::default_concurrency())) {}
  oneapi::tbb::task_arena arena;
#else
  explicit Impl(unsigned) {}
#endif
};

unsigned ThreadPool::hardware_threads() noexcept {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

const char* ThreadPool::backend() noexcept {
#if MMSB_HAVE_TBB
  return "tbb";
#else
  return "std::thread";
#endif
}

ThreadPool::ThreadPool(unsigned threads)
    : threads_(threads == 0 ? hardware_threads() : threads), impl_(std::make_unique<Impl>(threads_)) {}

ThreadPool::~ThreadPool() = default;

void ThreadPool::run_lanes(unsigned lanes, const std::function<void(unsigned)>& fn) {
  if (lanes == 0) return;
  std::exception_ptr first;
  std::mutex error_mutex;
  auto guarded = [&](unsigned lane) {
    try {
      fn(lane);
    } catch (...) {
      std::lock_guard lock(error_mutex);
      if (!first) first = std::current_exception();
    }
  };
  if (lanes == 1 || threads_ == 1) {
    for (unsigned lane = 0; lane < lanes; ++lane) guarded(lane);
    if (first) std::rethrow_exception(first);
    return;
  }
#if MMSB_HAVE_TBB
  impl_->arena.execute([&] {
    oneapi::tbb::parallel_for(0u, lanes, [&](unsigned lane) { guarded(lane); },
                              oneapi::tbb::static_partitioner());
  });
#else
  // At most threads_ run at once: each worker takes the next lane until none is left.
  std::atomic<unsigned> next{0};
  auto worker = [&] {
    for (unsigned lane = next.fetch_add(1); lane < lanes; lane = next.fetch_add(1)) guarded(lane);
  };
  std::vector<std::thread> workers;
  const unsigned extra = std::min(threads_, lanes) - 1;
  workers.reserve(extra);
  for (unsigned t = 0; t < extra; ++t) workers.emplace_back(worker);
  worker();
  for (std::thread& t : workers) t.join();
#endif
  if (first) std::rethrow_exception(first);
}

}  // namespace mmsb
