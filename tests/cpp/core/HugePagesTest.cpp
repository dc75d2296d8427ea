// Huge-page hints for log buffers: contents and capacity are what vector::reserve gives, and where
// the kernel has THP in madvise or always mode, an advised buffer is backed by huge pages.
#include "mmsb/core/HugePages.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace mmsb {
namespace {

std::vector<std::byte> counting(std::size_t n) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(i * 7 + 3);
  return v;
}

TEST(HugePagesTest, ReserveHugeKeepsContentsAndGrowsCapacity) {
  std::vector<std::byte> v = counting(1000);
  const std::vector<std::byte> want = v;
  reserve_huge(v, std::size_t{5} << 20);
  EXPECT_GE(v.capacity(), std::size_t{5} << 20);
  EXPECT_EQ(v, want);
  const std::byte* before = v.data();
  reserve_huge(v, 10);  // already large enough: untouched
  EXPECT_EQ(v.data(), before);
  EXPECT_EQ(v, want);
}

TEST(HugePagesTest, AdviseAcceptsRangesWithoutAWholeHugePage) {
  std::vector<std::byte> v = counting(3 * kHugePageBytes / 2);
  const std::vector<std::byte> want = v;
  advise_huge_pages(v.data() + 1, 100);           // far below 2 MiB
  advise_huge_pages(v.data() + 1, v.size() - 2);  // unaligned ends
  advise_huge_pages(v.data(), 0);
  advise_huge_pages(nullptr, 0);
  EXPECT_EQ(v, want);
}

// THP mode from sysfs ("always [madvise] never" -> "madvise"); empty when unknown.
std::string thp_mode() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s;
  std::getline(f, s);
  const auto open = s.find('['), close = s.find(']');
  return open == std::string::npos || close == std::string::npos ? "" : s.substr(open + 1, close - open - 1);
}

std::uint64_t vmstat(const std::string& key) {
  std::ifstream f("/proc/vmstat");
  std::string k;
  std::uint64_t v = 0;
  while (f >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

// AnonHugePages (kB) of the mapping holding `p`, from /proc/self/smaps.
std::uint64_t anon_huge_kb_at(const void* p) {
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(f, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= addr && addr < hi;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) return std::stoull(line.substr(14));
  }
  return 0;
}

TEST(HugePagesTest, ReservedBufferIsBackedByHugePagesWhereTheKernelOffersThem) {
  const std::string mode = thp_mode();
  if (mode != "madvise" && mode != "always") GTEST_SKIP() << "transparent huge pages are '" << mode << "' here";
  const std::uint64_t fallbacks = vmstat("thp_fault_fallback");
  std::vector<std::byte> v;
  reserve_huge(v, 8 * kHugePageBytes);
  v.resize(8 * kHugePageBytes, std::byte{1});  // touch every page
  const std::uint64_t kb = anon_huge_kb_at(v.data() + 4 * kHugePageBytes);
  if (kb == 0 && vmstat("thp_fault_fallback") > fallbacks) {
    GTEST_SKIP() << "the kernel had no free huge page (thp_fault_fallback grew)";
  }
  // The aligned middle of 16 MiB holds at least 7 whole huge pages.
  EXPECT_GE(kb, 7 * kHugePageBytes / 1024) << "an advised 16 MiB buffer got no huge pages";
}

}  // namespace
}  // namespace mmsb
