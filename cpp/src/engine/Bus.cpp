#include "mmsb/engine/Bus.hpp"

#include "DevicePages.hpp"
#include "Transaction.hpp"
#include "WaveBatch.hpp"

#include <bit>
#include <cstring>
#include <limits>

#include "mmsb/core/Clock.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/core/Prefaulter.hpp"
#include "mmsb/core/Utf8.hpp"

namespace mmsb {

namespace {
std::atomic<std::uint64_t> g_next_instance{1};
}  // namespace

Bus::Bus(BusOptions options)
    : instance_id_(g_next_instance.fetch_add(1, std::memory_order_relaxed)),
      devices_(std::make_unique<DevicePages>(table_)),
      pool_(options.threads),
      clock_(std::move(options.clock)),
      path_(std::move(options.path)),
      durability_(options.durability),
      history_view_(options.read_only),
      queue_capacity_(options.queue_capacity == 0 || options.queue_capacity > (std::size_t{1} << 30)
                          ? options.queue_capacity
                          : std::bit_ceil(options.queue_capacity)) {
  if (queue_capacity_ == 0 || queue_capacity_ > (std::size_t{1} << 30)) {
    fail(ErrorCode::InvalidArgument, "queue_capacity must be between 1 and 2^30 submissions; got ", queue_capacity_);
  }
  if (path_.find('\0') != std::string::npos) {
    // The OS would read the path up to the NUL: another directory than the one named.
    fail(ErrorCode::InvalidArgument, "path must not contain a NUL byte");
  }
  if (durability_ != Durability::None && durability_ != Durability::Flush && durability_ != Durability::Fsync) {
    fail(ErrorCode::InvalidArgument, "durability ", static_cast<int>(durability_), " is none of none, flush, fsync");
  }
  wave_batch_ = std::make_unique<WaveBatch>();
  if (path_.empty()) {
    // An in-memory bus keeps its log in memory (history, time travel, diff); the read-only buses
    // that time travel builds are filled by replay and keep none.
    if (!options.read_only && options.keep_history) mem_log_ = std::make_unique<MemoryLog>();
    read_only_ = options.read_only;
    if (options.retention && !options.read_only) {
      if (!mem_log_) fail(ErrorCode::InvalidArgument, "retention bounds the history; a bus with history=False keeps none");
      if (*options.retention == 0) fail(ErrorCode::InvalidArgument, "retention must keep at least 1 checkpoint");
      mem_retention_ = options.retention;
    }
    return;
  }
  const Log::Access access = options.read_only    ? Log::Access::ReadOnly
                             : options.must_exist ? Log::Access::Open
                                                  : Log::Access::Create;
  const Lsn checkpoint_limit =
      options.use_checkpoints ? options.at_lsn.value_or(std::numeric_limits<Lsn>::max()) : 0;
  log_ = std::make_unique<Log>(path_, durability_, access, checkpoint_limit, options.progress);
  std::lock_guard lock(mutex_);
  recover_locked(options.at_lsn, options.split_transactions, options.progress);
  if (options.read_only) {
    log_.reset();
    read_only_ = true;
  } else {
    log_->start_writing();
    if (options.retention) {
      if (*options.retention == 0) fail(ErrorCode::InvalidArgument, "retention must keep at least 1 checkpoint");
      log_->set_retention(options.retention);
    }
  }
}

Bus::~Bus() {
  drop_queued();
  delete ring_if_any();
}

// Deletes what is still queued (closing, or destroying, the bus); returns how many there were.
std::uint64_t Bus::drop_queued() noexcept {
  std::vector<Submission*> left;
  if (Ring* r = ring_if_any()) {
    r->close();  // blocked submitters wake up and get Error(Closed)
    try {
      r->drain_all(left);
    } catch (...) {  // cannot grow `left`: leak rather than throw from close or the destructor
    }
  }
  for (Submission* s : left) delete s;
  const std::uint64_t n = left.size() + carry_.size();
  carry_.clear();
  carry_count_.store(0, std::memory_order_relaxed);
  queued_bytes_.store(0, std::memory_order_relaxed);
  return n;
}

void Bus::check_open() const {
  if (closed()) fail(ErrorCode::Closed, "the bus is closed; open a new one to continue");
}

void Bus::check_not_read_only() const {
  if (!read_only_) return;
  if (path_.empty()) {
    fail(ErrorCode::ReadOnly, "this bus is a read-only view of an in-memory bus at lsn ", lsn(),
         "; write through the bus it came from");
  }
  fail(ErrorCode::ReadOnly, "this bus is a read-only view of '", path_, "' at lsn ", lsn(),
       "; write through the bus that owns the directory");
}

void Bus::check_writable() const {
  check_open();
  check_not_read_only();
  if (log_broken_ && !broken_why_.empty()) {
    fail(ErrorCode::Durability, "this bus ", broken_why_, log_ ? "; reopen the bus to recover" :
         "; it takes no more writes (its pages can still be read)");
  }
  if (log_broken_ && log_) {
    fail(ErrorCode::Durability, "the log of '", path_, "' holds a change whose apply failed after it was ",
         "written; reopen the bus to recover");
  }
  if (log_broken_) {
    fail(ErrorCode::Durability, "this in-memory bus's history holds a change whose apply failed after it ",
         "was logged; it takes no more writes (its pages can still be read)");
  }
}

PageRecord& Bus::live_locked(PageId id) { return table_.get(id); }

void Bus::count(std::uint64_t deltas, std::uint64_t bytes) noexcept {
  bump(counters_.deltas_applied, deltas);
  bump(counters_.bytes_applied, bytes);
  bump(counters_.commits, 1);
}

namespace {
void require_utf8_metadata(const std::string& key, const MetaValue* value) {
  require_utf8(key, "a metadata key");
  if (value && !value->is_bytes) require_utf8(value->value, "the text value of metadata '" + key + "'");
}
}  // namespace

PageRecord& Bus::create_page(const PageSpec& spec, std::span<const std::byte> initial) {
  auto lock = lock_turn();
  check_writable();
  require_utf8(spec.name, "the page name");
  for (const auto& [key, value] : spec.metadata) require_utf8_metadata(key, &value);
  const std::uint8_t place = devices_->place(spec.location, false);
  if (!initial.empty() && initial.size() != spec.size) {
    fail(ErrorCode::InvalidArgument, "initial data has ", initial.size(), " bytes but the page has ",
         spec.size);
  }
  // The page is created first (its memory may be refused), then logged: a failed append undoes
  // the creation, so memory and log agree either way. Creation and initial content are one
  // record, so neither survives a crash without the other. A device page gets its content before
  // the record: a failed transfer then discards the page, which nothing can see yet, where a
  // failure after the record would leave the log ahead of memory (a bus that must be reopened).
  const std::uint64_t timestamp_ns = initial.empty() ? 0 : now_ns();  // before anything changes
  const UndoOnFailure guard(*this);
  PageRecord& r = table_.create(spec, place);
  const Lsn create_lsn = lsn_.load(std::memory_order_relaxed) + 1;
  std::optional<Delta> content;
  if (!initial.empty()) {
    content = Delta::at(r.id, 0, initial);
    content->timestamp_ns = timestamp_ns;
  }
  const bool written = content && devices_->on_device(r);
  try {
    if (written) devices_->write(r, *content);
    if (txn_) {
      // Allocate first, record last: a failure here leaves the transaction as it was.
      reserve_one(txn_->undo);
      TransactionBuilder::Mark mark = txn_->ops.mark();
      txn_->ops.add(PageCreateOp{r.id, spec});
      try {
        if (content) txn_->ops.add(*content);
      } catch (...) {
        txn_->ops.reset(mark);
        throw;
      }
      txn_->undo.emplace_back(UndoCreate{r.id});
    } else if (logging()) {
      record_buf_.clear();
      PageCreateOp op{r.id, spec};
      if (content) {
        const LogOp ops[] = {std::move(op), DeltaOp{*content}};
        encode_transaction_record(record_buf_, create_lsn, ops);
      } else {
        encode_op_record(record_buf_, create_lsn, op);
      }
      log_locked(create_lsn + (content ? 1 : 0));
    }
  } catch (...) {
    table_.discard_newest(r.id);
    throw;
  }
  {
    const LoggedAhead ahead(*this, !txn_ && logging());
    r.last_lsn.store(create_lsn, std::memory_order_relaxed);
    lsn_.store(create_lsn, std::memory_order_release);
    bump(counters_.pages_created, 1);
    emit_locked(EventKind::PageCreated, r.id, create_lsn, 0);
    if (content) {
      apply_delta_locked(r, *content, create_lsn + 1, written);
      count(1, content->payload().size());
      emit_locked(EventKind::DeltaApplied, r.id, create_lsn + 1, 1);
    }
  }
  lock.unlock();
  deliver_events();
  return r;
}

void Bus::delete_page(PageId id) {
  auto lock = lock_turn();
  check_writable();
  PageRecord& r = live_locked(id);
  if (graph_.has_children(id)) {
    fail(ErrorCode::Graph, "page ", id, " still has dependents (", graph_.children(id).size(),
         " children); remove their edges (bus.remove_edge) first");
  }
  if (replicated_locked(id)) {
    fail(ErrorCode::InvalidArgument, "page ", id, " is replicated (bus.replicate); detach the replicator ",
         "(bus.replicate(None)) before deleting it");
  }
  const Lsn lsn = lsn_.load(std::memory_order_relaxed) + 1;
  const UndoOnFailure guard(*this);
  if (txn_ && graph_.contains(id)) {
    txn_->add_heavy(undo_child(id, graph_, derivations_));
  }
  if (txn_) {
    const PageInfo* info = table_.info(id);
    UndoDelete undo{id, info != nullptr ? std::make_unique<PageInfo>(*info) : nullptr};
    txn_->reserve_heavy();
    txn_->ops.add(PageDeleteOp{id});
    PageTable::pin(r);  // rollback brings the page back, bytes included
    txn_->push_heavy(std::move(undo));
  } else if (logging()) {
    record_buf_.clear();
    encode_op_record(record_buf_, lsn, PageDeleteOp{id});
    log_locked(lsn);
  }
  {
    const LoggedAhead ahead(*this, !txn_ && logging());
    const Epoch epoch = r.epoch.load(std::memory_order_relaxed);  // r dies with the page
    table_.erase(id);
    drop_from_graph_locked(id);
    lsn_.store(lsn, std::memory_order_release);
    bump(counters_.pages_deleted, 1);
    emit_locked(EventKind::PageDeleted, id, lsn, epoch);
  }
  lock.unlock();
  deliver_events();
}

PageRecord& Bus::page(PageId id) {
  auto lock = lock_turn();
  check_open();
  return live_locked(id);
}

PageId Bus::find_page(std::string_view name) {
  auto lock = lock_turn();
  check_open();
  return table_.find_name(name);
}

PageInfo Bus::page_info(PageId id) {
  auto lock = lock_turn();
  check_open();
  live_locked(id);
  const PageInfo* info = table_.info(id);
  return info != nullptr ? *info : PageInfo{};
}

std::vector<PageId> Bus::page_ids() {
  auto lock = lock_turn();
  check_open();
  std::vector<PageId> ids;
  ids.reserve(table_.live_count());
  table_.for_each_live([&](PageRecord& r) { ids.push_back(r.id); });
  return ids;
}

std::uint64_t Bus::page_count() {
  auto lock = lock_turn();
  check_open();
  return table_.live_count();
}

void Bus::set_metadata(PageId id, const std::string& key, const std::optional<MetaValue>& value) {
  auto lock = lock_turn();
  check_writable();
  live_locked(id);
  require_utf8_metadata(key, value ? &*value : nullptr);
  if (!value) {
    const PageInfo* info = table_.info(id);
    if (info == nullptr || info->metadata.find(key) == info->metadata.end()) return;
  }
  const Lsn lsn = lsn_.load(std::memory_order_relaxed) + 1;
  const UndoOnFailure guard(*this);
  if (txn_) {
    std::unique_ptr<MetaValue> old;
    if (const PageInfo* info = table_.info(id)) {
      if (auto it = info->metadata.find(key); it != info->metadata.end()) old = std::make_unique<MetaValue>(it->second);
    }
    UndoMetadata undo{id, key, std::move(old)};
    txn_->reserve_heavy();
    txn_->ops.add(MetadataOp{id, key, value});
    txn_->push_heavy(std::move(undo));
  } else if (logging()) {
    record_buf_.clear();
    encode_op_record(record_buf_, lsn, MetadataOp{id, key, value});
    log_locked(lsn);
  }
  const LoggedAhead ahead(*this, !txn_ && logging());
  if (!value) {
    table_.info_for_update(id).metadata.erase(key);
  } else {
    table_.info_for_update(id).metadata.insert_or_assign(key, *value);
  }
  lsn_.store(lsn, std::memory_order_release);
}

Epoch Bus::snapshot(PageId id, std::span<std::byte> out) {
  auto lock = lock_turn();
  check_open();
  PageRecord& r = live_locked(id);
  if (out.size() != r.size) {
    fail(ErrorCode::InvalidArgument, "snapshot buffer has ", out.size(), " bytes, page ", id, " has ",
         r.size);
  }
  std::memmove(out.data(), devices_->readable(r), r.size);  // `out` may be page memory (any page's)
  return r.epoch.load(std::memory_order_relaxed);
}

void Bus::read(PageId id, std::uint64_t offset, std::span<std::byte> out) {
  auto lock = lock_turn();
  check_open();
  PageRecord& r = live_locked(id);
  if (offset > r.size || out.size() > r.size - offset) {
    fail(ErrorCode::InvalidArgument, "read of ", out.size(), " bytes at offset ", offset,
         " is outside page ", id, " (", r.size, " bytes)");
  }
  if (!out.empty()) std::memmove(out.data(), devices_->readable(r) + offset, out.size());  // as snapshot
}

const std::byte* Bus::host_bytes(const PageRecord& r) {
  if (r.place == 0) return r.data;  // host arena: no lock (placements are read under it)
  auto lock = lock_mutex();
  return devices_->readable(r);
}

DevicePlace Bus::device_place(const PageRecord& r) {
  if (r.place == 0) return {};
  auto lock = lock_mutex();
  return devices_->device_place_of(r);
}

DeviceTraffic Bus::device_traffic() {
  auto lock = lock_mutex();
  return devices_->traffic();
}

PageRecord& Bus::pin(PageId id) {
  auto lock = lock_mutex();
  PageRecord& r = live_locked(id);
  PageTable::pin(r);
  return r;
}

void Bus::unpin(PageRecord& record) {
  if (!table_.unpin(record)) {
    fail(ErrorCode::InvalidArgument, "unpin of page ", record.id,
         " that holds no pin (each pin() is undone by exactly one unpin())");
  }
}

void Bus::close() {
  auto lock = lock_turn();
  if (closed()) return;
  if (txn_) {  // closing inside a transaction abandons it
    undo_locked(*txn_, txn_->start);
    end_transaction_locked();
  }
  std::exception_ptr unsynced;  // reported after closing, like the final sync's failure
  try {
    settle_locked();
  } catch (...) {
    unsynced = std::current_exception();
  }
  closed_.store(true, std::memory_order_release);
  {
    std::lock_guard g(ring_create_);  // a ring created from now on starts closed
    bump(counters_.submits_discarded, drop_queued());
  }
  mem_log_.reset();  // nothing reads it once closed
  replication_.reset();  // no tick will feed the replicator again: another bus may attach it
  if (log_) {
    std::unique_ptr<Log> log = std::move(log_);
    log->close();  // throws after the bus is already closed; the destructor releases the lock
  }
  if (unsynced) std::rethrow_exception(unsynced);
}

Lsn Bus::checkpoint(const ProgressFn& progress) {
  auto lock = lock_turn();
  check_writable();
  check_no_transaction("checkpoint()");
  if (!log_ && !mem_log_) {
    fail(ErrorCode::HistoryUnavailable, "checkpoint() needs a log: this bus was made with history=False");
  }
  settle_locked();
  const Lsn lsn = lsn_.load(std::memory_order_relaxed);
  const PageBytesFn page_bytes = [this](const PageRecord& r) { return devices_->readable(r); };
  if (log_) {
    log_->checkpoint(lsn, table_, graph_image_locked(), page_bytes, progress);
    trim_index_locked(log_->retained_from());  // the retention ran with it: as gc() does
  } else {
    // In memory: the bytes a checkpoint file would hold, kept beside the log.
    std::vector<std::byte> image;
    encode_checkpoint(lsn, table_, graph_image_locked(), page_bytes,
                      [&](std::span<const std::byte> b) { image.insert(image.end(), b.begin(), b.end()); }, progress);
    mem_log_->add_checkpoint(lsn, std::move(image));
    if (mem_retention_) {
      mem_log_->apply_retention(*mem_retention_);
      trim_index_locked(mem_log_->retained_from());
    }
  }
  emit_locked(EventKind::Checkpoint, 0, lsn, 0);
  lock.unlock();
  deliver_events();
  return lsn;
}

BusStats Bus::stats() const noexcept {
  auto get = [](const std::atomic<std::uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  const Counters& c = counters_;
  BusStats s;
  s.deltas_applied = get(c.deltas_applied);
  s.bytes_applied = get(c.bytes_applied);
  s.commits = get(c.commits);
  s.pages_created = get(c.pages_created);
  s.pages_deleted = get(c.pages_deleted);
  s.waves = get(c.waves);
  s.recomputes = get(c.recomputes);
  s.memo_skips = get(c.memo_skips);
  s.cutoffs = get(c.cutoffs);
  s.derived_deltas = get(c.derived_deltas);
  s.events = get(c.events);
  s.submits = get(c.submits);
  s.submits_rejected = get(c.submits_rejected);
  s.submits_discarded = get(c.submits_discarded);
  s.ticks = get(c.ticks);
  s.tick_overruns = get(c.tick_overruns);
  s.validation_failures = get(c.validation_failures);
  s.gc_runs = get(c.gc_runs);
  s.gc_bytes_freed = get(c.gc_bytes_freed);
  s.queue_depth = queue_depth();
  s.queue_high_water = ring_if_any() ? ring_if_any()->high_water() : 0;
  return s;
}

void Bus::reset_stats() {
  auto lock = lock_mutex();
  Counters& c = counters_;
  for (auto* x : {&c.deltas_applied, &c.bytes_applied, &c.commits, &c.pages_created, &c.pages_deleted, &c.waves,
                  &c.recomputes, &c.memo_skips, &c.cutoffs, &c.derived_deltas, &c.events, &c.submits,
                  &c.submits_rejected, &c.submits_discarded, &c.ticks, &c.tick_overruns, &c.validation_failures,
                  &c.gc_runs, &c.gc_bytes_freed}) {
    x->store(0, std::memory_order_relaxed);
  }
  if (Ring* r = ring_if_any()) r->reset_high_water();
  commit_latency_.reset();
  tick_latency_.reset();
}

MemoryReport Bus::memory() {
  // Buffers reserved ahead are counted whole; their pages are being faulted in on the helper
  // thread. Waiting for it makes the report what the resident set shows.
  Prefaulter::settle();
  auto lock = lock_turn();
  return memory_locked();
}

MemoryReport Bus::memory_locked() {
  const PageTableStats t = table_.stats();
  MemoryReport m;
  m.pages = t.live_pages;
  m.data_bytes = t.arena.requested_bytes;
  // Slack: class rounding, free blocks and slab tails of the arena, and the record table's
  // slots allocated ahead in chunks of 4096.
  m.arena_slack_bytes = t.arena.slack_bytes() + t.record_slack_bytes;
  m.metadata_bytes = t.record_bytes + t.info_bytes + t.name_index_bytes;
  m.graph_bytes = graph_.memory_bytes() + derivations_.size() * (sizeof(Derivation) + 64) + derivations_.index_bytes();
  for (const auto& [id, d] : derivations_) m.graph_bytes += (d.parents.capacity() + d.memo.capacity() + d.weights.capacity()) * 8;
  m.index_bytes = index_bytes_locked();
  m.log_bytes = mem_log_ ? mem_log_->bytes() : log_ ? log_->pending_bytes() : 0;
  m.cache_bytes = cache_bytes_locked();
  if (ring_if_any()) m.queue_bytes = queue_capacity_ * (sizeof(Submission*) + sizeof(std::uint64_t));
  m.queue_bytes += queued_bytes_.load(std::memory_order_relaxed);
  m.mirror_bytes = devices_->mirror_bytes();
  m.device_bytes = devices_->device_bytes();
  return m;
}

// The per-page lsn index (provenance): entries, queued rows and propagated deltas' inputs.
std::uint64_t Bus::index_bytes_locked() const {
  std::uint64_t b = pending_runs_.size() * sizeof(PendingRun) + pending_pages_.size() * sizeof(PageId) +
                    index_.bucket_count() * sizeof(void*) +
                    index_.size() * (sizeof(PageHistory) + sizeof(PageId) + 16) + index_capacity_bytes_;
  b += derived_.size() * sizeof(DerivedEntry) + frozen_.capacity() * sizeof(FrozenEntry) +
       frozen_items_.capacity() * sizeof(frozen_items_[0]) + parent_lists_.bytes();
  b += log_ ? log_->index_bytes() : mem_log_ ? mem_log_->index_bytes() : 0;  // where records are (history)
  return b;
}

// Reusable buffers: commit staging, recompute scratch, the spare transaction, tick buffers.
std::uint64_t Bus::cache_bytes_locked() const {
  std::uint64_t b = record_buf_.capacity() + scratch_.capacity() + wave_batch_->capacity_bytes() +
                    wave_nodes_.capacity() * sizeof(WaveNode) +
                    changed_bits_.capacity() * 8 +
                    tick_batch_.capacity_bytes() + (drained_.capacity() + carry_.capacity()) * sizeof(void*) +
                    events_.capacity() * sizeof(BusEvent) + devices_->scratch_bytes() +
                    index_arena_->unused_bytes();
  if (spare_txn_) {
    const Transaction& spare = *spare_txn_;
    b += sizeof(Transaction) + spare.arena_bytes();
  }
  return b;
}

}  // namespace mmsb
