// The disk a log holds: with durability flush and none, blocks are reserved ahead of the active
// segment's end once it holds Log::kReserveFromBytes (appends land in allocated blocks), and
// every segment gives the unused part back once it is sealed, closed, or its bus is dropped
// without close(); a writer killed with blocks reserved leaves them to the next writer, which
// gives them back when it opens the segment. fsync writes zeros ahead instead and reserves
// nothing, and neither does a bus that writes little.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "TestUtil.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/log/Log.hpp"

namespace mmsb {
namespace {

// Bytes of disk the file holds (st_blocks counts 512-byte units whatever the block size).
std::uint64_t allocated(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

// Whether `dir`'s filesystem reserves blocks past a file's end (fallocate KEEP_SIZE).
bool reserves_past_end(const std::string& dir) {
  const std::string probe = dir + "/probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const bool ok = fd >= 0 && ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20) == 0;
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  return ok;
}

// No more disk than the file's bytes, rounded up to whole blocks.
void expect_no_reservation(const std::string& path) {
  EXPECT_LE(allocated(path), test::fs::file_size(path) + 64 * 1024) << path << " keeps blocks past its end";
}

class SegmentSpaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!reserves_past_end(dir_.path())) GTEST_SKIP() << "this filesystem does not reserve blocks (fallocate)";
  }
  // A bus with one page, written `writes` times with 1 MiB.
  static void fill(Bus& bus, int writes) { test::write_records(bus, std::uint64_t{1} << 20, writes, 8); }
  test::TempDir dir_;
};

TEST_F(SegmentSpaceTest, TheActiveSegmentIsReservedAndSealedOrClosedOnesAreNot) {
  for (const Durability d : {Durability::Flush, Durability::None}) {
    SCOPED_TRACE(durability_name(d));
    const std::string path = dir_ / std::string(durability_name(d));
    Bus bus(test::dir_options(path, d));
    fill(bus, static_cast<int>(Log::kSegmentBytes >> 20) + 4);  // past one segment
    const auto segments = test::segment_files(path);
    ASSERT_EQ(segments.size(), 2u);
    expect_no_reservation(segments[0]);
    EXPECT_GE(allocated(segments[1]), test::fs::file_size(segments[1]) + Log::kReserveBytes / 2)
        << "the active segment is not reserved ahead";
    bus.close();
    for (const std::string& s : segments) expect_no_reservation(s);
  }
}

TEST_F(SegmentSpaceTest, ADroppedBusGivesItsReservationBack) {
  const std::string path = dir_ / "dropped";
  {
    Bus bus(test::dir_options(path, Durability::Flush));
    fill(bus, 2);
  }  // no close()
  expect_no_reservation(test::segment_files(path).back());
}

TEST_F(SegmentSpaceTest, AKilledWritersReservationGoesBackWhenTheNextWriterOpens) {
  const std::string path = dir_ / "killed";
  const test::ChildResult child = test::run_in_child([&]() -> std::string {
    Bus bus(test::dir_options(path, Durability::Flush));
    fill(bus, 2);
    ::kill(::getpid(), SIGKILL);
    return "still alive";
  });
  ASSERT_TRUE(WIFSIGNALED(child.status) && WTERMSIG(child.status) == SIGKILL) << child.report;
  const std::string segment = test::segment_files(path).back();
  EXPECT_GE(allocated(segment), test::fs::file_size(segment) + Log::kReserveBytes / 2)
      << "the killed writer reserved nothing";
  Bus bus(test::dir_options(path, Durability::Flush, true));
  expect_no_reservation(segment);
}

TEST_F(SegmentSpaceTest, ABusThatWritesLittleReservesNothing) {
  const std::string path = dir_ / "little";
  Bus bus(test::dir_options(path, Durability::Flush));
  PageSpec spec;
  spec.size = 4096;
  const PageId id = bus.create_page(spec).id;
  for (int i = 0; i < 100; ++i) bus.write(id, 0, test::bytes_of("some bytes"));
  expect_no_reservation(test::segment_files(path).back());
}

TEST_F(SegmentSpaceTest, FsyncReservesNothing) {
  const std::string path = dir_ / "fsync";
  Bus bus(test::dir_options(path, Durability::Fsync));
  fill(bus, 2);
  EXPECT_LT(allocated(test::segment_files(path).back()), test::fs::file_size(test::segment_files(path).back()) +
                                                             Log::kReserveBytes / 4);
  bus.close();
  expect_no_reservation(test::segment_files(path).back());
}

}  // namespace
}  // namespace mmsb
