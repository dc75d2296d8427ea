#pragma once
/// GroupSync: group commit for durability=fsync. Committers write their records under the bus's
/// commit lock and take a ticket (written()); they then wait outside that lock (wait()) until one
/// fdatasync covers their ticket. The first waiter that finds no sync in flight leads: it syncs
/// everything written so far, for every committer that wrote before it started, so N concurrent
/// commits cost about one fdatasync instead of N.
///
/// A large record need not wait for its committer to lead: written(..., sync_now) hands the sync
/// to a helper thread at once, so the disk works while the committer applies the change (with
/// its undo) under the commit lock, and the committer's wait() usually finds the sync in flight
/// or done. Small records skip the hand-off, whose wake-up costs more than the overlap saves.
///
/// A failed sync poisons what was not yet durable: no sync is started until the failure is
/// handled (under the commit lock, by abandon()), which cuts the segment back to the durable
/// position; every ticket written before that is then reported Failed.
///
/// Invariant: durable() <= latest(); tickets are never reused (they keep growing after a failure).
/// Thread safety: every member is safe to call concurrently; written()/abandon()/reset() are
/// called under the bus's commit lock, wait() without it.
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "mmsb/core/Types.hpp"

namespace mmsb {

class GroupSync {
 public:
  /// Where the log stands after a ticket's record: the segment offset it ends at and its last lsn.
  struct Point {
    std::uint64_t ticket = 0;
    std::uint64_t offset = 0;
    Lsn lsn = 0;
  };
  enum class Outcome {
    Durable,    ///< an fdatasync covered the ticket
    Failed,     ///< a sync failed and the ticket's commit was abandoned (roll it back)
    Unhandled,  ///< a sync failed and nobody has abandoned the unsynced records yet: take the
                ///< commit lock, abandon, then wait again
  };

  /// Starts (or restarts, after a segment rotation or a full sync) with everything durable up to
  /// `offset` / `lsn` of the active segment.
  void reset(std::uint64_t offset, Lsn lsn);
  /// Notes a record written (not synced) up to `offset`, ending at `lsn`; returns its ticket.
  /// With `sync_now`, the helper thread (started on first use) leads a sync now unless one is in
  /// flight or a failure is pending. Never throws: if that thread cannot be started, wait() leads
  /// the sync as for a small record.
  std::uint64_t written(std::uint64_t offset, Lsn lsn, bool sync_now = false) noexcept;
  /// The fdatasync of the active segment, set once by the log that owns this object; it throws
  /// Error on failure. It may run on the helper thread: the owner calls close() before whatever
  /// `sync` uses goes away.
  explicit GroupSync(std::function<void()> sync) : sync_(std::move(sync)) {}
  ~GroupSync();
  GroupSync(const GroupSync&) = delete;
  GroupSync& operator=(const GroupSync&) = delete;
  /// Blocks until `ticket` is durable or abandoned, leading a sync when none is in flight.
  /// Never throws.
  Outcome wait(std::uint64_t ticket);
  /// Runs `sync` for everything written so far once no sync is in flight (a checkpoint, close or
  /// rotation, under the commit lock). Throws Error(Durability) without syncing when an earlier
  /// sync failed and was not yet abandoned, and Error(Durability) when this sync fails (the
  /// failure is then pending, as for a leader's).
  void sync_all();
  /// Handles a failed sync: waits for no sync in flight, calls `cut(durable point)` to cut the
  /// segment back, marks every ticket written so far Failed and returns the durable point.
  Point abandon(const std::function<void(const Point&)>& cut);
  /// No sync may be led any more (the log is closing): tickets not yet durable fail. Waits for a
  /// sync in flight and stops the helper thread.
  void close();

  /// A sync failed and abandon() has not run yet.
  bool failed() const;
  /// What the last failed sync reported ("" if none failed).
  std::string failure() const;
  std::uint64_t durable_ticket() const;
  /// Offset in the active segment up to which everything is durable.
  std::uint64_t durable_offset() const;

 private:
  /// One fdatasync of everything written so far; called with `g` held, no sync in flight and no
  /// failure pending; returns with `g` held and waiters notified.
  void lead(std::unique_lock<std::mutex>& g);
  void helper_loop();

  std::function<void()> sync_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::condition_variable wake_;  // the helper's: a sync was asked for, or closing
  std::thread helper_;
  Point latest_;
  Point durable_;
  std::uint64_t failed_through_ = 0;  // tickets <= this were abandoned
  std::uint64_t next_ticket_ = 1;
  bool in_flight_ = false;
  bool sync_asked_ = false;  // for the helper
  bool failed_ = false;
  bool closed_ = false;
  std::string failure_;
};

}  // namespace mmsb
