#pragma once
// Internal: the state of an open bus transaction (see Bus::begin_transaction). Changes apply to
// memory at once; each keeps what it overwrote here so rollback can put it back, and its log op
// goes into one Transaction record written at commit.
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <variant>
#include <vector>

#include "mmsb/core/DefaultInitAllocator.hpp"
#include "mmsb/delta/BatchApply.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/engine/Derivation.hpp"

namespace mmsb {

/// A delta's runs and their previous bytes live in the transaction's arenas (Transaction::
/// undo_runs / undo_bytes), so recording one allocates nothing once the arenas have grown.
struct UndoDelta {
  PageRecord* rec;
  std::size_t run_begin;
  std::size_t run_count;
  std::size_t byte_begin;  // the runs' previous bytes, back to back
  Epoch epoch;
  Lsn last_lsn;
};
/// A batch's rows, copied (the caller's columns need not outlive the transaction), and what each
/// row found, saved by the apply as the row writes (UndoSink): bytes and page state. Undone
/// newest row first, skipping rows that never wrote.
struct UndoBatch {
  std::vector<PageId> page_ids;
  std::vector<std::uint64_t> offsets;
  std::vector<std::uint64_t> lengths;
  UninitVector<std::byte> old;   // each row's previous bytes, at its payload position
  UninitVector<RowPrior> prior;  // each row's page epoch and last lsn before it wrote

  UndoSink sink() noexcept { return {old.data(), prior.data()}; }
  void clear() noexcept {
    page_ids.clear();
    offsets.clear();
    lengths.clear();
    old.clear();
    prior.clear();
  }
  std::size_t capacity_bytes() const noexcept {
    return (page_ids.capacity() + offsets.capacity() + lengths.capacity()) * 8 + old.capacity() +
           prior.capacity() * sizeof(RowPrior);
  }
};
struct UndoCreate {
  PageId id;
};
// The rare entries box their big fields, so that a HeavyUndo stays the size of an UndoBatch.
struct UndoDelete {
  PageId id;
  std::unique_ptr<PageInfo> info;  // nullptr: no cold info (the transaction pins the page: bytes stay)
};
struct UndoMetadata {
  PageId id;
  std::string key;
  std::unique_ptr<MetaValue> old;  // nullptr: the key was absent
};
/// A child's in-edges and derivation before a graph change (depend, add/remove_edge, delete).
struct UndoChild {
  PageId child;
  std::vector<Edge> in_edges;
  std::unique_ptr<Derivation> derivation;  // nullptr: the child was not derived
};
/// The UndoChild for a graph change about to touch `child`.
inline UndoChild undo_child(PageId child, const DepGraph& graph, const DerivationTable& derivations) {
  const Derivation* d = derivations.get(child);
  return {child, graph.in_edges(child), d != nullptr ? std::make_unique<Derivation>(*d) : nullptr};
}
/// A recompute's memo and stale flag before it ran.
struct UndoMemo {
  PageId child;
  std::size_t memo_begin;  // in Transaction::undo_epochs
  std::size_t memo_count;
  bool was_stale;
};
/// A page's membership of the stale set before it changed.
struct UndoStale {
  PageId page;
  bool was_stale;
};
/// The entries that own memory live apart, in Transaction::heavy, and the undo log holds their
/// index: every Undo is then trivially destructible, so retiring a transaction empties its log in
/// O(1) instead of visiting each entry (a 10k-page wave leaves 20k entries, 1.6 MB read back
/// from beyond the L2 cache only to run empty destructors).
using HeavyUndo = std::variant<UndoBatch, UndoDelete, UndoMetadata, UndoChild>;
struct UndoHeavy {
  std::size_t index;  // into Transaction::heavy
};
using Undo = std::variant<UndoDelta, UndoCreate, UndoMemo, UndoStale, UndoHeavy>;
static_assert(std::is_trivially_destructible_v<Undo>, "an Undo that owns memory goes into HeavyUndo");

/// Where a transaction (or one all-or-nothing step inside it) started: undo returns here.
struct TxnMark {
  std::size_t undo = 0;
  std::size_t heavy = 0;  // Transaction::heavy entries
  TransactionBuilder::Mark ops{};
  Lsn lsn = 0;
  BusStats stats;
  std::size_t pending_pages = 0;  // index entries queued
  std::size_t pending_runs = 0;
  std::uint32_t last_run_count = 0;  // of the newest run then, which later entries may extend
  std::size_t events = 0;
};

/// Adds to a counter of Bus::counters_. Only commits (under the commit lock, so one writer)
/// change them; a plain load + store avoids a locked instruction, which would wait for the
/// commit's page stores to drain on every delta.
inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t n) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

/// Room for one more undo entry, growing geometrically (reserve(size() + 1) would reallocate on
/// every change of a big wave). Called before a change so recording it afterwards cannot throw.
inline void reserve_one(std::vector<Undo>& undo) {
  if (undo.size() == undo.capacity()) undo.reserve(undo.empty() ? 16 : 2 * undo.capacity());
}

/// A queued delta or batch; owns its bytes (the caller's buffers may change after submit()).
struct Bus::Submission {
  bool is_batch = false;
  Delta delta;
  DeltaBatch batch;
};

/// Runs the bus's blocking hooks around a wait (the bindings release the GIL there).
class Blocking {
 public:
  explicit Blocking(const Bus::BlockingHooks& h) : h_(h), state_(h.enter != nullptr ? h.enter() : nullptr) {}
  ~Blocking() {
    if (h_.leave != nullptr) h_.leave(state_);
  }
  Blocking(const Blocking&) = delete;
  Blocking& operator=(const Blocking&) = delete;

 private:
  const Bus::BlockingHooks& h_;
  void* state_;
};

/// Arena bytes a finished transaction may keep for the next one (Bus::spare_txn_).
inline constexpr std::size_t kSpareTransactionBytes = std::size_t{16} << 20;

/// Marks this thread as the one running user code under the commit lock (a wave's recomputes,
/// the clock) until the scope ends, however it ends; lock_mutex refuses that thread's calls.
struct ScopedOwner {
  std::atomic<std::thread::id>& owner;
  explicit ScopedOwner(std::atomic<std::thread::id>& o) : owner(o) {
    owner.store(std::this_thread::get_id(), std::memory_order_release);
  }
  ~ScopedOwner() { owner.store(std::thread::id{}, std::memory_order_release); }
  ScopedOwner(const ScopedOwner&) = delete;
  ScopedOwner& operator=(const ScopedOwner&) = delete;
};

struct Bus::Transaction {
  std::thread::id owner;
  std::uint64_t ticket = 0;  // group commit: its record's GroupSync ticket (0: durable or unlogged)
  bool committed = false;    // its record was logged (deleted pages stay pinned until retired)
  TxnMark start;  // restored by rollback
  PropagationMode propagation = PropagationMode::Eager;  // bus.propagation at begin, as rollback leaves it
  TransactionBuilder ops;
  std::vector<Undo> undo;
  std::vector<HeavyUndo> heavy;  // in the order their UndoHeavy entries were recorded
  // Arenas of the undo entries (append-only while the transaction lives).
  std::vector<Run> undo_runs;
  std::vector<std::byte> undo_bytes;
  std::vector<Epoch> undo_epochs;
  // Emptied UndoBatch buffers of earlier transactions: a tick's batch (megabytes of rows and old
  // bytes) then reuses warm memory instead of page-faulting fresh allocations every tick.
  std::vector<UndoBatch> spare_batches;

  /// Room for one more heavy entry (in `heavy` and in `undo`); call before the change it records,
  /// so that push_heavy() afterwards cannot fail. Throws std::bad_alloc with nothing changed.
  void reserve_heavy() {
    reserve_one(undo);
    if (heavy.size() == heavy.capacity()) heavy.reserve(heavy.empty() ? 4 : 2 * heavy.capacity());
  }
  /// Records `h` after reserve_heavy().
  void push_heavy(HeavyUndo&& h) noexcept {
    heavy.push_back(std::move(h));
    undo.emplace_back(UndoHeavy{heavy.size() - 1});
  }
  /// Both at once, for a change made after its undo entry is recorded.
  void add_heavy(HeavyUndo&& h) {
    reserve_heavy();
    push_heavy(std::move(h));
  }
  /// Bytes its arenas hold, used or not (memory accounting, and the cap on what a spare keeps).
  std::size_t arena_bytes() const noexcept {
    std::size_t b = undo.capacity() * sizeof(Undo) + heavy.capacity() * sizeof(HeavyUndo) + undo_bytes.capacity() +
                    undo_runs.capacity() * sizeof(Run) + undo_epochs.capacity() * sizeof(Epoch);
    for (const UndoBatch& u : spare_batches) b += u.capacity_bytes();
    return b;
  }
};

class Bus::UndoOnFailure {
 public:
  // Outside a transaction (every plain commit) it costs a test of txn_, nothing more.
  explicit UndoOnFailure(Bus& bus) : bus_(bus) {
    if (!bus.txn_) return;
    unwinding_ = std::uncaught_exceptions();
    mark_ = bus.mark_locked();
  }
  ~UndoOnFailure() {
    if (!mark_ || std::uncaught_exceptions() <= unwinding_) return;
    bus_.undo_locked(*bus_.txn_, *mark_);
    bus_.clear_changed_locked();
    bus_.forced_.clear();
  }
  UndoOnFailure(const UndoOnFailure&) = delete;
  UndoOnFailure& operator=(const UndoOnFailure&) = delete;

 private:
  Bus& bus_;
  int unwinding_ = 0;
  std::optional<TxnMark> mark_;
};

// Defined here because the commit path, the graph edits, the waves and ticks all commit through it.
template <class Body>
void Bus::atomically_locked(Body&& body) {
  if (txn_) {
    const UndoOnFailure undo(*this);
    body();
    return;
  }
  txn_ = new_transaction_locked();
  try {
    body();
    finish_transaction_locked();
  } catch (...) {
    if (txn_) undo_locked(*txn_, txn_->start);  // no-op when finish already undid it
    recycle_transaction_locked();
    clear_changed_locked();
    forced_.clear();
    throw;
  }
  recycle_transaction_locked();
}

}  // namespace mmsb
