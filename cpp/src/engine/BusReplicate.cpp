// Tick replication: a cuda::Replicator's replicas follow a set of bus pages, one broadcast per
// tick. The rows come from the tick transaction's undo (it names every range the commit wrote,
// the wave's derived deltas included), their bytes from the pages after the commit, so replaying
// them in order leaves each replica equal to its page whatever the overlaps. A page written
// outside a tick is noticed by its last lsn and sent whole.
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "DevicePages.hpp"
#include "Transaction.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Replicator.hpp"
#include "mmsb/engine/Bus.hpp"

namespace mmsb {

struct Bus::Replication {
  Replication(std::shared_ptr<cuda::Replicator> r, const Bus* bus) : replicator(std::move(r)), owner(bus) {
    if (!replicator->attach(owner)) {
      fail(ErrorCode::InvalidArgument, "this replicator already follows another bus's pages; detach it there first "
           "(bus.replicate(None)) or make a replicator for this bus");
    }
  }
  ~Replication() { replicator->detach(owner); }
  Replication(const Replication&) = delete;
  Replication& operator=(const Replication&) = delete;

  std::shared_ptr<cuda::Replicator> replicator;
  const Bus* owner;
  std::vector<PageId> pages;
  std::vector<std::uint32_t> index_of;  // by page id: index in `pages` + 1; 0 (or past the end): not replicated
  std::vector<Lsn> sent_lsn;            // each page's last lsn when it was last broadcast
  std::vector<char> whole;              // changed outside a tick: this tick sends it whole
  std::vector<cuda::ReplicaRow> rows;   // the tick's rows
  std::vector<std::byte> payload;

  std::uint32_t index(PageId id) const noexcept { return id < index_of.size() ? index_of[id] : 0; }
};

bool Bus::replicated_locked(PageId id) const noexcept { return replication_ && replication_->index(id) != 0; }

void Bus::replicate(std::shared_ptr<cuda::Replicator> replicator, std::vector<PageId> pages) {
  auto lock = lock_turn();
  check_writable();
  check_no_transaction("replicate()");
  if (!replicator) {
    replication_.reset();
    return;
  }
  if (replicator->rank() != 0) {
    fail(ErrorCode::InvalidArgument, "bus.replicate needs rank 0 of the replication group (it broadcasts); got rank ",
         replicator->rank(), ": the other ranks call receive() once per tick of the bus");
  }
  const std::vector<std::uint64_t>& sizes = replicator->page_sizes();
  if (pages.size() != sizes.size()) {
    fail(ErrorCode::InvalidArgument, "the replicator holds ", sizes.size(), " pages but ", pages.size(), " were given");
  }
  auto r = std::make_shared<Replication>(std::move(replicator), this);
  for (std::size_t i = 0; i < pages.size(); ++i) {
    const PageRecord& rec = table_.get(pages[i]);
    if (rec.size != sizes[i]) {
      fail(ErrorCode::InvalidArgument, "page ", pages[i], " has ", rec.size, " bytes but replica ", i, " has ", sizes[i]);
    }
    if (r->index(pages[i]) != 0) fail(ErrorCode::InvalidArgument, "page ", pages[i], " is given twice");
    if (r->index_of.size() <= pages[i]) r->index_of.resize(pages[i] + 1, 0);
    r->index_of[pages[i]] = static_cast<std::uint32_t>(i + 1);
  }
  r->pages = std::move(pages);
  r->sent_lsn.assign(r->pages.size(), 0);
  r->whole.assign(r->pages.size(), 1);
  std::swap(replication_, r);  // the broadcast reads the new set; a failure puts the old one back
  try {
    replication_broadcast_locked();
  } catch (...) {
    std::swap(replication_, r);
    throw;
  }
}

void Bus::replication_begin_locked() {
  Replication& r = *replication_;
  r.rows.clear();
  for (std::size_t i = 0; i < r.pages.size(); ++i) {
    if (table_.get(r.pages[i]).last_lsn.load(std::memory_order_relaxed) != r.sent_lsn[i]) r.whole[i] = 1;
  }
}

void Bus::replication_collect_locked() {
  Replication& r = *replication_;
  const auto add = [&](const PageRecord* rec, std::uint64_t offset, std::uint64_t length) {
    const std::uint32_t i = r.index(rec->id);
    if (i != 0 && length != 0 && r.whole[i - 1] == 0) r.rows.push_back({i - 1, offset, length});
  };
  for (const Undo& u : txn_->undo) {
    if (const auto* d = std::get_if<UndoDelta>(&u)) {
      for (std::size_t k = 0; k < d->run_count; ++k) {
        const Run& run = txn_->undo_runs[d->run_begin + k];
        add(d->rec, run.offset, run.length);
      }
    } else if (const auto* h = std::get_if<UndoHeavy>(&u)) {
      if (const auto* b = std::get_if<UndoBatch>(&txn_->heavy[h->index])) {
        for (std::size_t i = 0; i < b->page_ids.size(); ++i) {
          add(&table_.record(b->page_ids[i]), b->offsets[i], b->lengths[i]);
        }
      }
    }
  }
}

void Bus::replication_send_locked(TickReport& rep) {
  if (log_ && log_->group()) sync_log_locked();  // never replicate a tick a failed sync could undo
  try {
    rep.replicated_rows = replication_broadcast_locked();
  } catch (const Error& e) {
    rep.replication_error = e.what();
    replication_.reset();
  }
}

std::uint64_t Bus::replication_broadcast_locked() {
  Replication& r = *replication_;
  for (std::size_t i = 0; i < r.pages.size(); ++i) {
    if (r.whole[i] != 0) r.rows.push_back({i, 0, table_.get(r.pages[i]).size});
  }
  std::uint64_t bytes = 0;
  for (const cuda::ReplicaRow& row : r.rows) bytes += row.length;
  r.payload.resize(bytes);
  std::byte* out = r.payload.data();
  for (const cuda::ReplicaRow& row : r.rows) {
    std::memcpy(out, devices_->readable(table_.get(r.pages[row.page])) + row.offset, row.length);
    out += row.length;
  }
  r.replicator->broadcast(r.rows, r.payload);
  for (std::size_t i = 0; i < r.pages.size(); ++i) {
    r.sent_lsn[i] = table_.get(r.pages[i]).last_lsn.load(std::memory_order_relaxed);
    r.whole[i] = 0;
  }
  const std::uint64_t sent = r.rows.size();
  r.rows.clear();
  return sent;
}

}  // namespace mmsb
