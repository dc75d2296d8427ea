// validate_batch with a pool checks rows in parallel chunks but must report exactly the error a
// sequential check reports: the first bad row's.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/delta/BatchApply.hpp"

namespace mmsb {
namespace {

std::string error_of(const DeltaBatch& batch, PageTable& table, ThreadPool* pool) {
  try {
    validate_batch(batch.view(), table, pool);
  } catch (const Error& e) {
    return std::to_string(static_cast<int>(e.code())) + ": " + e.what();
  }
  return "ok";
}

TEST(ParallelValidate, ReportsTheFirstBadRowWhateverTheLanes) {
  PageTable table;
  PageSpec spec;
  spec.size = 64;
  const PageId a = table.create(spec).id;
  const PageId b = table.create(spec).id;
  const std::byte data[8] = {};
  constexpr std::size_t kRows = 100'000;
  // Bad rows in the second half (an out-of-bounds run) and in the first (an unknown page): the
  // first half's error wins because its row comes first.
  for (std::size_t bad_first : {std::size_t{70'000}, std::size_t{10'000}, std::size_t{99'999}}) {
    DeltaBatch batch;
    for (std::size_t i = 0; i < kRows; ++i) {
      if (i == bad_first) {
        batch.add(bad_first < 50'000 ? 999 : a, 60, {data, 8});
      } else if (i == 80'000 && bad_first != 99'999) {
        batch.add(b, 60, {data, 8});
      } else {
        batch.add(i % 2 ? a : b, (i % 7) * 8, {data, 8});
      }
    }
    const std::string sequential = error_of(batch, table, nullptr);
    ASSERT_NE(sequential, "ok");
    EXPECT_NE(sequential.find("batch row " + std::to_string(bad_first)), std::string::npos) << sequential;
    for (unsigned threads : {1u, 2u, 3u, 8u}) {
      ThreadPool pool(threads);
      EXPECT_EQ(error_of(batch, table, &pool), sequential) << threads << " threads";
    }
  }
  DeltaBatch good;
  for (std::size_t i = 0; i < kRows; ++i) good.add(a, 0, {data, 8});
  ThreadPool pool(2);
  EXPECT_EQ(error_of(good, table, &pool), "ok");
}

}  // namespace
}  // namespace mmsb
