// Randomized differential tests of the Bus against the reference model: large parallel batches
// and long random mixes of every kind of change (failing ones included) must leave exactly the
// model's bytes, epochs, last lsns and lsn, whatever the thread count.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "TestUtil.hpp"
#include "engine/BusState.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/log/PosixFile.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::random_bytes;
using test::RefModel;
using test::Rng;
using test::uniform;

using PageList = std::vector<std::pair<PageId, std::uint64_t>>;

PageList live_pages(const RefModel& model) {
  PageList out;
  for (const auto& [id, page] : model.pages()) out.emplace_back(id, page.bytes.size());
  return out;
}

// Creates a page on both the bus and the model, sometimes with initial data (delta 1).
void create_both(Rng& rng, Bus& bus, RefModel& model, std::uint64_t size) {
  PageSpec spec;
  spec.size = size;
  const bool with_data = uniform(rng, 0, 2) == 0;
  const Bytes initial = with_data ? random_bytes(rng, size) : Bytes{};
  const PageId id = bus.create_page(spec, initial).id;
  model.create(id, size);
  if (with_data) model.write(id, 0, initial);
}

TEST(BusRandomTest, LargeBatchSameForEveryThreadCount) {
  std::vector<test::BusState> finals;
  for (unsigned threads : {1u, 2u, 3u}) {
    Rng rng(51);
    Bus bus(BusOptions{threads});
    RefModel model;
    for (int i = 0; i < 210; ++i) {
      create_both(rng, bus, model, uniform(rng, 0, 3) == 0 ? uniform(rng, 1, 64) : uniform(rng, 65, 5000));
    }
    for (int i = 0; i < 10; ++i) {  // holes in the id space
      const PageId id = live_pages(model)[uniform(rng, 0, model.pages().size() - 1)].first;
      bus.delete_page(id);
      model.erase(id);
    }
    for (int round = 0; round < 2; ++round) {
      const DeltaBatch batch = test::random_batch(rng, live_pages(model), 100'000, 64);
      const Lsn last = bus.apply_batch(batch.view());
      model.apply_batch(batch.view());
      ASSERT_EQ(last, model.lsn());
      ASSERT_TRUE(test::same_as_model(bus, model)) << threads << " threads, round " << round;
    }
    finals.push_back(test::capture(bus));
  }
  for (std::size_t i = 1; i < finals.size(); ++i) {
    EXPECT_TRUE(test::same_state(finals[0], finals[i])) << "thread count changed the result";
  }
}

void random_step(Rng& rng, Bus& bus, RefModel& model);  // below

// The files of a closed bus directory by name (the LOCK file aside), and where two sets differ.
using DirFiles = std::map<std::string, Bytes>;
DirFiles bus_files(const test::TempDir& dir) {
  DirFiles files;
  for (const std::string& name : list_directory(dir.path())) {
    if (name != "LOCK") files[name] = test::read_file(dir / name);
  }
  return files;
}
std::string first_difference(const DirFiles& a, const DirFiles& b) {
  for (const auto& [name, bytes] : a) {
    const auto other = b.find(name);
    if (other == b.end()) return name + " is missing";
    const Bytes& o = other->second;
    if (o.size() != bytes.size()) return name + " has " + std::to_string(o.size()) + " bytes, not " + std::to_string(bytes.size());
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      if (o[i] != bytes[i]) return name + " differs at byte " + std::to_string(i);
    }
  }
  return b.size() == a.size() ? "" : "extra files";
}

// Same commits and the same clock give the same bus directory, byte for byte, whatever the
// thread count: segments and checkpoint alike. Timestamps are the only field of the log the
// commits do not decide (BusOptions::clock fixes them here), so anything else that depended on
// the threads (the rows of a batch applied in parallel lanes, a wave's derived deltas computed
// in lanes, their order, padding) would show here, where comparing states cannot see it.
TEST(BusRandomTest, LogBytesSameForEveryThreadCount) {
  std::vector<DirFiles> dirs;
  for (unsigned threads : {1u, 2u, 3u}) {
    test::TempDir dir;
    {
      BusOptions o{threads};
      o.path = dir.path();
      std::uint64_t ticks = 0;
      o.clock = [&ticks] { return 1'000'000'000 + 1'000 * ++ticks; };
      Bus bus(std::move(o));
      Rng rng(53);
      RefModel model;
      for (int i = 0; i < 60; ++i) create_both(rng, bus, model, uniform(rng, 1, 4096));
      for (int step = 0; step < 1500; ++step) {
        ASSERT_NO_FATAL_FAILURE(random_step(rng, bus, model)) << "step " << step;
        if (step == 700) bus.checkpoint();
      }
      const DeltaBatch batch = test::random_batch(rng, live_pages(model), 100'000, 64);  // lanes
      bus.apply_batch(batch.view());
      // Waves whose reduces run in lanes (32 KiB pages: more than a lane's worth per batch).
      const PageSpec spec{32'768, DType::Float64, {4096}};
      std::vector<PageId> graph;
      for (int i = 0; i < 60; ++i) {
        graph.push_back(bus.create_page(spec).id);
        if (i < 12) continue;
        std::vector<PageId> parents;
        while (parents.size() < 3) {
          const PageId p = graph[uniform(rng, 0, graph.size() - 2)];
          if (std::find(parents.begin(), parents.end(), p) == parents.end()) parents.push_back(p);
        }
        bus.depend(graph.back(), parents, {RecomputeKind::Reduce, SemiringKind::SumProduct, ""}, {});
      }
      for (int round = 0; round < 3; ++round) {
        DeltaBatch roots;
        for (int i = 0; i < 12; ++i) roots.add(graph[i], uniform(rng, 0, 4095) * 8, random_bytes(rng, 8));
        bus.apply_batch(roots.view());
      }
      bus.close();
    }
    dirs.push_back(bus_files(dir));
  }
  ASSERT_FALSE(dirs[0].empty());
  for (std::size_t i = 1; i < dirs.size(); ++i) EXPECT_EQ(first_difference(dirs[0], dirs[i]), "") << i + 1 << " threads";
}

// One step of the random mix; failing steps must throw and leave the model (and bus) alone.
void random_step(Rng& rng, Bus& bus, RefModel& model) {
  const PageList pages = live_pages(model);
  const std::uint64_t op = pages.empty() ? 0 : uniform(rng, 0, 99);
  if (op < 8) {
    create_both(rng, bus, model, uniform(rng, 1, 300));
    return;
  }
  const std::size_t pick = uniform(rng, 0, pages.size() - 1);
  const PageId id = pages[pick].first;
  const std::uint64_t size = pages[pick].second;
  const Epoch epoch = model.page(id).epoch;
  if (op < 11) {
    bus.delete_page(id);
    model.erase(id);
  } else if (op < 36) {
    const std::uint64_t len = uniform(rng, 0, std::min<std::uint64_t>(size, 40));
    const std::uint64_t offset = uniform(rng, 0, size - len);
    const Bytes data = random_bytes(rng, len);
    if (uniform(rng, 0, 9) == 0) {  // optimistic concurrency, right or wrong
      const Epoch expect = uniform(rng, 0, 1) == 0 ? epoch : epoch + uniform(rng, 1, 3);
      if (expect != epoch) {
        test::expect_error(ErrorCode::EpochConflict, [&] { bus.write(id, offset, data, expect); });
        return;
      }
      ASSERT_EQ(bus.write(id, offset, data, expect), epoch + 1);
    } else {
      ASSERT_EQ(bus.write(id, offset, data), epoch + 1);
    }
    model.write(id, offset, data);
  } else if (op < 51) {
    std::vector<std::uint64_t> offsets;
    std::vector<std::uint64_t> lengths;
    for (std::uint64_t k = uniform(rng, 0, 6); k > 0; --k) {
      offsets.push_back(uniform(rng, 0, size - 1));
      lengths.push_back(uniform(rng, 0, std::min<std::uint64_t>(20, size - offsets.back())));
    }
    std::uint64_t total = 0;
    for (std::uint64_t len : lengths) total += len;
    Delta d = Delta::runs(id, offsets, lengths, random_bytes(rng, total));
    bus.apply(d);
    ASSERT_EQ(d.lsn, model.lsn() + 1);
    model.apply(d);
  } else if (op < 66) {
    Bytes content = model.page(id).bytes;
    for (std::uint64_t k = uniform(rng, 0, 3); k > 0; --k) {
      content[uniform(rng, 0, size - 1)] = static_cast<std::byte>(rng() & 0xFF);
    }
    const bool changed = content != model.page(id).bytes;
    ASSERT_EQ(bus.update(id, content), changed);
    if (changed) model.write(id, 0, content);  // one delta, whole page now equals content
  } else if (op < 86) {
    const DeltaBatch batch = test::random_batch(rng, pages, uniform(rng, 0, 60), 24);
    bus.apply_batch(batch.view());
    model.apply_batch(batch.view());
  } else {
    // Invalid requests of several kinds; the model does not move.
    switch (uniform(rng, 0, 3)) {
      case 0:
        test::expect_error(ErrorCode::InvalidDelta, [&] { bus.write(id, size, Bytes(1)); });
        break;
      case 1:
        test::expect_error(ErrorCode::PageNotFound, [&] { bus.write(bus.lsn() + 1000, 0, Bytes(1)); });
        break;
      case 2: {
        DeltaBatch batch = test::random_batch(rng, pages, 30, 8);
        batch.add(id, size - 1, Bytes(2));
        // More valid rows after the bad one: none of the 61 may be applied.
        for (int k = 0; k < 30; ++k) batch.add(pages[uniform(rng, 0, pages.size() - 1)].first, 0, {});
        test::expect_error(ErrorCode::InvalidDelta, [&] { bus.apply_batch(batch.view()); });
        break;
      }
      default:
        test::expect_error(ErrorCode::InvalidArgument, [&] { bus.update(id, Bytes(size + 1)); });
        break;
    }
  }
}

TEST(BusRandomTest, RandomMixMatchesModel) {
  std::vector<test::BusState> finals;
  for (unsigned threads : {1u, 2u, 3u}) {
    Rng rng(52);
    Bus bus(BusOptions{threads});
    RefModel model;
    for (int step = 0; step < 4000; ++step) {
      ASSERT_NO_FATAL_FAILURE(random_step(rng, bus, model)) << "step " << step;
      if (step % 100 == 99) {
        ASSERT_TRUE(test::same_as_model(bus, model)) << threads << " threads, step " << step;
      }
    }
    ASSERT_TRUE(test::same_as_model(bus, model));
    finals.push_back(test::capture(bus));
  }
  for (std::size_t i = 1; i < finals.size(); ++i) EXPECT_TRUE(test::same_state(finals[0], finals[i]));
}

}  // namespace
}  // namespace mmsb
