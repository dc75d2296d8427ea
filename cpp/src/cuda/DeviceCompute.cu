// Kernels of the recomputes that run on the device (see DeviceCompute.hpp).
//
// The reduce is elementwise and memory-bound: one thread per element in a grid-stride loop, each
// reading its element of every parent in parent order and folding exactly as the host loops do
// (lift or weight the first parent, then ⊕ the others in order), so the order of operations per
// element, and therefore every rounding, is the host's. The page bytes are read once each.
//
// The checksum gives each thread 256 consecutive bytes of a 64 KiB block (sixteen 16-byte loads)
// and the table-driven CRC of them from a zero register; the block's 256 registers are joined in
// shared memory by a tree of shifts (crc32c_detail: x^(8 len) mod P, the host's own arithmetic)
// and the zero start turned into CRC32C's inverted one. The host joins the blocks.
//
// The change mask gives each thread 32 bytes (two 16-byte loads per side, compared four bytes at
// a time) and one 32-bit word of the mask; a block of 256 threads covers one chunk of
// kMaskChunkBytes and flags it with __syncthreads_or, so the host reads back a flag per chunk
// first and then only the mask of the chunks that changed.
#include <algorithm>
#include <cstring>

#include "../core/Crc32cMath.hpp"
#include "../graph/SemiringScalar.hpp"
#include "DeviceCompute.hpp"
#include "KernelLaunch.hpp"
#include "MaskStretch.hpp"

namespace mmsb::cuda {
namespace {

using semiring_detail::Tag;
using semiring_detail::visit_ops;

constexpr unsigned kThreads = 256;
static_assert(kThreads * 32 == kMaskChunkBytes, "one block of the mask kernel covers one chunk");

std::uint64_t round8(std::uint64_t n) { return (n + 7) / 8 * 8; }

template <class Ops>
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(const typename Ops::Value* const* __restrict__ parents,
                  const typename Ops::Value* __restrict__ weights, std::size_t k,
                  typename Ops::Value* __restrict__ out, std::uint64_t count) {
  using T = typename Ops::Value;
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * kThreads;
  for (std::uint64_t i = static_cast<std::uint64_t>(blockIdx.x) * kThreads + threadIdx.x; i < count; i += stride) {
    T o = Ops::zero();
    if (k > 0) {
      o = weights != nullptr ? Ops::mul(weights[0], parents[0][i]) : Ops::lift(parents[0][i]);
      for (std::size_t j = 1; j < k; ++j) {
        o = weights != nullptr ? Ops::add(o, Ops::mul(weights[j], parents[j][i])) : Ops::add(o, parents[j][i]);
      }
    }
    out[i] = o;
  }
}

// Bit b of the result: byte b of the four differs.
__device__ __forceinline__ unsigned differing4(unsigned a, unsigned b) {
  const unsigned x = __vcmpne4(a, b);  // 0xFF in each differing byte
  return ((x >> 7) & 1u) | ((x >> 14) & 2u) | ((x >> 21) & 4u) | ((x >> 28) & 8u);
}

__global__ void __launch_bounds__(kThreads)
    change_mask_kernel(const unsigned char* __restrict__ old, const unsigned char* __restrict__ now, std::uint64_t n,
                       unsigned* __restrict__ mask, std::uint8_t* __restrict__ flags, std::uint64_t mask_words32) {
  const std::uint64_t t = static_cast<std::uint64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const std::uint64_t base = t * 32;
  unsigned bits = 0;
  if (base + 32 <= n) {
    const uint4* a = reinterpret_cast<const uint4*>(old + base);
    const uint4* b = reinterpret_cast<const uint4*>(now + base);
    for (unsigned h = 0; h < 2; ++h) {
      const uint4 x = a[h];
      const uint4 y = b[h];
      bits |= (differing4(x.x, y.x) | differing4(x.y, y.y) << 4 | differing4(x.z, y.z) << 8 |
               differing4(x.w, y.w) << 12)
              << (16 * h);
    }
  } else {
    for (std::uint64_t i = base; i < n && i < base + 32; ++i) bits |= unsigned{old[i] != now[i]} << (i - base);
  }
  if (t < mask_words32) mask[t] = bits;  // little endian: word pairs read as the host's 64-bit words
  const int any = __syncthreads_or(bits != 0);
  if (threadIdx.x == 0) flags[blockIdx.x] = any != 0 ? 1 : 0;
}

constexpr std::uint64_t kCrcThreadBytes = kCrcBlockBytes / kThreads;

struct CrcShifts {
  std::uint32_t level[8];  // x^(8 * kCrcThreadBytes * 2^l) mod P: joins two halves of 2^l threads
  std::uint32_t start;     // what the inverted initial register adds to a whole block
};

__global__ void __launch_bounds__(kThreads)
    crc32c_blocks_kernel(const unsigned char* __restrict__ p, std::uint64_t blocks, std::uint32_t* __restrict__ crcs,
                         CrcShifts shifts) {
  __shared__ std::uint32_t table[256];
  __shared__ std::uint32_t reg[kThreads];
  const unsigned t = threadIdx.x;
  table[t] = crc32c_detail::table_entry(t);
  __syncthreads();
  for (std::uint64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const auto* words = reinterpret_cast<const uint4*>(p + b * kCrcBlockBytes + t * kCrcThreadBytes);
    std::uint32_t c = 0;
    for (unsigned w = 0; w < kCrcThreadBytes / 16; ++w) {
      const uint4 v = words[w];
      const unsigned xs[4] = {v.x, v.y, v.z, v.w};
      for (const unsigned x : xs) {
        for (unsigned k = 0; k < 4; ++k) c = (c >> 8) ^ table[(c ^ (x >> (8 * k))) & 0xFFu];
      }
    }
    reg[t] = c;
    __syncthreads();
    for (unsigned l = 0; (1u << l) < kThreads; ++l) {
      const unsigned half = 1u << l;
      if (t % (2 * half) == 0) reg[t] = crc32c_detail::multiply_mod_p(reg[t], shifts.level[l]) ^ reg[t + half];
      __syncthreads();
    }
    if (t == 0) crcs[b] = ~(reg[0] ^ shifts.start);
    __syncthreads();
  }
}

unsigned grid_for(std::uint64_t items) {
  constexpr std::uint64_t kMaxBlocks = 65535;  // grid-stride beyond: plenty to fill any GPU
  return static_cast<unsigned>(std::max<std::uint64_t>(1, std::min(kMaxBlocks, (items + kThreads - 1) / kThreads)));
}

}  // namespace

std::uint64_t reduce_table_bytes(DType dtype, std::size_t parents, bool weighted) noexcept {
  return round8(parents * sizeof(void*)) + (weighted ? round8(parents * dtype_itemsize(dtype)) : 0);
}

void fill_reduce_table(SemiringKind s, DType dtype, std::span<const std::byte* const> parents,
                       std::span<const double> weights, std::byte* table) {
  std::memcpy(table, parents.data(), parents.size() * sizeof(void*));
  if (weights.empty()) return;
  std::byte* at = table + round8(parents.size() * sizeof(void*));
  visit_ops(s, dtype, [&]<class Ops>(Tag<Ops>) {
    using T = typename Ops::Value;
    for (std::size_t k = 0; k < weights.size(); ++k) {
      const T w = semiring_detail::weight_as<T>(weights[k]);
      std::memcpy(at + k * sizeof(T), &w, sizeof(T));
    }
  });
}

cudaError_t launch_reduce(SemiringKind s, DType dtype, const std::byte* table, std::size_t parents, bool weighted,
                          std::byte* out, std::uint64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return visit_ops(s, dtype, [&]<class Ops>(Tag<Ops>) {
    using T = typename Ops::Value;
    const auto* ps = reinterpret_cast<const T* const*>(table);
    const T* ws = weighted ? reinterpret_cast<const T*>(table + round8(parents * sizeof(void*))) : nullptr;
    return launch_kernel(reduce_kernel<Ops>, grid_for(count), kThreads, stream, ps, ws, parents,
                         reinterpret_cast<T*>(out), count);
  });
}

cudaError_t launch_crc32c_blocks(const std::byte* p, std::uint64_t blocks, std::uint32_t* crcs, cudaStream_t stream) {
  if (blocks == 0) return cudaSuccess;
  CrcShifts shifts{};
  for (unsigned l = 0; l < 8; ++l) shifts.level[l] = crc32c_detail::x_pow_8n(kCrcThreadBytes << l);
  // CRC32C starts from an inverted register: over a whole block that adds ~0 shifted past it.
  shifts.start = crc32c_detail::multiply_mod_p(~0u, crc32c_detail::x_pow_8n(kCrcBlockBytes));
  constexpr std::uint64_t kMaxBlocks = 65535;
  return launch_kernel(crc32c_blocks_kernel, static_cast<unsigned>(std::min(blocks, kMaxBlocks)), kThreads, stream,
                       reinterpret_cast<const unsigned char*>(p), blocks, crcs, shifts);
}

cudaError_t launch_change_mask(const std::byte* old, const std::byte* now, std::uint64_t n, std::uint64_t* mask,
                               std::uint8_t* flags, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const std::uint64_t blocks = mask_chunks(n);
  return launch_kernel(change_mask_kernel, static_cast<unsigned>(blocks), kThreads, stream,
                       reinterpret_cast<const unsigned char*>(old), reinterpret_cast<const unsigned char*>(now), n,
                       reinterpret_cast<unsigned*>(mask), flags, 2 * mask_words(n));
}

}  // namespace mmsb::cuda
