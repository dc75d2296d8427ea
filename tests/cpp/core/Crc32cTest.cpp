// CRC32C: known vectors, hardware == portable, incremental composition, combining pieces, and the
// block arithmetic of the device checksum.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "../../../cpp/src/core/Crc32cMath.hpp"
#include "mmsb/core/Crc32c.hpp"

namespace {

TEST(Crc32c, KnownVectors) {
  // RFC 3720 (iSCSI) B.4 check values.
  EXPECT_EQ(mmsb::crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(mmsb::crc32c("", 0), 0u);
  const std::vector<unsigned char> zeros(32, 0x00), ones(32, 0xFF);
  EXPECT_EQ(mmsb::crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(mmsb::crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  std::vector<unsigned char> ascending(32);
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<unsigned char>(i);
  EXPECT_EQ(mmsb::crc32c(ascending.data(), ascending.size()), 0x46DD794Eu);
}

TEST(Crc32c, HardwareAndPortableAgreeAndCompose) {
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<unsigned char> buf(rng() % 600);
    for (auto& b : buf) b = static_cast<unsigned char>(rng());
    const std::size_t split = buf.empty() ? 0 : rng() % buf.size();
    const std::uint32_t whole = mmsb::crc32c(buf.data(), buf.size());
    ASSERT_EQ(whole, mmsb::crc32c_portable(buf.data(), buf.size())) << "length " << buf.size();
    ASSERT_EQ(whole, mmsb::crc32c(buf.data() + split, buf.size() - split,
                                  mmsb::crc32c(buf.data(), split)));
  }
}

// Pieces checksummed apart join into the whole's CRC, empty pieces included, at lengths that
// exercise every bit of the shift's exponent.
TEST(Crc32c, CombineJoinsPiecesIntoTheWholesCrc) {
  std::mt19937_64 rng(4);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<unsigned char> buf(rng() % (trial < 400 ? 300 : 200'000));
    for (auto& b : buf) b = static_cast<unsigned char>(rng());
    const std::size_t split = buf.empty() ? 0 : rng() % (buf.size() + 1);
    const std::uint32_t a = mmsb::crc32c(buf.data(), split);
    const std::uint32_t b = mmsb::crc32c(buf.data() + split, buf.size() - split);
    ASSERT_EQ(mmsb::crc32c_combine(a, b, buf.size() - split), mmsb::crc32c(buf.data(), buf.size()))
        << "length " << buf.size() << ", split " << split;
  }
  EXPECT_EQ(mmsb::crc32c_combine(0, mmsb::crc32c("123456789", 9), 9), 0xE3069283u);
  EXPECT_EQ(mmsb::crc32c_combine(0xE3069283u, 0, 0), 0xE3069283u);
}

// The device checksum's arithmetic (cuda/DeviceCompute.cu), step for step on the host: 256
// pieces of 256 bytes, each CRC'd from a zero register with table_entry, joined pairwise by a
// tree of shifts, then the zero start turned into CRC32C's inverted one. A GPU runs the same
// steps; this proves the constants and the joins give crc32c().
TEST(Crc32c, BlockTreeOfTheDeviceChecksumGivesTheCrc) {
  using namespace mmsb::crc32c_detail;
  constexpr std::size_t kPiece = 256, kPieces = 256, kBlock = kPiece * kPieces;
  std::mt19937_64 rng(6);
  std::vector<unsigned char> block(kBlock);
  for (int trial = 0; trial < 3; ++trial) {
    for (auto& b : block) b = static_cast<unsigned char>(trial == 0 ? 0 : rng());
    std::vector<std::uint32_t> reg(kPieces);
    for (std::size_t t = 0; t < kPieces; ++t) {
      std::uint32_t c = 0;
      for (std::size_t i = 0; i < kPiece; ++i) c = (c >> 8) ^ table_entry((c ^ block[t * kPiece + i]) & 0xFFu);
      reg[t] = c;
    }
    for (std::size_t half = 1; half < kPieces; half *= 2) {
      for (std::size_t t = 0; t < kPieces; t += 2 * half) {
        reg[t] = multiply_mod_p(reg[t], x_pow_8n(kPiece * half)) ^ reg[t + half];
      }
    }
    const std::uint32_t start = multiply_mod_p(~0u, x_pow_8n(kBlock));
    EXPECT_EQ(~(reg[0] ^ start), mmsb::crc32c(block.data(), block.size())) << "trial " << trial;
  }
}

// Buffers past 24 KiB take the three-stream path, whose registers are combined by shifting: it
// must agree with the one-stream portable code at every length around the block edges.
TEST(Crc32c, InterleavedStreamsAgreeWithPortable) {
  std::mt19937_64 rng(5);
  std::vector<unsigned char> buf(3 * 24576 + 100);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (std::size_t n : {24575u, 24576u, 24577u, 24583u, 49152u, 49160u, 73728u, 73828u}) {
    ASSERT_EQ(mmsb::crc32c(buf.data(), n), mmsb::crc32c_portable(buf.data(), n)) << "length " << n;
    const std::uint32_t seed = mmsb::crc32c(buf.data(), 13);
    ASSERT_EQ(mmsb::crc32c(buf.data() + 13, n - 13, seed), mmsb::crc32c_portable(buf.data(), n)) << "length " << n;
  }
  for (int trial = 0; trial < 50; ++trial) {
    const std::size_t n = 24576 + rng() % (buf.size() - 24576);
    ASSERT_EQ(mmsb::crc32c(buf.data(), n), mmsb::crc32c_portable(buf.data(), n)) << "length " << n;
  }
}

TEST(Crc32c, DetectsEverySingleBitFlip) {
  std::vector<unsigned char> buf(256);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<unsigned char>(i * 7);
  const std::uint32_t good = mmsb::crc32c(buf.data(), buf.size());
  for (std::size_t bit = 0; bit < buf.size() * 8; ++bit) {
    buf[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
    ASSERT_NE(mmsb::crc32c(buf.data(), buf.size()), good) << "bit " << bit;
    buf[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
  }
}

}  // namespace
