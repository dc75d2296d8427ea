#pragma once
/// What this build of the engine contains and runs with (mmsb.build_info()).
#include <cstdint>
#include <string>

namespace mmsb {

struct BuildInfo {
  std::string version;
  std::string compiler;
  std::string build_type;
  std::string sanitize;        ///< MMSB_SANITIZE value, "" when none
  bool cuda = false;           ///< CUDA code compiled in
  std::string cuda_runtime;    ///< "13.0" or ""
  int cuda_devices = 0;        ///< devices visible now (0 without driver/GPU)
  bool nccl = false;           ///< NCCL support compiled in (loaded at run time)
  bool tbb = false;
  std::string parallel_backend;
  std::string simd;            ///< SIMD level chosen at run time: "avx2" or "scalar"
  unsigned hardware_threads = 0;
  std::uint64_t page_record_bytes = 0;  ///< hot metadata per page
};

/// Thread safety: pure apart from probing CUDA devices.
BuildInfo build_info();

}  // namespace mmsb
