#pragma once
/// Validation and partitioned parallel application of DeltaBatch rows to a PageTable.
#include "mmsb/core/Types.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/page/PageTable.hpp"
#include "mmsb/parallel/ThreadPool.hpp"

namespace mmsb {

/// Checks the batch's shape and every row against `table` (page live, run inside the page).
/// Throws Error(InvalidDelta / PageNotFound) naming the first bad row; changes nothing. With a
/// pool, rows are checked in parallel chunks; the error is still the first bad row's.
void validate_batch(const DeltaBatchView& batch, PageTable& table, ThreadPool* pool = nullptr);

/// Applies a batch that passed validate_batch. Row i is the delta with lsn first_lsn + i: each row
/// bumps its page's epoch by one and sets its last_lsn. Rows are split into lanes by page, each
/// lane applies its rows in row order, so bytes and epochs equal sequential application for any
/// thread count. The caller serializes writers (the bus commit lock). With `save_old` (payload
/// size), each row first copies the bytes it overwrites to the row's payload position there (a
/// transaction's undo, taken while the line is in cache).
void apply_batch(const DeltaBatchView& batch, PageTable& table, Lsn first_lsn, ThreadPool& pool,
                 std::byte* save_old = nullptr);

/// Replay's apply: as apply_batch, but checks the batch's shape, and each row as it resolves the
/// row's page (one page lookup per row instead of validate_batch's extra pass). Throws the error
/// validate_batch gives for a bad row, leaving the rows before it applied (with lanes, rows of
/// other lanes too, and the row named need not be the first bad one): only for a caller that
/// discards the table when this throws, as recovery and time travel do.
void apply_checked_batch(const DeltaBatchView& batch, PageTable& table, Lsn first_lsn, ThreadPool& pool);

}  // namespace mmsb
