// The replication wire format: what rank 0 lays out is what a receiver reads back (rows applied
// from the body into host buffers give the reference model's bytes), with every payload on the
// page offset's 16-byte lane and zero padding; and a receiver refuses every header or row a
// hostile or broken sender could make, naming it, before any byte reaches a page.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/ReplicaWire.hpp"

namespace mmsb::cuda {
namespace {

using test::Bytes;
using test::expect_error;
using test::Rng;
using test::uniform;

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
const std::vector<std::uint64_t> kSizes = {64, 1, 4096, 333};

// Host buffers standing in for the replicas, and their addresses as wire_runs takes them.
struct Pages {
  std::vector<Bytes> bytes;
  std::vector<std::byte*> at;
  Pages() {
    for (std::uint64_t s : kSizes) bytes.emplace_back(s);
    for (Bytes& b : bytes) at.push_back(b.data());
  }
};

struct Packed {
  WireHeader header;
  std::vector<WireRow> table;
  Bytes body;
};

Packed pack(const std::vector<ReplicaRow>& rows, const Bytes& payload, std::uint64_t tick) {
  Packed p;
  p.header = plan_wire(rows, tick, p.table);
  p.body.assign(p.header.body_bytes, std::byte{0xEE});  // padding must come out zero anyway
  pack_wire(p.table, payload, p.body);
  return p;
}

// What a receiver reads of the body: its row table.
std::vector<WireRow> table_of(const Packed& p) {
  std::vector<WireRow> t(p.header.rows);
  if (!t.empty()) std::memcpy(t.data(), p.body.data(), t.size() * sizeof(WireRow));
  return t;
}

TEST(ReplicaWire, ReceiversReadBackWhatRankZeroLaidOut) {
  Rng rng(23);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<ReplicaRow> rows;
    Bytes payload;
    std::vector<Bytes> model;
    for (std::uint64_t s : kSizes) model.emplace_back(s);
    const std::uint64_t n = uniform(rng, 0, 12);
    for (std::uint64_t i = 0; i < n; ++i) {
      ReplicaRow r;
      r.page = uniform(rng, 0, kSizes.size() - 1);
      r.offset = uniform(rng, 0, kSizes[r.page]);
      r.length = uniform(rng, 0, kSizes[r.page] - r.offset);
      const Bytes data = test::random_bytes(rng, r.length);
      std::copy(data.begin(), data.end(), model[r.page].begin() + static_cast<std::ptrdiff_t>(r.offset));
      payload.insert(payload.end(), data.begin(), data.end());
      rows.push_back(r);
    }
    const Packed p = pack(rows, payload, 7);
    EXPECT_EQ(p.header.rows, n);
    EXPECT_EQ(p.header.tick, 7u);
    ASSERT_NO_THROW(check_wire_header(p.header, 7));
    const std::vector<WireRow> table = table_of(p);
    std::uint64_t end = n * sizeof(WireRow);
    for (std::size_t i = 0; i < table.size(); ++i) {
      const WireRow& w = table[i];
      EXPECT_EQ(w.page, rows[i].page);
      EXPECT_EQ(w.offset, rows[i].offset);
      EXPECT_EQ(w.length, rows[i].length);
      EXPECT_EQ(w.source % kWireLane, w.offset % kWireLane) << "row " << i;
      ASSERT_GE(w.source, end);
      EXPECT_LT(w.source - end, kWireLane) << "row " << i << ": more padding than a lane";
      for (std::uint64_t b = end; b < w.source; ++b) EXPECT_EQ(p.body[b], std::byte{0}) << "padding byte " << b;
      end = w.source + w.length;
    }
    EXPECT_EQ(end, p.header.body_bytes);
    // Applied in order from the body (overlaps resolved by order, as the model did).
    Pages pages;
    std::vector<DeviceRun> runs;
    wire_runs(table, p.header, kSizes, pages.at, runs);
    ASSERT_EQ(runs.size(), n);
    for (const DeviceRun& r : runs) {
      if (r.length > 0) std::memcpy(r.device, p.body.data() + r.host_offset, r.length);
    }
    EXPECT_EQ(pages.bytes, model) << "trial " << trial;
  }
}

TEST(ReplicaWire, HeadersOfAnotherTickOrWithMoreRowsThanTheirBodyAreRefused) {
  const auto refused = [](WireHeader h, std::uint64_t tick) {
    const std::string msg = expect_error(ErrorCode::Internal, [&] { check_wire_header(h, tick); });
    EXPECT_NE(msg.find("malformed batch header (tick " + std::to_string(h.tick)), std::string::npos) << msg;
  };
  refused({1, 32, 4}, 5);
  refused({1, 32, 6}, 5);
  refused({2, 63, 5}, 5);
  refused({kMax, kMax, 5}, 5);
  refused({kMax / 32 + 1, kMax, 5}, 5);
  EXPECT_NO_THROW(check_wire_header({2, 64, 5}, 5));
  EXPECT_NO_THROW(check_wire_header({0, 0, 5}, 5));
}

TEST(ReplicaWire, RowsOutsideTheirPageOrTheBodyAreRefusedNamingTheRowWithNothingMapped) {
  Pages pages;
  const std::uint64_t table_bytes = 2 * sizeof(WireRow);
  const WireHeader h{2, table_bytes + 100, 3};
  const WireRow good{0, 0, 8, table_bytes};
  const auto refused = [&](WireRow bad) {
    std::vector<DeviceRun> out = {{nullptr, 1, 2}};
    const std::vector<WireRow> table = {good, bad};
    const std::string msg = expect_error(ErrorCode::Internal, [&] { wire_runs(table, h, kSizes, pages.at, out); });
    EXPECT_NE(msg.find("row 1 of tick 3 does not fit"), std::string::npos) << msg;
    ASSERT_EQ(out.size(), 1u) << "runs appended before the bad row stay behind";
    EXPECT_EQ(out[0].host_offset, 1u);
  };
  refused({4, 0, 1, table_bytes});                 // no such page
  refused({kMax, 0, 1, table_bytes});
  refused({0, 65, 0, table_bytes});                // offset past the page
  refused({0, 60, 5, table_bytes});                // bytes past the page
  refused({0, 8, kMax - 4, table_bytes});          // offset + length wraps
  refused({1, 0, 2, table_bytes});                 // the 1-byte page
  refused({0, 0, 8, table_bytes - 1});             // payload inside the row table
  refused({0, 0, 8, 0});
  refused({0, 0, 8, table_bytes + 93});            // payload past the body's end
  refused({0, 0, 0, table_bytes + 101});           // an empty row starting past the body
  refused({0, 0, 8, kMax - 2});                    // source + length wraps
  // At the edges: a row ending exactly at its page's and the body's end is fine.
  std::vector<DeviceRun> out;
  const std::vector<WireRow> edge = {good, {3, 325, 8, table_bytes + 92}};
  wire_runs(edge, h, kSizes, pages.at, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].device, pages.at[3] + 325);
  EXPECT_EQ(out[1].host_offset, table_bytes + 92);
}

}  // namespace
}  // namespace mmsb::cuda
