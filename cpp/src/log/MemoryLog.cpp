#include "mmsb/log/MemoryLog.hpp"

#include "mmsb/core/Error.hpp"

namespace mmsb {
namespace {
// Large enough that single-delta commits share blocks.
constexpr std::size_t kBlockBytes = std::size_t{4} << 20;
// A record this large becomes a block of its own, the caller's buffer: copying it would pass over
// its bytes a second time, into block memory nothing has faulted in yet (a 4,900-page wave's
// 590 KB record took 8-12% longer copied than moved, bench_propagation on this VM).
constexpr std::size_t kOwnBlockBytes = std::size_t{64} << 10;
}  // namespace

void MemoryLog::append(std::vector<std::byte>& records, Lsn last_lsn) {
  if (records.empty()) return;
  if (records.size() >= kOwnBlockBytes) {
    records_.add(first_block_ + blocks_.size(), 0, records);
    blocks_.push_back(std::move(records));
    records = {};
    // Spare room would stay in history as long as the record does: given back, at the price of
    // one copy (the caller's next buffer is sized to this record, so it does not recur).
    std::vector<std::byte>& b = blocks_.back();
    if (b.capacity() - b.size() > b.size() / 4) b.shrink_to_fit();
  } else {
    if (blocks_.empty() || sealed_ || blocks_.back().capacity() - blocks_.back().size() < records.size()) {
      std::vector<std::byte> block;
      block.reserve(kBlockBytes);
      blocks_.push_back(std::move(block));
    }
    std::vector<std::byte>& b = blocks_.back();
    records_.add(first_block_ + blocks_.size() - 1, b.size(), records);
    b.insert(b.end(), records.begin(), records.end());
  }
  sealed_ = false;
  last_lsn_ = last_lsn;
}

void MemoryLog::add_checkpoint(Lsn lsn, std::vector<std::byte> image) {
  // A second checkpoint of the same state replaces the first, as its file does in a directory:
  // a retention counts checkpoints of different lsns, so a repeated call costs no history.
  if (!checkpoints_.empty() && checkpoints_.back().lsn == lsn) {
    checkpoints_.back().image = std::move(image);
  } else {
    checkpoints_.push_back({lsn, first_block_ + blocks_.size(), std::move(image)});
  }
  sealed_ = true;
}

const MemoryLog::Checkpoint* MemoryLog::checkpoint_at(Lsn lsn) const noexcept {
  const Checkpoint* found = nullptr;
  for (const Checkpoint& c : checkpoints_) {
    if (c.lsn <= lsn) found = &c;
  }
  return found;
}

std::uint64_t MemoryLog::apply_retention(unsigned keep) {
  if (checkpoints_.empty()) return 0;  // nothing to measure the retention against yet
  const std::uint64_t before = bytes();
  if (checkpoints_.size() > keep) checkpoints_.erase(checkpoints_.begin(), checkpoints_.end() - keep);
  const Checkpoint& oldest = checkpoints_.front();
  // The log before the oldest kept checkpoint goes even while fewer than `keep` exist, as the
  // segments it covers go from a directory. Blocks before it hold only records it covers.
  if (oldest.lsn >= first_lsn_) {
    blocks_.erase(blocks_.begin(), blocks_.begin() + static_cast<std::ptrdiff_t>(oldest.block - first_block_));
    first_block_ = oldest.block;
    first_lsn_ = oldest.lsn + 1;
    retained_from_ = oldest.lsn;
    records_.drop_before(first_lsn_);
  }
  return before - bytes();
}

std::uint64_t MemoryLog::bytes() const noexcept {
  std::uint64_t n = blocks_.capacity() * sizeof(blocks_[0]);
  for (const auto& b : blocks_) n += b.capacity();
  for (const Checkpoint& c : checkpoints_) n += c.image.capacity();
  return n;
}

void MemoryLog::read_records(std::span<const Lsn> lsns, const RecordIndex::Visit& visit) const {
  records_.for_each_record(lsns, [&](const RecordIndex::Location& at, std::span<const Lsn> held) {
    ScannedRecord r;
    check(at.chunk - first_block_, at.offset, at.first_lsn, r, Checksum::Skip);
    visit(r, held, where(at.chunk, at.offset));
  });
}

void MemoryLog::check(std::size_t block, std::uint64_t pos, Lsn expected, ScannedRecord& out,
                      Checksum checksum) const {
  std::string why;
  if (!check_record_at(blocks_[block], pos, expected, out, why, checksum)) {
    fail(ErrorCode::Internal, "the in-memory log is damaged at ", where(block, pos), ": ", why);
  }
}

std::string MemoryLog::where(std::size_t block, std::uint64_t offset) const {
  return "in-memory log block " + std::to_string(first_block_ + block) + " byte " + std::to_string(offset);
}

}  // namespace mmsb
