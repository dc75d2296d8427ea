// The log's footprint in the OS page cache: sealed segments older than the newest
// Log::kCachedSegments leave the cache (a log written once must not grow the cache by its whole
// length), the newest stay for history lookups, and neither changes what a reopen recovers.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/log/Log.hpp"

namespace mmsb {
namespace {

// Fraction of the file's pages resident in the page cache (mincore over a read-only mapping,
// which itself reads nothing in).
double resident_fraction(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path;
  const auto size = static_cast<std::size_t>(test::fs::file_size(path));
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  EXPECT_NE(m, MAP_FAILED) << path;
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in((size + page - 1) / page);
  EXPECT_EQ(::mincore(m, size, in.data()), 0) << path;
  ::munmap(m, size);
  std::size_t resident = 0;
  for (const unsigned char c : in) resident += c & 1u;
  return static_cast<double>(resident) / static_cast<double>(in.size());
}

TEST(SegmentCacheTest, OnlyTheNewestSealedSegmentsStayCached) {
  constexpr std::uint64_t kRecord = std::uint64_t{4} << 20;
  constexpr std::size_t kSealed = Log::kCachedSegments + 2;
  test::TempDir dir;
  struct statfs fs {};
  ASSERT_EQ(::statfs(dir.path().c_str(), &fs), 0);
  constexpr long kTmpfsMagic = 0x01021994;
  if (fs.f_type == kTmpfsMagic) GTEST_SKIP() << "on tmpfs the page cache is the storage: nothing can leave it";
  const std::string path = dir / "bus";
  test::DurableState want;
  {
    Bus bus(test::dir_options(path, Durability::Flush));
    PageSpec spec;
    spec.size = kRecord;
    const PageId id = bus.create_page(spec).id;
    test::Rng rng(11);
    test::Bytes content = test::random_bytes(rng, kRecord);
    // Each write is one ~4 MiB record; a segment seals once it holds 64 MiB.
    for (std::uint64_t i = 0; test::segment_files(path).size() <= kSealed; ++i) {
      content[i % kRecord] = static_cast<std::byte>(i);
      bus.write(id, 0, content);
    }
    const std::vector<std::string> segments = test::segment_files(path);
    ASSERT_EQ(segments.size(), kSealed + 1);
    for (std::size_t s = 0; s < kSealed; ++s) {
      const double cached = resident_fraction(segments[s]);
      if (s < kSealed - Log::kCachedSegments) {
        EXPECT_LT(cached, 0.01) << "sealed segment " << s << " of " << kSealed << " is still cached";
      } else {
        EXPECT_GT(cached, 0.5) << "sealed segment " << s << " of " << kSealed << " left the cache too early";
      }
    }
    want = test::durable_state(bus);
  }
  Bus reopened(test::dir_options(path, Durability::Flush, /*must_exist=*/true));
  EXPECT_TRUE(test::same_durable(want, test::durable_state(reopened)));
}

}  // namespace
}  // namespace mmsb
