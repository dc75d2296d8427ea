// Which backend serves a location, the host-memory emulation the tests install, and the overlap
// rewrite every device write goes through.
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <queue>
#include <mutex>

#include "Backends.hpp"
#include "MaskStretch.hpp"
#include "mmsb/core/Crc32c.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/delta/Diff.hpp"

namespace mmsb::cuda {
namespace {

constexpr std::byte kInvert{0xFF};

std::atomic<std::uint64_t> g_writes_until_failure{0};  // fail_emulated_write: 0 = disarmed

// Counts one write down toward an armed failure; true for the write that must fail.
bool write_fails() noexcept {
  std::uint64_t left = g_writes_until_failure.load(std::memory_order_relaxed);
  while (left != 0 && !g_writes_until_failure.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
  }
  return left == 1;
}

void invert_copy(std::byte* dst, const std::byte* src, std::uint64_t n) noexcept {
  std::uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {  // a word at a time: the emulation should not dominate the tests
    std::uint64_t w;
    std::memcpy(&w, src + i, 8);
    w = ~w;
    std::memcpy(dst + i, &w, 8);
  }
  for (; i < n; ++i) dst[i] = src[i] ^ kInvert;
}

// A device over host memory that stores each byte inverted: engine code reaching into device
// memory without the backend gets wrong bytes, which the tests see. Counts what it moves like a
// real device, so the engine's transfer accounting is tested too.
class EmulatedBackend final : public DeviceBackend {
 public:
  EmulatedBackend(std::string location, int ordinal, bool host_accessible)
      : location_(std::move(location)),
        ordinal_(ordinal),
        host_accessible_(host_accessible),
        pool_(SlabSource{location_,
                         [](std::size_t n) -> void* { return std::aligned_alloc(DevicePool::kAlignment, n); },
                         // Managed memory is plain memory to the host; device memory holds inverted bytes.
                         [host_accessible](void* p, std::size_t n) {
                           std::memset(p, host_accessible ? 0 : 0xFF, n);
                         },
                         [](void* p) { std::free(p); }}) {}

  const std::string& location() const noexcept override { return location_; }
  int ordinal() const noexcept override { return ordinal_; }
  bool host_accessible() const noexcept override { return host_accessible_; }
  bool emulated() const noexcept override { return true; }

  DevicePool::Block allocate(std::uint64_t bytes) override { return pool_.allocate(bytes); }
  void release(const DevicePool::Block& block) noexcept override { pool_.release(block); }

  void write(std::span<const DeviceRun> runs, std::span<const std::byte> host) override {
    std::lock_guard g(mutex_);
    check_runs(runs, host.size(), "write");
    if (write_fails()) fail(ErrorCode::DeviceUnavailable, location_, " write: injected failure (fail_emulated_write)");
    std::uint64_t bytes = 0;
    for (const DeviceRun& r : runs) {
      move(r.device, host.data() + r.host_offset, r.length);
      bytes += r.length;
    }
    counters_.add_transfer(bytes, 0, 0, 0);
  }

  void read(std::span<const DeviceRun> runs, std::span<std::byte> host) override {
    std::lock_guard g(mutex_);
    check_runs(runs, host.size(), "read");
    std::uint64_t bytes = 0;
    for (const DeviceRun& r : runs) {
      move(host.data() + r.host_offset, r.device, r.length);
      bytes += r.length;
    }
    counters_.add_transfer(0, bytes, 0, 0);
  }

  void copy(std::byte* dst, const std::byte* src, std::uint64_t bytes) override {
    std::lock_guard g(mutex_);
    std::memcpy(dst, src, bytes);
    counters_.add_transfer(0, 0, bytes, 0);
  }

  // On plain host copies of the parents: the emulation tests the engine's device path, the
  // operations themselves are semiring_reduce's.
  void reduce(SemiringKind s, DType dtype, std::span<const std::byte* const> parents,
              std::span<const double> weights, std::byte* out, std::uint64_t count) override {
    std::lock_guard g(mutex_);
    const std::uint64_t bytes = count * dtype_itemsize(dtype);
    if (host_accessible_) {
      semiring_reduce(s, dtype, parents, weights, out, count);
    } else {
      std::vector<std::vector<std::byte>> plain(parents.size(), std::vector<std::byte>(bytes));
      std::vector<const std::byte*> ins;
      for (std::size_t k = 0; k < parents.size(); ++k) {
        invert_copy(plain[k].data(), parents[k], bytes);
        ins.push_back(plain[k].data());
      }
      std::vector<std::byte> result(bytes);
      semiring_reduce(s, dtype, ins, weights, result.data(), count);
      invert_copy(out, result.data(), bytes);
    }
    counters_.add_transfer(0, 0, 0, 0);
  }

  // As a GPU does it: a mask and chunk flags "on the device" (inverting both sides keeps which
  // bytes are equal), then only the flagged stretches' mask words read back and turned into runs.
  void diff(const std::byte* old, const std::byte* now, std::uint64_t n, std::vector<Run>& out) override {
    std::lock_guard g(mutex_);
    if (host_accessible_) {
      diff_runs(old, now, n, out);
      counters_.add_transfer(0, 0, 0, 0);
      return;
    }
    std::vector<std::uint64_t> mask(mask_words(n));
    change_mask(old, now, n, mask.data());
    std::vector<std::uint8_t> flags(mask_chunks(n));
    for (std::uint64_t w = 0; w < mask.size(); ++w) {
      if (mask[w] != 0) flags[w / kMaskChunkWords] = 1;
    }
    const std::vector<MaskStretch> stretches = mask_stretches(flags, n);
    std::vector<std::uint64_t> fetched;
    for (const MaskStretch& st : stretches) {
      fetched.insert(fetched.end(), mask.begin() + static_cast<std::ptrdiff_t>(st.first_word),
                     mask.begin() + static_cast<std::ptrdiff_t>(st.first_word + st.words));
    }
    stretch_runs(stretches, fetched.data(), out);
    counters_.add_transfer(0, flags.size() + fetched.size() * sizeof(std::uint64_t), 0, 0);
  }

  void settle() override {}  // host memory: every write is complete when it returns

  std::uint32_t crc32c(const std::byte* p, std::uint64_t n) override {
    std::lock_guard g(mutex_);
    std::vector<std::byte> chunk(std::min<std::uint64_t>(n, std::uint64_t{1} << 20));
    std::uint32_t crc = 0;
    for (std::uint64_t at = 0; at < n; at += chunk.size()) {
      const std::uint64_t len = std::min<std::uint64_t>(chunk.size(), n - at);
      move(chunk.data(), p + at, len);
      crc = mmsb::crc32c(chunk.data(), len, crc);
    }
    counters_.add_transfer(0, 0, 0, 0);
    return crc;
  }

  // Counted for managed memory, as a GPU's would be (the tests check the engine gives them).
  void prefetch(const std::byte*, std::uint64_t, bool, void*) override {
    if (!host_accessible_) return;
    std::lock_guard g(mutex_);
    ++counters_.prefetches;
  }

  DeviceCounters counters() const override {
    std::lock_guard g(mutex_);
    return counters_;
  }
  DevicePoolStats pool_stats() const override { return pool_.stats(); }

 private:
  // Every run first, so a bad one leaves memory and counters as they were.
  void check_runs(std::span<const DeviceRun> runs, std::size_t host_size, const char* what) const {
    for (const DeviceRun& r : runs) {
      if (r.host_offset > host_size || r.length > host_size - r.host_offset) {
        fail(ErrorCode::InvalidArgument, location_, " ", what, ": run of ", r.length, " bytes at host offset ",
             r.host_offset, " is outside the ", host_size, "-byte host buffer");
      }
    }
  }
  void move(std::byte* dst, const std::byte* src, std::uint64_t n) const noexcept {
    if (host_accessible_) {
      std::memcpy(dst, src, n);
    } else {
      invert_copy(dst, src, n);
    }
  }

  std::string location_;
  int ordinal_;
  bool host_accessible_;
  DevicePool pool_;
  mutable std::mutex mutex_;
  DeviceCounters counters_;
};

struct Registry {
  std::mutex mutex;
  int emulated = 0;
  // Backends are never destroyed while the process runs: pages of any setting may hold blocks.
  std::map<std::string, std::unique_ptr<DeviceBackend>, std::less<>> real;
  std::map<std::string, std::unique_ptr<DeviceBackend>, std::less<>> emulation;
  std::vector<std::unique_ptr<DeviceBackend>> retired;
};

Registry& registry() {
  static Registry* r = new Registry;  // leaked on purpose: blocks may be released during exit
  return *r;
}

// "cuda:N" -> N, "unified" -> -1; InvalidArgument otherwise.
int parse_location(std::string_view location) {
  if (location == "unified") return -1;
  constexpr std::string_view kPrefix = "cuda:";
  if (location.substr(0, kPrefix.size()) == kPrefix) {
    const std::string_view digits = location.substr(kPrefix.size());
    int n = -1;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec == std::errc{} && end == digits.data() + digits.size() && !digits.empty() && n >= 0) return n;
  }
  fail(ErrorCode::InvalidArgument, "unknown location '", location, "'; expected 'cpu', 'cuda:N' or 'unified'");
}

}  // namespace

DeviceBackend& device_backend(std::string_view location) {
  const int ordinal = parse_location(location);
  Registry& reg = registry();
  std::lock_guard g(reg.mutex);
  if (reg.emulated > 0) {
    if (ordinal >= reg.emulated) {
      fail(ErrorCode::DeviceUnavailable, "location '", location, "': only ", reg.emulated,
           " emulated devices are installed");
    }
    auto it = reg.emulation.find(location);
    if (it == reg.emulation.end()) {
      auto b = std::make_unique<EmulatedBackend>(std::string(location), std::max(ordinal, 0), ordinal < 0);
      it = reg.emulation.emplace(std::string(location), std::move(b)).first;
    }
    return *it->second;
  }
  auto it = reg.real.find(location);
  if (it == reg.real.end()) {
    auto b = ordinal < 0 ? make_unified_backend(0) : make_cuda_backend(ordinal);
    it = reg.real.emplace(std::string(location), std::move(b)).first;
  }
  return *it->second;
}

void emulate_devices(int count) {
  Registry& reg = registry();
  std::lock_guard g(reg.mutex);
  for (auto& [name, b] : reg.emulation) reg.retired.push_back(std::move(b));
  reg.emulation.clear();
  reg.emulated = std::max(count, 0);
}

void fail_emulated_write(std::uint64_t nth) noexcept { g_writes_until_failure.store(nth, std::memory_order_relaxed); }

int emulated_devices() noexcept {
  Registry& reg = registry();
  std::lock_guard g(reg.mutex);
  return reg.emulated;
}

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
