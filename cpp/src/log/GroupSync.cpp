#include "mmsb/log/GroupSync.hpp"

#include "mmsb/core/Error.hpp"

#include <algorithm>
#include <exception>

namespace mmsb {

void GroupSync::reset(std::uint64_t offset, Lsn lsn) {
  std::lock_guard g(mutex_);
  latest_.offset = offset;
  latest_.lsn = lsn;
  durable_ = latest_;
}

GroupSync::~GroupSync() { close(); }

std::uint64_t GroupSync::written(std::uint64_t offset, Lsn lsn, bool sync_now) noexcept {
  std::lock_guard g(mutex_);
  latest_ = {next_ticket_++, offset, lsn};
  if (sync_now && !closed_) {
    try {
      if (!helper_.joinable()) helper_ = std::thread([this] { helper_loop(); });
      sync_asked_ = true;
      wake_.notify_one();
    } catch (const std::exception&) {
      // No thread (or no memory for one) to be had: the record's committer leads the sync in
      // wait(), as for a small one. The record is written already: its commit must not fail here.
    }
  }
  return latest_.ticket;
}

void GroupSync::helper_loop() {
  std::unique_lock g(mutex_);
  for (;;) {
    wake_.wait(g, [&] { return sync_asked_ || closed_; });
    if (closed_) return;
    sync_asked_ = false;
    // A committer may have led it already, a failure wait for its abandon(), or abandon() have
    // failed the records (a sync now would report them durable): nothing to do, but committers
    // waiting for this sync must look again.
    if (in_flight_ || failed_ || latest_.ticket <= std::max(durable_.ticket, failed_through_)) {
      changed_.notify_all();
      continue;
    }
    lead(g);
  }
}

void GroupSync::lead(std::unique_lock<std::mutex>& g) {
  // One fdatasync for every record written so far, whoever wrote it. Records written while it
  // runs wait for the next one (their bytes may or may not be covered by this one).
  in_flight_ = true;
  const Point target = latest_;
  g.unlock();
  std::string error;
  try {
    sync_();
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "fdatasync failed";
  }
  g.lock();
  in_flight_ = false;
  if (error.empty()) {
    if (target.ticket > durable_.ticket) durable_ = target;
  } else {
    failed_ = true;
    failure_ = std::move(error);
  }
  changed_.notify_all();
}

GroupSync::Outcome GroupSync::wait(std::uint64_t ticket) {
  std::unique_lock g(mutex_);
  for (;;) {
    if (ticket <= durable_.ticket) return Outcome::Durable;
    if (ticket <= failed_through_ || closed_) return Outcome::Failed;
    if (failed_) return Outcome::Unhandled;
    // A sync asked of the helper is as good as one in flight: a second would only queue behind it.
    if (in_flight_ || sync_asked_) {
      changed_.wait(g);
      continue;
    }
    lead(g);
  }
}

void GroupSync::sync_all() {
  std::unique_lock g(mutex_);
  changed_.wait(g, [&] { return !in_flight_; });
  if (failed_) {
    fail(ErrorCode::Durability, "an earlier fdatasync of the log failed (", failure_,
         "); the commits it covered are being rolled back");
  }
  // Held across the sync: a committer arriving now waits for it rather than leading another.
  try {
    sync_();
  } catch (const Error& e) {
    failed_ = true;
    failure_ = e.what();
    throw;
  }
  durable_ = latest_;
  changed_.notify_all();
}

GroupSync::Point GroupSync::abandon(const std::function<void(const Point&)>& cut) {
  std::unique_lock g(mutex_);
  changed_.wait(g, [&] { return !in_flight_; });
  cut(durable_);
  failed_through_ = latest_.ticket;
  sync_asked_ = false;  // what it was asked for is gone
  latest_.offset = durable_.offset;
  latest_.lsn = durable_.lsn;
  failed_ = false;
  changed_.notify_all();
  return durable_;
}

void GroupSync::close() {
  std::unique_lock g(mutex_);
  changed_.wait(g, [&] { return !in_flight_; });
  closed_ = true;
  changed_.notify_all();
  wake_.notify_one();
  g.unlock();
  if (helper_.joinable() && helper_.get_id() != std::this_thread::get_id()) helper_.join();
}

bool GroupSync::failed() const {
  std::lock_guard g(mutex_);
  return failed_;
}

std::string GroupSync::failure() const {
  std::lock_guard g(mutex_);
  return failure_;
}

std::uint64_t GroupSync::durable_ticket() const {
  std::lock_guard g(mutex_);
  return durable_.ticket;
}

std::uint64_t GroupSync::durable_offset() const {
  std::lock_guard g(mutex_);
  return durable_.offset;
}

}  // namespace mmsb
