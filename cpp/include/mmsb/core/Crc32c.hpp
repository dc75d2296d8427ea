#pragma once
/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI, ext4 and LevelDB.
/// Uses the SSE4.2 crc32 instruction when the CPU has it (checked at run time), else a portable
/// slicing-by-8 table; both give identical results.
#include <cstddef>
#include <cstdint>

namespace mmsb {

/// CRC32C of `n` bytes, continuing from `crc` (0 to start). crc32c(b, n2, crc32c(a, n1)) equals
/// the CRC of a followed by b. Thread safety: pure function.
std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc = 0) noexcept;
/// The CRC of a followed by b from crc32c(a) and crc32c(b) (b being len_b bytes long), so pieces
/// checksummed apart (in parallel, or on a GPU) join into the whole's CRC. O(log len_b) carry-less
/// multiplications. Thread safety: pure function.
std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t len_b) noexcept;
/// The portable implementation (tests compare it with the hardware path).
std::uint32_t crc32c_portable(const void* data, std::size_t n, std::uint32_t crc = 0) noexcept;
/// True when crc32c() uses the SSE4.2 instruction.
bool crc32c_hardware() noexcept;

}  // namespace mmsb
