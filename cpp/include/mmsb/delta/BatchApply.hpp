#pragma once
/// Validation and partitioned parallel application of DeltaBatch rows to a PageTable.
#include "mmsb/core/Types.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/page/PageTable.hpp"
#include "mmsb/parallel/ThreadPool.hpp"

namespace mmsb {

/// Checks the batch's shape and every row against `table` (page live, run inside the page).
/// Throws Error(InvalidDelta / PageNotFound) naming the first bad row; changes nothing. With a
/// pool, rows are checked in parallel chunks; the error is still the first bad row's. Returns
/// whether the payload overlaps the memory of a page some row writes (a payload that is a view
/// of a page): apply_batch reads the payload while it writes, so such a payload must be copied
/// first, or later rows would read bytes earlier rows wrote.
bool validate_batch(const DeltaBatchView& batch, PageTable& table, ThreadPool* pool = nullptr);

/// What a row found before it wrote: its page's epoch and last lsn. kNotApplied in last_lsn marks
/// a row that never wrote (a lane or transfer failed before it).
struct RowPrior {
  static constexpr Lsn kNotApplied = ~Lsn{0};
  Epoch epoch;
  Lsn last_lsn;
};

/// Where an apply saves, for a transaction's undo, what each row overwrites, while the row's lines
/// are in cache: `old` (payload-sized: each row's previous bytes at the row's payload position)
/// and `prior` (one per row, in row order; every entry's last_lsn preset to kNotApplied by the
/// caller). Undone newest row first, skipping rows that never wrote, every row puts back exactly
/// what it found, however far the apply got. Both null: nothing is saved.
struct UndoSink {
  std::byte* old = nullptr;
  RowPrior* prior = nullptr;
  explicit operator bool() const noexcept { return prior != nullptr; }
};

/// Applies a batch that passed validate_batch. Row i is the delta with lsn first_lsn + i: each row
/// bumps its page's epoch by one and sets its last_lsn. Rows are split into lanes by page, each
/// lane applies its rows in row order, so bytes and epochs equal sequential application for any
/// thread count. The caller serializes writers (the bus commit lock). With `save`, each row first
/// saves what it overwrites there (see UndoSink). Throws only if the pool cannot run a lane
/// (std::bad_alloc): the rows of the lanes that ran are applied, the others' are not.
void apply_batch(const DeltaBatchView& batch, PageTable& table, Lsn first_lsn, ThreadPool& pool,
                 UndoSink save = {});

/// Replay's apply: as apply_batch, but checks the batch's shape, and each row as it resolves the
/// row's page (one page lookup per row instead of validate_batch's extra pass). Throws the error
/// validate_batch gives for a bad row, leaving the rows before it applied (with lanes, rows of
/// other lanes too, and the row named need not be the first bad one): only for a caller that
/// discards the table when this throws, as recovery and time travel do.
void apply_checked_batch(const DeltaBatchView& batch, PageTable& table, Lsn first_lsn, ThreadPool& pool);

}  // namespace mmsb
