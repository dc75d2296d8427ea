// RecordIndex: finds the record holding each looked-up lsn and where it is, against a plain map
// of every lsn to its record as the oracle, through random appends over many chunks, appends
// that reuse lsns (after a failed write) and drops of old chunks (retention).
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/log/LogFormat.hpp"
#include "mmsb/log/RecordIndex.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::Rng;
using test::uniform;

// A framed record taking `count` lsns from `first`, with a body of `body` bytes (the index reads
// only the framing).
void frame(Bytes& out, Lsn first, std::uint32_t count, std::size_t body) {
  logfmt::RecordBuilder rb(out, count == 0 ? logfmt::RecordType::Transaction : logfmt::RecordType::Batch, count,
                           first);
  for (std::size_t i = 0; i < body; ++i) rb.writer().u8(static_cast<std::uint8_t>(i));
  rb.finish();
}

struct Where {
  Lsn first;
  std::uint64_t chunk;
  std::uint64_t offset;
  bool operator==(const Where&) const = default;
};

// The oracle: every lsn -> the record holding it. Appends go to the chunk `chunk` at `end`.
struct Model {
  std::map<Lsn, Where> by_lsn;
  Lsn next = 1;
  std::uint64_t chunk = 7;
  std::uint64_t end = 0;

  // One append of one to three records (some taking no lsn).
  void append(RecordIndex& index, Rng& rng) {
    Bytes framed;
    std::vector<std::pair<Lsn, Where>> noted;
    for (int k = 0, n = static_cast<int>(uniform(rng, 1, 3)); k < n; ++k) {
      const auto count = static_cast<std::uint32_t>(uniform(rng, 0, 4) == 0 ? 0 : uniform(rng, 1, 50));
      const std::size_t at = framed.size();
      frame(framed, next, count, uniform(rng, 0, 40));
      for (Lsn l = next; l < next + count; ++l) noted.push_back({l, {next, chunk, end + at}});
      next += count;
    }
    index.add(chunk, end, framed);
    for (const auto& [l, w] : noted) by_lsn[l] = w;
    end += framed.size();
  }

  // An append that failed or was cut back: lsns from a record's start on are written again later.
  void forget_from(Lsn lsn) {
    const Lsn first = by_lsn.at(lsn).first;
    by_lsn.erase(by_lsn.lower_bound(first), by_lsn.end());
    next = first;
  }
};

std::vector<std::pair<Where, std::vector<Lsn>>> lookup(const RecordIndex& index, const std::vector<Lsn>& lsns) {
  std::vector<std::pair<Where, std::vector<Lsn>>> out;
  index.for_each_record(lsns, [&](const RecordIndex::Location& at, std::span<const Lsn> held) {
    out.push_back({{at.first_lsn, at.chunk, at.offset}, {held.begin(), held.end()}});
  });
  return out;
}

std::vector<std::pair<Where, std::vector<Lsn>>> expected(const Model& m, const std::vector<Lsn>& lsns) {
  std::vector<std::pair<Where, std::vector<Lsn>>> out;
  for (Lsn l : lsns) {
    const Where& w = m.by_lsn.at(l);
    if (out.empty() || !(out.back().first == w)) out.push_back({w, {}});
    out.back().second.push_back(l);
  }
  return out;
}

TEST(RecordIndexTest, FindsTheRecordOfEveryLsnLikeAMapOfAllOfThem) {
  Rng rng(3);
  RecordIndex index;
  Model m;
  for (int step = 0; step < 3000; ++step) {
    const auto what = uniform(rng, 0, 99);
    if (what < 3) {  // a new segment or block
      m.chunk += uniform(rng, 1, 5);
      m.end = logfmt::kSegmentHeaderBytes;
    } else if (what < 5 && m.next > 100) {
      // Lsns reused after a failed append, by records written further on.
      m.forget_from(m.next - uniform(rng, 1, 60));
      m.end += 8 * uniform(rng, 1, 10);
      m.append(index, rng);
    } else {
      m.append(index, rng);
    }
    if (step % 100 == 99 && !m.by_lsn.empty()) {
      std::set<Lsn> pick;
      for (int k = 0, n = static_cast<int>(uniform(rng, 1, 40)); k < n; ++k) {
        pick.insert(uniform(rng, m.by_lsn.begin()->first, m.by_lsn.rbegin()->first));
      }
      const std::vector<Lsn> lsns(pick.begin(), pick.end());
      ASSERT_EQ(lookup(index, lsns), expected(m, lsns)) << "step " << step;
    }
  }
  EXPECT_GT(index.size(), 1000u);
  EXPECT_GE(index.bytes(), index.size() * 12);
}

TEST(RecordIndexTest, DropBeforeForgetsOldRecordsAndKeepsTheRest) {
  Rng rng(5);
  RecordIndex index;
  Model m;
  for (int seg = 0; seg < 6; ++seg) {
    m.chunk = m.next;  // segments are named by their first lsn
    m.end = logfmt::kSegmentHeaderBytes;
    for (int k = 0; k < 20; ++k) m.append(index, rng);
  }
  const std::uint64_t before = index.bytes();
  const Lsn cut = m.by_lsn.upper_bound(m.next / 2)->second.first;  // a record's first lsn
  index.drop_before(cut);
  EXPECT_LT(index.bytes(), before);
  std::vector<Lsn> lsns;
  for (const auto& [l, w] : m.by_lsn) {
    if (l >= cut) lsns.push_back(l);
  }
  EXPECT_EQ(lookup(index, lsns), expected(m, lsns));
  const std::string msg = test::expect_error(ErrorCode::HistoryUnavailable, [&] { lookup(index, {cut - 1}); });
  EXPECT_NE(msg.find("lsn " + std::to_string(cut - 1)), std::string::npos) << msg;
  index.drop_before(m.next + 100);  // everything
  EXPECT_TRUE(index.empty());
  test::expect_error(ErrorCode::HistoryUnavailable, [&] { lookup(index, {1}); });
  Bytes framed;
  frame(framed, m.next, 3, 0);  // and it starts over
  index.add(99, 64, framed);
  EXPECT_EQ(lookup(index, {m.next, m.next + 2}), (std::vector<std::pair<Where, std::vector<Lsn>>>{
                                                      {{m.next, 99, 64}, {m.next, m.next + 2}}}));
}

TEST(RecordIndexTest, RecordsTakingNoLsnAreNotIndexedAndBadFramingIsRefused) {
  RecordIndex index;
  Bytes framed;
  frame(framed, 1, 0, 8);  // an empty transaction: no lsn to look up
  frame(framed, 1, 2, 5);
  index.add(1, logfmt::kSegmentHeaderBytes, framed);
  EXPECT_EQ(index.size(), 1u);
  const auto found = lookup(index, {1, 2});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].first.offset, logfmt::kSegmentHeaderBytes + 32u);  // after the 24 + 8 bytes of the first
  const RecordIndex copy = index;
  const Bytes torn(framed.begin(), framed.begin() + 20);
  test::expect_error(ErrorCode::Internal, [&] { index.add(1, 1000, torn); });
  test::expect_error(ErrorCode::Internal, [&] { index.add(1, 1001, framed); });  // not 8-aligned
  EXPECT_EQ(lookup(index, {1, 2}), lookup(copy, {1, 2}));
}

}  // namespace
}  // namespace mmsb
