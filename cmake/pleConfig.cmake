# pleConfig.cmake: `find_package(ple CONFIG REQUIRED)` for the ple-runtime C API.
#
# Works from a source checkout (point ple_DIR at <checkout>/cmake after `cargo build --release`;
# target/release is preferred over target/debug) and from an install (`make -C examples install`
# puts this file in <prefix>/lib/cmake/ple, found through CMAKE_PREFIX_PATH).
#
# Defines:
#   ple::ple         the static library (libple.a) with its system libraries (threads, dl, m)
#   ple::ple_shared  the shared library (libple.so), if present
#   PLE_INCLUDE_DIR, PLE_STATIC_LIBRARY, PLE_SHARED_LIBRARY, ple_VERSION
# Set PLE_LIBRARY_DIR to use a library from another directory (e.g. target/debug).

get_filename_component(_ple_here "${CMAKE_CURRENT_LIST_DIR}" REALPATH)
if(EXISTS "${_ple_here}/../Cargo.toml")
  get_filename_component(_ple_root "${_ple_here}/.." ABSOLUTE)
  set(_ple_libdirs "${_ple_root}/target/release" "${_ple_root}/target/debug")
else()
  get_filename_component(_ple_root "${_ple_here}/../../.." ABSOLUTE)
  set(_ple_libdirs "${_ple_root}/lib")
endif()
if(PLE_LIBRARY_DIR)
  set(_ple_libdirs "${PLE_LIBRARY_DIR}")
endif()

find_path(PLE_INCLUDE_DIR ple.h PATHS "${_ple_root}/include" NO_DEFAULT_PATH)
find_library(PLE_STATIC_LIBRARY NAMES libple.a PATHS ${_ple_libdirs} NO_DEFAULT_PATH)
find_library(PLE_SHARED_LIBRARY NAMES libple.so PATHS ${_ple_libdirs} NO_DEFAULT_PATH)

include("${CMAKE_CURRENT_LIST_DIR}/pleConfigVersion.cmake")
set(ple_VERSION "${PACKAGE_VERSION}")

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(ple
  REQUIRED_VARS PLE_STATIC_LIBRARY PLE_INCLUDE_DIR
  VERSION_VAR ple_VERSION
  REASON_FAILURE_MESSAGE "build the library first: `cargo build --release` in ${_ple_root}")

if(ple_FOUND AND NOT TARGET ple::ple)
  include(CMakeFindDependencyMacro)
  find_dependency(Threads)
  add_library(ple::ple STATIC IMPORTED)
  set_target_properties(ple::ple PROPERTIES
    IMPORTED_LOCATION "${PLE_STATIC_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${PLE_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
  if(PLE_SHARED_LIBRARY)
    add_library(ple::ple_shared SHARED IMPORTED)
    set_target_properties(ple::ple_shared PROPERTIES
      IMPORTED_LOCATION "${PLE_SHARED_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${PLE_INCLUDE_DIR}")
  endif()
endif()
unset(_ple_here)
unset(_ple_root)
unset(_ple_libdirs)
