// MemoryLog: the in-memory log keeps every appended record byte for byte and in lsn order,
// whether it copied the record into a shared block (small) or took the caller's buffer (large),
// and what it holds is what the records need: a buffer's spare room is not kept with it.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/delta/Delta.hpp"
#include "mmsb/log/MemoryLog.hpp"
#include "mmsb/log/RecordCodec.hpp"

namespace mmsb {
namespace {

using test::Bytes;

// One framed Delta record of about `payload` bytes at lsn `lsn`.
Bytes delta_record(Lsn lsn, std::size_t payload, test::Rng& rng) {
  Bytes out;
  encode_op_record(out, lsn, Delta::at(1, 0, test::random_bytes(rng, payload)));
  return out;
}

// Every record read back through for_each, concatenated.
Bytes read_back(const MemoryLog& log) {
  Bytes all;
  log.for_each([&](const ScannedRecord& r, const std::string&) {
    const std::byte* start = r.body.data() - logfmt::kRecordHeaderBytes;
    all.insert(all.end(), start, start + logfmt::padded(logfmt::kRecordHeaderBytes + r.header.body_bytes));
    return true;
  });
  return all;
}

TEST(MemoryLogTest, SmallAndLargeRecordsReadBackInOrderAndByteForByte) {
  test::Rng rng(11);
  MemoryLog log;
  Bytes want;
  Lsn lsn = 0;
  // Small ones share blocks; 64 KiB and up are taken whole; sizes around both edges.
  for (const std::size_t payload : {100u, 5000u, 65'000u, 70'000u, 200u, 1u << 20, 300u, 64u << 10, 40u}) {
    Bytes record = delta_record(++lsn, payload, rng);
    want.insert(want.end(), record.begin(), record.end());
    const Bytes copy = record;
    log.append(record, lsn);
    if (copy.size() >= (64u << 10)) {
      EXPECT_TRUE(record.empty()) << "a large record's buffer becomes the log's (" << copy.size() << " bytes)";
    } else {
      EXPECT_EQ(record, copy) << "a small record is copied, its buffer left as it was";
    }
  }
  EXPECT_EQ(log.last_lsn(), lsn);
  EXPECT_EQ(read_back(log), want);
}

TEST(MemoryLogTest, ALargeRecordsSpareRoomIsNotKept) {
  test::Rng rng(12);
  MemoryLog log;
  const Bytes framed = delta_record(1, 100'000, rng);
  Bytes record = framed;
  record.reserve(4u << 20);  // a buffer grown for a larger record before
  ASSERT_GE(record.capacity(), 4u << 20);
  log.append(record, 1);
  EXPECT_LE(log.bytes(), framed.size() + framed.size() / 4 + 4096)
      << "the log kept the buffer's spare room: " << log.bytes() << " bytes for a " << framed.size() << "-byte record";
  EXPECT_EQ(read_back(log), framed);
}

}  // namespace
}  // namespace mmsb
