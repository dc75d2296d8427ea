// Which backend serves a location, and the host-memory emulation the tests install.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "Backends.hpp"
#include "MaskStretch.hpp"
#include "mmsb/core/Crc32c.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/delta/Diff.hpp"
#include "mmsb/page/Location.hpp"

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
    if (n == 0) return;  // an empty run's host side may be null, which memcpy must not get
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

// "cuda:N" -> N, "unified" -> kUnifiedOrdinal; InvalidArgument otherwise ("cpu" has no backend).
int parse_location(std::string_view location) {
  const std::optional<int> ordinal = location_ordinal(location);
  if (!ordinal || *ordinal == kCpuOrdinal) {
    fail(ErrorCode::InvalidArgument, "unknown location '", location, "'; expected 'cpu', 'cuda:N' or 'unified'");
  }
  return *ordinal;
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

}  // namespace mmsb::cuda
