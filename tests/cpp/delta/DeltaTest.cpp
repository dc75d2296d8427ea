// Delta constructors on fixed inputs: each natural form gives the canonical runs, and malformed
// input is rejected with InvalidDelta.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/delta/Delta.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::bytes_of;
using test::expect_error;
using test::is_canonical;

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

std::vector<Run> runs_of(std::initializer_list<Run> r) { return r; }

TEST(DeltaAtTest, OneRunWithPayload) {
  const Bytes data = bytes_of("hello");
  const Delta d = Delta::at(7, 10, data);
  EXPECT_EQ(d.page_id(), 7u);
  EXPECT_EQ(d.run_list(), runs_of({{10, 5}}));
  EXPECT_EQ(Bytes(d.payload().begin(), d.payload().end()), data);
  EXPECT_EQ(d.extent(), 15u);
  EXPECT_FALSE(d.empty());
  EXPECT_TRUE(is_canonical(d));
}

TEST(DeltaAtTest, EmptyDataGivesEmptyDelta) {
  const Delta d = Delta::at(1, 1000, {});
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(d.extent(), 0u);
  EXPECT_TRUE(is_canonical(d));
}

// An empty write still names a position: reach() keeps it, so a bus refuses one past the page.
TEST(DeltaAtTest, AnEmptyRunKeepsItsPositionAsTheReach) {
  EXPECT_EQ(Delta::at(1, 1000, {}).reach(), 1000u);
  EXPECT_EQ(Delta::at(1, 10, bytes_of("ab")).reach(), 12u);
  const std::vector<std::uint64_t> offsets = {0, 70}, lengths = {1, 0};
  const Delta runs = Delta::runs(1, offsets, lengths, bytes_of("x"));
  EXPECT_EQ(runs.extent(), 1u);
  EXPECT_EQ(runs.reach(), 70u);
  EXPECT_EQ(merge(Delta::at(1, 0, bytes_of("ab")), Delta::at(1, 90, {})).reach(), 90u);
  Delta reused = Delta::at(1, 500, {});
  Delta::diff_into(reused, 1, bytes_of("ab"), bytes_of("ac"));
  EXPECT_EQ(reused.reach(), reused.extent());  // a diff names only what it writes
  Delta::at_into(reused, 1, 3, {});
  EXPECT_EQ(reused.reach(), 3u);
}

TEST(DeltaAtTest, OverflowRejected) {
  const Bytes data(4);
  expect_error(ErrorCode::InvalidDelta, [&] { Delta::at(1, kMax - 2, data); });
  const Delta edge = Delta::at(1, kMax - 4, data);  // ends exactly at 2^64 - 1
  EXPECT_EQ(edge.extent(), kMax);
}

TEST(DeltaAtTest, DefaultsBeforeCommit) {
  const Delta d = Delta::at(1, 0, bytes_of("x"));
  EXPECT_FALSE(d.expect_epoch.has_value());
  EXPECT_EQ(d.source, Source::User);
  EXPECT_EQ(d.lsn, 0u);
  EXPECT_EQ(d.epoch, 0u);
}


// A reused delta (Bus::write keeps one) must equal a fresh one: nothing of the previous write's
// runs, payload or commit fields survives, and a refused write leaves the previous delta whole.
TEST(DeltaAtTest, AtIntoAReusedDeltaEqualsAFreshOneAndARefusalChangesNothing) {
  Delta d = Delta::at(3, 0, bytes_of("a much longer first payload"));
  d.expect_epoch = 9;
  d.source = Source::Remote;
  d.timestamp_ns = 5;
  d.lsn = 7;
  d.epoch = 8;
  Delta::at_into(d, 4, 100, bytes_of("xy"));
  const Delta fresh = Delta::at(4, 100, bytes_of("xy"));
  EXPECT_EQ(d.page_id(), fresh.page_id());
  EXPECT_EQ(d.run_list(), fresh.run_list());
  EXPECT_EQ(Bytes(d.payload().begin(), d.payload().end()), bytes_of("xy"));
  EXPECT_FALSE(d.expect_epoch.has_value());
  EXPECT_EQ(d.source, Source::User);
  EXPECT_EQ(d.timestamp_ns, 0u);
  EXPECT_EQ(d.lsn, 0u);
  EXPECT_EQ(d.epoch, 0u);
  EXPECT_TRUE(is_canonical(d));

  d.lsn = 11;
  expect_error(ErrorCode::InvalidDelta, [&] { Delta::at_into(d, 5, kMax - 1, bytes_of("abc")); });
  EXPECT_EQ(d.page_id(), 4u);
  EXPECT_EQ(d.run_list(), fresh.run_list());
  EXPECT_EQ(Bytes(d.payload().begin(), d.payload().end()), bytes_of("xy"));
  EXPECT_EQ(d.lsn, 11u);

  Delta::at_into(d, 4, 100, {});
  EXPECT_TRUE(d.empty());
  EXPECT_TRUE(d.payload().empty());
}
TEST(DeltaRunsTest, SortedTouchingRunsMerge) {
  const std::vector<std::uint64_t> off = {0, 3, 10};
  const std::vector<std::uint64_t> len = {3, 2, 1};
  const Bytes payload = bytes_of("abcdez");
  const Delta d = Delta::runs(2, off, len, payload);
  EXPECT_EQ(d.run_list(), runs_of({{0, 5}, {10, 1}}));
  EXPECT_EQ(Bytes(d.payload().begin(), d.payload().end()), payload);
  EXPECT_TRUE(is_canonical(d));
}

TEST(DeltaRunsTest, ZeroLengthRunsVanish) {
  const std::vector<std::uint64_t> off = {5, 0, 9, 50};
  const std::vector<std::uint64_t> len = {0, 2, 0, 0};
  const Delta d = Delta::runs(2, off, len, bytes_of("ab"));
  EXPECT_EQ(d.run_list(), runs_of({{0, 2}}));
  EXPECT_TRUE(is_canonical(d));
}

TEST(DeltaRunsTest, OverlapResolvesToLastWriter) {
  // "aaaa" at 0, then "bb" at 2, then "c" at 1: bytes a c b b.
  const std::vector<std::uint64_t> off = {0, 2, 1};
  const std::vector<std::uint64_t> len = {4, 2, 1};
  const Delta d = Delta::runs(3, off, len, bytes_of("aaaabbc"));
  EXPECT_EQ(d.run_list(), runs_of({{0, 4}}));
  EXPECT_EQ(Bytes(d.payload().begin(), d.payload().end()), bytes_of("acbb"));
}

TEST(DeltaRunsTest, UnsortedDisjointRunsAreSorted) {
  const std::vector<std::uint64_t> off = {20, 0, 10};
  const std::vector<std::uint64_t> len = {1, 2, 3};
  const Delta d = Delta::runs(3, off, len, bytes_of("zabxyw"));
  EXPECT_EQ(d.run_list(), runs_of({{0, 2}, {10, 3}, {20, 1}}));
  EXPECT_EQ(Bytes(d.payload().begin(), d.payload().end()), bytes_of("abxywz"));
}

TEST(DeltaRunsTest, MalformedColumnsRejected) {
  const Bytes three(3);
  const std::vector<std::uint64_t> one = {0};
  const std::vector<std::uint64_t> two = {0, 1};
  const std::vector<std::uint64_t> len3 = {3};
  const std::vector<std::uint64_t> len2 = {2};
  const std::vector<std::uint64_t> len4 = {4};
  expect_error(ErrorCode::InvalidDelta, [&] { Delta::runs(1, two, len3, three); });
  expect_error(ErrorCode::InvalidDelta, [&] { Delta::runs(1, one, len2, three); });
  expect_error(ErrorCode::InvalidDelta, [&] { Delta::runs(1, one, len4, three); });
  const std::vector<std::uint64_t> far = {kMax - 1};
  expect_error(ErrorCode::InvalidDelta, [&] { Delta::runs(1, far, len3, three); });
  // Lengths whose sum wraps around to the payload size must not pass as valid.
  const std::vector<std::uint64_t> zeros = {0, 0};
  const std::vector<std::uint64_t> wrap = {kMax, 4};
  expect_error(ErrorCode::InvalidDelta, [&] { Delta::runs(1, zeros, wrap, three); });
}

TEST(DeltaMaskedTest, DensePayloadTakesMarkedPositions) {
  const std::vector<std::uint8_t> mask = {0, 1, 1, 0, 7, 0};
  const Delta d = Delta::masked(4, mask, bytes_of("abcdef"));
  EXPECT_EQ(d.run_list(), runs_of({{1, 2}, {4, 1}}));
  EXPECT_EQ(Bytes(d.payload().begin(), d.payload().end()), bytes_of("bce"));
  EXPECT_TRUE(is_canonical(d));
}

TEST(DeltaMaskedTest, SparsePayloadFillsMarkedPositionsInOrder) {
  const std::vector<std::uint8_t> mask = {0, 1, 1, 0, 1, 0};
  const Delta d = Delta::masked(4, mask, bytes_of("xyz"));
  EXPECT_EQ(d.run_list(), runs_of({{1, 2}, {4, 1}}));
  EXPECT_EQ(Bytes(d.payload().begin(), d.payload().end()), bytes_of("xyz"));
}

TEST(DeltaMaskedTest, AllOrNothingMasks) {
  const std::vector<std::uint8_t> none(8, 0);
  EXPECT_TRUE(Delta::masked(1, none, {}).empty());
  EXPECT_TRUE(Delta::masked(1, none, Bytes(8)).empty());
  const std::vector<std::uint8_t> all(8, 1);
  const Delta d = Delta::masked(1, all, bytes_of("01234567"));
  EXPECT_EQ(d.run_list(), runs_of({{0, 8}}));
}

TEST(DeltaMaskedTest, WrongPayloadSizeRejected) {
  const std::vector<std::uint8_t> mask = {1, 0, 1, 0};
  for (std::size_t n : {0u, 1u, 3u, 5u}) {
    const std::string msg = expect_error(ErrorCode::InvalidDelta, [&] { Delta::masked(1, mask, Bytes(n)); });
    EXPECT_NE(msg.find("needs 4"), std::string::npos) << msg;
  }
}

TEST(DeltaMaskedPackedTest, BitIOfByteJMarksPosition8jPlusI) {
  // Byte 0 = 0b0000'0101: positions 0 and 2; byte 1 = 0b1000'0000: position 15.
  const std::vector<std::uint8_t> bits = {0x05, 0x80};
  const Delta d = Delta::masked_packed(1, bits, 16, bytes_of("abc"));
  EXPECT_EQ(d.run_list(), runs_of({{0, 1}, {2, 1}, {15, 1}}));
  EXPECT_EQ(Bytes(d.payload().begin(), d.payload().end()), bytes_of("abc"));
  const Bytes dense = bytes_of("ABCDEFGHIJKLMNOP");
  const Delta dd = Delta::masked_packed(1, bits, 16, dense);
  EXPECT_EQ(Bytes(dd.payload().begin(), dd.payload().end()), bytes_of("ACP"));
}

TEST(DeltaMaskedPackedTest, ClearBitsPastExtentAreFine) {
  const std::vector<std::uint8_t> bits = {0x03};
  const Delta d = Delta::masked_packed(1, bits, 5, bytes_of("ab"));
  EXPECT_EQ(d.run_list(), runs_of({{0, 2}}));
  const Delta dense = Delta::masked_packed(1, bits, 5, bytes_of("vwxyz"));
  EXPECT_EQ(Bytes(dense.payload().begin(), dense.payload().end()), bytes_of("vw"));
}

TEST(DeltaMaskedPackedTest, SetBitsPastExtentRejected) {
  const std::vector<std::uint8_t> bits = {0x21};  // positions 0 and 5
  const std::string msg =
      expect_error(ErrorCode::InvalidDelta, [&] { Delta::masked_packed(1, bits, 5, bytes_of("ab")); });
  EXPECT_NE(msg.find("position 5"), std::string::npos) << msg;
  EXPECT_NO_THROW(Delta::masked_packed(1, bits, 6, bytes_of("ab")));
}

TEST(DeltaMaskedPackedTest, ExtentBeyondMaskRejected) {
  const std::vector<std::uint8_t> bits = {0x01};
  expect_error(ErrorCode::InvalidDelta, [&] { Delta::masked_packed(1, bits, 9, bytes_of("a")); });
}

TEST(DeltaDiffTest, ChangedBytesOnly) {
  const Bytes old = bytes_of("the quick brown fox jumps over the lazy dog........................");
  Bytes now = old;
  now[4] = std::byte{'Q'};
  now[old.size() - 1] = std::byte{'!'};
  const Delta d = Delta::diff(9, old, now);
  EXPECT_EQ(d.page_id(), 9u);
  EXPECT_EQ(d.run_list(), runs_of({{4, 1}, {old.size() - 1, 1}}));
  EXPECT_EQ(test::applied(d, old), now);
  EXPECT_TRUE(is_canonical(d));
}

TEST(DeltaDiffTest, IdenticalAndEmptyBuffersGiveEmptyDelta) {
  const Bytes a = bytes_of("same bytes, same bytes, same bytes, same bytes");
  EXPECT_TRUE(Delta::diff(1, a, a).empty());
  EXPECT_TRUE(Delta::diff(1, {}, {}).empty());
}

TEST(DeltaDiffTest, LengthMismatchRejected) {
  expect_error(ErrorCode::InvalidDelta, [] { Delta::diff(1, Bytes(4), Bytes(5)); });
}

TEST(DeltaMergeTest, SecondWinsWhereTheyOverlap) {
  const Delta a = Delta::at(5, 0, bytes_of("aaaa"));
  const Delta b = Delta::at(5, 2, bytes_of("bbbb"));
  const Delta m = merge(a, b);
  EXPECT_EQ(m.page_id(), 5u);
  EXPECT_EQ(m.run_list(), runs_of({{0, 6}}));
  EXPECT_EQ(Bytes(m.payload().begin(), m.payload().end()), bytes_of("aabbbb"));
  EXPECT_TRUE(is_canonical(m));
}

TEST(DeltaMergeTest, KeepsFirstCommitConditions) {
  Delta a = Delta::at(5, 0, bytes_of("a"));
  a.expect_epoch = 3;
  a.source = Source::Remote;
  const Delta m = merge(a, Delta::at(5, 9, bytes_of("b")));
  EXPECT_EQ(m.expect_epoch, std::optional<Epoch>(3));
  EXPECT_EQ(m.source, Source::Remote);
}

TEST(DeltaMergeTest, DifferentPagesRejected) {
  const std::string msg = expect_error(ErrorCode::InvalidDelta, [] {
    merge(Delta::at(1, 0, bytes_of("a")), Delta::at(2, 0, bytes_of("b")));
  });
  EXPECT_NE(msg.find("pages 1 and 2"), std::string::npos) << msg;
}

TEST(DeltaApplyTest, WritesOnlyTheRuns) {
  const std::vector<std::uint64_t> off = {1, 6};
  const std::vector<std::uint64_t> len = {2, 1};
  const Delta d = Delta::runs(1, off, len, bytes_of("xyz"));
  EXPECT_EQ(test::applied(d, bytes_of("........")), bytes_of(".xy...z."));
}

}  // namespace
}  // namespace mmsb
