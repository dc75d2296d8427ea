// Replicators against a reference model (plain byte vectors, rows applied one at a time in
// order): random batches with overlapping rows leave exactly the model's bytes on every rank,
// hash() is the documented function of them, and refused batches change nothing. Runs on
// emulated devices everywhere (one rank, and groups of ranks as threads of this process) and,
// where NCCL and a GPU are present, over NCCL on device 0.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <cstring>

#include "TestUtil.hpp"
#include "mmsb/core/Crc32c.hpp"
#include "mmsb/cuda/Cuda.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/cuda/Nccl.hpp"
#include "mmsb/cuda/Replicator.hpp"

namespace mmsb::cuda {
namespace {

using test::Bytes;
using test::expect_error;
using test::Rng;
using test::uniform;

struct Batch {
  std::vector<ReplicaRow> rows;
  Bytes payload;
};

// The oracle: each row overwrites its bytes, later rows over earlier ones.
struct Model {
  std::vector<Bytes> pages;

  explicit Model(const std::vector<std::uint64_t>& sizes) {
    for (std::uint64_t s : sizes) pages.emplace_back(s);
  }
  void apply(const Batch& b) {
    std::uint64_t from = 0;
    for (const ReplicaRow& r : b.rows) {
      std::copy_n(b.payload.begin() + static_cast<std::ptrdiff_t>(from), r.length, pages[r.page].begin() + static_cast<std::ptrdiff_t>(r.offset));
      from += r.length;
    }
  }
  // The documented hash, written out independently: FNV-1a 64 over each page's size (u64 LE)
  // and CRC32C (u32 LE).
  std::uint64_t hash() const {
    std::uint64_t h = 14695981039346656037ull;
    auto mix = [&](std::uint64_t v, int bytes) {
      for (int i = 0; i < bytes; ++i) {
        h ^= (v >> (8 * i)) & 0xFF;
        h *= 1099511628211ull;
      }
    };
    for (const Bytes& p : pages) {
      mix(p.size(), 8);
      mix(crc32c(p.data(), p.size()), 4);
    }
    return h;
  }
};

// Rows of every kind: random runs, runs overlapping an earlier row of the batch, zero-length
// rows, whole pages, and runs longer than the kernel's 16 KiB pieces where a page allows.
Batch random_batch(Rng& rng, const std::vector<std::uint64_t>& sizes) {
  Batch b;
  const std::uint64_t count = uniform(rng, 0, 24);
  for (std::uint64_t i = 0; i < count; ++i) {
    ReplicaRow r;
    r.page = uniform(rng, 0, sizes.size() - 1);
    const std::uint64_t size = sizes[r.page];
    switch (uniform(rng, 0, 5)) {
      case 0:
        if (!b.rows.empty()) {  // overlap an earlier row, shifted a little
          const ReplicaRow& prev = b.rows[uniform(rng, 0, b.rows.size() - 1)];
          r.page = prev.page;
          const std::uint64_t psize = sizes[r.page];
          r.offset = std::min(psize, prev.offset + uniform(rng, 0, 8) - std::min<std::uint64_t>(prev.offset, 4));
          r.length = uniform(rng, 0, std::min<std::uint64_t>(psize - r.offset, prev.length + 16));
          break;
        }
        [[fallthrough]];
      case 1:
      case 2:
        r.offset = uniform(rng, 0, size);
        r.length = uniform(rng, 0, std::min<std::uint64_t>(size - r.offset, 200));
        break;
      case 3:
        r.offset = uniform(rng, 0, size);
        r.length = 0;
        break;
      case 4:
        r.offset = 0;
        r.length = size;
        break;
      default:
        r.offset = uniform(rng, 0, size / 4);
        r.length = uniform(rng, 0, size - r.offset);
        break;
    }
    b.rows.push_back(r);
    const Bytes data = test::random_bytes(rng, r.length);
    b.payload.insert(b.payload.end(), data.begin(), data.end());
  }
  return b;
}

void expect_matches(Replicator& rep, const Model& model, std::uint64_t tick) {
  for (std::size_t p = 0; p < model.pages.size(); ++p) {
    ASSERT_EQ(rep.read(p), model.pages[p]) << "page " << p << " after tick " << tick;
  }
  EXPECT_EQ(rep.hash(), model.hash()) << "after tick " << tick;
  EXPECT_EQ(rep.ticks(), tick);
}

// Drives `rep` through random ticks, comparing with the model after each.
void run_against_model(Replicator& rep, Rng& rng, int ticks) {
  Model model(rep.page_sizes());
  expect_matches(rep, model, 0);
  for (int t = 1; t <= ticks; ++t) {
    const Batch b = random_batch(rng, rep.page_sizes());
    rep.broadcast(b.rows, b.payload);
    model.apply(b);
    expect_matches(rep, model, static_cast<std::uint64_t>(t));
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_TRUE(rep.check());
}

const std::vector<std::uint64_t> kSizes = {64, 1, 4096, 40'000, 333};

class EmulatedReplicator : public ::testing::Test {
 protected:
  void SetUp() override { emulate_devices(1); }
  void TearDown() override { emulate_devices(0); }
};

TEST_F(EmulatedReplicator, RandomBatchesMatchReferenceModel) {
  Rng rng(7);
  Replicator rep(1, 0, NcclUniqueId{}, 0, kSizes);
  run_against_model(rep, rng, 150 / test::kSanitizerScale);
}

TEST_F(EmulatedReplicator, LaterRowsWinWhereRowsOverlap) {
  Replicator rep(1, 0, NcclUniqueId{}, 0, {16});
  const std::vector<ReplicaRow> rows = {{0, 0, 8}, {0, 4, 8}, {0, 6, 2}, {0, 0, 1}};
  const Bytes payload = test::bytes_of("AAAAAAAABBBBBBBBCCD");
  rep.broadcast(rows, payload);
  Bytes want = test::bytes_of("DAAABBCCBBBB");
  want.resize(16);
  EXPECT_EQ(rep.read(0), want);
}

TEST_F(EmulatedReplicator, BadRowsAreRefusedWithNothingApplied) {
  Rng rng(11);
  Replicator rep(1, 0, NcclUniqueId{}, 0, {64, 100});
  const Batch first = random_batch(rng, rep.page_sizes());
  rep.broadcast(first.rows, first.payload);
  Model model(rep.page_sizes());
  model.apply(first);
  const Bytes eight(8, std::byte{0x5A});
  const auto refused = [&](std::vector<ReplicaRow> rows, const Bytes& payload, const char* says) {
    const std::string msg = expect_error(ErrorCode::InvalidArgument, [&] { rep.broadcast(rows, payload); });
    EXPECT_NE(msg.find(says), std::string::npos) << msg;
    expect_matches(rep, model, 1);
  };
  refused({{0, 0, 4}, {2, 0, 4}}, eight, "row 1 names page 2 but there are 2 pages");
  refused({{1, 96, 8}}, eight, "row 0 (8 bytes at offset 96) runs past the end of page 1 (100 bytes)");
  refused({{0, 65, 0}}, {}, "runs past the end of page 0");
  refused({{0, 8, ~std::uint64_t{0} - 4}}, eight, "runs past the end of page 0");  // offset + length wraps
  refused({{0, 0, 4}, {1, 0, 8}}, eight, "rows 0..1 need more than the 8 payload bytes given");
  refused({{0, 0, 4}}, eight, "the rows need 4 payload bytes but 8 were given");
  // Still usable: a refused batch is not a failure of the group.
  const Batch next = random_batch(rng, rep.page_sizes());
  rep.broadcast(next.rows, next.payload);
  model.apply(next);
  expect_matches(rep, model, 2);
}

TEST_F(EmulatedReplicator, ReceiveOnRankZeroAndReadOutOfRangeAreRefused) {
  Replicator rep(1, 0, NcclUniqueId{}, 0, {8, 8});
  expect_error(ErrorCode::InvalidArgument, [&] { rep.receive(); });
  expect_error(ErrorCode::InvalidArgument, [&] { rep.read(2); });
  EXPECT_EQ(rep.ticks(), 0u);
}

TEST_F(EmulatedReplicator, EmptyBatchIsATick) {
  Replicator rep(1, 0, NcclUniqueId{}, 0, {8});
  const std::uint64_t before = rep.hash();
  rep.broadcast({}, {});
  EXPECT_EQ(rep.ticks(), 1u);
  EXPECT_EQ(rep.hash(), before);
}

// hash() as documented, from the replicas' bytes read back: FNV-1a 64 over each page's size (u64
// little endian) and CRC32C (u32 little endian).
std::uint64_t documented_hash(Replicator& r, const std::vector<std::uint64_t>& sizes) {
  std::uint64_t h = 14695981039346656037ull;
  const auto mix = [&](const void* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      h ^= static_cast<const unsigned char*>(p)[i];
      h *= 1099511628211ull;
    }
  };
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::vector<std::byte> bytes = r.read(i);
    const std::uint32_t crc = crc32c(bytes.data(), bytes.size());
    mix(&sizes[i], 8);
    mix(&crc, 4);
  }
  return h;
}

TEST_F(EmulatedReplicator, HashTellsReplicasApart) {
  Replicator a(1, 0, NcclUniqueId{}, 0, {32, 32});
  Replicator b(1, 0, NcclUniqueId{}, 0, {32, 32});
  EXPECT_EQ(a.hash(), b.hash());
  const std::vector<ReplicaRow> row = {{1, 31, 1}};
  const Bytes one(1, std::byte{1});
  a.broadcast(row, one);
  EXPECT_NE(a.hash(), b.hash());
  b.broadcast(row, one);
  EXPECT_EQ(a.hash(), b.hash());
  EXPECT_EQ(a.hash(), documented_hash(a, {32, 32}));
  Replicator big(1, 0, NcclUniqueId{}, 0, {200'000, 5});  // several 64 KiB checksum blocks
  big.broadcast(std::vector<ReplicaRow>{{0, 131'071, 1}}, one);
  EXPECT_EQ(big.hash(), documented_hash(big, {200'000, 5}));
  Replicator c(1, 0, NcclUniqueId{}, 0, {64});  // same bytes (zeros), other page split
  Replicator d(1, 0, NcclUniqueId{}, 0, {32, 32});
  EXPECT_NE(c.hash(), d.hash());
}

TEST_F(EmulatedReplicator, ReplicasComeFromThePoolAndGoBack) {
  DeviceBackend& dev = device_backend("cuda:0");
  const std::uint64_t before = dev.pool_stats().live_blocks;
  {
    Replicator rep(1, 0, NcclUniqueId{}, 0, {100, 200, 300});
    EXPECT_EQ(dev.pool_stats().live_blocks, before + 3);
    EXPECT_GE(dev.pool_stats().requested_bytes, 600u);
  }
  EXPECT_EQ(dev.pool_stats().live_blocks, before);
}

TEST_F(EmulatedReplicator, AnOrdinalPastTheEmulatedDevicesIsUnavailable) {
  expect_error(ErrorCode::DeviceUnavailable, [] { Replicator(1, 0, NcclUniqueId{}, 1, {8}); });
}

// Ranks of an emulated group are threads of this process; each rank's constructor blocks until
// all have joined, as over NCCL.
std::vector<std::unique_ptr<Replicator>> join_group(const NcclUniqueId& id, int nranks, const std::vector<int>& ordinals,
                                                    const std::vector<std::uint64_t>& sizes) {
  std::vector<std::unique_ptr<Replicator>> reps(static_cast<std::size_t>(nranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < nranks; ++r) {
    threads.emplace_back([&, r] { reps[static_cast<std::size_t>(r)] = std::make_unique<Replicator>(nranks, r, id, ordinals[static_cast<std::size_t>(r)], sizes); });
  }
  for (std::thread& t : threads) t.join();
  return reps;
}

TEST_F(EmulatedReplicator, ThreeRanksOnTwoDevicesApplyRankZerosBatchesLikeTheModel) {
  emulate_devices(2);
  auto reps = join_group(Replicator::unique_id(), 3, {0, 1, 1}, kSizes);
  Rng rng(19);
  Model model(kSizes);
  const int ticks_per_phase = 12 / test::kSanitizerScale + 1;
  for (int phase = 1; phase <= 4; ++phase) {
    // Receivers run their ticks while rank 0 broadcasts; the replicas are compared between phases.
    std::vector<std::thread> receivers;
    for (std::size_t r = 1; r < reps.size(); ++r) {
      receivers.emplace_back([&, r] {
        for (int t = 0; t < ticks_per_phase; ++t) reps[r]->receive();
      });
    }
    for (int t = 0; t < ticks_per_phase; ++t) {
      const Batch b = random_batch(rng, kSizes);
      reps[0]->broadcast(b.rows, b.payload);
      model.apply(b);
    }
    for (std::thread& t : receivers) t.join();
    for (std::size_t r = 0; r < reps.size(); ++r) {
      SCOPED_TRACE("rank " + std::to_string(r));
      expect_matches(*reps[r], model, static_cast<std::uint64_t>(phase * ticks_per_phase));
      if (HasFatalFailure()) return;
    }
  }
  // check() is a collective: every rank calls it, and all agree.
  std::vector<int> agreed(reps.size(), -1);
  std::vector<std::thread> checkers;
  for (std::size_t r = 0; r < reps.size(); ++r) checkers.emplace_back([&, r] { agreed[r] = reps[r]->check(); });
  for (std::thread& t : checkers) t.join();
  EXPECT_EQ(agreed, std::vector<int>(reps.size(), 1));
}

TEST_F(EmulatedReplicator, RanksWithOtherPageSizesAllRefuse) {
  const NcclUniqueId id = Replicator::unique_id();
  std::string messages[2];
  std::thread other([&] {
    messages[1] = expect_error(ErrorCode::InvalidArgument, [&] { Replicator(2, 1, id, 0, {8, 9}); });
  });
  messages[0] = expect_error(ErrorCode::InvalidArgument, [&] { Replicator(2, 0, id, 0, {8, 8}); });
  other.join();
  for (const std::string& m : messages) EXPECT_NE(m.find("rank 1 has other page sizes than rank 0"), std::string::npos) << m;
}

TEST_F(EmulatedReplicator, ARankJoiningTwiceOrWithAnotherCountIsRefused) {
  const NcclUniqueId id = Replicator::unique_id();
  auto reps = join_group(id, 2, {0, 0}, {8});
  std::string msg = expect_error(ErrorCode::InvalidArgument, [&] { Replicator(3, 2, id, 0, {8}); });
  EXPECT_NE(msg.find("this unique id's group has 2 ranks, but this rank was told 3"), std::string::npos) << msg;
  msg = expect_error(ErrorCode::InvalidArgument, [&] { Replicator(2, 0, id, 0, {8}); });
  EXPECT_NE(msg.find("rank 0 of this unique id has joined already"), std::string::npos) << msg;
  // The group is untouched by the refusals.
  std::thread receiver([&] { reps[1]->receive(); });
  reps[0]->broadcast(std::vector<ReplicaRow>{{0, 2, 3}}, test::bytes_of("abc"));
  receiver.join();
  EXPECT_EQ(reps[1]->read(0), reps[0]->read(0));
  EXPECT_EQ(reps[1]->ticks(), 1u);
}

TEST_F(EmulatedReplicator, ACollectiveWhoseRanksNeverComeTimesOutAndLeavesTheReplicatorUnusable) {
  const std::chrono::milliseconds before = emulated_collective_timeout();
  set_emulated_collective_timeout(std::chrono::milliseconds(100));
  const NcclUniqueId id = Replicator::unique_id();
  std::string msg = expect_error(ErrorCode::DeviceUnavailable, [&] { Replicator(2, 0, id, 0, {8}); });
  EXPECT_NE(msg.find("for ranks that never came (1 of 2 arrived)"), std::string::npos) << msg;
  // A group whose receiver stopped coming: rank 0's next broadcast times out, and the replicator
  // refuses every later call, quoting the failure.
  const NcclUniqueId id2 = Replicator::unique_id();
  std::unique_ptr<Replicator> root;
  std::thread peer([&] {
    Replicator rank1(2, 1, id2, 0, {8});
    rank1.receive();
  });
  root = std::make_unique<Replicator>(2, 0, id2, 0, std::vector<std::uint64_t>{8});
  root->broadcast(std::vector<ReplicaRow>{{0, 0, 1}}, test::bytes_of("x"));
  peer.join();
  msg = expect_error(ErrorCode::DeviceUnavailable, [&] { root->broadcast({}, {}); });
  EXPECT_NE(msg.find("never came"), std::string::npos) << msg;
  msg = expect_error(ErrorCode::DeviceUnavailable, [&] { root->hash(); });
  EXPECT_NE(msg.find("unusable after an earlier failure"), std::string::npos) << msg;
  set_emulated_collective_timeout(before);
}

TEST(NcclReplicator, OneRankOnDeviceZeroMatchesReferenceModel) {
  if (!nccl_available()) GTEST_SKIP() << "needs NCCL and a CUDA device";
  ASSERT_EQ(emulated_devices(), 0);
  Rng rng(13);
  Replicator rep(1, 0, Replicator::unique_id(), 0, kSizes);
  run_against_model(rep, rng, 150);
}

TEST(NcclReplicator, TwoOneRankGroupsAgreeOnHashes) {
  if (!nccl_available()) GTEST_SKIP() << "needs NCCL and a CUDA device";
  Replicator a(1, 0, Replicator::unique_id(), 0, {4096, 77});
  Replicator b(1, 0, Replicator::unique_id(), 0, {4096, 77});
  Rng rng(17);
  for (int t = 0; t < 20; ++t) {
    const Batch batch = random_batch(rng, a.page_sizes());
    a.broadcast(batch.rows, batch.payload);
    b.broadcast(batch.rows, batch.payload);
    ASSERT_EQ(a.hash(), b.hash()) << "tick " << t;
  }
  EXPECT_TRUE(a.check());
}

}  // namespace
}  // namespace mmsb::cuda
