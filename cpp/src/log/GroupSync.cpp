#include "mmsb/log/GroupSync.hpp"

#include "mmsb/core/Error.hpp"

namespace mmsb {

void GroupSync::reset(std::uint64_t offset, Lsn lsn) {
  std::lock_guard g(mutex_);
  latest_.offset = offset;
  latest_.lsn = lsn;
  durable_ = latest_;
}

std::uint64_t GroupSync::written(std::uint64_t offset, Lsn lsn) {
  std::lock_guard g(mutex_);
  latest_ = {next_ticket_++, offset, lsn};
  return latest_.ticket;
}

GroupSync::Outcome GroupSync::wait(std::uint64_t ticket) {
  std::unique_lock g(mutex_);
  for (;;) {
    if (ticket <= durable_.ticket) return Outcome::Durable;
    if (ticket <= failed_through_ || closed_) return Outcome::Failed;
    if (failed_) return Outcome::Unhandled;
    if (in_flight_) {
      changed_.wait(g);
      continue;
    }
    // Lead: one fdatasync for every record written so far, whoever wrote it. Records written
    // while it runs wait for the next one (their bytes may or may not be covered by this one).
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
    ++syncs_;
    if (error.empty()) {
      if (target.ticket > durable_.ticket) durable_ = target;
    } else {
      failed_ = true;
      failure_ = std::move(error);
    }
    changed_.notify_all();
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
  ++syncs_;
  durable_ = latest_;
  changed_.notify_all();
}

GroupSync::Point GroupSync::abandon(const std::function<void(const Point&)>& cut) {
  std::unique_lock g(mutex_);
  changed_.wait(g, [&] { return !in_flight_; });
  cut(durable_);
  failed_through_ = latest_.ticket;
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

std::uint64_t GroupSync::syncs() const {
  std::lock_guard g(mutex_);
  return syncs_;
}

}  // namespace mmsb
