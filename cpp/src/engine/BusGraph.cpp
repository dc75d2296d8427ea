// Bus: the dependency graph, propagation waves and recomputes. A wave visits the dependents of
// the pages changed by one commit in canonical topological order, each at most once; a
// recompute is skipped when its parents' epochs equal its memo, and a recompute that changes
// nothing stops the wave on that branch (its children's memos still match).
#include <algorithm>
#include <cstring>

#include "DevicePages.hpp"
#include "Transaction.hpp"
#include "WaveBatch.hpp"
#include "mmsb/core/Clock.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/graph/Semiring.hpp"

namespace mmsb {

namespace {
// Whether the parents' epochs equal the memo (their epochs at the last recompute).
bool memo_matches(std::span<const std::pair<PageId, Epoch>> inputs, const std::vector<Epoch>& memo) {
  return std::equal(inputs.begin(), inputs.end(), memo.begin(), memo.end(),
                    [](const std::pair<PageId, Epoch>& in, Epoch e) { return in.second == e; });
}

// Clears the wave owner however the wave ends.
struct WaveOwner {
  std::atomic<std::thread::id>& owner;
  explicit WaveOwner(std::atomic<std::thread::id>& o) : owner(o) {
    owner.store(std::this_thread::get_id(), std::memory_order_release);
  }
  ~WaveOwner() { owner.store(std::thread::id{}, std::memory_order_release); }
};
}  // namespace

// Called for each change to a page with children (has_dependents); the wave (or the stale
// marking) follows. A batch touches a page many times: changed_ holds it once (changed_bits_).
void Bus::note_changed_locked(PageId page) {
  if (propagation_ == PropagationMode::Eager) {
    const std::size_t word = page / 64;
    if (word >= changed_bits_.size()) changed_bits_.resize(std::max<std::size_t>(word + 1, 2 * changed_bits_.size()));
    const std::uint64_t bit = std::uint64_t{1} << (page % 64);
    if ((changed_bits_[word] & bit) != 0) return;
    changed_bits_[word] |= bit;
    changed_.push_back(page);
    return;
  }
  graph_.for_each_child(page, [&](PageId child, EdgeKind) { mark_stale_locked(child); });
}

void Bus::clear_changed_locked() noexcept {
  for (PageId p : changed_) changed_bits_[p / 64] &= ~(std::uint64_t{1} << (p % 64));
  changed_.clear();
}

void Bus::mark_stale_locked(PageId page) {
  if (!stale_.insert(page).second) return;
  if (txn_) txn_->undo.emplace_back(UndoStale{page, false});
  emit_locked(EventKind::PageStale, page, lsn(), table_.record(page).epoch.load(std::memory_order_relaxed));
}

// A child whose definition changed is recomputed now (eager, with its descendants in the same
// wave; replay runs that wave at its Wave op) or marked stale (deferred).
void Bus::redefined_locked(PageId child) {
  if (propagation_ == PropagationMode::Eager) {
    forced_.insert(child);
    if (!replay_.active) run_wave_locked();
  } else {
    mark_stale_locked(child);
  }
}

void Bus::settle_cut_locked() {
  if (changed_.empty() && forced_.empty()) return;
  const PropagationMode mode = propagation_;
  propagation_ = PropagationMode::Deferred;
  const std::vector<PageId> changed = changed_;
  clear_changed_locked();
  for (PageId p : changed) note_changed_locked(p);
  const std::unordered_set<PageId> forced = std::move(forced_);
  forced_.clear();
  for (PageId c : forced) redefined_locked(c);
  propagation_ = mode;
}

void Bus::check_derivation_locked(PageId child, std::span<const PageId> parents, const RecomputeSpec& fn,
                                  std::span<const double> weights) {
  const PageRecord& out = live_locked(child);
  if (parents.empty()) fail(ErrorCode::InvalidArgument, "page ", child, " needs at least one parent (on=[...])");
  if (!weights.empty() && weights.size() != parents.size()) {
    fail(ErrorCode::InvalidArgument, weights.size(), " weights for ", parents.size(), " parents of page ", child);
  }
  if (!weights.empty() && fn.kind != RecomputeKind::Reduce) {
    fail(ErrorCode::InvalidArgument, "weights apply to mmsb.ops.reduce only, not to ", describe(fn));
  }
  if (fn.kind == RecomputeKind::Copy && parents.size() != 1) {
    fail(ErrorCode::InvalidArgument, "mmsb.ops.copy takes exactly one parent; page ", child, " was given ",
         parents.size());
  }
  if (fn.kind == RecomputeKind::Reduce) check_semiring_dtype(fn.semiring, out.dtype);
  for (double w : weights) check_semiring_weight(fn.semiring, out.dtype, w);
  for (PageId p : parents) {
    const PageRecord& in = live_locked(p);
    if (fn.kind == RecomputeKind::Callable) continue;  // a callable reads whatever it is given
    if (in.size != out.size || in.dtype != out.dtype) {
      fail(ErrorCode::InvalidArgument, describe(fn), " needs parents laid out like page ", child, " (",
           out.size, " bytes of ", dtype_name(out.dtype), "); parent ", p, " has ", in.size, " bytes of ",
           dtype_name(in.dtype));
    }
  }
}

void Bus::depend(PageId child, std::span<const PageId> parents, const RecomputeSpec& fn,
                 std::span<const double> weights, RecomputeCallable callable) {
  {
    auto lock = lock_turn();
    check_writable();
    check_derivation_locked(child, parents, fn, weights);
    if (fn.kind == RecomputeKind::Callable && !callable) {
      fail(ErrorCode::InvalidArgument, "a callable recompute needs its function");
    }
    auto it = derivations_.find(child);
    const bool same = it != derivations_.end() && !it->second.implicit && it->second.fn == fn &&
                      std::equal(parents.begin(), parents.end(), it->second.parents.begin(), it->second.parents.end()) &&
                      std::equal(weights.begin(), weights.end(), it->second.weights.begin(), it->second.weights.end());
    if (same && it->second.missing_callable()) {
      // Re-registration after a reopen: the log already says this; only the function was missing.
      Derivation& d = it->second;
      d.callable = std::move(callable);
      stale_.insert(child);
      if (propagation_ == PropagationMode::Eager) {
        try {
          atomically_locked([&] {
            forced_.insert(child);
            run_wave_locked();
          });
        } catch (...) {
          d.callable = nullptr;  // as before the call: still waiting for a working function
          throw;
        }
      }
    } else {
      for (PageId p : parents) {
        const auto kind = graph_.edge_kind(p, child);
        if (kind && *kind != EdgeKind::Data) {
          fail(ErrorCode::Graph, "page ", p, " is already a ", edge_kind_name(*kind), " parent of page ", child,
               "; remove that edge first");
        }
      }
      if (it != derivations_.end() && it->second.implicit) {
        fail(ErrorCode::Graph, "page ", child, " is a device_sync child (a copy of page ", it->second.parents.front(),
             "); remove that edge before deriving it otherwise");
      }
      atomically_locked([&] {
        const Lsn lsn = this->lsn() + 1;
        DependOp op{child, fn, {parents.begin(), parents.end()}, {weights.begin(), weights.end()}};
        txn_->add_heavy(undo_child(child, graph_, derivations_));
        const PageId redefined = replay_graph_op_locked(op);
        derivations_.at(child).callable = std::move(callable);
        txn_->ops.add(op);
        lsn_.store(lsn, std::memory_order_release);
        redefined_locked(redefined);
      });
    }
  }
  deliver_events();
}

void Bus::add_edge(PageId parent, PageId child, EdgeKind kind) {
  {
    auto lock = lock_turn();
    check_writable();
    live_locked(parent);
    PageRecord& c = live_locked(child);
    if (kind == EdgeKind::Data) {
      fail(ErrorCode::InvalidArgument, "data edges are declared with bus.depend(child, on=[...], fn=...), which ",
           "also says how the child is recomputed");
    }
    if (kind == EdgeKind::DeviceSync) {
      const PageRecord& p = live_locked(parent);
      if (p.size != c.size) {
        fail(ErrorCode::InvalidArgument, "a device_sync child is a copy of its parent: page ", child, " has ",
             c.size, " bytes, page ", parent, " has ", p.size);
      }
      if (derivations_.count(child) != 0) {
        fail(ErrorCode::Graph, "page ", child, " is already derived; a device_sync child has exactly one parent");
      }
    }
    atomically_locked([&] {
      txn_->add_heavy(undo_child(child, graph_, derivations_));
      const EdgeOp op{parent, child, kind, true};
      const PageId redefined = replay_graph_op_locked(op);  // throws GraphCycle / Graph before anything changed
      txn_->ops.add(op);
      lsn_.store(lsn() + 1, std::memory_order_release);
      if (redefined != 0) redefined_locked(redefined);
    });
  }
  deliver_events();
}

void Bus::remove_edge(PageId parent, PageId child) {
  auto lock = lock_turn();
  check_writable();
  const auto kind = graph_.edge_kind(parent, child);
  if (!kind) fail(ErrorCode::Graph, "there is no edge ", parent, " -> ", child);
  atomically_locked([&] {
    txn_->add_heavy(undo_child(child, graph_, derivations_));
    const PageId redefined = replay_graph_op_locked(EdgeOp{parent, child, *kind, false});
    txn_->ops.add(EdgeOp{parent, child, *kind, false});
    lsn_.store(lsn() + 1, std::memory_order_release);
    if (redefined != 0) redefined_locked(redefined);
  });
  lock.unlock();
  deliver_events();
}

void Bus::refresh_dependents_locked(PageId page) {
  const std::size_t word = page / 64;
  const std::uint64_t bit = std::uint64_t{1} << (page % 64);
  if (graph_.has_children(page) && table_.find(page) != nullptr) {
    if (word >= dependents_bits_.size()) dependents_bits_.resize(std::max<std::size_t>(word + 1, 2 * dependents_bits_.size()));
    dependents_bits_[word] |= bit;
  } else if (word < dependents_bits_.size()) {
    dependents_bits_[word] &= ~bit;
  }
}

void Bus::drop_from_graph_locked(PageId id) {
  if (!graph_.contains(id)) return;
  const std::vector<PageId> parents = graph_.parents(id);
  graph_.remove_node(id);
  derivations_.erase(id);
  if (stale_.erase(id) != 0 && txn_) txn_->undo.emplace_back(UndoStale{id, true});
  for (PageId p : parents) refresh_dependents_locked(p);
}

// After recovery from a checkpoint or log older than format 4, which hold no stale marks, they
// are estimated: a derived page whose memo disagrees with its parents' epochs was not recomputed
// since they changed (deferred mode or a crash), or its last recompute was a cutoff, which logs
// nothing. A built-in kernel tells the two apart exactly by recomputing into scratch; a callable
// cannot run here (it is not registered yet), so its page stays stale. (Control children's marks
// are lost.) Format 4 replay reproduces the stale set itself, and this does nothing.
void Bus::mark_unsettled_stale_locked() {
  if (!replay_.legacy_seen) return;
  for (auto& [id, d] : derivations_) {
    std::vector<Epoch> sig;
    std::vector<const PageRecord*> parents;
    for (PageId p : d.parents) {
      parents.push_back(&table_.record(p));
      sig.push_back(parents.back()->epoch.load(std::memory_order_relaxed));
    }
    if (sig == d.memo) continue;
    const PageRecord& out = table_.record(id);
    if (d.fn.kind != RecomputeKind::Callable) {
      const std::byte* now = devices_->readable(out);
      scratch_.assign(now, now + out.size);
      compute_locked(id, d, out, parents, host_inputs_locked(parents), scratch_);
      if (std::memcmp(scratch_.data(), now, out.size) == 0) {
        d.memo = std::move(sig);
        continue;
      }
    }
    stale_.insert(id);
  }
}

// Applies a graph change (commits and replay alike, so both redefine and unmark the same pages).
PageId Bus::replay_graph_op_locked(const LogOp& op) {
  if (const auto* e = std::get_if<EdgeOp>(&op)) {
    table_.get(e->parent);
    table_.get(e->child);
    struct Refresh {
      Bus& bus;
      PageId page;
      ~Refresh() { bus.refresh_dependents_locked(page); }
    } refresh{*this, e->parent};
    if (e->add) {
      graph_.add_edge(e->parent, e->child, e->kind);
      if (e->kind != EdgeKind::DeviceSync) return 0;
      Derivation copy{.parents = {e->parent}, .memo = {}, .weights = {}, .fn = {}, .callable = {}, .implicit = true};
      derivations_.insert_or_assign(e->child, std::move(copy));
      return e->child;
    }
    if (txn_) reserve_one(txn_->undo);
    if (!graph_.remove_edge(e->parent, e->child)) fail(ErrorCode::Graph, "no edge ", e->parent, " -> ", e->child);
    if (!graph_.contains(e->child) && stale_.erase(e->child) != 0 && txn_) {
      txn_->undo.emplace_back(UndoStale{e->child, true});
    }
    auto it = derivations_.find(e->child);
    if (it == derivations_.end()) return 0;
    auto& ps = it->second.parents;
    const auto pos = std::find(ps.begin(), ps.end(), e->parent);
    if (pos == ps.end()) return 0;
    if (!it->second.weights.empty()) it->second.weights.erase(it->second.weights.begin() + (pos - ps.begin()));
    ps.erase(pos);
    it->second.memo.clear();
    if (ps.empty()) {
      derivations_.erase(it);
      return 0;
    }
    // Still derived from its remaining data parents: it no longer matches its definition.
    return e->kind == EdgeKind::Data ? e->child : 0;
  }
  if (const auto* d = std::get_if<DependOp>(&op)) {
    table_.get(d->child);
    for (PageId p : d->parents) table_.get(p);
    const std::vector<PageId> old = graph_.parents(d->child);
    graph_.set_data_parents(d->child, d->parents);
    derivations_.insert_or_assign(d->child, Derivation{.parents = d->parents, .memo = {}, .weights = d->weights,
                                                       .fn = d->fn, .callable = {}, .implicit = false});
    for (PageId p : old) refresh_dependents_locked(p);
    for (PageId p : d->parents) refresh_dependents_locked(p);
    return d->child;
  }
  return 0;
}

GraphImage Bus::graph_image_locked() const {
  GraphImage g;
  for (const Edge& e : graph_.edges()) {
    if (e.kind != EdgeKind::Data) g.edges.push_back(EdgeOp{e.parent, e.child, e.kind, true});
  }
  std::vector<PageId> derived;
  for (const auto& [id, d] : derivations_) {
    if (d.implicit) {
      g.sync_memos.emplace_back(id, d.memo);
    } else {
      derived.push_back(id);
    }
  }
  std::sort(derived.begin(), derived.end());
  std::sort(g.sync_memos.begin(), g.sync_memos.end());
  for (PageId id : derived) {
    const Derivation& d = derivations_.at(id);
    g.derivations.push_back({DependOp{id, d.fn, d.parents, d.weights}, d.memo});
  }
  g.stale.assign(stale_.begin(), stale_.end());
  std::sort(g.stale.begin(), g.stale.end());
  return g;
}

void Bus::restore_graph_locked(const GraphImage& g) {
  for (const auto& d : g.derivations) {
    replay_graph_op_locked(d.depend);
    derivations_.at(d.depend.child).memo = d.memo;
  }
  for (const EdgeOp& e : g.edges) replay_graph_op_locked(e);
  for (const auto& [child, memo] : g.sync_memos) {
    auto it = derivations_.find(child);
    if (it == derivations_.end() || !it->second.implicit) fail(ErrorCode::Graph, "page ", child, " has no device_sync parent");
    it->second.memo = memo;
  }
  for (PageId id : g.stale) {
    if (!graph_.contains(id)) fail(ErrorCode::Graph, "stale page ", id, " has no edges");
    stale_.insert(id);
  }
  if (!g.stale_known) replay_.legacy_seen = true;
}

// Runs the wave for changed_ (and forced_, and stale derived pages) in canonical order. Caller:
// atomically_locked, so a throwing recompute rolls back everything the commit did. In replay no
// recompute runs: a page changed when the log holds its Derived op (replay_.derived), and every
// other visit ends as a cutoff, so the memos, stale marks and notified children come out as the
// commit left them.
void Bus::run_wave_locked(bool propagating) {
  const std::size_t stale_before = stale_.size();
  if (propagating) {
    // Stale pages without a recompute (control children) count as notified once propagated.
    std::vector<PageId> notified;
    for (PageId p : stale_) {
      if (derivations_.count(p) == 0) notified.push_back(p);
    }
    for (PageId p : notified) {
      if (txn_) reserve_one(txn_->undo);
      stale_.erase(p);
      if (txn_) txn_->undo.emplace_back(UndoStale{p, true});
    }
  }
  if (!changed_.empty() || !forced_.empty() || !stale_.empty() || !replay_.derived.empty()) visit_wave_locked();
  if (replay_.active) return;
  // The Wave op: takes no lsn in a record with other changes; a propagate() that only cleared
  // stale marks takes one, so that the marks are a function of the lsn; nothing else to replay
  // (a callable re-attached after a reopen logs nothing) is not logged.
  const bool alone = txn_->ops.lsn_count() == 0;
  if (alone && !(propagating && stale_.size() != stale_before)) return;
  txn_->ops.add(WaveOp{propagation_ == PropagationMode::Deferred, true, propagating, alone});
  if (alone) lsn_.store(lsn() + 1, std::memory_order_release);
}

void Bus::visit_wave_locked() {
  WaveOwner owner(wave_owner_);
  Wave wave(graph_);
  const std::function<void(PageId)> notify = [&](PageId child) { mark_stale_locked(child); };
  for (PageId p : changed_) wave.push_children(p, notify);
  clear_changed_locked();
  for (PageId p : forced_) wave.push(p);
  for (PageId p : stale_) {
    if (derivations_.count(p) != 0) wave.push(p);
  }
  for (PageId p : replay_.derived) wave.push(p);
  if (!replay_.active) {
    bump(counters_.waves, 1);
    wave_timestamp_ns_ = wall_clock_ns();  // the wave's deltas share their commit's time
  }
  // Batches bounded in count, and in staging bytes by recomputing a popped batch in prefixes
  // (each a batch too); the same bounds whatever the thread count, so the order of everything
  // committed does not depend on it either (it is canonical anyway).
  for (;;) {
    wave.pop_batch(wave_nodes_, kWaveBatchPages);
    if (wave_nodes_.empty()) break;
    for (std::span<const WaveNode> rest = wave_nodes_; !rest.empty();) {
      rest = rest.subspan(recompute_batch_locked(rest));
      for (const WaveItem& it : wave_batch_->items()) {
        if (it.changed) wave.push_children(WaveNode{it.id, it.slot}, notify);
      }
    }
  }
  forced_.clear();
}

// Three steps: in canonical order, the memo check of each page; then the built-in recomputes of
// the batch, in parallel lanes (each writes only its own item); then, in canonical order again,
// Python recomputes and every commit. A page committed nothing when its item is not computed or
// its delta is empty (cutoff). Takes the longest prefix of `nodes` (at least one) whose pages
// hold at most kWaveBatchBytes, and returns its length.
std::size_t Bus::recompute_batch_locked(std::span<const WaveNode> nodes) {
  WaveBatch& batch = *wave_batch_;
  batch.clear();
  std::uint64_t parallel_bytes = 0;  // output bytes of the built-in recomputes
  std::size_t parallel = 0;
  // The lookups of the whole batch first: independent of each other, their cache misses
  // overlap, where one page's lookup, parents and memo each wait for the one before.
  std::size_t taken = 0;
  for (std::uint64_t staged = 0; taken < nodes.size(); ++taken) {
    const WaveNode node = nodes[taken];
    PageRecord* out = table_.find(node.id);
    staged += out == nullptr ? 0 : out->size;
    if (taken != 0 && staged > kWaveBatchBytes) break;
    Derivation* found = derivations_.get(node.id);
    if (found == nullptr) continue;
    WaveItem& it = batch.add(node);
    it.d = found;
    it.out = out != nullptr ? out : &table_.get(node.id);  // get throws, naming the page
  }
  for (WaveItem& it : batch.items()) {
    const PageId id = it.id;
    const bool logged = replay_.active && replay_.derived.count(id) != 0;
    // Usually both empty: skip their hashing then (a lookup per recomputed page).
    it.forced = (!forced_.empty() && forced_.count(id) != 0) || (!stale_.empty() && stale_.count(id) != 0) || logged;
    it.parents.reset(it.d->parents.size());
    for (PageId p : it.d->parents) {
      const PageRecord& r = table_.get(p);
      it.parents.add(p, &r, r.data, r.epoch.load(std::memory_order_relaxed));
    }
    if (!it.forced && memo_matches(it.parents.inputs(), it.d->memo)) {
      if (!replay_.active) bump(counters_.memo_skips, 1);
      it.d = nullptr;  // nothing to do
    } else if (replay_.active) {
      it.computed = true;  // its delta, if the commit made one, was replayed already
      it.changed = logged;
    } else if (it.d->missing_callable()) {
      mark_stale_locked(id);
      it.d = nullptr;
    } else if (devices_->active() && it.d->fn.kind != RecomputeKind::Callable &&
               devices_->computes_on_device(*it.out, it.parents.records())) {
      it.on_device = true;  // computed where its pages live, on this thread: no host bytes needed
    } else {
      // The host computes it: device pages among its pages are read through their mirrors.
      it.out_bytes = devices_->readable(*it.out);
      if (devices_->active() || devices_->lent()) {
        it.parents.host_bytes([&](const PageRecord& r) { return devices_->readable(r); });
      }
      if (it.d->fn.kind != RecomputeKind::Callable) {
        ++parallel;
        parallel_bytes += it.out->size;
        if (it.d->fn.kind == RecomputeKind::Reduce) it.kernel = batch.kernel(it.d->fn.semiring, it.out->dtype);
      }
    }
  }
  const auto items = batch.items();
  auto compute = [&](WaveItem& it) {
    if (it.on_device) {
      devices_->recompute(it.id, it.d->fn, it.d->weights, *it.out, it.parents.records(), it.delta);
    } else {
      // Built-in kernels write every byte of the page (sizes are whole elements): only a callable
      // needs the child's bytes staged.
      if (it.d->fn.kind == RecomputeKind::Callable) {
        it.scratch.assign(it.out_bytes, it.out_bytes + it.out->size);
      } else {
        it.scratch.resize(it.out->size);
      }
      compute_locked(it.id, *it.d, *it.out, it.parents.records(), it.parents.bytes(), it.scratch, it.kernel);
      Delta::diff_into(it.delta, it.id, {it.out_bytes, it.out->size}, it.scratch);
    }
    it.computed = true;
    it.changed = !it.delta.empty();
  };
  const auto built_in = [](const WaveItem& it) {
    return it.d != nullptr && !it.on_device && it.d->fn.kind != RecomputeKind::Callable;
  };
  // Handing lanes to the pool costs microseconds: worth it only for enough bytes to compute.
  const unsigned lanes = parallel_bytes < kWaveLaneBytes
                             ? 1u
                             : static_cast<unsigned>(std::min<std::size_t>(pool_.threads(), parallel / 2));
  if (lanes > 1) {
    pool_.run_lanes(lanes, [&](unsigned lane) {
      for (std::size_t i = lane; i < items.size(); i += lanes) {
        if (built_in(items[i])) compute(items[i]);
      }
    });
  }
  for (WaveItem& it : items) {
    if (it.d == nullptr) continue;
    if (!it.computed) compute(it);  // Python recomputes, and everything when not in lanes
    commit_recompute_locked(it);
  }
  return taken;
}

void Bus::commit_recompute_locked(WaveItem& it) {
  Derivation& d = *it.d;
  const PageId child = it.id;
  PageRecord& out = *it.out;
  const bool was_stale = !stale_.empty() && stale_.erase(child) != 0;
  if (txn_) {
    Transaction& t = *txn_;
    reserve_one(t.undo);
    const UndoMemo u{child, t.undo_epochs.size(), d.memo.size(), was_stale};
    t.undo_epochs.insert(t.undo_epochs.end(), d.memo.begin(), d.memo.end());
    t.undo.emplace_back(u);
  }
  const std::span<const std::pair<PageId, Epoch>> inputs = it.parents.inputs();
  d.memo.resize(inputs.size());
  std::transform(inputs.begin(), inputs.end(), d.memo.begin(), [](const auto& in) { return in.second; });
  if (replay_.active) return;
  bump(counters_.recomputes, 1);
  Delta& delta = it.delta;
  if (delta.empty()) {
    bump(counters_.cutoffs, 1);
    return;
  }
  delta.source = Source::Propagation;
  delta.timestamp_ns = wave_timestamp_ns_;
  txn_note_delta_locked(out, delta, &inputs);
  const Lsn lsn = this->lsn() + 1;
  note_derived_locked(lsn, inputs);
  apply_delta_locked(out, delta, lsn);
  bump(counters_.derived_deltas, 1);
  emit_locked(EventKind::PageChanged, child, lsn, delta.epoch);
}

// Runs the recompute of `child` (record `out`) into `dst`, committing nothing. A callable gets
// `dst` staged with the child's bytes; built-in kernels overwrite all of it and touch only their
// arguments, so lanes may run them at once.
void Bus::compute_locked(PageId child, const Derivation& d, const PageRecord& out,
                         std::span<const PageRecord* const> parents, std::span<const std::byte* const> ins,
                         std::span<std::byte> dst, SemiringKernel kernel) const {
  if (d.fn.kind == RecomputeKind::Callable) {
    try {
      d.callable(dst, parents, ins);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::Propagation) throw;
      fail(ErrorCode::Propagation, "recompute of page ", child, " (", describe(d.fn), ") failed: ", e.what());
    } catch (const std::exception& e) {
      fail(ErrorCode::Propagation, "recompute of page ", child, " (", describe(d.fn), ") raised: ", e.what());
    }
  } else if (d.fn.kind == RecomputeKind::Copy) {
    std::memcpy(dst.data(), ins.front(), dst.size());
  } else {
    if (kernel == nullptr) kernel = semiring_kernel(d.fn.semiring, out.dtype);
    kernel(ins, d.weights, dst.data(), out.size / dtype_itemsize(out.dtype));
  }
}

void Bus::preview_recompute(PageId child, std::span<std::byte> out) {
  auto lock = lock_turn();
  check_open();
  preview_locked(child, out);
}

std::vector<const std::byte*> Bus::host_inputs_locked(std::span<const PageRecord* const> parents) {
  std::vector<const std::byte*> ins;
  ins.reserve(parents.size());
  for (const PageRecord* p : parents) ins.push_back(devices_->readable(*p));
  return ins;
}

void Bus::preview_locked(PageId child, std::span<std::byte> out) {
  const PageRecord& r = live_locked(child);
  auto it = derivations_.find(child);
  if (it == derivations_.end()) fail(ErrorCode::Graph, "page ", child, " is not derived (no bus.depend)");
  if (out.size() != r.size) fail(ErrorCode::InvalidArgument, "preview buffer has ", out.size(), " bytes, page has ", r.size);
  if (it->second.missing_callable()) {
    fail(ErrorCode::Propagation, "page ", child, " needs its function ", it->second.fn.name,
         " registered again (bus.depend with the same parents)");
  }
  std::vector<const PageRecord*> parents;
  for (PageId p : it->second.parents) parents.push_back(&table_.get(p));
  std::memcpy(out.data(), devices_->readable(r), r.size);
  const std::vector<const std::byte*> ins = host_inputs_locked(parents);
  WaveOwner owner(wave_owner_);
  compute_locked(child, it->second, r, parents, ins, out);
}

std::uint64_t Bus::propagate() {
  std::uint64_t changed = 0;
  {
    auto lock = lock_turn();
    check_writable();
    const std::uint64_t before = counters_.derived_deltas.load(std::memory_order_relaxed);
    if (stale_.empty() && changed_.empty()) return 0;
    atomically_locked([&] { propagate_locked(); });
    changed = counters_.derived_deltas.load(std::memory_order_relaxed) - before;
  }
  deliver_events();
  return changed;
}

void Bus::propagate_locked() {
  if (stale_.empty() && changed_.empty()) return;
  run_wave_locked(true);
}

void Bus::set_propagation(PropagationMode mode) {
  auto lock = lock_turn();
  check_open();
  // Replay must know the mode each change of a transaction was made in (its Wave ops say).
  if (txn_ && mode != propagation_ && txn_->ops.lsn_count() > 0) {
    txn_->ops.add(WaveOp{propagation_ == PropagationMode::Deferred, false, false, false});
  }
  propagation_ = mode;
}

std::vector<PageId> Bus::stale_pages() {
  auto lock = lock_turn();
  check_open();
  // Everything below a stale page (or a page whose callable is missing) is stale too.
  std::vector<PageId> seeds(stale_.begin(), stale_.end());
  for (const auto& [id, d] : derivations_) {
    if (d.missing_callable()) seeds.push_back(id);
  }
  std::unordered_set<PageId> out(seeds.begin(), seeds.end());
  while (!seeds.empty()) {
    const PageId p = seeds.back();
    seeds.pop_back();
    graph_.for_each_child(p, [&](PageId c, EdgeKind) {
      if (out.insert(c).second) seeds.push_back(c);
    });
  }
  std::vector<PageId> ids(out.begin(), out.end());
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<Edge> Bus::in_edges(PageId id) {
  auto lock = lock_turn();
  check_open();
  return graph_.in_edges(id);
}

std::vector<Edge> Bus::out_edges(PageId id) {
  auto lock = lock_turn();
  check_open();
  return graph_.out_edges(id);
}

std::vector<PageId> Bus::topological_order() {
  auto lock = lock_turn();
  check_open();
  return graph_.topological_order();
}

GraphReport Bus::validate_graph() {
  auto lock = lock_turn();
  check_open();
  return graph_.validate([&](PageId id) { return table_.find(id) != nullptr; });
}

std::optional<Derivation> Bus::derivation(PageId id) {
  auto lock = lock_turn();
  check_open();
  auto it = derivations_.find(id);
  if (it == derivations_.end()) return std::nullopt;
  return it->second;
}

}  // namespace mmsb
