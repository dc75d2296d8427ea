// Columnar batches: shape checks, validation against a PageTable, and partitioned parallel apply,
// which must give exactly the bytes, epochs and last lsns of applying the rows one by one.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/delta/BatchApply.hpp"
#include "mmsb/delta/DeltaBatch.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::expect_error;
using test::RefModel;
using test::Rng;
using test::uniform;

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

// Columns held by value so each test can corrupt one of them.
struct Columns {
  std::vector<PageId> ids;
  std::vector<std::uint64_t> offsets;
  std::vector<std::uint64_t> lengths;
  Bytes payload;
  DeltaBatchView view() const { return {ids, offsets, lengths, payload}; }
};
Columns three_rows() { return {{1, 2, 1}, {0, 4, 8}, {2, 3, 1}, Bytes(6)}; }

// A table of `count` live pages of `size` bytes, ids 1..count.
std::unique_ptr<PageTable> table_of(std::size_t count, std::uint64_t size) {
  auto t = std::make_unique<PageTable>();
  PageSpec spec;
  spec.size = size;
  for (std::size_t i = 0; i < count; ++i) t->create(spec);
  return t;
}

TEST(DeltaBatchShapeTest, WellFormedPasses) {
  EXPECT_NO_THROW(three_rows().view().check_shape());
  EXPECT_NO_THROW(Columns{}.view().check_shape());
}

TEST(DeltaBatchShapeTest, ColumnCountMismatch) {
  Columns c = three_rows();
  c.offsets.pop_back();
  std::string msg = expect_error(ErrorCode::InvalidDelta, [&] { c.view().check_shape(); });
  EXPECT_NE(msg.find("3 page ids, 2 offsets, 3 lengths"), std::string::npos) << msg;
  c = three_rows();
  c.lengths.push_back(0);
  expect_error(ErrorCode::InvalidDelta, [&] { c.view().check_shape(); });
}

TEST(DeltaBatchShapeTest, LengthsMustSumToPayload) {
  for (std::size_t n : {0u, 5u, 7u, 100u}) {
    Columns c = three_rows();
    c.payload.resize(n);
    const std::string msg = expect_error(ErrorCode::InvalidDelta, [&] { c.view().check_shape(); });
    EXPECT_NE(msg.find("sum to 6"), std::string::npos) << msg;
  }
}

TEST(DeltaBatchShapeTest, OffsetOverflowNamesTheRow) {
  Columns c = three_rows();
  c.offsets[1] = kMax - 1;
  const std::string msg = expect_error(ErrorCode::InvalidDelta, [&] { c.view().check_shape(); });
  EXPECT_NE(msg.find("row 1"), std::string::npos) << msg;
}

TEST(DeltaBatchShapeTest, LengthSumOverflowRejected) {
  // Lengths whose sum wraps to the payload size must not pass.
  Columns c{{1, 1}, {0, 0}, {std::uint64_t{1} << 63, (std::uint64_t{1} << 63) + 4}, Bytes(4)};
  const std::string msg = expect_error(ErrorCode::InvalidDelta, [&] { c.view().check_shape(); });
  EXPECT_NE(msg.find("lengths overflow"), std::string::npos) << msg;
}

TEST(DeltaBatchShapeTest, OffsetsPastFourGiBAreCheckedExactly) {
  // Values of 2^32 and more leave the vectorised pass for the row-by-row one: a far but valid
  // offset passes, a short payload is still named, and an overflow still names its row.
  Columns c = three_rows();
  c.offsets[2] = std::uint64_t{1} << 40;
  EXPECT_NO_THROW(c.view().check_shape());
  c.payload.resize(5);
  std::string msg = expect_error(ErrorCode::InvalidDelta, [&] { c.view().check_shape(); });
  EXPECT_NE(msg.find("sum to 6"), std::string::npos) << msg;
  c = three_rows();
  c.offsets[0] = std::uint64_t{1} << 40;
  c.offsets[2] = kMax;
  msg = expect_error(ErrorCode::InvalidDelta, [&] { c.view().check_shape(); });
  EXPECT_NE(msg.find("batch row 2 (offset"), std::string::npos) << msg;
}

TEST(DeltaBatchTest, BuilderKeepsRowsInOrder) {
  DeltaBatch b;
  b.add(3, 1, test::bytes_of("ab"));
  b.add(1, 0, {});
  b.add(3, 5, test::bytes_of("c"));
  const DeltaBatchView v = b.view();
  EXPECT_EQ(v.rows(), 3u);
  EXPECT_EQ(std::vector<PageId>(v.page_ids.begin(), v.page_ids.end()), (std::vector<PageId>{3, 1, 3}));
  EXPECT_EQ(std::vector<std::uint64_t>(v.lengths.begin(), v.lengths.end()),
            (std::vector<std::uint64_t>{2, 0, 1}));
  EXPECT_EQ(Bytes(v.payload.begin(), v.payload.end()), test::bytes_of("abc"));
  EXPECT_NO_THROW(v.check_shape());
  b.clear();
  EXPECT_EQ(b.rows(), 0u);
  EXPECT_TRUE(b.view().payload.empty());
}

// A table with pages of the given sizes (ids 1..n) and its reference model.
struct Fixture {
  std::unique_ptr<PageTable> table = std::make_unique<PageTable>();
  RefModel model;
  std::vector<std::pair<PageId, std::uint64_t>> pages;
};
Fixture make_pages(Rng& rng, std::size_t count) {
  Fixture f;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint64_t size = uniform(rng, 0, 3) == 0 ? uniform(rng, 1, 64) : uniform(rng, 65, 6000);
    PageSpec spec;
    spec.size = size;
    const PageId id = f.table->create(spec).id;
    f.model.create(id, size, /*logged=*/false);
    f.pages.emplace_back(id, size);
  }
  return f;
}

::testing::AssertionResult same_as_model(PageTable& table, const RefModel& model) {
  for (const auto& [id, want] : model.pages()) {
    const PageRecord* r = table.find(id);
    if (r == nullptr) return ::testing::AssertionFailure() << "page " << id << " missing";
    if (!std::equal(r->data, r->data + r->size, want.bytes.begin(), want.bytes.end())) {
      return ::testing::AssertionFailure() << "bytes of page " << id << " differ";
    }
    if (r->epoch.load() != want.epoch) {
      return ::testing::AssertionFailure() << "page " << id << " epoch " << r->epoch.load() << " != " << want.epoch;
    }
    if (r->last_lsn.load() != want.last_lsn) {
      return ::testing::AssertionFailure()
             << "page " << id << " last_lsn " << r->last_lsn.load() << " != " << want.last_lsn;
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(BatchApplyTest, ParallelEqualsSequentialReference) {
  for (unsigned threads : {1u, 2u, 3u}) {
    Rng rng(41);  // same pages and rows for every thread count
    Fixture f = make_pages(rng, 200);
    ThreadPool pool(threads);
    Lsn next = 1;
    for (int round = 0; round < 2; ++round) {
      const DeltaBatch batch = test::random_batch(rng, f.pages, 100'000, 64);
      validate_batch(batch.view(), *f.table);
      apply_batch(batch.view(), *f.table, next, pool);
      f.model.set_lsn(next - 1);
      f.model.apply_batch(batch.view());
      next += batch.rows();
      ASSERT_TRUE(same_as_model(*f.table, f.model)) << threads << " threads, round " << round;
    }
  }
}

TEST(BatchApplyTest, SmallBatchesAndEmptyRows) {
  Rng rng(42);
  Fixture f = make_pages(rng, 5);
  ThreadPool pool(3);
  Lsn next = 10;
  for (int round = 0; round < 200; ++round) {
    const DeltaBatch batch = test::random_batch(rng, f.pages, uniform(rng, 0, 20), 8);
    validate_batch(batch.view(), *f.table);
    apply_batch(batch.view(), *f.table, next, pool);
    f.model.set_lsn(next - 1);
    f.model.apply_batch(batch.view());
    next += batch.rows();
    ASSERT_TRUE(same_as_model(*f.table, f.model)) << "round " << round;
  }
}

TEST(BatchApplyTest, OnlyZeroLengthRows) {
  // No payload at all: every row is still one delta (epoch +1, last lsn set).
  Rng rng(43);
  Fixture f = make_pages(rng, 3);
  DeltaBatch batch;
  for (PageId id : {1u, 2u, 1u}) batch.add(id, 0, {});
  validate_batch(batch.view(), *f.table);
  ThreadPool pool(1);
  apply_batch(batch.view(), *f.table, 7, pool);
  EXPECT_EQ(f.table->get(1).epoch.load(), 2u);
  EXPECT_EQ(f.table->get(1).last_lsn.load(), 9u);
  EXPECT_EQ(f.table->get(2).epoch.load(), 1u);
  EXPECT_EQ(f.table->get(2).last_lsn.load(), 8u);
  EXPECT_EQ(f.table->get(3).epoch.load(), 0u);
}

TEST(ValidateBatchTest, AcceptsRowsEndingAtPageEnd) {
  const auto t = table_of(1, 16);
  const Columns c{{1, 1, 1}, {0, 16, 15}, {16, 0, 1}, Bytes(17)};
  EXPECT_NO_THROW(validate_batch(c.view(), *t));
}

// A payload inside the memory of a page the batch writes must be copied before the apply (the
// bus does): validation says so, and only then.
TEST(ValidateBatchTest, SaysWhenThePayloadLiesInAPageItWrites) {
  const auto t = table_of(2, 64);
  const std::vector<PageId> ids = {1, 1};
  const std::vector<std::uint64_t> offsets = {0, 32}, lengths = {4, 4};
  const auto in_page = [&](PageId id, std::uint64_t at) {
    return DeltaBatchView{ids, offsets, lengths, std::span<const std::byte>(t->get(id).data + at, 8)};
  };
  EXPECT_TRUE(validate_batch(in_page(1, 0), *t));
  EXPECT_TRUE(validate_batch(in_page(1, 56), *t));   // its last 8 bytes
  EXPECT_FALSE(validate_batch(in_page(2, 0), *t));   // a page no row writes
  const Bytes apart(8);
  EXPECT_FALSE(validate_batch(DeltaBatchView{ids, offsets, lengths, apart}, *t));
}

TEST(ValidateBatchTest, RejectsBadRowsNamingThem) {
  const auto table = table_of(3, 16);
  PageTable& t = *table;
  t.erase(3);  // deleted
  auto with_row = [](PageId id, std::uint64_t off, std::uint64_t len) {
    return Columns{{1, 2, id, 1}, {0, 0, off, 0}, {1, 1, len, 1}, Bytes(3 + len)};
  };
  std::string msg = expect_error(ErrorCode::PageNotFound, [&] { validate_batch(with_row(99, 0, 1).view(), t); });
  EXPECT_NE(msg.find("row 2"), std::string::npos) << msg;
  msg = expect_error(ErrorCode::PageNotFound, [&] { validate_batch(with_row(3, 0, 1).view(), t); });
  EXPECT_NE(msg.find("deleted"), std::string::npos) << msg;
  expect_error(ErrorCode::PageNotFound, [&] { validate_batch(with_row(0, 0, 1).view(), t); });
  msg = expect_error(ErrorCode::InvalidDelta, [&] { validate_batch(with_row(2, 10, 7).view(), t); });
  EXPECT_NE(msg.find("row 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[10, 17)"), std::string::npos) << msg;
  expect_error(ErrorCode::InvalidDelta, [&] { validate_batch(with_row(2, 17, 0).view(), t); });
  Columns bad_shape = with_row(1, 0, 1);
  bad_shape.payload.pop_back();
  expect_error(ErrorCode::InvalidDelta, [&] { validate_batch(bad_shape.view(), t); });
  // Validation changed nothing.
  EXPECT_EQ(t.get(1).epoch.load(), 0u);
  EXPECT_EQ(t.get(2).epoch.load(), 0u);
}

}  // namespace
}  // namespace mmsb
