#include "mmsb/core/HelperThread.hpp"

#include <cassert>
#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace mmsb {
namespace {
// How long wait() spins before it sleeps: about a large write's tail, well under a commit.
constexpr auto kSpin = std::chrono::microseconds(50);
// How long the helper stays awake after a run begun with more_soon: the validation of a few
// thousand rows, which a wake-up (15-20 us on this VM) would otherwise add to.
constexpr auto kLinger = std::chrono::microseconds(100);

// Spins until done() holds or `limit` has passed, whichever comes first.
template <class Done>
void spin_until(Done done, std::chrono::microseconds limit) noexcept {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < until) {
#if defined(__x86_64__)
    _mm_pause();
#endif
  }
}
}  // namespace

HelperThread::HelperThread(std::function<void(unsigned)> job) : job_(std::move(job)) {
  thread_ = std::thread([this] { loop(); });
}

HelperThread::~HelperThread() {
  try {
    wait();
  } catch (...) {  // the owner is going away: nobody is left to hear it
  }
  {
    std::lock_guard g(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void HelperThread::start(unsigned what, bool more_soon) noexcept {
  running_ = true;
  {
    std::lock_guard g(mutex_);
    assert(queued_ < kMaxQueued && "more runs begun than the queue holds");
    const unsigned slot = (head_ + queued_++) % kMaxQueued;
    queue_[slot] = what;
    soon_[slot] = more_soon;
    begun_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_one();
}

void HelperThread::wait() {
  if (!running_) return;
  running_ = false;
  const unsigned target = begun_.load(std::memory_order_relaxed);
  auto all_done = [&] { return finished_.load(std::memory_order_acquire) == target; };
  spin_until(all_done, kSpin);
  std::unique_lock g(mutex_);
  done_cv_.wait(g, all_done);
  if (error_) {
    std::exception_ptr e = std::move(error_);
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void HelperThread::linger() noexcept {
  const unsigned seen = finished_.load(std::memory_order_relaxed);
  spin_until([&] { return begun_.load(std::memory_order_acquire) != seen; }, kLinger);
}

void HelperThread::loop() noexcept {
  std::unique_lock g(mutex_);
  for (;;) {
    wake_.wait(g, [&] { return queued_ != 0 || stopping_; });
    if (queued_ == 0) return;
    const unsigned what = queue_[head_];
    const bool soon = soon_[head_];
    head_ = (head_ + 1) % kMaxQueued;
    --queued_;
    g.unlock();
    std::exception_ptr error;
    try {
      job_(what);
    } catch (...) {
      error = std::current_exception();
    }
    g.lock();
    if (error && !error_) error_ = std::move(error);
    finished_.fetch_add(1, std::memory_order_release);
    done_cv_.notify_one();
    if (soon && queued_ == 0) {
      g.unlock();
      linger();
      g.lock();
    }
  }
}

}  // namespace mmsb
