// Bus::replicate: a one-rank Replicator over the emulated device follows a set of bus pages tick
// by tick. After every tick each replica must equal its page byte for byte, whatever reached the
// page: submissions (single deltas, overlapping batch rows), the wave's derived deltas, writes and
// transactions outside ticks, rolled-back transactions. Refusals change nothing.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "TestUtil.hpp"
#include "engine/BusState.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/cuda/Replicator.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/graph/Recompute.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::random_bytes;
using test::Rng;
using test::uniform;

class BusReplicateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::uint64_t sizes[] = {64, 3000, 1, 777};
    const char* where[] = {"cpu", "cuda:0", "cpu", "cuda:0"};
    for (int i = 0; i < 4; ++i) {
      PageSpec spec;
      spec.size = sizes[i];
      spec.location = where[i];
      pages_.push_back({bus_.create_page(spec, random_bytes(rng_, sizes[i])).id, sizes[i]});
    }
    PageSpec doubles;
    doubles.size = 64;
    doubles.dtype = DType::Float64;
    for (int i = 0; i < 3; ++i) pages_.push_back({bus_.create_page(doubles).id, 64});
    // pages_[6] = pages_[4] + pages_[5]: replicated, so the wave's derived deltas must reach it.
    bus_.depend(pages_[6].first, std::vector<PageId>{pages_[4].first, pages_[5].first},
                {RecomputeKind::Reduce, SemiringKind::SumProduct, ""}, {});
    unreplicated_ = bus_.create_page(PageSpec{.size = 128}).id;
  }
  void TearDown() override {
    bus_.replicate(nullptr, {});
    replicator_.reset();
  }

  std::shared_ptr<cuda::Replicator> attach() {
    std::vector<std::uint64_t> sizes;
    std::vector<PageId> ids;
    for (const auto& [id, size] : pages_) {
      ids.push_back(id);
      sizes.push_back(size);
    }
    replicator_ = std::make_shared<cuda::Replicator>(1, 0, cuda::NcclUniqueId{}, 0, sizes);
    bus_.replicate(replicator_, ids);
    return replicator_;
  }
  ::testing::AssertionResult replicas_equal_pages() {
    for (std::size_t i = 0; i < pages_.size(); ++i) {
      const PageRecord& r = bus_.page(pages_[i].first);
      const Bytes page(bus_.host_bytes(r), bus_.host_bytes(r) + r.size);
      if (replicator_->read(i) != page) return ::testing::AssertionFailure() << "replica " << i << " differs";
    }
    return ::testing::AssertionSuccess();
  }
  Bytes doubles(Rng& rng) {
    std::vector<double> v(8);
    for (double& x : v) x = static_cast<double>(uniform(rng, 0, 1000));
    const auto* p = reinterpret_cast<const std::byte*>(v.data());
    return Bytes(p, p + 64);
  }

  Rng rng_{41};
  test::EmulatedDevices devices_{1};  // before bus_: its device pages go first
  Bus bus_{BusOptions{2}};
  std::vector<std::pair<PageId, std::uint64_t>> pages_;
  PageId unreplicated_ = 0;
  std::shared_ptr<cuda::Replicator> replicator_;
};

TEST_F(BusReplicateTest, EveryTickLeavesTheReplicasEqualToThePages) {
  attach();
  EXPECT_TRUE(replicas_equal_pages()) << "after attaching";
  const std::uint64_t ticks0 = replicator_->ticks();
  std::vector<std::pair<PageId, std::uint64_t>> targets = pages_;
  targets.emplace_back(unreplicated_, 128);
  const int kTicks = 60 / test::kSanitizerScale;
  for (int t = 0; t < kTicks; ++t) {
    for (int k = uniform(rng_, 0, 4); k > 0; --k) {
      const auto [id, size] = targets[uniform(rng_, 0, targets.size() - 1)];
      if (uniform(rng_, 0, 1) == 0) {
        const std::uint64_t off = uniform(rng_, 0, size - 1);
        bus_.submit(Delta::at(id, off, random_bytes(rng_, uniform(rng_, 1, size - off))));
      } else {
        bus_.submit(test::random_batch(rng_, targets, uniform(rng_, 1, 40), 32).view());
      }
    }
    if (uniform(rng_, 0, 2) == 0) bus_.submit(Delta::at(pages_[4].first, 0, doubles(rng_)));  // starts a wave
    switch (uniform(rng_, 0, 5)) {
      case 0:  // outside a tick: sent whole by the next one
        bus_.write(pages_[2].first, 0, random_bytes(rng_, 1));
        break;
      case 1:
        bus_.write(pages_[5].first, 0, doubles(rng_));  // and its wave, outside a tick too
        break;
      case 2:
        bus_.begin_transaction();
        bus_.write(pages_[1].first, 10, random_bytes(rng_, 100));
        bus_.rollback_transaction();
        break;
      default:
        break;
    }
    const TickReport rep = bus_.tick();
    ASSERT_TRUE(rep.replication_error.empty()) << rep.replication_error;
    ASSERT_TRUE(replicas_equal_pages()) << "after tick " << t;
  }
  EXPECT_EQ(replicator_->ticks(), ticks0 + static_cast<std::uint64_t>(kTicks)) << "one broadcast per tick";
}

TEST_F(BusReplicateTest, OnlyChangedRangesAreSent) {
  attach();
  bus_.submit(Delta::at(pages_[1].first, 100, Bytes(8, std::byte{1})));
  bus_.submit(Delta::at(unreplicated_, 0, Bytes(8, std::byte{1})));
  EXPECT_EQ(bus_.tick().replicated_rows, 1u);
  EXPECT_EQ(bus_.tick().replicated_rows, 0u);  // nothing changed: an empty broadcast
  bus_.write(pages_[3].first, 5, Bytes(3, std::byte{2}));
  EXPECT_EQ(bus_.tick().replicated_rows, 1u);  // the page written outside a tick, whole
  EXPECT_TRUE(replicas_equal_pages());
}

TEST_F(BusReplicateTest, RefusalsLeaveTheAttachmentAsItWas) {
  attach();
  const auto other = std::make_shared<cuda::Replicator>(1, 0, cuda::NcclUniqueId{}, 0, std::vector<std::uint64_t>{64, 64});
  const std::uint64_t before = other->ticks();
  const PageId p64 = pages_[0].first;
  test::expect_error(ErrorCode::InvalidArgument, [&] { bus_.replicate(other, {p64, pages_[1].first}); });  // 3000 bytes
  test::expect_error(ErrorCode::InvalidArgument, [&] { bus_.replicate(other, {p64}); });  // one page for two
  test::expect_error(ErrorCode::InvalidArgument, [&] { bus_.replicate(other, {p64, p64}); });
  test::expect_error(ErrorCode::PageNotFound, [&] { bus_.replicate(other, {p64, 9999}); });
  bus_.begin_transaction();
  test::expect_error(ErrorCode::InvalidArgument, [&] { bus_.replicate(other, {p64, pages_[4].first}); });
  bus_.rollback_transaction();
  EXPECT_EQ(other->ticks(), before) << "a refused attach broadcast something";
  // The first attachment still works, and guards its pages against deletion.
  const Lsn lsn = bus_.lsn();
  test::expect_error(ErrorCode::InvalidArgument, [&] { bus_.delete_page(pages_[0].first); });
  EXPECT_EQ(bus_.lsn(), lsn);
  bus_.submit(Delta::at(pages_[0].first, 0, Bytes(64, std::byte{9})));
  bus_.tick();
  EXPECT_TRUE(replicas_equal_pages());
  bus_.replicate(nullptr, {});
  bus_.delete_page(pages_[0].first);
}

}  // namespace
}  // namespace mmsb
