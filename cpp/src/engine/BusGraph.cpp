// Bus: the dependency graph and derivations: edges and depend() (logged, cycle-checked), stale
// marks, the graph's part of checkpoints and replay, and graph queries. The waves that walk it
// are in BusWave.cpp.
#include <algorithm>

#include "DevicePages.hpp"
#include "Transaction.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/core/Utf8.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/graph/Semiring.hpp"

namespace mmsb {

// Called for each change to a page with children (has_dependents); the wave (or the stale
// marking) follows. A batch touches a page many times: changed_ holds it once (changed_bits_).
void Bus::note_changed_locked(PageId page) {
  if (commit_mode_locked() == PropagationMode::Eager) {
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
  if (commit_mode_locked() == PropagationMode::Eager) {
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
  // Logged as they are (the semiring of any kind), and a reader refuses unknown codes.
  if (!known_recompute_kind(static_cast<std::uint8_t>(fn.kind)) || !known_semiring(static_cast<std::uint8_t>(fn.semiring))) {
    fail(ErrorCode::InvalidArgument, "recompute kind ", static_cast<unsigned>(fn.kind), " / semiring ",
         static_cast<unsigned>(fn.semiring), " is not a known recompute");
  }
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
    require_utf8(fn.name, "the recompute's name");
    auto it = derivations_.find(child);
    const bool same = it != derivations_.end() && !it->second.implicit && it->second.fn == fn &&
                      std::equal(parents.begin(), parents.end(), it->second.parents.begin(), it->second.parents.end()) &&
                      std::equal(weights.begin(), weights.end(), it->second.weights.begin(), it->second.weights.end());
    if (same && it->second.missing_callable()) {
      // Re-registration after a reopen: the log already says this; only the function was missing.
      Derivation& d = it->second;
      d.callable = std::move(callable);
      const bool was_stale = stale_.count(child) != 0;
      stale_.insert(child);
      if (propagation_ == PropagationMode::Eager) {
        try {
          atomically_locked([&] {
            const std::vector<Epoch> memo = d.memo;
            const std::uint64_t lsns = txn_->ops.lsn_count();
            forced_.insert(child);
            run_wave_locked();
            if (txn_->ops.lsn_count() == lsns && (was_stale || memo != d.memo)) {
              // A recompute that changed no byte (a cutoff) still settled the page's memo and
              // stale mark, which replay knows only from the log: logged as the definition it
              // re-attached, whose replay repeats that wave.
              txn_->ops.add(DependOp{child, fn, {parents.begin(), parents.end()}, {weights.begin(), weights.end()}});
              txn_->ops.add(WaveOp{false, true, false, false, {}});
              lsn_.store(lsn() + 1, std::memory_order_release);
            }
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
    live_locked(child);
    if (!known_edge_kind(static_cast<std::uint8_t>(kind))) {
      fail(ErrorCode::InvalidArgument, "edge kind ", static_cast<unsigned>(kind), " is none of data, control, device_sync");
    }
    if (kind == EdgeKind::Data) {
      fail(ErrorCode::InvalidArgument, "data edges are declared with bus.depend(child, on=[...], fn=...), which ",
           "also says how the child is recomputed");
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
  const bool has = graph_.has_children(page) && table_.find(page) != nullptr;
  if (page >= kDenseDependentIds) {
    if (has) {
      far_dependents_.insert(page);
    } else {
      far_dependents_.erase(page);
    }
    return;
  }
  const std::size_t word = page / 64;
  const std::uint64_t bit = std::uint64_t{1} << (page % 64);
  if (has) {
    if (word >= dependents_bits_.size()) {
      dependents_bits_.resize(std::min<std::size_t>(kDenseDependentIds / 64, std::max<std::size_t>(word + 1, 2 * dependents_bits_.size())));
    }
    dependents_bits_[word] |= bit;
  } else if (word < dependents_bits_.size()) {
    dependents_bits_[word] &= ~bit;
  }
}

void Bus::drop_from_graph_locked(PageId id) {
  unmark_stale_locked(id);
  if (!graph_.contains(id)) return;
  const std::vector<PageId> parents = graph_.parents(id);
  graph_.remove_node(id);
  derivations_.erase(id);
  for (PageId p : parents) refresh_dependents_locked(p);
}

void Bus::unmark_stale_locked(PageId id) {
  if (stale_.empty()) return;
  if (txn_) reserve_one(txn_->undo);
  if (stale_.erase(id) != 0 && txn_) txn_->undo.emplace_back(UndoStale{id, true});
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
    const PageRecord& p = table_.get(e->parent);
    const PageRecord& c = table_.get(e->child);
    // Checked here, not only by add_edge: a log (or checkpoint) may be crafted, and the copy
    // reads as many bytes from the parent as the child has.
    if (e->add && e->kind == EdgeKind::DeviceSync) {
      if (p.size != c.size) {
        fail(ErrorCode::InvalidArgument, "a device_sync child is a copy of its parent: page ", e->child, " has ",
             c.size, " bytes, page ", e->parent, " has ", p.size);
      }
      if (derivations_.count(e->child) != 0) {
        fail(ErrorCode::Graph, "page ", e->child, " is already derived; a device_sync child has exactly one parent");
      }
    }
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
    // remove_edge logs the kind the graph holds: another kind is a crafted record.
    const std::optional<EdgeKind> held = graph_.edge_kind(e->parent, e->child);
    if (!held) fail(ErrorCode::Graph, "no edge ", e->parent, " -> ", e->child);
    if (*held != e->kind) {
      fail(ErrorCode::Graph, "the edge ", e->parent, " -> ", e->child, " is a ", edge_kind_name(*held),
           " edge, not ", edge_kind_name(e->kind));
    }
    if (txn_) reserve_one(txn_->undo);
    graph_.remove_edge(e->parent, e->child);
    // A page without parents has none to disagree with: it is stale no longer (and a mark kept
    // on a page outside the graph would be one no checkpoint can hold).
    if (graph_.parents(e->child).empty()) unmark_stale_locked(e->child);
    auto it = derivations_.find(e->child);
    if (it == derivations_.end()) return 0;
    auto& ps = it->second.parents;
    const auto pos = std::find(ps.begin(), ps.end(), e->parent);
    if (pos == ps.end()) return 0;
    if (!it->second.weights.empty()) it->second.weights.erase(it->second.weights.begin() + (pos - ps.begin()));
    ps.erase(pos);
    it->second.kept_parents = nullptr;
    it->second.memo.clear();
    if (ps.empty()) {
      derivations_.erase(it);
      return 0;
    }
    // Still derived from its remaining data parents: it no longer matches its definition.
    return e->kind == EdgeKind::Data ? e->child : 0;
  }
  if (const auto* d = std::get_if<DependOp>(&op)) {
    // What bus.depend checked before logging it; a log (or checkpoint) may be crafted, and a
    // built-in recompute reads its parents as laid out like its child.
    check_derivation_locked(d->child, d->parents, d->fn, d->weights);
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
    // Earlier writers kept the marks of pages that had lost their parents: such a mark
    // means nothing (no wave reaches the page), so it is dropped, and their checkpoints open.
    if (!graph_.parents(id).empty()) stale_.insert(id);
  }
  if (!g.stale_known) replay_.legacy_seen = true;
}

void Bus::set_propagation(PropagationMode mode) {
  auto lock = lock_turn();
  check_open();
  check_not_read_only();  // a view of the past shows the mode its lsn was in; it runs no wave
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
