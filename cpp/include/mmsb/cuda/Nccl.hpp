#pragma once
/// NCCL, loaded with dlopen on first use: the build never links libnccl and needs no nccl.h, so
/// `import mmsb` works on machines without it and a machine gains replication by installing the
/// library. The few NCCL types used are declared here with NCCL's documented ABI (nccl.h 2.x);
/// the function pointers are typed from its documented signatures.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

struct CUstream_st;  // cudaStream_t is CUstream_st*; declared so this header needs no CUDA headers

namespace mmsb::cuda {

/// ncclResult_t: 0 is success; NCCL's other codes are passed through for messages.
enum class NcclResult : int { Success = 0, InProgress = 7 };
/// ncclDataType_t values used here.
enum class NcclDataType : int { Uint8 = 1, Uint64 = 5 };
/// ncclComm_t: an opaque handle.
using NcclComm = struct NcclCommOpaque*;
/// ncclUniqueId: 128 opaque bytes from ncclGetUniqueId, passed by value to ncclCommInitRank
/// (a plain array member, exactly as nccl.h declares it, so the by-value ABI is the same).
struct NcclUniqueId {
  char internal[128];
};
static_assert(sizeof(NcclUniqueId) == 128);

/// A loaded libnccl and its resolved entry points.
/// Invariant: every pointer is non-null once constructed. Immutable; any thread may call it
/// (NCCL's own rules apply to the communicators).
class NcclLibrary {
 public:
  /// The names tried by nccl_library(), in order.
  static constexpr std::array<const char*, 2> kDefaultNames{"libnccl.so.2", "libnccl.so"};

  /// dlopen()s the first of `names` that loads and resolves every function. Throws
  /// Error(DeviceUnavailable) naming each name tried and why it failed (dlerror, or the missing
  /// function); nothing stays loaded then.
  explicit NcclLibrary(std::span<const char* const> names);
  NcclLibrary(const NcclLibrary&) = delete;
  NcclLibrary& operator=(const NcclLibrary&) = delete;
  /// dlclose()s the library. The process-wide instance is never destroyed: NCCL keeps threads.
  ~NcclLibrary();

  /// The name that loaded ("libnccl.so.2").
  const std::string& name() const noexcept { return name_; }
  /// "major.minor.patch" from ncclGetVersion.
  std::string version() const;
  /// Throws Error(DeviceUnavailable) "<what> failed: <NCCL error string> (NCCL error <n>)"
  /// unless `r` is Success.
  void check(NcclResult r, std::string_view what) const;

  NcclResult (*get_version)(int* version) = nullptr;
  NcclResult (*get_unique_id)(NcclUniqueId* id) = nullptr;
  NcclResult (*comm_init_rank)(NcclComm* comm, int nranks, NcclUniqueId id, int rank) = nullptr;
  NcclResult (*comm_destroy)(NcclComm comm) = nullptr;
  NcclResult (*comm_abort)(NcclComm comm) = nullptr;
  NcclResult (*comm_get_async_error)(NcclComm comm, NcclResult* async_error) = nullptr;
  NcclResult (*broadcast)(const void* send, void* recv, std::size_t count, NcclDataType type, int root,
                          NcclComm comm, CUstream_st* stream) = nullptr;
  NcclResult (*all_gather)(const void* send, void* recv, std::size_t send_count, NcclDataType type,
                           NcclComm comm, CUstream_st* stream) = nullptr;
  const char* (*get_error_string)(NcclResult result) = nullptr;

 private:
  void* handle_ = nullptr;
  std::string name_;
};

/// The process-wide library (kDefaultNames), loaded on the first call and kept. Throws
/// Error(DeviceUnavailable) with the load failure, on this and every later call.
const NcclLibrary& nccl_library();

/// This build has NCCL support (build_info().nccl), the library loads and resolves, and a CUDA
/// device is usable (cuda::is_available()). Never throws. Checks the device first, so a machine
/// without a GPU never loads libnccl for it.
bool nccl_available() noexcept;
/// NCCL's version ("2.28.9"), or "" when the library cannot be loaded. Needs no GPU.
std::string nccl_version() noexcept;

}  // namespace mmsb::cuda
