#pragma once
// A full, comparable picture of a Bus (lsn, counters, and every live page's bytes, epoch, last
// lsn, name and metadata), so error-path tests can assert that a failed call changed nothing,
// and randomized tests can compare a bus against the reference model.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/engine/Bus.hpp"

namespace mmsb::test {

struct PageState {
  PageId id = 0;
  Epoch epoch = 0;
  Lsn last_lsn = 0;
  Bytes bytes;
  std::string name;
  Metadata metadata;
  std::string location;  // captured from an open bus only
};

struct BusState {
  Lsn lsn = 0;
  BusStats stats;
  std::vector<PageState> pages;
};

/// The page as the host reads it (a device page's bytes through its mirror).
inline PageState page_state(Bus& bus, const PageRecord& r) {
  PageState p;
  p.id = r.id;
  p.epoch = r.epoch.load();
  p.last_lsn = r.last_lsn.load();
  const std::byte* bytes = bus.host_bytes(r);
  p.bytes.assign(bytes, bytes + r.size);
  return p;
}

/// Everything observable through an open bus.
inline BusState capture(Bus& bus) {
  BusState s;
  s.lsn = bus.lsn();
  s.stats = bus.stats();
  for (PageId id : bus.page_ids()) {
    PageState p = page_state(bus, bus.page(id));
    const PageInfo info = bus.page_info(id);
    p.name = info.name;
    p.metadata = info.metadata;
    p.location = info.location;
    s.pages.push_back(std::move(p));
  }
  return s;
}

/// For a closed bus, whose lookups throw: the records the test kept from before closing.
inline BusState capture(Bus& bus, const std::vector<PageRecord*>& records) {
  BusState s;
  s.lsn = bus.lsn();
  s.stats = bus.stats();
  for (const PageRecord* r : records) s.pages.push_back(page_state(bus, *r));
  return s;
}

/// Field-by-field comparison that names the first difference.
inline ::testing::AssertionResult same_state(const BusState& want, const BusState& got) {
  auto fail = [] { return ::testing::AssertionFailure(); };
  if (want.lsn != got.lsn) return fail() << "lsn " << got.lsn << ", want " << want.lsn;
  const BusStats& a = want.stats;
  const BusStats& b = got.stats;
  if (a.deltas_applied != b.deltas_applied || a.bytes_applied != b.bytes_applied ||
      a.commits != b.commits || a.pages_created != b.pages_created || a.pages_deleted != b.pages_deleted) {
    return fail() << "stats changed: deltas " << a.deltas_applied << "->" << b.deltas_applied << ", bytes "
                  << a.bytes_applied << "->" << b.bytes_applied << ", commits " << a.commits << "->"
                  << b.commits << ", created " << a.pages_created << "->" << b.pages_created
                  << ", deleted " << a.pages_deleted << "->" << b.pages_deleted;
  }
  if (want.pages.size() != got.pages.size()) {
    return fail() << got.pages.size() << " pages, want " << want.pages.size();
  }
  for (std::size_t i = 0; i < want.pages.size(); ++i) {
    const PageState& p = want.pages[i];
    const PageState& q = got.pages[i];
    if (p.id != q.id) return fail() << "page #" << i << " has id " << q.id << ", want " << p.id;
    if (p.epoch != q.epoch) return fail() << "page " << p.id << " epoch " << q.epoch << ", want " << p.epoch;
    if (p.last_lsn != q.last_lsn) {
      return fail() << "page " << p.id << " last_lsn " << q.last_lsn << ", want " << p.last_lsn;
    }
    if (p.bytes != q.bytes) return fail() << "page " << p.id << " bytes differ";
    if (p.name != q.name) return fail() << "page " << p.id << " name '" << q.name << "', want '" << p.name << "'";
    if (p.metadata != q.metadata) return fail() << "page " << p.id << " metadata differs";
    if (p.location != q.location) {
      return fail() << "page " << p.id << " location '" << q.location << "', want '" << p.location << "'";
    }
  }
  return ::testing::AssertionSuccess();
}

/// The model's view of a bus: pages, bytes, epochs, last lsns and lsn (names and counters are
/// not modelled).
inline ::testing::AssertionResult same_as_model(Bus& bus, const RefModel& model) {
  if (bus.lsn() != model.lsn()) return ::testing::AssertionFailure() << "lsn " << bus.lsn() << ", want " << model.lsn();
  BusState want;
  want.lsn = model.lsn();
  for (const auto& [id, page] : model.pages()) {
    want.pages.push_back(PageState{id, page.epoch, page.last_lsn, page.bytes, {}, {}, {}});
  }
  BusState got = capture(bus);
  got.stats = want.stats;
  for (PageState& p : got.pages) {
    p.name.clear();
    p.metadata.clear();
    p.location.clear();
  }
  return same_state(want, got);
}

/// Installs `count` emulated devices ("cuda:0".. : host memory storing every byte inverted) for
/// its lifetime; declare it before any bus that uses them, so the bus goes first.
struct EmulatedDevices {
  explicit EmulatedDevices(int count = 2) { cuda::emulate_devices(count); }
  ~EmulatedDevices() { cuda::emulate_devices(0); }
  EmulatedDevices(const EmulatedDevices&) = delete;
  EmulatedDevices& operator=(const EmulatedDevices&) = delete;
};

/// The model's pages as (id, size), the form random_batch takes.
inline std::vector<std::pair<PageId, std::uint64_t>> model_pages(const RefModel& model) {
  std::vector<std::pair<PageId, std::uint64_t>> out;
  for (const auto& [id, p] : model.pages()) out.emplace_back(id, p.bytes.size());
  return out;
}

/// The same random commit on `bus` and `model`: a write inside page `target` (one of `pages`), or
/// with `batch` a batch of 1..max_rows rows over `pages` (rows up to 48 bytes).
inline void random_write_or_batch(Rng& rng, Bus& bus, RefModel& model,
                                  const std::vector<std::pair<PageId, std::uint64_t>>& pages,
                                  std::pair<PageId, std::uint64_t> target, bool batch, std::uint64_t max_rows) {
  if (batch) {
    const DeltaBatch b = random_batch(rng, pages, uniform(rng, 1, max_rows), 48);
    bus.apply_batch(b.view());
    model.apply_batch(b.view());
    return;
  }
  const auto [id, size] = target;
  const std::uint64_t off = uniform(rng, 0, size - 1);
  const Bytes data = random_bytes(rng, uniform(rng, 1, size - off));
  bus.write(id, off, data);
  model.write(id, off, data);
}

}  // namespace mmsb::test
