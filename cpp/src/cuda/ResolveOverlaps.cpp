// The overlap rewrite every device write goes through: rows of one batch reach the run-copy
// kernel disjoint, later writes winning, with the bytes they leave counted.
#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <numeric>
#include <queue>
#include <vector>

#include "mmsb/cuda/DeviceBackend.hpp"

namespace mmsb::cuda {

namespace {

// Sorts v by key(x), an offset below 2^bits, keeping equal keys in their order: a stable LSD radix
// sort (11 bits a pass: three passes for a 1 GiB span) through `tmp`, or std::stable_sort for
// few elements. A batch's million rows arrive in any order, and comparison sorts of them cost
// more than all the rest of the batch's host work.
template <class T, class Key>
void radix_sort(std::vector<T>& v, std::vector<T>& tmp, unsigned bits, Key key) {
  constexpr std::size_t kRadixFrom = 1024;
  constexpr unsigned kDigitBits = 11;
  constexpr std::uint64_t kMask = (std::uint64_t{1} << kDigitBits) - 1;
  if (v.size() < kRadixFrom) {
    std::stable_sort(v.begin(), v.end(), [&](const T& a, const T& b) { return key(a) < key(b); });
    return;
  }
  tmp.resize(v.size());
  for (unsigned shift = 0; shift < bits; shift += kDigitBits) {
    std::array<std::size_t, kMask + 1> next{};
    for (const T& x : v) ++next[(key(x) >> shift) & kMask];
    std::exclusive_scan(next.begin(), next.end(), next.begin(), std::size_t{0});
    for (const T& x : v) tmp[next[(key(x) >> shift) & kMask]++] = x;
    v.swap(tmp);
  }
}

// What one pass over the runs tells: their lowest address and the span up to the end of the
// highest-reaching one, their bytes, whether each starts at or past the end of the one before
// (sorted and disjoint), and whether any is empty.
struct RunScan {
  std::byte* base = nullptr;
  std::uint64_t span = 0;
  std::uint64_t bytes = 0;
  bool sorted = true;
  bool any_empty = false;
};

RunScan scan_runs(const std::vector<DeviceRun>& runs) {
  RunScan s;
  if (runs.empty()) return s;
  s.base = runs.front().device;
  std::byte* end = s.base;
  const std::byte* prev_end = nullptr;
  for (const DeviceRun& r : runs) {
    s.base = std::min(s.base, r.device);
    end = std::max(end, r.device + r.length);
    s.bytes += r.length;
    s.any_empty |= r.length == 0;
    s.sorted &= prev_end == nullptr || prev_end <= r.device;
    prev_end = r.device + r.length;
  }
  s.span = static_cast<std::uint64_t>(end - s.base);
  return s;
}

// Whether no two runs (none empty) touch the same 64-byte granule of device memory, so that none
// overlap: a bit per granule, in bitmaps of 256 KiB regions made on first touch and found through
// a hash table of region numbers (device pages come in slabs that may lie far apart, so one
// bitmap over the whole span would not do). False when two runs share a granule (rows of a few
// bytes each in one cache line: the sort then tells exactly), or when the regions touched would
// take more than about 8 bytes of bitmap a run. One pass over the runs in their order, where
// sorting a million of them takes several scattered ones.
constexpr std::uint64_t kGranuleBytes = 64;
constexpr unsigned kRegionShift = 18;
constexpr std::uint64_t kRegionWords = (std::uint64_t{1} << kRegionShift) / kGranuleBytes / 64;
constexpr std::uint64_t kBitmapWordsFloor = 1024;

bool granules_disjoint(const std::vector<DeviceRun>& runs, OverlapScratch& scratch) {
  const std::size_t max_regions = (kBitmapWordsFloor + runs.size()) / kRegionWords;
  const auto slots_bits = static_cast<unsigned>(std::bit_width(2 * max_regions));
  const std::size_t slots = std::size_t{1} << slots_bits;
  constexpr std::uint64_t kFree = ~std::uint64_t{0};  // no region number is this large
  scratch.regions.assign(slots, {kFree, 0});
  scratch.granules.clear();
  std::size_t regions = 0;
  // The bitmap of the region holding address `at`, made if new; nullptr past the budget.
  auto bitmap_of = [&](std::uint64_t at) -> std::uint64_t* {
    const std::uint64_t region = at >> kRegionShift;
    std::size_t i = static_cast<std::size_t>((region * 0x9E3779B97F4A7C15ull) >> (64 - slots_bits));
    for (;; i = (i + 1) & (slots - 1)) {
      auto& [key, first_word] = scratch.regions[i];
      if (key == region) return scratch.granules.data() + first_word;
      if (key != kFree) continue;
      if (regions == max_regions) return nullptr;
      key = region;
      first_word = scratch.granules.size();
      ++regions;
      scratch.granules.resize(scratch.granules.size() + kRegionWords, 0);
      return scratch.granules.data() + first_word;
    }
  };
  for (const DeviceRun& r : runs) {
    const auto start = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(r.device));
    const std::uint64_t end = start + r.length;
    // Region by region (a run of a large page may cross several).
    for (std::uint64_t at = start; at < end;) {
      const std::uint64_t region_end = ((at >> kRegionShift) + 1) << kRegionShift;
      const std::uint64_t stop = std::min(end, region_end);
      std::uint64_t* bits = bitmap_of(at);
      if (bits == nullptr) return false;
      const std::uint64_t first = (at & ((std::uint64_t{1} << kRegionShift) - 1)) / kGranuleBytes;
      const std::uint64_t last = ((stop - 1) & ((std::uint64_t{1} << kRegionShift) - 1)) / kGranuleBytes;
      for (std::uint64_t w = first / 64; w <= last / 64; ++w) {
        const std::uint64_t from = w == first / 64 ? first % 64 : 0;
        const std::uint64_t to = w == last / 64 ? last % 64 : 63;
        const std::uint64_t mask = (~std::uint64_t{0} >> (63 - to)) & (~std::uint64_t{0} << from);
        if ((bits[w] & mask) != 0) return false;
        bits[w] |= mask;
      }
      at = stop;
    }
  }
  return true;
}

// Runs sorted by address (stably: equal addresses in issue order) whose only overlaps are
// repeats of the same address and length: compacts each repeat group to its last run and sets
// `bytes` to what is left, returning true; false (the runs then compacted part-way) when any
// other overlap is found.
bool keep_last_of_repeats(std::vector<DeviceRun>& sorted, std::uint64_t& bytes) {
  std::size_t kept = 0;
  bytes = 0;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    const DeviceRun& r = sorted[i];
    if (kept > 0) {
      DeviceRun& last = sorted[kept - 1];
      if (last.device == r.device && last.length == r.length) {
        last = r;  // a repeat: the later run replaces it
        continue;
      }
      if (last.device + last.length > r.device) return false;
    }
    sorted[kept++] = r;
    bytes += r.length;
  }
  sorted.resize(kept);
  return true;
}

}  // namespace

std::uint64_t resolve_overlaps(std::vector<DeviceRun>& runs) {
  OverlapScratch scratch;
  return resolve_overlaps(runs, scratch);
}

std::uint64_t resolve_overlaps(std::vector<DeviceRun>& runs, OverlapScratch& scratch) {
  RunScan scan = scan_runs(runs);
  if (scan.any_empty) {
    std::erase_if(runs, [](const DeviceRun& r) { return r.length == 0; });
    scan = scan_runs(runs);
  }
  if (scan.sorted || granules_disjoint(runs, scratch)) return scan.bytes;
  auto disjoint = [](const std::vector<DeviceRun>& rs) {
    for (std::size_t i = 1; i < rs.size(); ++i) {
      if (rs[i - 1].device + rs[i - 1].length > rs[i].device) return false;
    }
    return true;
  };
  // Addresses as offsets from the lowest one, below 2^bits.
  std::byte* const base = scan.base;
  const auto bits = static_cast<unsigned>(std::bit_width(scan.span));
  auto start_of = [base](const DeviceRun& r) { return static_cast<std::uint64_t>(r.device - base); };
  // Rows of a batch come in any order and rarely overlap: sorted by address and disjoint, their
  // order does not matter and the sort is all it costs.
  scratch.sorted.assign(runs.begin(), runs.end());
  radix_sort(scratch.sorted, scratch.spare, bits, start_of);
  if (disjoint(scratch.sorted)) {
    runs.swap(scratch.sorted);  // the old buffer becomes scratch: capacities survive the call
    return scan.bytes;
  }
  // Overlaps only between runs of the same address and length (a slot written again in the batch,
  // the usual overlap): the sort kept each group in issue order, so its last run wins; one pass.
  if (std::uint64_t bytes = 0; keep_last_of_repeats(scratch.sorted, bytes)) {
    runs.swap(scratch.sorted);
    return bytes;
  }
  // A sweep over every run boundary in address order. Between two consecutive boundaries the
  // bytes belong to the newest run covering them: the top of a max-heap of (run index, end), where
  // runs that ended are dropped only once they reach the top.
  struct Start {
    std::uint64_t at;
    std::uint64_t end;
    std::uint32_t run;
  };
  std::vector<Start> by_start(runs.size()), start_tmp;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    by_start[i] = {start_of(runs[i]), start_of(runs[i]) + runs[i].length, static_cast<std::uint32_t>(i)};
  }
  radix_sort(by_start, start_tmp, bits, [](const Start& s) { return s.at; });
  std::vector<std::uint64_t> ends(runs.size()), end_tmp;
  for (std::size_t i = 0; i < runs.size(); ++i) ends[i] = start_of(runs[i]) + runs[i].length;
  radix_sort(ends, end_tmp, bits, [](std::uint64_t e) { return e; });
  std::vector<std::uint64_t> bounds;
  bounds.reserve(2 * runs.size());
  std::size_t si = 0, ei = 0;
  while (si < by_start.size() || ei < ends.size()) {  // merge starts and ends, each bound once
    const bool from_start = ei == ends.size() || (si < by_start.size() && by_start[si].at <= ends[ei]);
    const std::uint64_t x = from_start ? by_start[si++].at : ends[ei++];
    if (bounds.empty() || bounds.back() != x) bounds.push_back(x);
  }
  std::priority_queue<std::pair<std::uint32_t, std::uint64_t>> active;
  std::vector<DeviceRun> out;
  out.reserve(runs.size());
  std::uint32_t last_owner = 0;
  std::size_t next = 0;
  for (std::size_t k = 0; k + 1 < bounds.size(); ++k) {
    const std::uint64_t x = bounds[k];
    for (; next < by_start.size() && by_start[next].at == x; ++next) active.emplace(by_start[next].run, by_start[next].end);
    while (!active.empty() && active.top().second <= x) active.pop();
    if (active.empty()) continue;
    const std::uint32_t owner = active.top().first;
    const std::uint64_t length = bounds[k + 1] - x;
    if (!out.empty() && last_owner == owner && out.back().device + out.back().length == base + x) {
      out.back().length += length;
    } else {
      out.push_back({base + x, runs[owner].host_offset + (x - start_of(runs[owner])), length});
      last_owner = owner;
    }
  }
  runs = std::move(out);
  std::uint64_t bytes = 0;
  for (const DeviceRun& r : runs) bytes += r.length;
  return bytes;
}

}  // namespace mmsb::cuda
