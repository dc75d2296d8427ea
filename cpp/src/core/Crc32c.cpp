#include "mmsb/core/Crc32c.hpp"

#include <array>
#include <cstring>

#include "Crc32cMath.hpp"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace mmsb {
namespace {

using crc32c_detail::multiply_mod_p;
using crc32c_detail::x_pow_8n;

// tables[k][b]: CRC contribution of byte b followed by k zero bytes (slicing-by-8).
constexpr std::array<std::array<std::uint32_t, 256>, 8> make_tables() {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t b = 0; b < 256; ++b) t[0][b] = crc32c_detail::table_entry(b);
  for (std::uint32_t b = 0; b < 256; ++b) {
    for (int k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
  }
  return t;
}
constexpr auto kTables = make_tables();

#if defined(__x86_64__)
// The crc32 instruction has a latency of 3 cycles and a throughput of 1: three independent
// streams over adjacent blocks keep it busy, and their registers are combined by shifting
// (multiply_mod_p). Blocks of 8 KiB make the two shifts per 24 KiB negligible.
constexpr std::size_t kStreamBytes = 8192;
constexpr std::uint32_t kShift1 = x_pow_8n(kStreamBytes);
constexpr std::uint32_t kShift2 = x_pow_8n(2 * kStreamBytes);

__attribute__((target("sse4.2"))) std::uint32_t crc32c_sse42(const unsigned char* p, std::size_t n,
                                                             std::uint32_t crc) noexcept {
  std::uint64_t c = ~crc;
  while (n >= 3 * kStreamBytes) {
    std::uint64_t c1 = 0, c2 = 0;
    for (std::size_t i = 0; i < kStreamBytes; i += 8) {
      std::uint64_t w0, w1, w2;
      std::memcpy(&w0, p + i, 8);
      std::memcpy(&w1, p + kStreamBytes + i, 8);
      std::memcpy(&w2, p + 2 * kStreamBytes + i, 8);
      c = _mm_crc32_u64(c, w0);
      c1 = _mm_crc32_u64(c1, w1);
      c2 = _mm_crc32_u64(c2, w2);
    }
    c = multiply_mod_p(static_cast<std::uint32_t>(c), kShift2) ^
        multiply_mod_p(static_cast<std::uint32_t>(c1), kShift1) ^ static_cast<std::uint32_t>(c2);
    p += 3 * kStreamBytes;
    n -= 3 * kStreamBytes;
  }
  while (n >= 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<std::uint32_t>(c);
  while (n-- > 0) c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}
#endif

bool detect_hardware() noexcept {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
#else
  return false;
#endif
}

}  // namespace

std::uint32_t crc32c_portable(const void* data, std::size_t n, std::uint32_t crc) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = ~crc;
  while (n >= 8) {
    std::uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;  // little-endian byte order, as the x86 instruction consumes it
    c = kTables[7][lo & 0xFF] ^ kTables[6][(lo >> 8) & 0xFF] ^ kTables[5][(lo >> 16) & 0xFF] ^
        kTables[4][lo >> 24] ^ kTables[3][hi & 0xFF] ^ kTables[2][(hi >> 8) & 0xFF] ^
        kTables[1][(hi >> 16) & 0xFF] ^ kTables[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFFu];
  return ~c;
}

bool crc32c_hardware() noexcept {
  static const bool hw = detect_hardware();
  return hw;
}

std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc) noexcept {
#if defined(__x86_64__)
  if (crc32c_hardware()) return crc32c_sse42(static_cast<const unsigned char*>(data), n, crc);
#endif
  return crc32c_portable(data, n, crc);
}

std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t len_b) noexcept {
  // The registers' initial and final inversions cancel in the shifted sum (the CRC is affine).
  return multiply_mod_p(crc_a, x_pow_8n(len_b)) ^ crc_b;
}

}  // namespace mmsb
