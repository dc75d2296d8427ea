// Bus: propagation waves and recomputes. A wave visits the dependents of the pages changed by
// one commit in canonical topological order, each at most once; a recompute is skipped when its
// parents' epochs equal its memo, and a recompute that changes nothing stops the wave on that
// branch (its children's memos still match). The graph the waves walk is edited in BusGraph.cpp.
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
}  // namespace

// Runs the wave for changed_ (and forced_, and stale derived pages) in canonical order. Caller:
// atomically_locked, so a throwing recompute rolls back everything the commit did. In replay no
// recompute runs: a page changed when the log holds its Derived op (replay_.derived), and every
// other visit ends as a cutoff, so the memos, stale marks and notified children come out as the
// commit left them.
void Bus::run_wave_locked(bool propagating) {
  const std::size_t stale_before = stale_.size();
  wave_skipped_.clear();
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
  const bool sweep = propagating || (replay_.active && replay_.unscoped_waves);  // every stale page
  if (!changed_.empty() || !forced_.empty() || (sweep && !stale_.empty()) || !replay_.derived.empty()) {
    visit_wave_locked(sweep);
  }
  if (replay_.active) return;
  // The Wave op: takes no lsn in a record with other changes; a propagate() that only cleared
  // stale marks takes one, so that the marks are a function of the lsn; a wave that changed
  // nothing else is not logged here (a callable re-attached after a reopen: depend logs a cutoff
  // that settled its memo itself).
  const bool alone = txn_->ops.lsn_count() == 0;
  if (alone && !(propagating && stale_.size() != stale_before)) return;
  std::sort(wave_skipped_.begin(), wave_skipped_.end());
  txn_->ops.add(WaveOp{commit_mode_locked() == PropagationMode::Deferred, true, propagating, alone, wave_skipped_});
  if (alone) lsn_.store(lsn() + 1, std::memory_order_release);
}

void Bus::visit_wave_locked(bool sweep) {
  ScopedOwner owner(wave_owner_);
  Wave wave(graph_);
  // A control child is marked stale; a derived one is also recomputed in this wave, after its
  // control parent (api.md). Format 5 waves only marked it (replay repeats what they did).
  const bool scoped = !(replay_.active && replay_.unscoped_waves);
  const std::function<void(PageId)> notify = [&](PageId child) {
    mark_stale_locked(child);
    if (scoped && derivations_.count(child) != 0) wave.push(child);
  };
  for (PageId p : changed_) wave.push_children(p, notify);
  clear_changed_locked();
  for (PageId p : forced_) wave.push(p);
  // A commit's wave visits what its changes reach; stale pages elsewhere wait for propagate().
  if (sweep) {
    for (PageId p : stale_) {
      if (derivations_.count(p) != 0) wave.push(p);
    }
  }
  for (PageId p : replay_.derived) wave.push(p);
  if (!replay_.active) {
    bump(counters_.waves, 1);
    wave_timestamp_ns_ = now_ns();  // the wave's deltas share their commit's time
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
    } else if (replay_.active && (replay_.skipped.empty() || replay_.skipped.count(id) == 0)) {
      it.computed = true;  // its delta, if the commit made one, was replayed already
      it.changed = logged;
    } else if (replay_.active || it.d->missing_callable()) {
      // Stays stale, its memo unchanged, until its function is registered again; the Wave op
      // names it, so that replay (which has no callables) leaves it so too.
      mark_stale_locked(id);
      if (replay_.active) {
        ++replay_.skipped_reached;
      } else {
        wave_skipped_.push_back(id);
      }
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
  note_derived_locked(lsn, kept_parents_locked(d));
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
  ScopedOwner owner(wave_owner_);
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

}  // namespace mmsb
