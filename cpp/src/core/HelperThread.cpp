#include "mmsb/core/HelperThread.hpp"

#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace mmsb {
namespace {
// How long wait() spins before it sleeps: about a large write's tail, well under a commit.
constexpr auto kSpin = std::chrono::microseconds(50);

inline void relax() noexcept {
#if defined(__x86_64__)
  _mm_pause();
#endif
}
}  // namespace

HelperThread::HelperThread(std::function<void()> job) : job_(std::move(job)) {
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

void HelperThread::start() noexcept {
  running_ = true;
  done_.store(false, std::memory_order_relaxed);
  {
    std::lock_guard g(mutex_);
    asked_ = true;
  }
  wake_.notify_one();
}

void HelperThread::wait() {
  if (!running_) return;
  running_ = false;
  const auto until = std::chrono::steady_clock::now() + kSpin;
  while (!done_.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until) relax();
  std::unique_lock g(mutex_);
  done_cv_.wait(g, [&] { return done_.load(std::memory_order_acquire); });
  if (error_) {
    std::exception_ptr e = std::move(error_);
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void HelperThread::loop() noexcept {
  std::unique_lock g(mutex_);
  for (;;) {
    wake_.wait(g, [&] { return asked_ || stopping_; });
    if (!asked_) return;
    asked_ = false;
    g.unlock();
    std::exception_ptr error;
    try {
      job_();
    } catch (...) {
      error = std::current_exception();
    }
    g.lock();
    error_ = std::move(error);
    done_.store(true, std::memory_order_release);
    done_cv_.notify_one();
  }
}

}  // namespace mmsb
