// Prefaulter: a fresh mapping's pages become resident on the helper thread, with their bytes
// unchanged; a range unmapped before the helper reaches it is harmless, and the helper goes on;
// settle() returns only once what was requested is resident; ranges queued with populate_later()
// all become resident, whatever populate() requests come in between.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <thread>
#include <vector>

#include "mmsb/core/Prefaulter.hpp"

namespace {

std::size_t page_size() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

std::size_t resident_pages(void* m, std::size_t bytes) {
  std::vector<unsigned char> in_core(bytes / page_size());
  EXPECT_EQ(mincore(m, bytes, in_core.data()), 0);
  std::size_t n = 0;
  for (unsigned char c : in_core) n += c & 1u;
  return n;
}

// Waits (up to 20 s: the machine may be busy) until every page of the mapping is resident.
bool becomes_resident(void* m, std::size_t bytes) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (resident_pages(m, bytes) < bytes / page_size()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

void* fresh_mapping(std::size_t bytes) {
  void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_NE(m, MAP_FAILED);
  return m;
}

#if defined(MADV_POPULATE_WRITE)
bool kernel_populates() {
  void* probe = fresh_mapping(page_size());
  const bool supported = madvise(probe, page_size(), MADV_POPULATE_WRITE) == 0 || errno != EINVAL;
  munmap(probe, page_size());
  return supported;
}
#endif

TEST(Prefaulter, FreshPagesBecomeResidentWithTheirBytesUnchanged) {
#if !defined(MADV_POPULATE_WRITE)
  GTEST_SKIP() << "no MADV_POPULATE_WRITE in these headers";
#else
  const std::size_t bytes = 256 * page_size();
  if (!kernel_populates()) GTEST_SKIP() << "this kernel lacks MADV_POPULATE_WRITE (Linux 5.14+)";

  // m is mapped first so that the unmapped range cannot reuse its addresses: a late request for
  // `gone` landing on m would make m resident before the test asks for it.
  auto* m = static_cast<unsigned char*>(fresh_mapping(bytes));
  void* gone = fresh_mapping(bytes);
  munmap(gone, bytes);
  mmsb::Prefaulter::shared().populate(gone, bytes);  // unmapped: the helper must shrug it off
  ASSERT_TRUE(mmsb::Prefaulter::settle(20'000));

  m[page_size() * 3 + 5] = 7;
  EXPECT_LT(resident_pages(m, bytes), bytes / page_size());
  // Retried: a request made while the helper holds its lock is dropped (a hint, never a wait).
  bool resident = false;
  for (int attempt = 0; attempt < 5 && !resident; ++attempt) {
    mmsb::Prefaulter::shared().populate(m, bytes);
    resident = becomes_resident(m, bytes);
  }
  EXPECT_TRUE(resident);
  for (std::size_t i = 0; i < bytes; ++i) ASSERT_EQ(m[i], i == page_size() * 3 + 5 ? 7 : 0) << "byte " << i;
  munmap(m, bytes);
#endif
}

TEST(Prefaulter, SettleReturnsOnceTheRequestedPagesAreResident) {
#if !defined(MADV_POPULATE_WRITE)
  GTEST_SKIP() << "no MADV_POPULATE_WRITE in these headers";
#else
  if (!kernel_populates()) GTEST_SKIP() << "this kernel lacks MADV_POPULATE_WRITE (Linux 5.14+)";
  EXPECT_TRUE(mmsb::Prefaulter::settle());  // nothing queued: at once
  const std::size_t bytes = 8192 * page_size();     // big enough that the helper is still busy
  void* m = fresh_mapping(bytes);
  // Retried: a request made while the helper holds its lock is dropped (a hint, never a wait).
  std::size_t resident = 0;
  for (int attempt = 0; attempt < 5 && resident < bytes / page_size(); ++attempt) {
    mmsb::Prefaulter::shared().populate(m, bytes);
    ASSERT_TRUE(mmsb::Prefaulter::settle(20'000));
    resident = resident_pages(m, bytes);  // no polling: settle already waited
  }
  EXPECT_EQ(resident, bytes / page_size());
  munmap(m, bytes);
#endif
}

TEST(Prefaulter, EveryRangeQueuedForLaterBecomesResidentPastNewerBuffers) {
#if !defined(MADV_POPULATE_WRITE)
  GTEST_SKIP() << "no MADV_POPULATE_WRITE in these headers";
#else
  if (!kernel_populates()) GTEST_SKIP() << "this kernel lacks MADV_POPULATE_WRITE (Linux 5.14+)";
  const std::size_t bytes = 64 * page_size();
  constexpr std::size_t kRanges = 8;
  std::vector<unsigned char*> later;
  for (std::size_t i = 0; i < kRanges; ++i) later.push_back(static_cast<unsigned char*>(fresh_mapping(bytes)));
  void* buffer = fresh_mapping(bytes);
  // Retried as a whole: a request made while the helper holds its lock is dropped.
  bool all = false;
  for (int attempt = 0; attempt < 5 && !all; ++attempt) {
    for (unsigned char* m : later) {
      mmsb::Prefaulter::shared().populate_later(m, bytes);
      // A newer buffer replaces the last populate() request, never a range queued for later.
      mmsb::Prefaulter::shared().populate(buffer, bytes);
    }
    ASSERT_TRUE(mmsb::Prefaulter::settle(20'000));
    all = true;
    for (unsigned char* m : later) all = all && resident_pages(m, bytes) == bytes / page_size();
  }
  EXPECT_TRUE(all);
  for (unsigned char* m : later) {
    for (std::size_t i = 0; i < bytes; ++i) ASSERT_EQ(m[i], 0) << "byte " << i;
    munmap(m, bytes);
  }
  munmap(buffer, bytes);
#endif
}

TEST(Prefaulter, RangesOfAFewPagesAreLeftToTheWriter) {
  const std::size_t bytes = 4 * page_size();
  void* m = fresh_mapping(bytes);
  mmsb::Prefaulter::shared().populate(m, bytes);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(resident_pages(m, bytes), 0u);
  munmap(m, bytes);
}

}  // namespace
