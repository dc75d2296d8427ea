// Propagation over device pages: a built-in recompute whose child and parents all live on one
// device runs there (DevicePages::recompute: the backend's reduce or copy into device scratch,
// then its diff), so the wave never reads a page back through the host. The oracle is the same
// random DAG on host pages: every page's bytes and epochs, the lsn and every derived delta's runs
// must be identical, at every dtype and semiring, with and without weights. The devices are the
// host emulation (bytes stored inverted), so a path that read device memory directly would show.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "engine/BusState.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/graph/Semiring.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::EmulatedDevices;
using test::random_bytes;
using test::Rng;
using test::uniform;

struct Derived {
  std::vector<std::size_t> parents;  // indices into the DAG's pages
  RecomputeSpec fn;
  std::vector<double> weights;
};

// A random DAG of `sources` source pages then derived pages, all of one dtype and size (reduces
// and copies need that), with the recomputes and weights its dtype supports.
struct Dag {
  DType dtype = DType::Float64;
  std::uint64_t size = 0;
  std::size_t sources = 0;
  std::vector<Derived> derived;
};

double random_weight(Rng& rng, DType dtype) {
  if (dtype == DType::Bool) return static_cast<double>(uniform(rng, 0, 1));
  const double w = static_cast<double>(uniform(rng, 0, 10)) - 5.0;
  return dtype == DType::Float32 || dtype == DType::Float64 ? w / 4.0 : w;
}

Dag random_dag(Rng& rng, DType dtype, std::uint64_t elements) {
  Dag dag;
  dag.dtype = dtype;
  dag.size = elements * dtype_itemsize(dtype);
  dag.sources = 3;
  for (std::size_t i = 0; i < 7; ++i) {
    Derived d;
    const std::size_t before = dag.sources + i;
    for (std::uint64_t k = uniform(rng, 1, 3); k > 0; --k) d.parents.push_back(uniform(rng, 0, before - 1));
    std::sort(d.parents.begin(), d.parents.end());
    d.parents.erase(std::unique(d.parents.begin(), d.parents.end()), d.parents.end());
    if (d.parents.size() == 1 && uniform(rng, 0, 3) == 0) {
      d.fn = {RecomputeKind::Copy, SemiringKind::SumProduct, ""};
    } else {
      std::vector<SemiringKind> ok;
      for (SemiringKind s : kAllSemirings) {
        if (semiring_supports(s, dtype)) ok.push_back(s);
      }
      d.fn = {RecomputeKind::Reduce, ok[uniform(rng, 0, ok.size() - 1)], ""};
      if (uniform(rng, 0, 1) == 0) {
        for (std::size_t k = 0; k < d.parents.size(); ++k) d.weights.push_back(random_weight(rng, dtype));
      }
    }
    dag.derived.push_back(std::move(d));
  }
  return dag;
}

// The DAG on `bus`, page i at locations[i % size]; returns the page ids in DAG order.
std::vector<PageId> build(Bus& bus, const Dag& dag, const std::vector<std::string>& locations) {
  std::vector<PageId> ids;
  for (std::size_t i = 0; i < dag.sources + dag.derived.size(); ++i) {
    PageSpec spec;
    spec.size = dag.size;
    spec.dtype = dag.dtype;
    spec.location = locations[i % locations.size()];
    ids.push_back(bus.create_page(spec).id);
  }
  for (std::size_t i = 0; i < dag.derived.size(); ++i) {
    const Derived& d = dag.derived[i];
    std::vector<PageId> parents;
    for (std::size_t p : d.parents) parents.push_back(ids[p]);
    bus.depend(ids[dag.sources + i], parents, d.fn, d.weights);
  }
  return ids;
}

// Page bytes, epochs and every page's history must agree between the two buses.
::testing::AssertionResult same_pages(Bus& want, Bus& got, const std::vector<PageId>& a, const std::vector<PageId>& b) {
  if (want.lsn() != got.lsn()) return ::testing::AssertionFailure() << "lsn " << got.lsn() << ", want " << want.lsn();
  for (std::size_t i = 0; i < a.size(); ++i) {
    const test::PageState p = test::page_state(want, want.page(a[i]));
    const test::PageState q = test::page_state(got, got.page(b[i]));
    if (p.bytes != q.bytes) return ::testing::AssertionFailure() << "page #" << i << " bytes differ";
    if (p.epoch != q.epoch) return ::testing::AssertionFailure() << "page #" << i << " epoch " << q.epoch << ", want " << p.epoch;
    const auto h = want.history(a[i]);
    const auto g = got.history(b[i]);
    if (h.size() != g.size()) return ::testing::AssertionFailure() << "page #" << i << " has " << g.size() << " deltas, want " << h.size();
    for (std::size_t k = 0; k < h.size(); ++k) {
      if (h[k].runs != g[k].runs || h[k].source != g[k].source || h[k].epoch != g[k].epoch) {
        return ::testing::AssertionFailure() << "page #" << i << " delta " << k << " differs";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// Random writes into the sources of both buses; each commit runs its wave.
void random_writes(Rng& rng, const Dag& dag, Bus& host, Bus& dev, const std::vector<PageId>& a,
                   const std::vector<PageId>& b, int steps) {
  for (int step = 0; step < steps; ++step) {
    const std::size_t src = uniform(rng, 0, dag.sources - 1);
    const std::uint64_t off = uniform(rng, 0, dag.size - 1);
    // Mostly short edits; sometimes a long stretch, so diffs span several mask chunks.
    const std::uint64_t max_len = uniform(rng, 0, 3) == 0 ? dag.size - off : std::min<std::uint64_t>(dag.size - off, 40);
    const Bytes data = random_bytes(rng, uniform(rng, 1, max_len));
    host.write(a[src], off, data);
    dev.write(b[src], off, data);
  }
}

struct Shape {
  DType dtype;
  std::uint64_t elements;
};
// Small pages, pages of one mask chunk (8 KiB) and pages of several.
constexpr Shape kShapes[] = {{DType::Float64, 5},   {DType::Float32, 3000}, {DType::Int32, 700},
                             {DType::Int64, 2500}, {DType::Bool, 20000},    {DType::Float64, 1200}};

TEST(BusDeviceWaveTest, DeviceWaveEqualsTheHostWaveAndReadsNoMirror) {
  EmulatedDevices devices;
  Rng rng(91);
  for (const Shape& shape : kShapes) {
    const Dag dag = random_dag(rng, shape.dtype, shape.elements);
    Bus host(BusOptions{.threads = 2});
    Bus dev(BusOptions{.threads = 2});
    const auto a = build(host, dag, {"cpu"});
    const auto b = build(dev, dag, {"cuda:0"});
    random_writes(rng, dag, host, dev, a, b, 40 / test::kSanitizerScale + 4);
    // Before anything reads the device pages back: the waves read none of them.
    const DeviceTraffic t = dev.device_traffic();
    EXPECT_EQ(t.mirror_syncs, 0u) << dtype_name(shape.dtype);
    EXPECT_GT(t.device_recomputes, 0u);
    EXPECT_EQ(dev.memory().mirror_bytes, 0u);
    ASSERT_TRUE(same_pages(host, dev, a, b)) << dtype_name(shape.dtype) << " x " << shape.elements;
  }
}

// Pages split over two devices and the host: a recompute whose pages are not all on one device
// runs on the host through mirrors, one whose pages are runs on the device, and the results are
// the host bus's either way.
TEST(BusDeviceWaveTest, MixedPlacementsComputeWhereTheyCanWithTheSameResult) {
  EmulatedDevices devices;
  Rng rng(92);
  std::uint64_t on_device = 0;
  std::uint64_t mirrored = 0;
  for (const Shape& shape : kShapes) {
    const Dag dag = random_dag(rng, shape.dtype, shape.elements);
    Bus host(BusOptions{.threads = 1});
    Bus dev(BusOptions{.threads = 1});
    const auto a = build(host, dag, {"cpu"});
    const auto b = build(dev, dag, {"cuda:0", "cuda:0", "cuda:1", "cpu", "cuda:0"});
    random_writes(rng, dag, host, dev, a, b, 30 / test::kSanitizerScale + 4);
    on_device += dev.device_traffic().device_recomputes;
    mirrored += dev.device_traffic().mirror_syncs;
    ASSERT_TRUE(same_pages(host, dev, a, b)) << dtype_name(shape.dtype) << " x " << shape.elements;
  }
  EXPECT_GT(on_device, 0u);  // both paths ran
  EXPECT_GT(mirrored, 0u);
}

// A transaction whose wave ran on the device rolls back like any other: bytes, epochs and lsn
// as before the transaction, on the device and in the log.
TEST(BusDeviceWaveTest, RolledBackDeviceWaveLeavesNoTrace) {
  EmulatedDevices devices;
  Rng rng(93);
  const Dag dag = random_dag(rng, DType::Int64, 900);
  Bus dev(BusOptions{.threads = 1});
  const auto b = build(dev, dag, {"cuda:0"});
  Bus host(BusOptions{.threads = 1});
  const auto a = build(host, dag, {"cpu"});
  random_writes(rng, dag, host, dev, a, b, 6);
  const test::BusState before = test::capture(dev);
  dev.begin_transaction();
  for (std::size_t s = 0; s < dag.sources; ++s) dev.write(b[s], 0, random_bytes(rng, 64));
  EXPECT_GT(dev.device_traffic().device_recomputes, 0u);
  dev.rollback_transaction();
  EXPECT_TRUE(test::same_state(before, test::capture(dev)));
  ASSERT_TRUE(same_pages(host, dev, a, b));
}

}  // namespace
}  // namespace mmsb
