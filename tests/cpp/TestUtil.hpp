#pragma once
// Shared helpers for the GoogleTest suites: seeded random data, the canonical-delta invariant and
// a reference page model (plain byte vectors, applied one write at a time) used as the oracle of
// every randomized differential test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/core/Types.hpp"
#include "mmsb/delta/Delta.hpp"
#include "mmsb/delta/DeltaBatch.hpp"

namespace mmsb {
/// Readable runs in assertion failures ("[off, +len)") instead of raw object bytes.
inline void PrintTo(const Run& r, std::ostream* os) { *os << "[" << r.offset << ", +" << r.length << ")"; }
}  // namespace mmsb

namespace mmsb::test {

/// Sanitizer builds run the suites too, several times slower: long randomized tests divide their
/// workload by this (same properties; the Release build runs them at full size).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr int kSanitizerScale = 4;
#else
inline constexpr int kSanitizerScale = 1;
#endif

using Bytes = std::vector<std::byte>;
using Rng = std::mt19937_64;

/// Uniform integer in [lo, hi].
inline std::uint64_t uniform(Rng& rng, std::uint64_t lo, std::uint64_t hi) {
  return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
}

inline Bytes random_bytes(Rng& rng, std::size_t n) {
  Bytes out(n);
  for (std::byte& b : out) b = static_cast<std::byte>(rng() & 0xFF);
  return out;
}

/// Bytes of a string literal, for readable fixed payloads.
inline Bytes bytes_of(std::string_view text) {
  Bytes out(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) out[i] = static_cast<std::byte>(text[i]);
  return out;
}

/// True when the kernel refuses mappings that cannot be backed (vm.overcommit_memory 0 or 2),
/// so that asking for 1 TiB reliably fails instead of reserving address space.
inline bool kernel_refuses_huge_mappings() {
  std::FILE* f = std::fopen("/proc/sys/vm/overcommit_memory", "r");
  if (f == nullptr) return false;
  const int mode = std::fgetc(f);
  std::fclose(f);
  return mode == '0' || mode == '2';
}

/// 'text', as error messages quote names. (Built with += because GCC 12 warns falsely about
/// `"literal" + std::string`.)
inline std::string quoted(std::string_view text) {
  std::string out = "'";
  out += text;
  out += "'";
  return out;
}

inline Bytes filled(std::size_t n, std::uint8_t value) { return Bytes(n, std::byte{value}); }

/// Whether the `n` bytes at `p` are all zero (a fresh or recycled block must be).
inline bool all_zero(const std::byte* p, std::uint64_t n) {
  return std::all_of(p, p + n, [](std::byte b) { return b == std::byte{0}; });
}

/// Runs `fn`, expecting mmsb::Error with `code`; returns the message (empty when it failed).
/// A helper rather than EXPECT_THROW so callers can also check what the message names.
inline std::string expect_error(ErrorCode code, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(code))
        << "wrong error code; message: " << e.what();
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected mmsb::Error, got std::exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected mmsb::Error with code " << static_cast<int>(code) << ", nothing thrown";
  return {};
}

/// The Delta invariant: runs sorted, non-empty, non-overlapping, non-adjacent, and the payload
/// is exactly as long as the runs together.
inline ::testing::AssertionResult is_canonical(const Delta& d) {
  std::uint64_t total = 0;
  const auto& runs = d.run_list();
  for (std::size_t i = 0; i < runs.size(); ++i) {
    if (runs[i].length == 0) return ::testing::AssertionFailure() << "run " << i << " is empty";
    if (i > 0 && runs[i].offset <= runs[i - 1].end()) {
      return ::testing::AssertionFailure()
             << "run " << i << " at " << runs[i].offset << " overlaps or touches run " << i - 1
             << " ending at " << runs[i - 1].end();
    }
    total += runs[i].length;
  }
  if (total != d.payload().size()) {
    return ::testing::AssertionFailure()
           << "runs cover " << total << " bytes but the payload has " << d.payload().size();
  }
  return ::testing::AssertionSuccess();
}

/// `base` with the delta applied (base must cover extent()).
inline Bytes applied(const Delta& d, Bytes base) {
  d.apply_to(base.data());
  return base;
}

/// Which of the first `n` bytes the delta writes.
inline std::vector<bool> covered_by(const Delta& d, std::size_t n) {
  std::vector<bool> out(n, false);
  for (const Run& r : d.run_list()) {
    for (std::uint64_t i = r.offset; i < r.end() && i < n; ++i) out[i] = true;
  }
  return out;
}

/// Reference semantics of a run list: paint each run in order onto a buffer of `n` bytes
/// (initially `base`), recording which bytes were written at all.
struct Painted {
  Bytes bytes;
  std::vector<bool> covered;
};
inline Painted paint_in_order(Bytes base, std::span<const std::uint64_t> offsets,
                              std::span<const std::uint64_t> lengths, std::span<const std::byte> payload) {
  Painted out{std::move(base), {}};
  out.covered.assign(out.bytes.size(), false);
  std::size_t pos = 0;
  for (std::size_t i = 0; i < offsets.size(); ++i) {
    for (std::uint64_t k = 0; k < lengths[i]; ++k) {
      out.bytes[offsets[i] + k] = payload[pos + k];
      out.covered[offsets[i] + k] = true;
    }
    pos += lengths[i];
  }
  return out;
}

/// Reference model of pages: bytes, epoch and last lsn per page, plus the bus lsn. Every write
/// is one delta: +1 lsn, +1 epoch on its page.
class RefModel {
 public:
  struct Page {
    Bytes bytes;
    Epoch epoch = 0;
    Lsn last_lsn = 0;
  };

  /// A zero-filled page. `logged`: creation takes an lsn (the bus) or not (a bare PageTable,
  /// whose records start at last_lsn 0).
  void create(PageId id, std::size_t size, bool logged = true) {
    if (logged) ++lsn_;
    pages_[id] = Page{Bytes(size), 0, logged ? lsn_ : 0};
  }
  void erase(PageId id) {
    ++lsn_;
    pages_.erase(id);
  }
  void write(PageId id, std::uint64_t offset, std::span<const std::byte> data) {
    Page& p = pages_.at(id);
    std::copy(data.begin(), data.end(), p.bytes.begin() + static_cast<std::ptrdiff_t>(offset));
    ++p.epoch;
    p.last_lsn = ++lsn_;
  }
  void apply(const Delta& d) {
    Page& p = pages_.at(d.page_id());
    d.apply_to(p.bytes.data());
    ++p.epoch;
    p.last_lsn = ++lsn_;
  }
  /// Row by row, in order: the sequential meaning of a batch.
  void apply_batch(const DeltaBatchView& b) {
    std::size_t pos = 0;
    for (std::size_t i = 0; i < b.rows(); ++i) {
      write(b.page_ids[i], b.offsets[i], b.payload.subspan(pos, b.lengths[i]));
      pos += b.lengths[i];
    }
  }
  void bump_lsn() { ++lsn_; }
  void set_lsn(Lsn lsn) { lsn_ = lsn; }

  Lsn lsn() const { return lsn_; }
  const std::map<PageId, Page>& pages() const { return pages_; }
  const Page& page(PageId id) const { return pages_.at(id); }

 private:
  std::map<PageId, Page> pages_;
  Lsn lsn_ = 0;
};

/// A random batch over `pages` (id, size): `rows` rows of 0..max_len bytes inside their page.
/// A few pages are hot so that many rows repeat a page and per-page order matters.
inline DeltaBatch random_batch(Rng& rng, const std::vector<std::pair<PageId, std::uint64_t>>& pages,
                               std::size_t rows, std::uint64_t max_len) {
  DeltaBatch batch;
  batch.reserve(rows, rows * max_len / 2);
  const std::size_t hot = std::max<std::size_t>(1, pages.size() / 20);
  for (std::size_t i = 0; i < rows; ++i) {
    const bool pick_hot = uniform(rng, 0, 3) == 0;
    const auto& [id, size] = pages[uniform(rng, 0, (pick_hot ? hot : pages.size()) - 1)];
    const std::uint64_t len = std::min(uniform(rng, 0, max_len), size);
    const std::uint64_t offset = uniform(rng, 0, size - len);
    batch.add(id, offset, random_bytes(rng, len));
  }
  return batch;
}

}  // namespace mmsb::test
