#pragma once
/// IngestRing: the bounded lock-free multi-producer / single-consumer queue behind bus.submit
/// (DESIGN §1 "Ingest queue and tick").
///
/// Invariant: head <= tail <= head + capacity, where tail counts reserved positions and head
/// consumed ones (both only grow; position p lives in slot p & (capacity - 1)). A producer
/// reserves a contiguous run [t, t + n) with one CAS on tail, copies its items in with one or two
/// memcpy and publishes the whole run with a single release store seq[t] = t + n (Vyukov-style:
/// a seq left by an earlier lap is <= t, so slots need no reset). Runs tile the positions, so the
/// consumer only reads seq at the start of the next unread run; it takes items in position order
/// up to the first unpublished run and then advances head, which frees the slots for producers.
/// One store per run instead of per item halves the cache traffic for 8-byte items.
/// The closed flag is the top bit of tail, so close() and a reservation are ordered by the same
/// CAS: once close() returns, no more items arrive.
///
/// Ownership: the ring owns its slot array; items are copied in and out (T trivially copyable).
/// Thread safety: try_push / push / close / closed / size_approx / high_water /
/// reset_high_water / capacity from any thread; drain / drain_all from one thread at a time.
/// Destroy the ring only once no thread is inside push() (close it and join producers first).
#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <type_traits>
#include <vector>

#include "mmsb/core/Error.hpp"

namespace mmsb {

template <class T>
class IngestRing {
  static_assert(std::is_trivially_copyable_v<T>, "IngestRing copies items with memcpy");

 public:
  static constexpr std::size_t kMaxCapacity = std::size_t{1} << 30;

  /// capacity is rounded up to a power of two. Throws Error(InvalidArgument) for 0 or more than
  /// 2^30 slots, std::bad_alloc when the slots cannot be allocated.
  explicit IngestRing(std::size_t capacity)
      : capacity_(checked_capacity(capacity)),
        mask_(capacity_ - 1),
        seq_(static_cast<std::atomic<std::uint64_t>*>(allocate(capacity_ * sizeof(std::atomic<std::uint64_t>)))),
        // operator new implicitly creates the (trivially copyable) T objects that memcpy fills.
        items_(static_cast<T*>(allocate(capacity_ * sizeof(T)))) {
    // 0 is not above any position, so every slot starts unpublished.
    for (std::size_t i = 0; i < capacity_; ++i) new (&seq_[i]) std::atomic<std::uint64_t>(0);
  }
  IngestRing(const IngestRing&) = delete;
  IngestRing& operator=(const IngestRing&) = delete;

  /// The slot count: a power of two, fixed at construction.
  std::size_t capacity() const noexcept { return capacity_; }

  /// All or nothing: enqueues all items contiguously in order, or none and returns false when
  /// fewer than items.size() slots are free or the ring is closed. An empty span returns true.
  /// Never blocks. Throws Error(InvalidArgument) when items.size() > capacity().
  bool try_push(std::span<const T> items) {
    check_size(items.size());
    if (items.empty()) return true;
    std::uint64_t first = 0;
    if (try_reserve(items.size(), first) != Reserve::Ok) return false;
    publish(first, items);
    return true;
  }
  bool try_push(const T& item) { return try_push(std::span<const T>(&item, 1)); }

  /// Blocks until items.size() slots are free (a brief spin, then a futex sleep through
  /// std::atomic::wait), then enqueues all of them contiguously. Returns false, enqueuing
  /// nothing, if the ring is or becomes closed first. An empty span returns true. Not fair: a
  /// large push can keep waiting while smaller ones take the space freed by each drain.
  /// Throws Error(InvalidArgument) when items.size() > capacity().
  bool push(std::span<const T> items) {
    check_size(items.size());
    if (items.empty()) return true;
    const std::uint64_t n = items.size();
    std::uint64_t first = 0;
    for (int attempt = 0;; ++attempt) {
      const Reserve r = try_reserve(n, first);
      if (r == Reserve::Ok) break;
      if (r == Reserve::Closed) return false;
      if (attempt < kSpins) {
        cpu_relax();
        continue;
      }
      // Dekker-style handshake with drain(): we write waiters_ then read head_, the consumer
      // writes head_ then reads waiters_. Only with all four seq_cst can both sides not miss each
      // other (release/acquire allows each load to see the old value, store-load reordering).
      // So either our re-check sees the freed space, or the consumer sees us and bumps wake_.
      // wake_ is sampled before announcing ourselves: any bump we did not see is ordered after
      // that sample, so wait(expected) returns at once instead of sleeping through it.
      const std::uint32_t expected = wake_.load(std::memory_order_acquire);
      waiters_.fetch_add(1, std::memory_order_seq_cst);
      const std::uint64_t t = tail_.load(std::memory_order_seq_cst);
      const std::uint64_t h = head_.load(std::memory_order_seq_cst);
      if ((t & kClosedBit) == 0 && t + n > h + capacity_) wake_.wait(expected, std::memory_order_acquire);
      waiters_.fetch_sub(1, std::memory_order_relaxed);
      attempt = 0;
    }
    publish(first, items);
    return true;
  }
  bool push(const T& item) { return push(std::span<const T>(&item, 1)); }

  /// Single consumer: moves up to out.size() published items, in ring order, into out and
  /// returns how many. Stops at the first slot reserved but not yet published (a later drain
  /// takes it). Issues a futex wake only when a producer sleeps in push().
  std::size_t drain(std::span<T> out) {
    T* dst = out.data();
    return consume(out.size(), [&dst](const T* from, std::size_t n) {
      std::memcpy(static_cast<void*>(dst), static_cast<const void*>(from), n * sizeof(T));
      dst += n;
    });
  }

  /// Single consumer: appends every published item to out (same rules as drain); returns how
  /// many. Throws std::bad_alloc, consuming nothing.
  std::size_t drain_all(std::vector<T>& out) {
    out.reserve(out.size() + size_approx());  // may throw: before anything is consumed
    // Fits the reservation (published <= reserved), so insert cannot reallocate or throw.
    return consume(out.capacity() - out.size(),
                   [&out](const T* from, std::size_t n) { out.insert(out.end(), from, from + n); });
  }

  /// Reserved minus consumed slots (reserved ones may not be published yet); exact only when
  /// no other thread is pushing or draining.
  std::size_t size_approx() const noexcept {
    const std::uint64_t h = head_.load(std::memory_order_acquire);
    const std::uint64_t t = tail_.load(std::memory_order_acquire) & ~kClosedBit;
    return t > h ? static_cast<std::size_t>(std::min<std::uint64_t>(t - h, capacity_)) : 0;
  }
  /// Largest size_approx() a producer saw right after a reservation, since construction or the
  /// last reset_high_water(); at most capacity().
  std::size_t high_water() const noexcept { return high_water_.load(std::memory_order_relaxed); }
  void reset_high_water() noexcept { high_water_.store(0, std::memory_order_relaxed); }

  /// Wakes all blocked producers; later pushes return false. Items already enqueued (and runs
  /// reserved before close, once published) stay drainable; nothing is reserved after close()
  /// returns, so draining until size_approx() == 0 then takes every accepted item.
  void close() noexcept {
    // seq_cst for the same handshake as in push(): a sleeper re-checks tail_ after announcing.
    tail_.fetch_or(kClosedBit, std::memory_order_seq_cst);
    wake_.fetch_add(1, std::memory_order_release);
    wake_.notify_all();
  }
  /// True once close() has been called (by any thread).
  bool closed() const noexcept { return (tail_.load(std::memory_order_acquire) & kClosedBit) != 0; }

 protected:
  // The two halves of a push, protected so a test can hold a reserved run unpublished.
  enum class Reserve { Ok, Full, Closed };

  /// Reserves n (1..capacity) contiguous positions starting at `first`, or reports why not.
  Reserve try_reserve(std::uint64_t n, std::uint64_t& first) {
    std::uint64_t t = tail_.load(std::memory_order_relaxed);
    for (;;) {
      if (t & kClosedBit) return Reserve::Closed;
      // acquire pairs with the consumer's head store: its reads of the slots we are about to
      // overwrite happen before our writes. Written as t + n > h + capacity (no subtraction): a
      // stale t below h then looks roomy, and the CAS below fails and reloads it. tail_ >= t
      // when h is read, so "full" was true at that moment.
      const std::uint64_t h = head_.load(std::memory_order_acquire);
      if (t + n > h + capacity_) return Reserve::Full;
      // relaxed suffices: the slots are handed over by seq (release) and freed by head (acquire).
      if (tail_.compare_exchange_weak(t, t + n, std::memory_order_relaxed, std::memory_order_relaxed)) {
        first = t;
        const std::uint64_t seen = t + n - h;
        std::uint64_t hw = high_water_.load(std::memory_order_relaxed);
        while (seen > hw && !high_water_.compare_exchange_weak(hw, seen, std::memory_order_relaxed)) {
        }
        return Reserve::Ok;
      }
    }
  }

  /// Copies items into the run reserved at `first` and publishes it (release: the consumer's
  /// acquire of seq then sees every item of the run).
  void publish(std::uint64_t first, std::span<const T> items) noexcept {
    const std::size_t at = first & mask_, n = items.size(), head_part = std::min(n, capacity_ - at);
    std::memcpy(static_cast<void*>(&items_[at]), static_cast<const void*>(items.data()), head_part * sizeof(T));
    std::memcpy(static_cast<void*>(items_.get()), static_cast<const void*>(items.data() + head_part),
                (n - head_part) * sizeof(T));
    seq_[at].store(first + n, std::memory_order_release);
  }

 private:
  static constexpr std::uint64_t kClosedBit = std::uint64_t{1} << 63;
  static constexpr int kSpins = 64;

  // 64-byte aligned, so no other object shares the first or last cache line of an array.
  static void* allocate(std::size_t bytes) { return ::operator new(bytes, std::align_val_t{64}); }
  struct Free {
    void operator()(void* p) const noexcept { ::operator delete(p, std::align_val_t{64}); }
  };

  static std::size_t checked_capacity(std::size_t capacity) {
    if (capacity == 0 || capacity > kMaxCapacity) {
      fail(ErrorCode::InvalidArgument, "IngestRing capacity ", capacity,
           " is out of range; hint: use 1 to 2^30 (", kMaxCapacity, ") slots");
    }
    return std::bit_ceil(capacity);
  }
  void check_size(std::size_t n) const {
    if (n > capacity_) {
      fail(ErrorCode::InvalidArgument, "IngestRing push of ", n, " items exceeds the capacity ", capacity_,
           "; hint: split the batch or enlarge the ring");
    }
  }
  static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  // Hands sink(pointer, count) at most two pieces (the run may wrap), in order.
  template <class Sink>
  std::size_t consume(std::size_t max, Sink&& sink) {
    const std::uint64_t h = head_.load(std::memory_order_relaxed);  // only we write it
    // Extend the published prefix run by run. A seq from an earlier lap belongs to a run that
    // started at q = p - k * capacity and so ended at or before p: "seq > p" means published.
    while (published_end_ - h < max) {
      const std::uint64_t end = seq_[published_end_ & mask_].load(std::memory_order_acquire);
      if (end <= published_end_) break;
      published_end_ = end;
    }
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(published_end_ - h, max));
    if (k == 0) return 0;
    const std::size_t at = h & mask_, first_part = std::min(k, capacity_ - at);
    sink(&items_[at], first_part);
    if (k > first_part) sink(items_.get(), k - first_part);
    // seq_cst store and load: the consumer's half of the handshake explained in push().
    head_.store(h + k, std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst) != 0) {
      wake_.fetch_add(1, std::memory_order_release);
      wake_.notify_all();
    }
    return k;
  }

  // Read-only after construction: shared by every thread without traffic.
  const std::size_t capacity_;
  const std::uint64_t mask_;
  const std::unique_ptr<std::atomic<std::uint64_t>[], Free> seq_;  // per slot: end of the run it starts
  const std::unique_ptr<T[], Free> items_;
  // Written by the consumer on every drain; waiters_ and wake_ only change while a producer
  // sleeps, so the consumer's waiters_ check normally hits its own cache line.
  alignas(64) std::atomic<std::uint64_t> head_{0};
  std::uint64_t published_end_ = 0;  // consumer only: [head, published_end_) is published
  std::atomic<std::uint32_t> waiters_{0};
  std::atomic<std::uint32_t> wake_{0};  // futex word
  // Written by producers; alignas(64) also pads the object's tail so nothing else shares it.
  alignas(64) std::atomic<std::uint64_t> tail_{0};
  std::atomic<std::uint64_t> high_water_{0};
};

}  // namespace mmsb
