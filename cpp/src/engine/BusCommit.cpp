// Bus: the commit path of deltas and batches: validate, log first (log_locked), apply, bump
// epochs, queue the index entries and mark dependents for the wave. The single places where a
// delta or a batch becomes state, for commits and replay alike.
#include "mmsb/engine/Bus.hpp"

#include "DevicePages.hpp"
#include "Transaction.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <unordered_map>

#include "mmsb/core/Clock.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/core/Prefaulter.hpp"
#include "mmsb/delta/BatchApply.hpp"

namespace mmsb {

void Bus::log_locked(Lsn last, std::span<const std::byte> tail, bool may_overlap) {
  if (log_) {
    const std::uint64_t ticket = log_->append(record_buf_, last, tail, may_overlap);
    if (ticket == 0) return;
    if (txn_) {
      txn_->ticket = ticket;  // parked once recycled; its committer waits in await_durable()
      return;
    }
    // A commit without undo (create, delete, metadata) applies only once durable: it syncs in
    // place, covering every parked commit before it.
    sync_log_locked();
  } else if (mem_log_) {
    const std::size_t size = record_buf_.size();
    mem_log_->append(record_buf_, last);
    // A large record became history, leaving no buffer. The next record is likely as large
    // (batches and waves repeat): its room now, faulted in on the helper thread while this
    // commit applies, instead of regrowing by doubling through fresh pages.
    // The record is logged already: a failure here must not abort the commit, so no room
    // just means the next record grows as before.
    if (record_buf_.capacity() == 0 && size > 0) {
      try {
        record_buf_.reserve(size);
      } catch (const std::bad_alloc&) {
        return;
      }
      Prefaulter::shared().populate(record_buf_.data(), size);
    }
  }
}

void Bus::check_delta_locked(const PageRecord& r, const Delta& d) const {
  if (!known_source(static_cast<std::uint8_t>(d.source))) {
    fail(ErrorCode::InvalidArgument, "delta source ", static_cast<unsigned>(d.source),
         " is none of user, propagation, replay, remote");
  }
  if (d.extent() > r.size) {
    fail(ErrorCode::InvalidDelta, "delta writes bytes [", d.run_list().back().offset, ", ",
         d.extent(), ") of page ", r.id, ", which has ", r.size, " bytes");
  }
  if (d.reach() > r.size) {
    fail(ErrorCode::InvalidDelta, "delta has an empty run ending at offset ", d.reach(), ", past the end of page ",
         r.id, ", which has ", r.size, " bytes");
  }
  const Epoch now = r.epoch.load(std::memory_order_relaxed);
  if (d.expect_epoch && *d.expect_epoch != now) {
    fail(ErrorCode::EpochConflict, "page ", r.id, " is at epoch ", now, " but the delta expects epoch ",
         *d.expect_epoch, "; re-read the page and retry");
  }
}

// Every single-delta commit goes through here: validate, log, apply, and its wave (eager mode).
void Bus::commit_delta_locked(PageRecord& r, Delta& d) {
  check_delta_locked(r, d);
  d.timestamp_ns = now_ns();
  const bool wave = has_dependents_locked(r.id) && propagation_ == PropagationMode::Eager;
  if (!wave && !grouping_locked()) {
    const UndoOnFailure guard(*this);
    return record_delta_locked(r, d);
  }
  // The wave's recomputes may fail (a callable raising): delta and wave commit as one record.
  // Group commit needs the undo of a transaction even without a wave.
  atomically_locked([&] {
    record_delta_locked(r, d);
    if (wave) run_wave_locked();
  });
}

// A checked delta: logged (or noted in the open transaction), applied, counted; no wave.
void Bus::record_delta_locked(PageRecord& r, Delta& d) {
  const Lsn lsn = lsn_.load(std::memory_order_relaxed) + 1;
  if (txn_) {
    txn_note_delta_locked(r, d);
  } else if (logging()) {
    record_buf_.clear();
    encode_op_record(record_buf_, lsn, d);
    log_locked(lsn);
  }
  const LoggedAhead ahead(*this, !txn_ && logging());
  apply_delta_locked(r, d, lsn);
  count(1, d.payload().size());
  emit_locked(EventKind::DeltaApplied, r.id, lsn, d.epoch);
  if (has_dependents_locked(r.id)) note_changed_locked(r.id);
}

// A batch with rows on device pages; host rows are copied here, in row order. Bytes, epochs and
// lsns equal apply_batch's. Without an undo, the device rows' bytes are written first, in one
// transfer per device, so that a device error leaves the host pages and epochs as they were. With
// one, their old bytes are read first and every host row applies and saves what it found before
// that transfer, so that whichever transfer fails, the undo finds each row's state (a row not
// reached is marked so). Returns false, doing nothing, for a batch with no device row.
bool Bus::apply_device_batch_locked(const DeltaBatchView& b, Lsn first, UndoSink save) {
  const std::span<const DeviceRow> rows = devices_->device_rows(b);
  if (rows.empty()) return false;
  // Every device row saves the bytes from before the whole batch, not before itself: undo writes
  // each page's rows back newest first, so the oldest row's saved bytes land last either way.
  if (save) devices_->read(rows, {save.old, b.payload.size()});
  if (!save) devices_->write(rows, b.payload);
  std::uint64_t pos = 0;
  for (std::size_t i = 0; i < b.rows(); ++i) {
    PageRecord& r = table_.record(b.page_ids[i]);
    const std::uint64_t len = b.lengths[i];
    const Epoch epoch = r.epoch.load(std::memory_order_relaxed);
    if (save) save.prior[i] = RowPrior{epoch, r.last_lsn.load(std::memory_order_relaxed)};
    if (len != 0 && !devices_->on_device(r)) {
      std::byte* dst = r.data + b.offsets[i];
      if (save) std::memcpy(save.old + pos, dst, len);
      std::memcpy(dst, b.payload.data() + pos, len);
    }
    r.epoch.store(epoch + 1, std::memory_order_relaxed);
    r.last_lsn.store(first + i, std::memory_order_relaxed);
    pos += len;
  }
  if (save) devices_->write(rows, b.payload);
  return true;
}

// The single place where a delta becomes state (commits and replay).
void Bus::apply_delta_locked(PageRecord& r, Delta& d, Lsn lsn, bool written) {
  d.lsn = lsn;
  if (!written && devices_->on_device(r)) {
    devices_->write(r, d);
  } else if (!written) {
    devices_->host_access(r);
    d.apply_to(r.data);
  }
  d.epoch = r.epoch.load(std::memory_order_relaxed) + 1;
  r.epoch.store(d.epoch, std::memory_order_release);
  r.last_lsn.store(lsn, std::memory_order_relaxed);
  lsn_.store(std::max(lsn, lsn_.load(std::memory_order_relaxed)), std::memory_order_release);
  queue_index_locked(r.id, lsn, d.timestamp_ns, d.source);
}

// The single place where a batch becomes state (commits and replay).
void Bus::apply_batch_locked(const DeltaBatchView& batch, Lsn first, std::uint64_t timestamp_ns, UndoSink save,
                             bool validated) {
  bool applied = false;
  if (validated && devices_->lent()) {
    for (PageId id : batch.page_ids) devices_->host_access(table_.record(id));
  }
  if (devices_->active()) {
    if (!validated) validate_batch(batch, table_);  // device rows are resolved before any is applied
    validated = true;
    applied = apply_device_batch_locked(batch, first, save);
  }
  if (!applied && validated) mmsb::apply_batch(batch, table_, first, pool_, save);
  if (!applied && !validated) apply_checked_batch(batch, table_, first, pool_);
  queue_index_locked(batch.page_ids, first, timestamp_ns, Source::User);
  if ((event_mask_ & (1u << static_cast<unsigned>(EventKind::DeltaApplied))) != 0) {
    // Each row's epoch: the page's final epoch minus the rows of that page after it.
    std::vector<Epoch> epochs(batch.rows());
    std::unordered_map<PageId, Epoch> next;
    for (std::size_t i = batch.rows(); i-- > 0;) {
      const PageId id = batch.page_ids[i];
      auto it = next.try_emplace(id, table_.record(id).epoch.load(std::memory_order_relaxed)).first;
      epochs[i] = it->second--;
    }
    for (std::size_t i = 0; i < batch.rows(); ++i) emit_locked(EventKind::DeltaApplied, batch.page_ids[i], first + i, epochs[i]);
  }
  if (graph_.edge_count() == 0) return;
  for (std::size_t i = 0; i < batch.rows(); ++i) {
    if (has_dependents_locked(batch.page_ids[i])) note_changed_locked(batch.page_ids[i]);
  }
}

void Bus::apply(Delta& d) {
  const std::uint64_t t0 = monotonic_ns();
  auto lock = lock_turn();
  check_writable();
  commit_delta_locked(live_locked(d.page_id()), d);
  note_commit_latency_locked(t0);
  lock.unlock();
  deliver_events();
}

Epoch Bus::write(PageId id, std::uint64_t offset, std::span<const std::byte> data,
                 std::optional<Epoch> expect_epoch) {
  const std::uint64_t t0 = monotonic_ns();
  auto lock = lock_turn();
  check_writable();
  PageRecord& r = live_locked(id);
  Delta large;
  Delta& d = data.size() > kKeptWriteBytes ? large : write_delta_;
  Delta::at_into(d, id, offset, data);
  d.expect_epoch = expect_epoch;
  commit_delta_locked(r, d);
  note_commit_latency_locked(t0);
  const Epoch epoch = d.epoch;
  lock.unlock();
  deliver_events();
  return epoch;
}

bool Bus::update(PageId id, std::span<const std::byte> content, std::optional<Epoch> expect_epoch) {
  const std::uint64_t t0 = monotonic_ns();
  auto lock = lock_turn();
  check_writable();
  PageRecord& r = live_locked(id);
  if (content.size() != r.size) {
    fail(ErrorCode::InvalidArgument, "new content has ", content.size(), " bytes but page ", id,
         " has ", r.size);
  }
  Delta d = Delta::diff(id, {devices_->readable(r), r.size}, content);
  d.expect_epoch = expect_epoch;
  return commit_diff(lock, r, d, t0);
}

bool Bus::commit_diff(std::unique_lock<std::mutex>& lock, PageRecord& r, Delta& d, std::uint64_t t0) {
  check_delta_locked(r, d);
  if (d.empty()) return false;
  commit_delta_locked(r, d);
  note_commit_latency_locked(t0);
  lock.unlock();
  deliver_events();
  return true;
}

Lsn Bus::apply_batch(const DeltaBatchView& given) {
  const std::uint64_t t0 = monotonic_ns();
  auto lock = lock_turn();
  check_writable();
  Lsn last = 0;
  DeltaBatchView batch = given;
  std::vector<std::byte> own_payload;
  {
    const bool alone = !txn_ && !devices_->active();  // no open transaction, no device rows
    const bool may_wave = propagation_ == PropagationMode::Eager && graph_.edge_count() != 0;
    // A batch that may be written overlapped (below) has its record's checksum over the payload
    // begun on the log's writer thread now, while it is validated; dropped if it goes elsewhere.
    const Log::SumAhead sum(alone && !may_wave ? log_.get() : nullptr, batch.payload);
    if (validate_batch(batch, table_, &pool_)) {
      // A payload read from a page it writes: copied, so that the log and memory get the bytes
      // it held at the call, whichever rows write first.
      own_payload.assign(batch.payload.begin(), batch.payload.end());
      batch.payload = own_payload;
    }
    if (batch.rows() == 0) return lsn_.load(std::memory_order_relaxed);
    bool wave = false;
    if (may_wave) {
      for (std::size_t i = 0; i < batch.rows() && !wave; ++i) wave = has_dependents_locked(batch.page_ids[i]);
    }
    // A batch alone in a flush or none log whose record the log writes on its writer thread: it
    // applies with undo meanwhile, as a transaction of its own, which a failed write undoes.
    const bool overlap = !wave && alone && log_ && log_->overlaps(batch.payload.size());
    if (wave || grouping_locked() || overlap) {
      // A batch alone, with group commit or overlapped: logged before it applies (with undo), so
      // that the log's sync or write runs while it applies. Not with a wave (its deltas share the
      // record) nor device rows (their transfer may fail after the record is written).
      const bool log_now = !wave && !devices_->active();
      atomically_locked([&] {
        last = record_batch_locked(batch, log_now);
        if (wave) run_wave_locked();
      });
    } else {
      const UndoOnFailure guard(*this);
      last = record_batch_locked(batch);
    }
  }
  note_commit_latency_locked(t0);
  lock.unlock();
  deliver_events();
  return last;
}

void Bus::log_batch_locked(const DeltaBatchView& batch, Lsn first, std::uint64_t timestamp_ns, bool may_overlap) {
  const Lsn last = first + batch.rows() - 1;
  record_buf_.clear();
  if (log_) {
    // The file log writes the payload from the caller's buffer: megabytes not copied twice.
    encode_batch_record_head(record_buf_, first, batch, timestamp_ns);
    log_locked(last, batch.payload, may_overlap);
  } else if (logging()) {
    encode_op_record(record_buf_, first, batch, timestamp_ns);
    log_locked(last);
  }
}

// A validated batch: logged (or noted in the open transaction), applied, counted; no wave.
Lsn Bus::record_batch_locked(const DeltaBatchView& batch, bool log_now) {
  const Lsn first = lsn_.load(std::memory_order_relaxed) + 1;
  const Lsn last = first + batch.rows() - 1;
  const std::uint64_t ts = now_ns();
  UndoSink undo;
  const bool early = txn_ && log_now && txn_->ops.op_count() == 0;
  if (txn_) {
    undo = txn_note_batch_locked(batch, first, ts, early);
  } else {
    log_batch_locked(batch, first, ts);
  }
  lsn_.store(last, std::memory_order_release);  // before the stale marks, which carry it
  {
    // Written early, a group commit's batch is in the log while its transaction would undo it.
    const LoggedAhead ahead(*this, early || (!txn_ && logging()));
    apply_batch_locked(batch, first, ts, undo);
  }
  // An overlapped write that failed was cut back: the transaction undoes the applied batch.
  if (early && log_) log_->finish_overlapped();
  count(batch.rows(), batch.payload.size());
  return last;
}

void Bus::break_log_locked() noexcept {
  if (txn_) txn_->ticket = 0;  // retired, not parked: no commit waits for its sync
  if (log_) log_->mark_broken("holds a change whose apply failed after it was written");
  log_broken_ = true;  // broken_why_ empty: check_writable says the log holds that change
}

}  // namespace mmsb
