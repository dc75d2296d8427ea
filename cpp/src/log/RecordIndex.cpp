#include "mmsb/log/RecordIndex.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include "mmsb/core/Error.hpp"
#include "mmsb/log/LogFormat.hpp"

namespace mmsb {

void RecordIndex::add(std::uint64_t chunk, std::uint64_t offset, std::span<const std::byte> framed) {
  std::uint64_t pos = 0;
  while (pos < framed.size()) {
    // The framing (docs/format.md): u32 body length at 0, u32 lsn count at 12, u64 first lsn at
    // 16. The caller wrote or checksummed these bytes; only their bounds are checked here.
    if (framed.size() - pos < logfmt::kRecordHeaderBytes) {
      fail(ErrorCode::Internal, "record index: ", framed.size() - pos, " bytes at ", offset + pos,
           " of chunk ", chunk, " are not a record header");
    }
    std::uint32_t body = 0, count = 0;
    Lsn first = 0;
    std::memcpy(&body, framed.data() + pos, 4);
    std::memcpy(&count, framed.data() + pos + 12, 4);
    std::memcpy(&first, framed.data() + pos + 16, 8);
    const std::uint64_t at = offset + pos;
    if (at % logfmt::kAlign != 0 || at / logfmt::kAlign > std::numeric_limits<std::uint32_t>::max()) {
      fail(ErrorCode::Internal, "record index: a record at byte ", at, " of chunk ", chunk,
           " is not 8-aligned below 32 GiB");
    }
    if (count != 0) {
      if (!lsns_.empty() && lsns_.back() >= first) {  // superseded: lsns reused after a failed append
        const auto cut = std::lower_bound(lsns_.begin(), lsns_.end(), first);
        offsets_.resize(static_cast<std::size_t>(cut - lsns_.begin()));
        lsns_.erase(cut, lsns_.end());
        while (!chunks_.empty() && chunks_.back().first_lsn >= first) chunks_.pop_back();
      }
      if (chunks_.empty() || chunks_.back().name != chunk) chunks_.push_back({first, chunk});
      lsns_.push_back(first);
      offsets_.push_back(static_cast<std::uint32_t>(at / logfmt::kAlign));
    }
    pos += logfmt::padded(logfmt::kRecordHeaderBytes + body);
  }
}

void RecordIndex::for_each_record(std::span<const Lsn> lsns,
                                  const std::function<void(const Location&, std::span<const Lsn>)>& fn) const {
  std::size_t k = 0;
  while (k < lsns.size()) {
    const Lsn lsn = lsns[k];
    const auto next = std::upper_bound(lsns_.begin(), lsns_.end(), lsn);
    if (next == lsns_.begin()) {
      fail(ErrorCode::HistoryUnavailable, "lsn ", lsn, " is older than the log this bus still holds",
           lsns_.empty() ? std::string() : " (it starts at lsn " + std::to_string(lsns_.front()) + ")");
    }
    const auto i = static_cast<std::size_t>(next - lsns_.begin()) - 1;
    const Lsn end = next == lsns_.end() ? std::numeric_limits<Lsn>::max() : *next;
    std::size_t held = k + 1;
    while (held < lsns.size() && lsns[held] < end) ++held;
    // The chunk is the last one begun at or before the record: later records never start earlier.
    const auto c = std::upper_bound(chunks_.begin(), chunks_.end(), lsns_[i],
                                    [](Lsn l, const Chunk& ch) { return l < ch.first_lsn; });
    fn({lsns_[i], std::prev(c)->name, std::uint64_t{offsets_[i]} * logfmt::kAlign}, lsns.subspan(k, held - k));
    k = held;
  }
}

std::vector<Lsn> RecordIndex::record_starts(Lsn first, Lsn last) const {
  std::vector<Lsn> out;
  if (first > last) return out;
  out.push_back(first);
  for (auto it = std::upper_bound(lsns_.begin(), lsns_.end(), first); it != lsns_.end() && *it <= last; ++it) {
    out.push_back(*it);
  }
  return out;
}

void RecordIndex::drop_before(Lsn lsn) {
  const auto cut = std::lower_bound(lsns_.begin(), lsns_.end(), lsn);
  if (cut == lsns_.begin()) return;
  offsets_.erase(offsets_.begin(), offsets_.begin() + (cut - lsns_.begin()));
  lsns_.erase(lsns_.begin(), cut);
  if (lsns_.empty()) {
    chunks_.clear();
  } else {  // chunks from the one holding the new first record on
    const auto keep = std::upper_bound(chunks_.begin(), chunks_.end(), lsns_.front(),
                                       [](Lsn l, const Chunk& ch) { return l < ch.first_lsn; });
    chunks_.erase(chunks_.begin(), std::prev(keep));
  }
  // Retention is rare and may drop most of the index: give the memory back.
  lsns_.shrink_to_fit();
  offsets_.shrink_to_fit();
  chunks_.shrink_to_fit();
}

std::uint64_t RecordIndex::bytes() const noexcept {
  return lsns_.capacity() * sizeof(Lsn) + offsets_.capacity() * sizeof(std::uint32_t) +
         chunks_.capacity() * sizeof(Chunk);
}

}  // namespace mmsb
