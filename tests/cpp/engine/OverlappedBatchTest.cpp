// Large batches in flush and none mode are written on the log's writer thread, which begins the
// record's checksum over the payload while the batch is still being validated (Log::sum_ahead).
// A batch that fails validation must leave nothing of that behind: no run still reading the
// caller's payload once apply_batch has thrown (TSan sees the caller's write after the throw
// racing with it otherwise, ASan a read of freed memory), and no checksum kept for a later batch
// that reuses the same buffer (its record would then fail its CRC at recovery).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "log/LogTestUtil.hpp"

namespace mmsb {
namespace {

class OverlappedBatch : public ::testing::TestWithParam<Durability> {
 protected:
  static constexpr std::uint64_t kPageBytes = std::uint64_t{1} << 20;
  static constexpr std::size_t kRows = 16384;  // 64-byte rows: a 1 MiB payload, well over kOverlapBytes

  // A batch of kRows 64-byte rows over `pages`, its payload in `payload` (which it views);
  // with `bad_last_row`, the last row names a page that does not exist.
  static DeltaBatchView batch_over(const std::vector<PageId>& pages, std::vector<PageId>& ids,
                                   std::vector<std::uint64_t>& offsets, std::vector<std::uint64_t>& lengths,
                                   const std::vector<std::byte>& payload, bool bad_last_row) {
    ids.assign(kRows, 0);
    offsets.assign(kRows, 0);
    lengths.assign(kRows, 64);
    for (std::size_t i = 0; i < kRows; ++i) {
      ids[i] = pages[i % pages.size()];
      offsets[i] = (i / pages.size()) * 64 % kPageBytes;
    }
    if (bad_last_row) ids.back() = 999'999;
    return DeltaBatchView{ids, offsets, lengths, payload};
  }
};

TEST_P(OverlappedBatch, AFailedBatchLeavesNoChecksumReadingItsPayload) {
  test::TempDir tmp;
  Bus bus(test::dir_options(tmp.path(), GetParam()));
  const std::vector<PageId> pages = {bus.create_page(PageSpec{kPageBytes}).id,
                                     bus.create_page(PageSpec{kPageBytes}).id};
  std::vector<PageId> ids;
  std::vector<std::uint64_t> offsets, lengths;
  test::Rng rng(3);
  for (int round = 0; round < 20; ++round) {
    auto payload = std::make_unique<std::vector<std::byte>>(test::random_bytes(rng, kRows * 64));
    const Lsn before = bus.lsn();
    try {
      bus.apply_batch(batch_over(pages, ids, offsets, lengths, *payload, /*bad_last_row=*/true));
      FAIL() << "a batch naming a missing page was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::PageNotFound) << e.what();
    }
    // The caller owns its buffer again: it overwrites it, then frees it.
    std::memset(payload->data(), round, payload->size());
    payload.reset();
    EXPECT_EQ(bus.lsn(), before);
  }
  bus.close();
  Bus reopened(test::dir_options(tmp.path(), GetParam(), /*must_exist=*/true));
  EXPECT_EQ(reopened.lsn(), 2u);  // the two creates; no batch record
}

TEST_P(OverlappedBatch, ABufferReusedAfterAFailedBatchIsChecksummedAfresh) {
  test::TempDir tmp;
  std::vector<std::byte> want(kPageBytes);
  {
    Bus bus(test::dir_options(tmp.path(), GetParam()));
    const std::vector<PageId> pages = {bus.create_page(PageSpec{kPageBytes}).id};
    std::vector<PageId> ids;
    std::vector<std::uint64_t> offsets, lengths;
    test::Rng rng(4);
    std::vector<std::byte> payload = test::random_bytes(rng, kRows * 64);
    EXPECT_THROW(bus.apply_batch(batch_over(pages, ids, offsets, lengths, payload, /*bad_last_row=*/true)), Error);
    // The same buffer, other bytes, every row valid now.
    for (std::byte& b : payload) b = ~b;
    bus.apply_batch(batch_over(pages, ids, offsets, lengths, payload, /*bad_last_row=*/false));
    bus.snapshot(pages[0], want);
    bus.close();
  }
  Bus reopened(test::dir_options(tmp.path(), GetParam(), /*must_exist=*/true));
  EXPECT_FALSE(reopened.recovery().truncated_tail) << reopened.recovery().tail_reason;
  std::vector<std::byte> got(kPageBytes);
  reopened.snapshot(1, got);
  EXPECT_EQ(got, want);
  EXPECT_TRUE(reopened.verify().ok);
}

std::string mode_name(const ::testing::TestParamInfo<Durability>& p) {
  return p.param == Durability::Flush ? "flush" : "none";
}
INSTANTIATE_TEST_SUITE_P(Durability, OverlappedBatch, ::testing::Values(Durability::Flush, Durability::None), mode_name);

}  // namespace
}  // namespace mmsb
