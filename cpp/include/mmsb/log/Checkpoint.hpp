#pragma once
/// Checkpoint files: every live page (id, epoch, last lsn, layout, name, metadata, bytes) as of
/// one lsn. Written to a temporary name, fdatasync'ed, renamed and the directory synced, so a
/// checkpoint file either exists whole or not at all.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "mmsb/core/Progress.hpp"
#include "mmsb/log/PosixFile.hpp"
#include "mmsb/log/RecordCodec.hpp"
#include "mmsb/page/PageTable.hpp"

namespace mmsb {

/// One page as stored in a checkpoint.
struct PageImage {
  PageCreateOp create;  ///< id and spec (size, dtype, shape, name, location, metadata)
  Epoch epoch = 0;
  Lsn last_lsn = 0;
  std::span<const std::byte> data;  ///< into CheckpointData::bytes when read back
};

/// The dependency graph as stored in a checkpoint: replaying `edges` (non-data edges) and
/// `derivations` (each child's data parents and recompute) through the graph rebuilds it, and
/// `stale` are the pages marked stale (waiting for a wave or notified by a control edge).
struct GraphImage {
  std::vector<EdgeOp> edges;
  struct Derivation {
    DependOp depend;
    std::vector<Epoch> memo;  ///< parents' epochs at the child's last recompute (empty: never)
  };
  std::vector<Derivation> derivations;
  std::vector<PageId> stale;  ///< increasing ids
  /// Memos of device_sync children (whose copy is implied by the edge), by increasing child id.
  std::vector<std::pair<PageId, std::vector<Epoch>>> sync_memos;
  bool stale_known = true;  ///< false: read from a version 2 or 3 checkpoint (neither list)
};

struct CheckpointData {
  Lsn lsn = 0;             ///< the state is that after all records with lsn <= this
  PageId next_page_id = 1; ///< ids below this were used (deleted ones are never reused)
  std::vector<PageImage> pages;
  GraphImage graph;
  FileBytes bytes;  ///< file contents backing the page data spans (mapped: checkpoints never change)
};

/// Where a checkpoint reads a page's bytes: empty for `data` itself (host pages); the bus passes
/// its device pages' refreshed host mirrors.
using PageBytesFn = std::function<const std::byte*(const PageRecord&)>;

/// Encodes the live pages of `table` and the graph as the checkpoint at `lsn`, handing the bytes
/// to `out` in pieces of about 8 MiB (so a big checkpoint is never held twice). Whatever `out`
/// throws propagates.
void encode_checkpoint(Lsn lsn, PageTable& table, const GraphImage& graph, const PageBytesFn& bytes_of,
                       const std::function<void(std::span<const std::byte>)>& out, const ProgressFn& progress = {});
/// Writes the checkpoint at `lsn` into `dir`; returns its path. Throws Error(Durability) (the
/// temporary file is removed; no checkpoint appears).
std::string write_checkpoint(const std::string& dir, Lsn lsn, PageTable& table, const GraphImage& graph,
                             const PageBytesFn& bytes_of, const ProgressFn& progress = {});
/// Fully verifies and decodes checkpoint bytes (a file's, or an in-memory bus's); page data
/// spans point into `bytes`, which the result owns. Throws Error(LogCorrupt) naming `what` and
/// the offset.
CheckpointData decode_checkpoint(FileBytes bytes, const std::string& what);
/// decode_checkpoint of a file, mapped; also Error(LogCorrupt) when the file is named as a
/// checkpoint (ckpt-<lsn>.ckpt) of another lsn than it holds.
CheckpointData read_checkpoint(const std::string& path);

}  // namespace mmsb
