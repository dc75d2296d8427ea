#include "mmsb/parallel/ThreadPool.hpp"

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if MMSB_HAVE_TBB
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>
#endif

namespace mmsb {

struct ThreadPool::Impl {
#if MMSB_HAVE_TBB
  explicit Impl(unsigned threads) : arena(static_cast<int>(threads)) {}
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
  if (lanes == 1 || threads_ == 1) {
    for (unsigned lane = 0; lane < lanes; ++lane) fn(lane);
    return;
  }
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
#if MMSB_HAVE_TBB
  impl_->arena.execute([&] {
    oneapi::tbb::parallel_for(0u, lanes, [&](unsigned lane) { guarded(lane); },
                              oneapi::tbb::static_partitioner());
  });
#else
  std::vector<std::thread> workers;
  workers.reserve(lanes - 1);
  for (unsigned lane = 1; lane < lanes; ++lane) workers.emplace_back(guarded, lane);
  guarded(0);
  for (std::thread& t : workers) t.join();
#endif
  if (first) std::rethrow_exception(first);
}

}  // namespace mmsb
