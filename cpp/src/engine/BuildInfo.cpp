#include "mmsb/engine/BuildInfo.hpp"

#include "mmsb/BuildConfig.hpp"
#include "mmsb/core/CpuFeatures.hpp"
#include "mmsb/cuda/Cuda.hpp"
#include "mmsb/page/Page.hpp"
#include "mmsb/parallel/ThreadPool.hpp"

namespace mmsb {

BuildInfo build_info() {
  BuildInfo b;
  b.version = MMSB_VERSION_STRING;
#if defined(__clang__)
  b.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  b.compiler = "g++ " __VERSION__;
#else
  b.compiler = "unknown";
#endif
  b.build_type = MMSB_BUILD_TYPE;
  b.sanitize = MMSB_SANITIZE_STRING;
  b.cuda = cuda::compiled();
  b.cuda_runtime = cuda::runtime_version();
  b.cuda_devices = cuda::device_count();
  b.nccl = MMSB_HAVE_NCCL != 0;
  b.tbb = MMSB_HAVE_TBB != 0;
  b.parallel_backend = ThreadPool::backend();
  b.simd = std::string(simd_level_name(simd_level()));
  b.hardware_threads = ThreadPool::hardware_threads();
  b.page_record_bytes = sizeof(PageRecord);
  return b;
}

}  // namespace mmsb
