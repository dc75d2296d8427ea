#pragma once
/// StagingPlan: how the CUDA backend lays a transfer out in its staging buffers (CudaBackend.cpp).
/// A write packs the runs' payload and a copy table into pinned host memory, sends both with one
/// host-to-device copy and scatters them with one run-copy kernel; a read mirrors it. This is
/// the host-side bookkeeping of that, kept free of CUDA so the tests check it on any machine.
///
/// Layout of one round in a buffer of `capacity` bytes: the pieces' payload from offset 0, each
/// piece at the lowest free offset congruent to its device address modulo kLane (so the kernel
/// copies it in 16-byte words; at most kLane - 1 bytes of padding a piece), then the copy table
/// at `table_at` (kLane-aligned, kEntryBytes a piece). A transfer that does not fit goes in
/// several rounds, in order. Runs are cut into pieces of at most `piece_bytes`, which keeps the
/// kernel's work per lane group even (see RunCopy.cu).
///
/// Thread safety: none (the backend holds one plan per device under its transfer mutex).
#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"

namespace mmsb::cuda {

class StagingPlan {
 public:
  static constexpr std::uint64_t kLane = 16;
  static constexpr std::uint64_t kEntryBytes = 24;  ///< sizeof(DeviceCopyRun), checked in RunCopy.hpp

  /// One piece of a run: `length` bytes at `device`, at `staging` in the staging buffers and at
  /// `host` in the caller's host buffer.
  struct Piece {
    std::byte* device;
    std::uint64_t staging;
    std::uint64_t host;
    std::uint64_t length;
  };

  explicit StagingPlan(std::uint64_t piece_bytes) : piece_bytes_(std::max<std::uint64_t>(piece_bytes, 1)) {}

  /// Staging bytes that hold all of `runs` in one round (an upper bound).
  std::uint64_t bound(std::span<const DeviceRun> runs) const noexcept {
    std::uint64_t bytes = kLane;
    for (const DeviceRun& r : runs) bytes += r.length + pieces_of(r.length) * (kLane + kEntryBytes);
    return bytes;
  }

  /// Calls round(std::span<const Piece> pieces, std::uint64_t table_at) for each round of
  /// `runs` (zero-length runs give no piece) in a buffer of `capacity` bytes. Throws
  /// Error(Internal) when `capacity` cannot hold even one piece.
  template <class Round>
  void plan(std::span<const DeviceRun> runs, std::uint64_t capacity, Round&& round) {
    pieces_.clear();
    std::uint64_t end = 0;  // end of the payload laid out so far
    for (const DeviceRun& r : runs) {
      for (std::uint64_t done = 0; done < r.length;) {
        std::byte* device = r.device + done;
        const std::uint64_t length = std::min(piece_bytes_, r.length - done);
        std::uint64_t at = place(end, device);
        if (!pieces_.empty() && !fits(at + length, pieces_.size() + 1, capacity)) {
          round(std::span<const Piece>(pieces_), round_up(end));
          pieces_.clear();
          end = 0;
          at = place(end, device);
        }
        if (!fits(at + length, pieces_.size() + 1, capacity)) {
          fail(ErrorCode::Internal, "a staging buffer of ", capacity, " bytes cannot hold a piece of ", length,
               " bytes");
        }
        pieces_.push_back({device, at, r.host_offset + done, length});
        end = at + length;
        done += length;
      }
    }
    if (!pieces_.empty()) round(std::span<const Piece>(pieces_), round_up(end));
  }

 private:
  std::uint64_t pieces_of(std::uint64_t length) const noexcept { return (length + piece_bytes_ - 1) / piece_bytes_; }
  static std::uint64_t round_up(std::uint64_t n) noexcept { return (n + kLane - 1) / kLane * kLane; }
  // The lowest offset >= end in the same lane as `device`.
  static std::uint64_t place(std::uint64_t end, const std::byte* device) noexcept {
    const std::uint64_t lane = reinterpret_cast<std::uintptr_t>(device) % kLane;
    return end + (lane + kLane - end % kLane) % kLane;
  }
  static bool fits(std::uint64_t payload_end, std::size_t pieces, std::uint64_t capacity) noexcept {
    return round_up(payload_end) + pieces * kEntryBytes <= capacity;
  }

  std::uint64_t piece_bytes_;
  std::vector<Piece> pieces_;
};

}  // namespace mmsb::cuda
