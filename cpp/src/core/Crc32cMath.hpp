#pragma once
// Internal to the engine: the arithmetic of CRC32C registers modulo the Castagnoli polynomial,
// shared by the host implementation (Crc32c.cpp) and the device checksum kernel
// (cuda/DeviceCompute.cu, which calls these constexpr functions on the GPU), so both compute one
// function. Registers are reflected: bit 31 holds x^0, as in the tables and the x86 instruction.
#include <cstdint>

namespace mmsb::crc32c_detail {

inline constexpr std::uint32_t kPoly = 0x82F63B78u;

/// The table-driven step's entry for byte value b: its CRC contribution (no init, no final xor).
constexpr std::uint32_t table_entry(std::uint32_t b) noexcept {
  for (int k = 0; k < 8; ++k) b = (b >> 1) ^ ((b & 1u) ? kPoly : 0u);
  return b;
}

/// a * b mod P. Used to shift a register past bytes it did not see.
constexpr std::uint32_t multiply_mod_p(std::uint32_t a, std::uint32_t b) noexcept {
  std::uint32_t product = 0;
  for (std::uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if (a & m) product ^= b;
    b = (b & 1u) ? (b >> 1) ^ kPoly : b >> 1;  // b *= x
  }
  return product;
}

/// x^(8n) mod P: what multiplying a register by shifts it past n zero bytes.
constexpr std::uint32_t x_pow_8n(std::uint64_t n) noexcept {
  std::uint32_t result = 1u << 31;      // x^0
  std::uint32_t square = 1u << 23;      // x^8
  for (; n != 0; n >>= 1) {
    if (n & 1) result = multiply_mod_p(result, square);
    square = multiply_mod_p(square, square);
  }
  return result;
}

}  // namespace mmsb::crc32c_detail
