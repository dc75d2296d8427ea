#include "mmsb/core/Prefaulter.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

namespace mmsb {
namespace {

// Smaller ranges fault in fast enough on the writer's side to not be worth a hand-over.
constexpr std::size_t kMinPages = 16;

struct Range {
  std::uintptr_t begin = 0;
  std::size_t bytes = 0;
};

struct Queue {
  std::mutex mutex;
  std::condition_variable ready;
  std::condition_variable idle;
  Range latest;                                         // populate(): bytes == 0 when none
  std::array<Range, Prefaulter::kBacklog> backlog;      // populate_later(): a ring
  std::size_t backlog_head = 0;
  std::size_t backlog_count = 0;
  bool busy = false;  // the helper is populating a request it took
  bool supported = true;

  bool empty() const noexcept { return latest.bytes == 0 && backlog_count == 0; }
  // The next range for the helper: the buffer about to be written first.
  Range take() noexcept {
    Range r = latest;
    if (r.bytes != 0) {
      latest = Range{};
    } else {
      r = backlog[backlog_head];
      backlog_head = (backlog_head + 1) % backlog.size();
      --backlog_count;
    }
    return r;
  }
};

Queue& queue() {
  static Queue* q = new Queue;  // leaked on purpose: the helper may outlive static destruction
  return *q;
}

}  // namespace

Prefaulter& Prefaulter::shared() noexcept {
  static Prefaulter* p = [] {
    auto* made = new Prefaulter;  // leaked with the queue, for the same reason
    try {
      std::thread([made] { made->run(); }).detach();
    } catch (...) {
      // No thread to be had: every request is dropped, as on a kernel without the madvise.
      std::lock_guard g(queue().mutex);
      queue().supported = false;
    }
    return made;
  }();
  return *p;
}

namespace {
// Queues the whole pages of [begin, begin + bytes) with `put` (under the queue's lock), unless
// they are too few to be worth it.
template <typename Put>
void request(void* begin, std::size_t bytes, Put put) noexcept {
#if defined(MADV_POPULATE_WRITE)
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto from = (reinterpret_cast<std::uintptr_t>(begin) + page - 1) / page * page;
  const auto to = (reinterpret_cast<std::uintptr_t>(begin) + bytes) / page * page;
  if (to <= from || to - from < kMinPages * page) return;
  Queue& q = queue();
  {
    // Never waits: a hint is dropped rather than delay the writer (and a child forked while the
    // helper held the lock, which has no helper, must not block here).
    std::unique_lock g(q.mutex, std::try_to_lock);
    if (!g.owns_lock() || !q.supported) return;
    put(q, Range{from, to - from});
  }
  q.ready.notify_one();
#else
  (void)begin;
  (void)bytes;
  (void)put;
#endif
}
}  // namespace

void Prefaulter::populate(void* begin, std::size_t bytes) noexcept {
  request(begin, bytes, [](Queue& q, Range r) { q.latest = r; });
}

void Prefaulter::populate_later(void* begin, std::size_t bytes) noexcept {
  request(begin, bytes, [](Queue& q, Range r) {
    if (q.backlog_count == q.backlog.size()) return;
    q.backlog[(q.backlog_head + q.backlog_count++) % q.backlog.size()] = r;
  });
}

bool Prefaulter::settle(unsigned timeout_ms) noexcept {
  Queue& q = queue();
  try {
    std::unique_lock lock(q.mutex);
    // Bounded: a child forked with a request queued has no helper to carry it out.
    return q.idle.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return q.empty() && !q.busy; });
  } catch (...) {  // a lock that cannot be taken: nothing known, nothing to wait for
    return false;
  }
}

void Prefaulter::run() noexcept {
#if defined(MADV_POPULATE_WRITE)
  Queue& q = queue();
  for (;;) {
    Range r;
    {
      std::unique_lock lock(q.mutex);
      q.ready.wait(lock, [&] { return !q.empty(); });
      r = q.take();
      q.busy = true;
    }
    // EINVAL: a kernel before 5.14; ENOMEM/EFAULT: the range was unmapped meanwhile (harmless).
    const bool unsupported =
        madvise(reinterpret_cast<void*>(r.begin), r.bytes, MADV_POPULATE_WRITE) != 0 && errno == EINVAL;
    {
      std::lock_guard g(q.mutex);
      q.supported = q.supported && !unsupported;
      q.busy = false;
    }
    q.idle.notify_all();
  }
#endif
}

}  // namespace mmsb
