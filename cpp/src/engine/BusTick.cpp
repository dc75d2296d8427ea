// The ingest queue, tick, garbage collection and page aging of a Bus.
#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "DevicePages.hpp"
#include "Transaction.hpp"
#include "WaveBatch.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/delta/BatchApply.hpp"

namespace mmsb {

namespace {
constexpr std::size_t kMaxRejectionMessages = 16;

std::uint64_t footprint(const Bus::Submission& s) noexcept {
  return sizeof(s) + (s.is_batch ? s.batch.capacity_bytes()
                                 : s.delta.payload().size() + s.delta.run_list().size() * sizeof(Run));
}
}  // namespace

std::string_view tick_phase_name(TickPhase p) noexcept {
  switch (p) {
    case TickPhase::Drain: return "drain";
    case TickPhase::Apply: return "apply";
    case TickPhase::Propagate: return "propagate";
    case TickPhase::Validate: return "validate";
    case TickPhase::Gc: return "gc";
  }
  return "drain";
}

void Bus::submit(Delta d, bool block) {
  auto s = std::make_unique<Submission>();
  s->delta = std::move(d);
  enqueue(std::move(s), block);
}

void Bus::submit(const DeltaBatchView& batch, bool block) {
  batch.check_shape();
  auto s = std::make_unique<Submission>();
  s->is_batch = true;
  s->batch.append(batch);
  enqueue(std::move(s), block);
}

Bus::Ring& Bus::ring() {
  if (Ring* r = ring_if_any()) return *r;
  std::lock_guard g(ring_create_);
  if (Ring* r = ring_if_any()) return *r;
  std::unique_ptr<Ring> r;
  try {
    r = std::make_unique<Ring>(queue_capacity_);
  } catch (const std::bad_alloc&) {  // allocated at the first submit: say which memory was refused
    fail(ErrorCode::OutOfMemory, "the ingest ring of ", queue_capacity_, " submissions could not be allocated; "
         "create the bus with a smaller queue_capacity");
  }
  if (closed()) r->close();
  ring_.store(r.get(), std::memory_order_release);
  return *r.release();
}

std::size_t Bus::queue_depth() const noexcept {
  const Ring* r = ring_if_any();
  return (r ? r->size_approx() : 0) + carry_count_.load(std::memory_order_relaxed);
}

void Bus::enqueue(std::unique_ptr<Submission> s, bool block) {
  check_not_reentered();  // takes no lock, but a submission from a recompute would outlive its rollback
  check_writable();
  Ring& ring = this->ring();
  Submission* raw = s.get();
  const std::uint64_t bytes = footprint(*s);
  bool queued = ring.try_push(raw);
  if (!queued && !ring.closed()) {
    if (!block) {
      fail(ErrorCode::QueueFull, "the ingest ring is full (", ring.capacity(),
           " submissions); call bus.tick() to drain it, submit with block=True, or create the bus with a "
           "larger queue_capacity");
    }
    Blocking b(blocking_);
    queued = ring.push(raw);
  }
  if (!queued) fail(ErrorCode::Closed, "the bus was closed; the submission was not queued");
  s.release();  // the ring owns it now; tick() or the destructor deletes it
  queued_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  counters_.submits.fetch_add(1, std::memory_order_relaxed);
}

void Bus::set_tick_options(const TickOptions& options) {
  auto lock = lock_mutex();
  tick_options_ = options;
}

TickOptions Bus::tick_options() {
  auto lock = lock_mutex();
  return tick_options_;
}

TickReport Bus::tick() {
  TickReport rep;
  std::exception_ptr stop;  // from the sampled validation's user code, raised after the tick
  {
    auto lock = lock_turn();
    check_writable();
    check_no_transaction("tick()");
    const std::uint64_t t0 = monotonic_ns();
    // Drained submissions join those a failed tick left behind (they go first).
    drained_.clear();
    if (Ring* r = ring_if_any()) r->drain_all(drained_);
    carry_.reserve(carry_.size() + drained_.size());
    std::uint64_t drained_bytes = 0;
    for (Submission* s : drained_) {
      carry_.emplace_back(s);
      drained_bytes += footprint(*s);
    }
    queued_bytes_.fetch_sub(drained_bytes, std::memory_order_relaxed);
    carry_count_.store(carry_.size(), std::memory_order_relaxed);
    rep.submissions = carry_.size();
    rep.queue_depth = queue_depth() - carry_.size();
    const std::uint64_t t1 = monotonic_ns();
    rep.first_lsn = lsn_.load(std::memory_order_relaxed);
    const std::uint64_t recomputes0 = counters_.recomputes.load(std::memory_order_relaxed);
    const std::uint64_t derived0 = counters_.derived_deltas.load(std::memory_order_relaxed);
    std::uint64_t t2 = t1, t3 = t1;
    // One atomic record: a failing recompute (or log write) undoes the whole tick, and the
    // submissions stay in carry_ for the next one.
    if (replication_) replication_begin_locked();
    atomically_locked([&] {
      // In either mode the submissions mark what they reach stale and this tick's propagate()
      // settles it, so both modes end alike: a control child a submission reaches is
      // acknowledged by the tick that made it stale (in eager mode its wave would mark it after
      // the acknowledgement). The log says deferred, so replay repeats it.
      struct Ticking {
        bool& on;
        ~Ticking() { on = false; }
      } ticking{ticking_};
      ticking_ = true;
      tick_apply_locked(rep);
      t2 = monotonic_ns();
      propagate_locked();
      t3 = monotonic_ns();
      if (replication_) replication_collect_locked();
    });
    if (replication_) replication_send_locked(rep);
    carry_.clear();
    carry_count_.store(0, std::memory_order_relaxed);
    const std::uint64_t t4 = monotonic_ns();
    rep.last_lsn = lsn_.load(std::memory_order_relaxed);
    rep.recomputes = counters_.recomputes.load(std::memory_order_relaxed) - recomputes0;
    rep.derived_deltas = counters_.derived_deltas.load(std::memory_order_relaxed) - derived0;
    if (tick_options_.validate_sample != 0) stop = tick_validate_locked(rep);
    const std::uint64_t t5 = monotonic_ns();
    if (tick_options_.memory_budget_bytes != 0 && memory_locked().total_bytes() > tick_options_.memory_budget_bytes) {
      rep.gc = gc_locked();
      rep.gc_ran = true;
    }
    const std::uint64_t t6 = monotonic_ns();
    rep.phase_ns[static_cast<int>(TickPhase::Drain)] = t1 - t0;
    rep.phase_ns[static_cast<int>(TickPhase::Apply)] = (t2 - t1) + (t4 - t3);  // + log write, frees
    rep.phase_ns[static_cast<int>(TickPhase::Propagate)] = t3 - t2;
    rep.phase_ns[static_cast<int>(TickPhase::Validate)] = t5 - t4;
    rep.phase_ns[static_cast<int>(TickPhase::Gc)] = t6 - t5;
    rep.total_ns = t6 - t0;
    const TickOptions& o = tick_options_;
    const std::uint64_t budgets[kTickPhaseCount] = {o.drain_budget_ns, o.apply_budget_ns, o.propagate_budget_ns,
                                                    o.validate_budget_ns, o.gc_budget_ns};
    for (int p = 0; p < kTickPhaseCount; ++p) {
      if (budgets[p] != 0 && rep.phase_ns[p] > budgets[p]) rep.overruns.emplace_back(tick_phase_name(static_cast<TickPhase>(p)));
    }
    if (o.total_budget_ns != 0 && rep.total_ns > o.total_budget_ns) rep.overruns.emplace_back("total");
    rep.tick = ++tick_count_;
    bump(counters_.ticks, 1);
    bump(counters_.submits_rejected, rep.rejected);
    bump(counters_.validation_failures, rep.validation_failures.size());
    if (!rep.overruns.empty()) bump(counters_.tick_overruns, 1);
    tick_latency_.record(rep.total_ns);
    if (rep.last_lsn != rep.first_lsn) commit_latency_.record(t4 - t0);
    emit_locked(EventKind::Tick, 0, rep.last_lsn, rep.tick);
  }
  deliver_events();
  if (stop) std::rethrow_exception(stop);
  return rep;
}

// Applies carry_ in order. Consecutive single-run deltas and batches become one batch (applied
// in parallel); any other delta is applied on its own after the batch before it, so its checks
// (expect_epoch) see every earlier submission. An invalid submission is skipped, not thrown.
void Bus::tick_apply_locked(TickReport& rep) {
  tick_batch_.clear();
  auto flush = [&] {
    if (tick_batch_.rows() == 0) return;
    record_batch_locked(tick_batch_.view());
    tick_batch_.clear();
  };
  auto reject = [&](std::size_t i, const Error& e) {
    if (rep.rejections.size() < kMaxRejectionMessages) {
      rep.rejections.push_back("submission " + std::to_string(i + 1) + ": " + e.what());
    }
    ++rep.rejected;
  };
  for (std::size_t i = 0; i < carry_.size(); ++i) {
    Submission& s = *carry_[i];
    if (s.is_batch) {
      const DeltaBatchView v = s.batch.view();
      try {
        validate_batch(v, table_, v.rows() > 4096 ? &pool_ : nullptr);
      } catch (const Error& e) {
        reject(i, e);
        continue;
      }
      tick_batch_.append(v);
      rep.deltas_applied += v.rows();
      rep.bytes_applied += v.payload.size();
      continue;
    }
    Delta& d = s.delta;
    // Batch rows carry no source of their own (they are user deltas): another source keeps its
    // own record, as does a delta that must see every earlier submission (expect_epoch).
    const bool mergeable = d.run_list().size() == 1 && !d.expect_epoch && d.source == Source::User;
    if (!mergeable) flush();
    PageRecord* r = table_.find(d.page_id());
    try {
      if (r == nullptr) fail(ErrorCode::PageNotFound, "no live page with id ", d.page_id());
      check_delta_locked(*r, d);
    } catch (const Error& e) {
      reject(i, e);
      continue;
    }
    rep.deltas_applied += 1;
    rep.bytes_applied += d.payload().size();
    if (mergeable) {
      tick_batch_.add(d.page_id(), d.run_list().front().offset, d.payload());
    } else {
      d.timestamp_ns = now_ns();
      record_delta_locked(*r, d);
    }
  }
  flush();
}

// Re-derives `validate_sample` derived pages (round robin by id) and compares them with their
// bytes: a recompute that is not a pure function of its parents shows up here. Returns what a
// recompute threw that is not an Error (it ends the sampling: the page counts as not matching).
std::exception_ptr Bus::tick_validate_locked(TickReport& rep) {
  std::vector<PageId> ids;
  ids.reserve(derivations_.size());
  for (const auto& [id, d] : derivations_) {
    if (!d.missing_callable() && stale_.count(id) == 0) ids.push_back(id);
  }
  if (ids.empty()) return {};
  std::sort(ids.begin(), ids.end());
  auto next = std::upper_bound(ids.begin(), ids.end(), validate_cursor_);
  std::vector<std::byte> buf;
  const std::size_t n = std::min<std::size_t>(tick_options_.validate_sample, ids.size());
  for (std::size_t k = 0; k < n; ++k) {
    if (next == ids.end()) next = ids.begin();
    const PageId id = *next++;
    validate_cursor_ = id;
    const PageRecord& r = table_.record(id);
    buf.resize(r.size);
    bool same = false;
    std::exception_ptr stop;
    try {
      preview_locked(id, buf);
      same = std::memcmp(buf.data(), devices_->readable(r), r.size) == 0;
    } catch (const Error&) {
      same = false;  // a recompute that cannot run again is reported as not matching
    } catch (...) {
      stop = std::current_exception();
    }
    ++rep.validated;
    if (!same) rep.validation_failures.push_back(id);
    if (stop) return stop;
  }
  return {};
}

GcReport Bus::gc() {
  auto lock = lock_turn();
  check_open();
  check_no_transaction("gc()");
  return gc_locked();
}

GcReport Bus::gc_locked() {
  const std::uint64_t t0 = monotonic_ns();
  GcReport g;
  const std::uint64_t cache0 = cache_bytes_locked();
  const std::uint64_t index0 = index_bytes_locked();
  g.arena_bytes_released = table_.trim().bytes_released;
  // Without a log nothing reads a deleted page's record after its last pin: there is no time
  // travel or diff, and provenance answers from its index, which holds every delta of such a bus.
  if (!logging() && !read_only_) g.record_bytes_freed = table_.release_dead_records();
  // Caches: each regrows on demand at the next commit that needs it. (`v = {}` would pick
  // vector's initializer_list assignment, which keeps the capacity: std::exchange frees it.)
  std::exchange(record_buf_, {});
  std::exchange(scratch_, {});
  *wave_batch_ = WaveBatch();
  std::exchange(wave_nodes_, {});
  spare_txn_.reset();
  tick_batch_.release();
  std::exchange(drained_, {});
  carry_.shrink_to_fit();
  events_.shrink_to_fit();
  devices_->release_scratch();
  index_arena_->release_spare();
  // History beyond the retention: log files, and the index entries of the lsns they held.
  if (log_) {
    g.log_files_removed = log_->enforce_retention();
    trim_index_locked(log_->retained_from());
  } else if (mem_log_ && mem_retention_) {
    g.log_bytes_freed = mem_log_->apply_retention(*mem_retention_);
    trim_index_locked(mem_log_->retained_from());
  }
  // The index's queue is left as it is: folding it into per-page lists would grow memory, and so
  // would shrink_to_fit (a deque copies every element into new blocks, and the old ones stay in
  // the index arena for reuse).
  g.cache_bytes_freed = cache0 - std::min(cache0, cache_bytes_locked());
  g.index_bytes_freed = index0 - std::min(index0, index_bytes_locked());
  // What gc changes, counted part by part: a memory() walk over a million typed pages' cold
  // info would be most of the pause.
  g.bytes_freed = g.arena_bytes_released + g.record_bytes_freed + g.cache_bytes_freed + g.index_bytes_freed +
                  g.log_bytes_freed;
  g.pause_ns = monotonic_ns() - t0;
  bump(counters_.gc_runs, 1);
  bump(counters_.gc_bytes_freed, g.bytes_freed);
  return g;
}

PageAges Bus::page_ages() {
  auto lock = lock_turn();
  check_open();
  PageAges a;
  a.ids.reserve(table_.live_count());
  a.last_lsn.reserve(table_.live_count());
  table_.for_each_live([&](PageRecord& r) {
    a.ids.push_back(r.id);
    a.last_lsn.push_back(r.last_lsn.load(std::memory_order_relaxed));
  });
  return a;
}

}  // namespace mmsb
