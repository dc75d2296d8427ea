// Every failing Bus call must throw the right ErrorCode and leave the bus exactly as it was:
// bytes, epochs, last lsns, names, metadata, lsn and counters (compared as a full snapshot).
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "engine/BusState.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/cuda/Cuda.hpp"
#include "mmsb/engine/Bus.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::bytes_of;

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

class BusErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PageSpec named;
    named.size = 16;
    named.name = "alpha";
    named.metadata["k"] = MetaValue{"v", false};
    a_ = bus_.create_page(named, bytes_of("0123456789abcdef")).id;
    PageSpec plain;
    plain.size = 64;
    b_ = bus_.create_page(plain).id;
    bus_.write(b_, 5, bytes_of("hello"));
    deleted_ = bus_.create_page(plain).id;
    bus_.delete_page(deleted_);
    records_ = {&bus_.page(a_), &bus_.page(b_)};
  }

  // Runs fn, expecting `code`, and checks the whole bus is unchanged; returns the message.
  std::string expect_unchanged(ErrorCode code, const std::function<void()>& fn) {
    const test::BusState before = state();
    const std::string msg = test::expect_error(code, fn);
    EXPECT_TRUE(test::same_state(before, state())) << "after: " << msg;
    return msg;
  }
  test::BusState state() { return bus_.closed() ? test::capture(bus_, records_) : test::capture(bus_); }

  // A batch of 101 valid rows over both pages with row 50 replaced.
  DeltaBatch batch_with_bad_row(PageId id, std::uint64_t offset, std::uint64_t len) {
    DeltaBatch batch;
    for (int i = 0; i < 101; ++i) {
      if (i == 50) {
        batch.add(id, offset, Bytes(len, std::byte{0xEE}));
      } else {
        batch.add(i % 2 == 0 ? a_ : b_, i % 8, bytes_of("zz"));
      }
    }
    return batch;
  }

  Bus bus_{BusOptions{2}};
  PageId a_ = 0;
  PageId b_ = 0;
  PageId deleted_ = 0;
  std::vector<PageRecord*> records_;
};

TEST_F(BusErrorTest, UnknownPage) {
  const PageId unknown = 1000;
  const Bytes one = bytes_of("x");
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.write(unknown, 0, one); });
  expect_unchanged(ErrorCode::PageNotFound, [&] {
    Delta d = Delta::at(unknown, 0, one);
    bus_.apply(d);
  });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.update(unknown, Bytes(16)); });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.delete_page(unknown); });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.set_metadata(unknown, "k", MetaValue{"v", false}); });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.page(unknown); });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.page_info(unknown); });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.pin(unknown); });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.write(0, 0, one); });
  const DeltaBatch batch = batch_with_bad_row(unknown, 0, 1);
  const std::string msg = expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.apply_batch(batch.view()); });
  EXPECT_NE(msg.find("row 50"), std::string::npos) << msg;
}

TEST_F(BusErrorTest, DeletedPage) {
  const Bytes one = bytes_of("x");
  const std::string msg = expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.write(deleted_, 0, one); });
  EXPECT_NE(msg.find("deleted"), std::string::npos) << msg;
  expect_unchanged(ErrorCode::PageNotFound, [&] {
    Delta d = Delta::at(deleted_, 0, one);
    bus_.apply(d);
  });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.update(deleted_, Bytes(64)); });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.delete_page(deleted_); });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.set_metadata(deleted_, "k", std::nullopt); });
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.pin(deleted_); });
  const DeltaBatch batch = batch_with_bad_row(deleted_, 0, 1);
  expect_unchanged(ErrorCode::PageNotFound, [&] { bus_.apply_batch(batch.view()); });
}

TEST_F(BusErrorTest, OutOfBoundsDelta) {
  expect_unchanged(ErrorCode::InvalidDelta, [&] { bus_.write(a_, 15, bytes_of("xy")); });
  expect_unchanged(ErrorCode::InvalidDelta, [&] { bus_.write(a_, 16, bytes_of("x")); });
  expect_unchanged(ErrorCode::InvalidDelta, [&] { bus_.write(a_, kMax - 1, bytes_of("xyz")); });
  expect_unchanged(ErrorCode::InvalidDelta, [&] {
    // The first run fits, the second does not: nothing may be written.
    const std::vector<std::uint64_t> off = {0, 60};
    const std::vector<std::uint64_t> len = {2, 8};
    Delta d = Delta::runs(a_, off, len, Bytes(10, std::byte{1}));
    bus_.apply(d);
  });
  const DeltaBatch batch = batch_with_bad_row(b_, 60, 5);
  const std::string msg = expect_unchanged(ErrorCode::InvalidDelta, [&] { bus_.apply_batch(batch.view()); });
  EXPECT_NE(msg.find("row 50"), std::string::npos) << msg;
}

TEST_F(BusErrorTest, EmptyWritePastTheEndRejectedLikeABatchRow) {
  // A zero-length batch row at offset 17 of a 16-byte page is rejected as out of bounds; the
  // same delta through write() must be too (the design rejects any delta out of bounds).
  const DeltaBatch batch = batch_with_bad_row(a_, 17, 0);
  expect_unchanged(ErrorCode::InvalidDelta, [&] { bus_.apply_batch(batch.view()); });
  expect_unchanged(ErrorCode::InvalidDelta, [&] { bus_.write(a_, 17, {}); });
}

TEST_F(BusErrorTest, MalformedBatch) {
  const std::vector<PageId> ids = {a_, b_, a_};
  const std::vector<std::uint64_t> offsets = {0, 0, 0};
  const std::vector<std::uint64_t> short_offsets = {0, 0};
  const std::vector<std::uint64_t> lengths = {1, 1, 1};
  const Bytes three(3);
  const Bytes four(4);
  expect_unchanged(ErrorCode::InvalidDelta,
                   [&] { bus_.apply_batch(DeltaBatchView{ids, short_offsets, lengths, three}); });
  expect_unchanged(ErrorCode::InvalidDelta, [&] { bus_.apply_batch(DeltaBatchView{ids, offsets, lengths, four}); });
}

TEST_F(BusErrorTest, EpochConflict) {
  const Epoch now = bus_.page(a_).epoch.load();
  const std::string msg =
      expect_unchanged(ErrorCode::EpochConflict, [&] { bus_.write(a_, 0, bytes_of("x"), now + 1); });
  EXPECT_NE(msg.find("epoch " + std::to_string(now)), std::string::npos) << msg;
  expect_unchanged(ErrorCode::EpochConflict, [&] { bus_.write(a_, 0, bytes_of("x"), now - 1); });
  expect_unchanged(ErrorCode::EpochConflict, [&] {
    Delta d = Delta::at(a_, 0, bytes_of("x"));
    d.expect_epoch = 99;
    bus_.apply(d);
  });
  expect_unchanged(ErrorCode::EpochConflict, [&] { bus_.update(a_, Bytes(16), now + 5); });
  // An update that would change nothing still honours expect_epoch.
  expect_unchanged(ErrorCode::EpochConflict, [&] { bus_.update(a_, bytes_of("0123456789abcdef"), now + 5); });
}

TEST_F(BusErrorTest, BadCreate) {
  PageSpec dup;
  dup.size = 8;
  dup.name = "alpha";
  std::string msg = expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.create_page(dup); });
  EXPECT_NE(msg.find("alpha"), std::string::npos) << msg;
  PageSpec spec;
  spec.size = 8;
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.create_page(spec, Bytes(7)); });
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.create_page(spec, Bytes(9)); });
  PageSpec zero;
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.create_page(zero); });
  PageSpec device = spec;
  device.location = "cuda:" + std::to_string(cuda::device_count());  // one past the last device, GPU or not
  expect_unchanged(ErrorCode::DeviceUnavailable, [&] { bus_.create_page(device); });
  PageSpec nowhere = spec;
  nowhere.location = "tpu";
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.create_page(nowhere); });
  PageSpec shaped = spec;
  shaped.dtype = DType::Float32;
  shaped.shape = {3};
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.create_page(shaped); });
  // Text the log would not read back (docs/format.md "Strings": UTF-8).
  PageSpec bad_name = spec;
  bad_name.name = "caf\xe9";  // Latin-1, not UTF-8
  msg = expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.create_page(bad_name); });
  EXPECT_NE(msg.find("page name is not UTF-8"), std::string::npos) << msg;
  PageSpec bad_key = spec;
  bad_key.metadata["\xed\xa0\x80"] = MetaValue{"v", false};
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.create_page(bad_key); });
  PageSpec bad_text = spec;
  bad_text.metadata["k"] = MetaValue{"\xff", false};
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.create_page(bad_text); });
  // None of the failures consumed an id.
  EXPECT_EQ(bus_.create_page(spec).id, deleted_ + 1);
}

TEST_F(BusErrorTest, MetadataTextMustBeUtf8WhileBytesMayBeAnything) {
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.set_metadata(a_, "\xc0\x80", MetaValue{"v", false}); });
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.set_metadata(a_, "k", MetaValue{"\xff", false}); });
  bus_.set_metadata(a_, "k", MetaValue{"\xff", true});
  EXPECT_EQ(bus_.page_info(a_).metadata.at("k").value, "\xff");
}

TEST_F(BusErrorTest, OutOfMemoryCreatesNothing) {
  if (!test::kernel_refuses_huge_mappings()) GTEST_SKIP() << "the kernel overcommits any mapping";
  PageSpec huge;
  huge.size = PageTable::kMaxPageSize;  // valid, but cannot be backed
  huge.name = "huge";
  expect_unchanged(ErrorCode::OutOfMemory, [&] { bus_.create_page(huge); });
  EXPECT_EQ(bus_.find_page("huge"), 0u);
  PageSpec small;
  small.size = 8;
  EXPECT_EQ(bus_.create_page(small).id, deleted_ + 1) << "the failed create consumed an id";
}

TEST_F(BusErrorTest, BadArguments) {
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.update(a_, Bytes(15)); });
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.update(a_, Bytes(17)); });
  Bytes out(17);
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.snapshot(a_, out); });
  Bytes three(3);
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.read(a_, 14, three); });
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.read(a_, kMax, three); });
}

// Codes the log's reader refuses are refused when given, or the bus would log a change that makes
// its own directory unopenable (LogCorrupt at the next open, and already for history()).
TEST_F(BusErrorTest, CodesTheLogCannotHoldAreRefused) {
  Delta d = Delta::at(a_, 0, bytes_of("x"));
  d.source = static_cast<Source>(9);
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.apply(d); });
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.add_edge(a_, b_, static_cast<EdgeKind>(42)); });
  PageSpec f64{16, DType::Float64, {2}};
  const PageId x = bus_.create_page(f64).id;
  const PageId y = bus_.create_page(f64).id;
  records_.push_back(&bus_.page(x));
  records_.push_back(&bus_.page(y));
  const std::vector<PageId> on{x};
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.depend(y, on, {static_cast<RecomputeKind>(9)}, {}); });
  expect_unchanged(ErrorCode::InvalidArgument,
                   [&] { bus_.depend(y, on, {RecomputeKind::Copy, static_cast<SemiringKind>(77)}, {}); });
  PageSpec odd{16, static_cast<DType>(200), {}};
  const std::string msg = expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.create_page(odd); });
  EXPECT_NE(msg.find("dtype code 200"), std::string::npos) << msg;
  BusOptions o;
  o.durability = static_cast<Durability>(7);
  test::expect_error(ErrorCode::InvalidArgument, [&] { Bus bad(o); });
}

// assign_runs takes runs as a diff gives them; others would pass the commit's bounds check (the
// last run's end) and write past the page, into its neighbour.
TEST_F(BusErrorTest, RunsOutOfOrderAreNoDelta) {
  Delta d = Delta::at(a_, 0, bytes_of("x"));
  const mmsb::Run unordered[] = {{64, 8}, {0, 8}};
  test::expect_error(ErrorCode::InvalidDelta, [&] { Delta::assign_runs(d, a_, unordered); });
  const mmsb::Run overlapping[] = {{0, 8}, {4, 8}};
  test::expect_error(ErrorCode::InvalidDelta, [&] { Delta::assign_runs(d, a_, overlapping); });
  const mmsb::Run wrapping[] = {{kMax - 4, 8}};
  test::expect_error(ErrorCode::InvalidDelta, [&] { Delta::assign_runs(d, a_, wrapping); });
  EXPECT_EQ(d.run_list(), (std::vector<mmsb::Run>{{0, 1}})) << "a refused assign_runs changed the delta";
}

// The OS reads a path up to its first NUL: that would be another directory than the one named.
TEST(BusPathTest, APathWithANulByteIsRefusedAndMakesNothing) {
  test::TempDir dir;
  BusOptions o;
  o.path = dir.path() + "/d";
  o.path += '\0';
  o.path += "x";
  test::expect_error(ErrorCode::InvalidArgument, [&] { Bus bad(o); });
  EXPECT_FALSE(test::fs::exists(dir.path() + "/d"));
}

// read() and snapshot() into memory that overlaps the page they copy (a C++ caller's buffer may
// be any memory) copy as memmove does.
TEST_F(BusErrorTest, ReadsIntoThePagesOwnBytesCopyAsMemmove) {
  const PageRecord& r = bus_.page(b_);
  bus_.read(b_, 0, {r.data + 8, 32});
  Bytes want(64);
  const std::string hello = "hello";
  std::memcpy(want.data() + 5, hello.data(), 5);
  std::memmove(want.data() + 8, Bytes(want).data(), 32);
  EXPECT_EQ(Bytes(r.data, r.data + 64), want);
}

TEST_F(BusErrorTest, ClosedBusRejectsEverything) {
  bus_.close();
  EXPECT_TRUE(bus_.closed());
  const Bytes one = bytes_of("x");
  PageSpec spec;
  spec.size = 8;
  DeltaBatch batch;
  batch.add(a_, 0, one);
  Bytes out(16);
  const std::vector<std::pair<const char*, std::function<void()>>> calls = {
      {"create_page", [&] { bus_.create_page(spec); }},
      {"delete_page", [&] { bus_.delete_page(a_); }},
      {"page", [&] { bus_.page(a_); }},
      {"find_page", [&] { bus_.find_page("alpha"); }},
      {"page_ids", [&] { bus_.page_ids(); }},
      {"page_count", [&] { bus_.page_count(); }},
      {"set_metadata", [&] { bus_.set_metadata(a_, "k", std::nullopt); }},
      {"apply", [&] {
         Delta d = Delta::at(a_, 0, one);
         bus_.apply(d);
       }},
      {"write", [&] { bus_.write(a_, 0, one); }},
      {"update", [&] { bus_.update(a_, Bytes(16)); }},
      {"apply_batch", [&] { bus_.apply_batch(batch.view()); }},
      {"snapshot", [&] { bus_.snapshot(a_, out); }},
      {"read", [&] { bus_.read(a_, 0, std::span(out).first(4)); }},
  };
  for (const auto& [name, call] : calls) {
    SCOPED_TRACE(name);
    expect_unchanged(ErrorCode::Closed, call);
  }
}

TEST_F(BusErrorTest, ClosedBusRejectsPageInfo) {
  // page_info is a lookup like page() and find_page(); close() ends lookups.
  bus_.close();
  expect_unchanged(ErrorCode::Closed, [&] { bus_.page_info(a_); });
}

TEST_F(BusErrorTest, PinnedMemoryStaysValidAfterClose) {
  PageRecord& r = bus_.pin(a_);
  bus_.close();
  EXPECT_EQ(Bytes(r.data, r.data + r.size), bytes_of("0123456789abcdef"));
  bus_.unpin(r);
}

TEST_F(BusErrorTest, AnUnpinWithoutItsPinIsRefusedAndTheRecordStaysLive) {
  PageRecord& r = bus_.pin(a_);
  bus_.unpin(r);
  const std::uint32_t refs = r.refs.load();
  expect_unchanged(ErrorCode::InvalidArgument, [&] { bus_.unpin(r); });
  EXPECT_EQ(r.refs.load(), refs);
  EXPECT_FALSE(r.deleted()) << "an unpin past zero carried into the deleted bit";
  Bytes head(4);
  bus_.read(a_, 0, head);
  EXPECT_EQ(head, bytes_of("0123"));
}

}  // namespace
}  // namespace mmsb
