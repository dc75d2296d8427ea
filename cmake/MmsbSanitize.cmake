# MMSB_SANITIZE applies to every target so that the engine, the tests and GoogleTest agree on
# instrumentation (mixing instrumented and plain code hides races and overflows).
if(MMSB_SANITIZE)
  string(REPLACE "," ";" _mmsb_sans "${MMSB_SANITIZE}")
  foreach(_san IN LISTS _mmsb_sans)
    if(NOT _san MATCHES "^(address|undefined|thread|leak)$")
      message(FATAL_ERROR "MMSB_SANITIZE: unknown sanitizer '${_san}'")
    endif()
  endforeach()
  set(_flags -fsanitize=${MMSB_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  # -g1: line tables only, which is what a sanitizer's stack trace needs; full -g made a test
  # object about 40% slower to compile at -O0. It comes after the build type's -g, so it wins.
  add_compile_options(${_flags} -g1)
  add_link_options(${_flags})
endif()

# Fuzzers: coverage instrumentation in every object (the engine included); the libFuzzer runtime
# is linked into the fuzz targets only (tests/fuzz).
if(MMSB_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "MMSB_BUILD_FUZZERS needs clang (CXX=clang++)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
