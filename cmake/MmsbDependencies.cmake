find_package(Threads REQUIRED)

# oneTBB (Debian libtbb-dev) drives the partitioned parallel apply; without it a std::thread
# fallback gives the same (deterministic) result.
set(MMSB_HAVE_TBB OFF)
if(NOT MMSB_WITH_TBB STREQUAL "OFF")
  find_package(TBB CONFIG QUIET)
  mmsb_resolve_feature(MMSB_WITH_TBB TBB_FOUND "oneTBB (apt-get install libtbb-dev)")
endif()

# CUDA: compiled in when the toolkit is present; the static runtime loads the driver lazily, so
# `import mmsb` still works on machines without a driver or GPU.
set(MMSB_HAVE_CUDA OFF)
if(MMSB_FAKE_CUDA)
  # The stand-in runtime replaces the toolkit: no nvcc, the kernels compiled as C++.
  set(MMSB_HAVE_CUDA ON)
elseif(NOT MMSB_WITH_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  set(_cuda_found FALSE)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # 90 = sm_90 SASS + compute_90 PTX (H100/H200, and JIT for newer parts). Never 'native':
      # build machines have no GPU.
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    # CMake 3.25 does not know nvcc 13's C++20 flag; teach it, so CUDA sources build as C++20
    # like the rest of the engine.
    if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
      list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit)
    if(CUDAToolkit_FOUND)
      set(_cuda_found TRUE)
    endif()
  endif()
  mmsb_resolve_feature(MMSB_WITH_CUDA _cuda_found "the CUDA toolkit (nvcc)")
endif()

# NCCL replication needs only CUDA at build time: libnccl is dlopen'ed at run time and its few
# types are declared in mmsb/cuda/Nccl.hpp, so neither nccl.h nor libnccl is needed to build.
set(MMSB_HAVE_NCCL OFF)
if(NOT MMSB_WITH_NCCL STREQUAL "OFF" AND NOT MMSB_FAKE_CUDA)  # NCCL would need the real runtime
  mmsb_resolve_feature(MMSB_WITH_NCCL MMSB_HAVE_CUDA "CUDA (NCCL replication runs on CUDA devices)")
endif()
