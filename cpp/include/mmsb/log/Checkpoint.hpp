#pragma once
/// Checkpoint files: every live page (id, epoch, last lsn, layout, name, metadata, bytes) as of
/// one lsn. Written to a temporary name, fdatasync'ed, renamed and the directory synced, so a
/// checkpoint file either exists whole or not at all.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

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

struct CheckpointData {
  Lsn lsn = 0;             ///< the state is that after all records with lsn <= this
  PageId next_page_id = 1; ///< ids below this were used (deleted ones are never reused)
  std::vector<PageImage> pages;
  FileBytes bytes;  ///< file contents backing the page data spans (mapped: checkpoints never change)
};

/// Writes the live pages of `table` as the checkpoint at `lsn` into `dir`; returns its path.
/// Throws Error(Durability) (the temporary file is removed; no checkpoint appears).
std::string write_checkpoint(const std::string& dir, Lsn lsn, PageTable& table);
/// Reads and fully verifies a checkpoint; throws Error(LogCorrupt) naming the file and offset.
CheckpointData read_checkpoint(const std::string& path);

}  // namespace mmsb
