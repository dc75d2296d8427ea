# `cmake --install` of the C++ package: the public headers, the generated BuildConfig.hpp, the
# static engine and a relocatable mmsbConfig.cmake, so that find_package(mmsb) gives mmsb::engine
# (alias mmsb::mmsb). Everything goes to the `dev` component.
#
# Off for scikit-build-core builds: pyproject.toml installs every component (install.components =
# []), and a wheel must hold only the extension module.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(MMSB_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/mmsb
    CACHE STRING "Where mmsbConfig.cmake is installed, relative to the prefix")

set_target_properties(mmsb_engine PROPERTIES EXPORT_NAME engine)

# A sanitized engine needs the sanitizer runtimes at the consumer's link (the build itself gets
# them from add_link_options, which is not exported).
if(MMSB_SANITIZE)
  target_link_options(mmsb_engine INTERFACE $<INSTALL_INTERFACE:-fsanitize=${MMSB_SANITIZE}>)
endif()

install(TARGETS mmsb_engine EXPORT mmsbTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/cpp/include/mmsb
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev
  FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/cpp/generated/mmsb/BuildConfig.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/mmsb COMPONENT dev)

install(EXPORT mmsbTargets NAMESPACE mmsb::
  DESTINATION ${MMSB_INSTALL_CMAKEDIR} COMPONENT dev)

# The toolkit the engine was compiled against (mmsbConfig.cmake's default for consumers).
set(MMSB_CUDA_TOOLKIT_ROOT "")
if(MMSB_HAVE_CUDA)
  get_filename_component(MMSB_CUDA_TOOLKIT_ROOT "${CUDAToolkit_BIN_DIR}" DIRECTORY)
endif()

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/mmsbConfig.cmake.in
  ${PROJECT_BINARY_DIR}/mmsbConfig.cmake
  INSTALL_DESTINATION ${MMSB_INSTALL_CMAKEDIR})
# find_package(mmsb 0.1) accepts any 0.x at or above 0.1 and refuses 1.x (a breaking release).
write_basic_package_version_file(${PROJECT_BINARY_DIR}/mmsbConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/mmsbConfig.cmake ${PROJECT_BINARY_DIR}/mmsbConfigVersion.cmake
  DESTINATION ${MMSB_INSTALL_CMAKEDIR} COMPONENT dev)
