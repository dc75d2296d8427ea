#include "mmsb/delta/Delta.hpp"

#include <algorithm>
#include <cstring>
#include <map>

#include "mmsb/core/Error.hpp"
#include "mmsb/delta/Diff.hpp"

namespace mmsb {
namespace {

// Appends [offset, offset+length) with bytes `src`, merging with the previous run when touching.
void push_run(std::vector<Run>& runs, std::vector<std::byte>& payload, std::uint64_t offset,
              std::uint64_t length, const std::byte* src) {
  if (length == 0) return;
  if (!runs.empty() && runs.back().end() == offset) {
    runs.back().length += length;
  } else {
    runs.push_back(Run{offset, length});
  }
  payload.insert(payload.end(), src, src + length);
}

// General canonicalisation for unsorted or overlapping runs: an ordered map of disjoint pieces,
// each pointing into the input payload; a later run overwrites (and splits) earlier pieces.
// O(n log n) and bounded by the input size, whatever the page size.
struct Piece {
  std::uint64_t end;
  const std::byte* src;
};
void paint(std::map<std::uint64_t, Piece>& pieces, std::uint64_t a, std::uint64_t b, const std::byte* src) {
  auto it = pieces.lower_bound(a);
  if (it != pieces.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end > a) {  // prev straddles a: keep its left part, maybe its right part
      const std::uint64_t pstart = prev->first;
      const Piece p = prev->second;
      prev->second.end = a;
      if (p.end > b) pieces.emplace(b, Piece{p.end, p.src + (b - pstart)});
    }
  }
  it = pieces.lower_bound(a);
  while (it != pieces.end() && it->first < b) {
    if (it->second.end > b) {  // keep the right part of the last overlapped piece
      const Piece p = it->second;
      const std::uint64_t pstart = it->first;
      pieces.erase(it);
      pieces.emplace(b, Piece{p.end, p.src + (b - pstart)});
      break;
    }
    it = pieces.erase(it);
  }
  pieces.emplace(a, Piece{b, src});
}

}  // namespace

Delta Delta::at(PageId page, std::uint64_t offset, std::span<const std::byte> data) {
  Delta d;
  at_into(d, page, offset, data);
  return d;
}

void Delta::at_into(Delta& out, PageId page, std::uint64_t offset, std::span<const std::byte> data) {
  if (offset + data.size() < offset) {
    fail(ErrorCode::InvalidDelta, "run at offset ", offset, " with ", data.size(),
         " bytes overflows a 64-bit offset");
  }
  out.page_ = page;
  out.runs_.clear();
  out.payload_.clear();
  out.reset_commit_fields();
  out.reach_ = offset + data.size();
  push_run(out.runs_, out.payload_, offset, data.size(), data.data());
}

Delta Delta::runs(PageId page, std::span<const std::uint64_t> offsets,
                  std::span<const std::uint64_t> lengths, std::span<const std::byte> payload) {
  if (offsets.size() != lengths.size()) {
    fail(ErrorCode::InvalidDelta, "got ", offsets.size(), " offsets but ", lengths.size(),
         " lengths; each run needs one of each");
  }
  std::uint64_t total = 0;
  std::uint64_t reach = 0;
  bool sorted = true;
  for (std::size_t i = 0; i < offsets.size(); ++i) {
    if (offsets[i] + lengths[i] < offsets[i]) {
      fail(ErrorCode::InvalidDelta, "run ", i, " (offset ", offsets[i], ", length ", lengths[i],
           ") overflows a 64-bit offset");
    }
    if (total + lengths[i] < total) fail(ErrorCode::InvalidDelta, "run lengths overflow");
    total += lengths[i];
    reach = std::max(reach, offsets[i] + lengths[i]);
    if (i > 0 && offsets[i] < offsets[i - 1] + lengths[i - 1]) sorted = false;
  }
  if (total != payload.size()) {
    fail(ErrorCode::InvalidDelta, "run lengths sum to ", total, " bytes but the payload has ",
         payload.size(), " bytes");
  }
  std::vector<Run> out_runs;
  std::vector<std::byte> out_payload;
  out_payload.reserve(total);
  if (sorted) {
    const std::byte* src = payload.data();
    for (std::size_t i = 0; i < offsets.size(); ++i) {
      push_run(out_runs, out_payload, offsets[i], lengths[i], src);
      src += lengths[i];
    }
  } else {
    std::map<std::uint64_t, Piece> pieces;
    const std::byte* src = payload.data();
    for (std::size_t i = 0; i < offsets.size(); ++i) {
      if (lengths[i] != 0) paint(pieces, offsets[i], offsets[i] + lengths[i], src);
      src += lengths[i];
    }
    for (const auto& [start, piece] : pieces) {
      push_run(out_runs, out_payload, start, piece.end - start, piece.src);
    }
  }
  Delta d(page, std::move(out_runs), std::move(out_payload));
  d.reach_ = reach;
  return d;
}

Delta Delta::masked(PageId page, std::span<const std::uint8_t> mask, std::span<const std::byte> data) {
  std::uint64_t set = 0;
  for (std::uint8_t m : mask) set += (m != 0);
  const bool dense = data.size() == mask.size();
  if (!dense && data.size() != set) {
    fail(ErrorCode::InvalidDelta, "masked delta payload has ", data.size(),
         " bytes; a dense payload needs ", mask.size(), " (the mask length) and a sparse one ", set,
         " (the marked bytes)");
  }
  std::vector<Run> runs;
  std::vector<std::byte> payload;
  payload.reserve(set);
  std::uint64_t sparse_pos = 0;
  std::uint64_t i = 0;
  while (i < mask.size()) {
    if (mask[i] == 0) {
      ++i;
      continue;
    }
    std::uint64_t j = i;
    while (j < mask.size() && mask[j] != 0) ++j;
    const std::byte* src = dense ? data.data() + i : data.data() + sparse_pos;
    push_run(runs, payload, i, j - i, src);
    sparse_pos += j - i;
    i = j;
  }
  return Delta(page, std::move(runs), std::move(payload));
}

Delta Delta::masked_packed(PageId page, std::span<const std::uint8_t> bits, std::uint64_t extent,
                           std::span<const std::byte> data) {
  if (extent > bits.size() * 8) {
    fail(ErrorCode::InvalidDelta, "packed mask of ", bits.size(), " bytes covers ", bits.size() * 8,
         " positions, fewer than the extent ", extent);
  }
  std::vector<std::uint8_t> mask(extent);
  for (std::uint64_t i = 0; i < bits.size() * 8; ++i) {
    const bool on = (bits[i / 8] >> (i % 8)) & 1u;
    if (!on) continue;
    if (i >= extent) {
      fail(ErrorCode::InvalidDelta, "packed mask marks position ", i, " at or past the extent ", extent);
    }
    mask[i] = 1;
  }
  return masked(page, mask, data);
}

Delta Delta::diff(PageId page, std::span<const std::byte> old, std::span<const std::byte> now) {
  Delta d;
  diff_into(d, page, old, now);
  return d;
}

void Delta::diff_into(Delta& out, PageId page, std::span<const std::byte> old, std::span<const std::byte> now) {
  if (old.size() != now.size()) {
    fail(ErrorCode::InvalidDelta, "cannot diff buffers of ", old.size(), " and ", now.size(), " bytes");
  }
  out.page_ = page;
  out.runs_.clear();
  out.reach_ = 0;
  diff_runs(old.data(), now.data(), now.size(), out.runs_);
  std::uint64_t total = 0;
  for (const Run& r : out.runs_) total += r.length;
  out.payload_.resize(total);
  std::byte* dst = out.payload_.data();
  for (const Run& r : out.runs_) {
    std::memcpy(dst, now.data() + r.offset, r.length);
    dst += r.length;
  }
  out.reset_commit_fields();
}

std::span<std::byte> Delta::assign_runs(Delta& out, PageId page, std::span<const Run> runs) {
  // The bounds check of a commit reads the last run's end as the delta's extent: runs out of
  // order would pass it and write past the page.
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    if (r.offset + r.length < r.offset) {
      fail(ErrorCode::InvalidDelta, "run ", i, " (offset ", r.offset, ", length ", r.length, ") overflows a 64-bit offset");
    }
    if (i > 0 && r.offset < runs[i - 1].end()) {
      fail(ErrorCode::InvalidDelta, "runs must be sorted and disjoint: run ", i, " starts at ", r.offset,
           ", before run ", i - 1, " ends at ", runs[i - 1].end());
    }
    total += r.length;  // disjoint 64-bit ranges: their lengths sum below 2^64
  }
  out.page_ = page;
  out.reach_ = 0;
  out.runs_.assign(runs.begin(), runs.end());
  out.payload_.resize(total);
  out.reset_commit_fields();
  return out.payload_;
}

void Delta::reset_commit_fields() noexcept {
  expect_epoch.reset();
  source = Source::User;
  timestamp_ns = 0;
  lsn = 0;
  epoch = 0;
}

void Delta::apply_to(std::byte* page) const noexcept {
  const std::byte* src = payload_.data();
  for (const Run& r : runs_) {
    std::memcpy(page + r.offset, src, r.length);
    src += r.length;
  }
}

Delta merge(const Delta& first, const Delta& second) {
  if (first.page_id() != second.page_id()) {
    fail(ErrorCode::InvalidDelta, "cannot merge deltas of pages ", first.page_id(), " and ",
         second.page_id(), "; merge composes changes to one page");
  }
  std::vector<std::uint64_t> offsets;
  std::vector<std::uint64_t> lengths;
  for (const Delta* d : {&first, &second}) {
    for (const Run& r : d->run_list()) {
      offsets.push_back(r.offset);
      lengths.push_back(r.length);
    }
  }
  std::vector<std::byte> payload(first.payload().begin(), first.payload().end());
  payload.insert(payload.end(), second.payload().begin(), second.payload().end());
  Delta out = Delta::runs(first.page_id(), offsets, lengths, payload);
  out.expect_epoch = first.expect_epoch;
  out.source = first.source;
  out.reach_ = std::max(first.reach(), second.reach());
  return out;
}

}  // namespace mmsb
