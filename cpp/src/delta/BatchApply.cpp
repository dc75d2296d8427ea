#include "mmsb/delta/BatchApply.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "mmsb/core/Error.hpp"

namespace mmsb {
namespace {

// Below this many rows per extra thread, splitting costs more than it saves.
constexpr std::size_t kRowsPerLane = 8192;
// Rows ahead whose target bytes are prefetched: hides DRAM latency on random pages (16 measured
// fastest of 4/8/16/32 for 64-byte rows over 64 MiB of pages; without it apply is ~40% slower).
constexpr std::size_t kPrefetchAhead = 16;

unsigned lanes_for(std::size_t rows, unsigned threads) noexcept {
  return static_cast<unsigned>(std::clamp<std::size_t>(rows / kRowsPerLane, 1, threads));
}

// Lane of a page: a multiplicative hash mapped onto [0, lanes) without a division.
unsigned lane_of(PageId id, unsigned lanes) noexcept {
  const std::uint64_t h = (id * 0x9E3779B97F4A7C15ull) >> 32;
  return static_cast<unsigned>((h * lanes) >> 32);
}

// Rows are usually small and often exactly one cache line: constant-size copies inline into a few
// vector moves instead of a call into memcpy.
inline void copy_run(std::byte* dst, const std::byte* src, std::uint64_t len) noexcept {
  if (len == 64) {
    std::memcpy(dst, src, 64);
  } else if (len >= 8 && len <= 16) {
    std::uint64_t head, tail;  // two overlapping words cover any length in [8, 16]
    std::memcpy(&head, src, 8);
    std::memcpy(&tail, src + len - 8, 8);
    std::memcpy(dst, &head, 8);
    std::memcpy(dst + len - 8, &tail, 8);
  } else if (len != 0) {  // an empty batch payload has no address at all
    std::memcpy(dst, src, len);
  }
}

// Row i is valid when its page is live and its run fits; throws the row's error otherwise.
void check_row(const DeltaBatchView& b, PageTable& table, std::size_t i) {
  const PageRecord* r = table.find(b.page_ids[i]);
  if (r == nullptr) {
    try {
      table.get(b.page_ids[i]);
    } catch (const Error& e) {
      fail(ErrorCode::PageNotFound, "batch row ", i, ": ", e.what());
    }
  }
  if (b.offsets[i] + b.lengths[i] > r->size) {
    fail(ErrorCode::InvalidDelta, "batch row ", i, " writes bytes [", b.offsets[i], ", ",
         b.offsets[i] + b.lengths[i], ") of page ", b.page_ids[i], ", which has ", r->size, " bytes");
  }
}

// First bad row in [begin, end), or end. The records of rows kPrefetchAhead on are fetched ahead:
// a flush stream of 4096-row batches over 16,384 pages ran 6% faster, `none` 8% (medians of 8
// alternated runs, 2026-11-30), validation being a fifth of such a commit.
// `aliased` is set when the payload overlaps the memory of a row's page.
std::size_t first_bad_row(const DeltaBatchView& b, PageTable& table, std::size_t begin, std::size_t end,
                          bool& aliased) {
  // The columns' addresses in locals: find()'s acquire load of each record's liveness would
  // otherwise make the compiler reload them from the view on every row.
  const PageId* ids = b.page_ids.data();
  const std::uint64_t* offsets = b.offsets.data();
  const std::uint64_t* lengths = b.lengths.data();
  const auto lo = reinterpret_cast<std::uintptr_t>(b.payload.data());
  const std::uintptr_t hi = lo + b.payload.size();
  bool overlap = false;
  for (std::size_t i = begin; i < end; ++i) {
    if (i + kPrefetchAhead < end) table.prefetch(ids[i + kPrefetchAhead]);
    const PageRecord* r = table.find(ids[i]);
    if (r == nullptr || offsets[i] + lengths[i] > r->size) {
      aliased = aliased || overlap;
      return i;
    }
    const auto data = reinterpret_cast<std::uintptr_t>(r->data);
    overlap |= data < hi && lo < data + r->size;
  }
  aliased = aliased || overlap;
  return end;
}

struct RowRef {
  std::size_t row;
  std::uint64_t pos;  // offset of the row's bytes in the payload
};

// Applies rows in the order `next` yields them. Two stages hide the latency of random pages: the
// record of the row 2 x kPrefetchAhead ahead (`row_at(k)`: the k-th row to come, or npos) is
// prefetched; at kPrefetchAhead ahead the record, now cached, is read and the row's target bytes
// prefetched; the ring keeps those resolved rows until their copy.
constexpr std::size_t kNoRow = ~std::size_t{0};
// kCheck: each row is checked as it is resolved (replay, see apply_checked_batch); otherwise the
// batch passed validate_batch.
template <bool kCheck, class Next, class RowAt>
void apply_rows(const DeltaBatchView& b, PageTable& table, Lsn first_lsn, UndoSink save, Next next,
                RowAt row_at) {
  struct Pending {
    RowRef ref;
    PageRecord* rec;
  };
  static_assert((kPrefetchAhead & (kPrefetchAhead - 1)) == 0, "ring size must be a power of two");
  Pending ring[kPrefetchAhead];
  std::size_t head = 0, tail = 0;
  for (std::size_t k = kPrefetchAhead; k < 2 * kPrefetchAhead; ++k) {
    if (const std::size_t row = row_at(k); row != kNoRow) table.prefetch<1>(b.page_ids[row]);
  }
  auto refill = [&] {
    RowRef ref;
    if (!next(ref)) return;
    if (const std::size_t row = row_at(tail + 2 * kPrefetchAhead); row != kNoRow) {
      table.prefetch<1>(b.page_ids[row]);  // any id: replay's rows are checked only when resolved
    }
    PageRecord* r = table.find(b.page_ids[ref.row]);
    if constexpr (kCheck) {
      if (r == nullptr || b.offsets[ref.row] + b.lengths[ref.row] > r->size) check_row(b, table, ref.row);
    }
    __builtin_prefetch(r->data + b.offsets[ref.row], 1);
    ring[tail++ % kPrefetchAhead] = Pending{ref, r};
  };
  for (std::size_t k = 0; k < kPrefetchAhead; ++k) refill();
  const std::byte* payload = b.payload.data();
  while (head != tail) {
    const Pending p = ring[head++ % kPrefetchAhead];
    refill();
    std::byte* dst = p.rec->data + b.offsets[p.ref.row];
    const Epoch epoch = p.rec->epoch.load(std::memory_order_relaxed);
    if (save) {
      // What the row overwrites, for undo, while its lines are in cache (old: the payload's layout).
      copy_run(save.old + p.ref.pos, dst, b.lengths[p.ref.row]);
      save.prior[p.ref.row] = RowPrior{epoch, p.rec->last_lsn.load(std::memory_order_relaxed)};
    }
    copy_run(dst, payload + p.ref.pos, b.lengths[p.ref.row]);
    p.rec->epoch.store(epoch + 1, std::memory_order_relaxed);
    p.rec->last_lsn.store(first_lsn + p.ref.row, std::memory_order_relaxed);
  }
}

template <bool kCheck>
void apply_all_rows(const DeltaBatchView& b, PageTable& table, Lsn first_lsn, UndoSink save) {
  std::size_t i = 0;
  std::uint64_t pos = 0;
  apply_rows<kCheck>(
      b, table, first_lsn, save,
      [&](RowRef& out) {
        if (i == b.rows()) return false;
        out = RowRef{i, pos};
        pos += b.lengths[i++];
        return true;
      },
      [&](std::size_t k) { return k < b.rows() ? k : kNoRow; });
}

// One lane of a parallel apply: walks the batch in blocks, first selecting the block's rows of
// this lane without branches (a data-dependent branch here mispredicts on every other row and
// cost more than the copies), then applying them. Scratch is bounded by the block size.
constexpr std::size_t kBlockRows = 1 << 16;
template <bool kCheck>
void apply_lane(const DeltaBatchView& b, PageTable& table, Lsn first_lsn, UndoSink save, unsigned lane,
                unsigned lanes) {
  std::vector<RowRef> mine(kBlockRows + 1);
  std::uint64_t pos = 0;
  for (std::size_t start = 0; start < b.rows(); start += kBlockRows) {
    const std::size_t end = std::min(b.rows(), start + kBlockRows);
    std::size_t count = 0;
    for (std::size_t i = start; i < end; ++i) {
      mine[count] = RowRef{i, pos};
      pos += b.lengths[i];
      count += lane_of(b.page_ids[i], lanes) == lane;
    }
    std::size_t k = 0;
    apply_rows<kCheck>(
        b, table, first_lsn, save,
        [&](RowRef& out) {
          if (k == count) return false;
          out = mine[k++];
          return true;
        },
        [&](std::size_t ahead) { return ahead < count ? mine[ahead].row : kNoRow; });
  }
}

}  // namespace

bool validate_batch(const DeltaBatchView& b, PageTable& table, ThreadPool* pool) {
  b.check_shape();
  const std::size_t n = b.rows();
  const unsigned lanes = pool == nullptr ? 1u : lanes_for(n, pool->threads());
  std::size_t bad = n;
  bool aliased = false;
  if (lanes == 1) {
    bad = first_bad_row(b, table, 0, n, aliased);
  } else {
    std::vector<std::size_t> found(lanes, n);
    std::vector<char> overlaps(lanes, 0);
    const std::size_t chunk = (n + lanes - 1) / lanes;
    pool->run_lanes(lanes, [&](unsigned lane) {
      const std::size_t begin = std::min(n, lane * chunk);
      const std::size_t end = std::min(n, begin + chunk);
      bool mine = false;
      const std::size_t i = first_bad_row(b, table, begin, end, mine);
      found[lane] = i == end ? n : i;
      overlaps[lane] = mine;
    });
    bad = *std::min_element(found.begin(), found.end());
    aliased = std::find(overlaps.begin(), overlaps.end(), 1) != overlaps.end();
  }
  if (bad != n) check_row(b, table, bad);  // throws the error of the first bad row
  return aliased;
}

namespace {
template <bool kCheck>
void apply_in_lanes(const DeltaBatchView& b, PageTable& table, Lsn first_lsn, ThreadPool& pool, UndoSink save) {
  const unsigned lanes = lanes_for(b.rows(), pool.threads());
  if (lanes == 1) {
    apply_all_rows<kCheck>(b, table, first_lsn, save);
    return;
  }
  pool.run_lanes(lanes, [&](unsigned lane) { apply_lane<kCheck>(b, table, first_lsn, save, lane, lanes); });
}
}  // namespace

void apply_batch(const DeltaBatchView& b, PageTable& table, Lsn first_lsn, ThreadPool& pool, UndoSink save) {
  apply_in_lanes<false>(b, table, first_lsn, pool, save);
}

void apply_checked_batch(const DeltaBatchView& b, PageTable& table, Lsn first_lsn, ThreadPool& pool) {
  b.check_shape();
  apply_in_lanes<true>(b, table, first_lsn, pool, {});
}

}  // namespace mmsb
