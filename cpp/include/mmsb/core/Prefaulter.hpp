#pragma once
/// Prefaulter: faults in, on a helper thread, the pages of a buffer that is about to be written,
/// so the writer does not stop once per 4 KiB of fresh memory for the kernel to map and zero a
/// page. An in-memory log hands every record's buffer over to history and starts the next one in
/// fresh memory; a wave's record is megabytes, and its page faults were a fifth of the wave.
///
/// A hint only: it uses madvise(MADV_POPULATE_WRITE) (Linux 5.14+), which maps pages writable
/// without changing their contents, so a range that was freed or reused meanwhile is harmless to
/// populate; where the kernel lacks it, requests do nothing. Determinism is untouched: no byte
/// any caller sees depends on it.
///
/// Two kinds of request: populate() names the buffer about to be written (a newer one replaces
/// it), populate_later() memory mapped ahead of a bulk of writes (an arena's slabs), kept in turn.
///
/// Thread safety: populate() and populate_later() may be called from any thread. One helper
/// thread per process, started on first use and left to the process's end (it holds no resource
/// but itself).
#include <cstddef>

namespace mmsb {

class Prefaulter {
 public:
  /// The process's prefaulter. Never throws: without a helper thread, requests are dropped.
  static Prefaulter& shared() noexcept;
  /// Queues [begin, begin + bytes) (whole pages inside it; a range under a few pages is left to
  /// the writer) and returns at once. A request still queued is replaced by a newer one: the
  /// newest buffer is the one about to be written.
  void populate(void* begin, std::size_t bytes) noexcept;
  /// Queues [begin, begin + bytes) behind the other ranges queued this way, up to kBacklog of
  /// them (further ones are dropped), and returns at once. The helper turns to them when no
  /// populate() request is waiting: they are written later than that buffer, but all of them.
  void populate_later(void* begin, std::size_t bytes) noexcept;
  static constexpr std::size_t kBacklog = 64;
  /// Waits until no request of either kind is queued or being carried out, for at most
  /// `timeout_ms`, so that what was requested is resident (a measurement of memory against the
  /// resident set wants that). Returns whether it got there in time. Static: waiting starts no
  /// helper. Never throws.
  static bool settle(unsigned timeout_ms = 2000) noexcept;

 private:
  Prefaulter() = default;
  void run() noexcept;
};

}  // namespace mmsb
