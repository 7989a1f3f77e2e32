# pleConfig.cmake: `find_package(ple CONFIG REQUIRED)` for the ple-runtime C API.
#
# Works from a source checkout (point ple_DIR at <checkout>/cmake after `cargo build --release`;
# target/release is preferred over target/debug) and from an install (`make -C examples install`
# puts this file in <prefix>/lib/cmake/ple, found through CMAKE_PREFIX_PATH). Every path is found
# relative to this file, so an installed prefix can be moved.
#
# Defines:
#   ple::ple         the static library (libple.a) with its system libraries (threads, dl, m)
#   ple::ple_shared  the shared library (libple.so), if present. Programs record its SONAME
#                    (libple.so.<PLE_SOVERSION>), not its path: at run time the loader finds it
#                    through the program's RUNPATH (CMake sets the library's directory), or
#                    LD_LIBRARY_PATH, or the system's library path (docs/C_API.md).
#   PLE_INCLUDE_DIR, PLE_STATIC_LIBRARY, PLE_SHARED_LIBRARY, PLE_SOVERSION, ple_VERSION
# Set PLE_LIBRARY_DIR to use a library from another directory (e.g. target/debug).

get_filename_component(_ple_here "${CMAKE_CURRENT_LIST_DIR}" REALPATH)
if(EXISTS "${_ple_here}/../Cargo.toml")
  get_filename_component(_ple_root "${_ple_here}/.." ABSOLUTE)
  set(_ple_checkout TRUE)
  set(_ple_includes "${_ple_root}/include")
  set(_ple_libdirs "${_ple_root}/target/release" "${_ple_root}/target/debug")
else()
  get_filename_component(_ple_root "${_ple_here}/../../.." ABSOLUTE)
  set(_ple_checkout FALSE)
  set(_ple_includes "${_ple_root}/include/ple")
  set(_ple_libdirs "${_ple_root}/lib")
endif()
if(PLE_LIBRARY_DIR)
  set(_ple_libdirs "${PLE_LIBRARY_DIR}")
endif()

find_path(PLE_INCLUDE_DIR ple.h PATHS "${_ple_includes}" NO_DEFAULT_PATH)
find_library(PLE_STATIC_LIBRARY NAMES libple.a PATHS ${_ple_libdirs} NO_DEFAULT_PATH)
find_library(PLE_SHARED_LIBRARY NAMES libple.so PATHS ${_ple_libdirs} NO_DEFAULT_PATH)

include("${CMAKE_CURRENT_LIST_DIR}/pleConfigVersion.cmake")
set(ple_VERSION "${PACKAGE_VERSION}")
# The SONAME's version, as build.rs sets it (cargo-c's rule): MAJOR from 1.0 on, 0.MINOR before.
if(NOT _plev_MAJOR EQUAL 0)
  set(PLE_SOVERSION "${_plev_MAJOR}")
elseif(NOT _plev_MINOR EQUAL 0)
  set(PLE_SOVERSION "0.${_plev_MINOR}")
else()
  set(PLE_SOVERSION "0.0.${_plev_PATCH}")
endif()

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
    set(_ple_soname "libple.so.${PLE_SOVERSION}")
    get_filename_component(_ple_shared_dir "${PLE_SHARED_LIBRARY}" DIRECTORY)
    # cargo writes only libple.so: give the loader the SONAME's file name next to it (an install
    # has it already).
    if(_ple_checkout AND NOT EXISTS "${_ple_shared_dir}/${_ple_soname}")
      file(CREATE_LINK "libple.so" "${_ple_shared_dir}/${_ple_soname}" RESULT _ple_link SYMBOLIC)
    endif()
    add_library(ple::ple_shared SHARED IMPORTED)
    set_target_properties(ple::ple_shared PROPERTIES
      IMPORTED_LOCATION "${PLE_SHARED_LIBRARY}"
      IMPORTED_SONAME "${_ple_soname}"
      INTERFACE_INCLUDE_DIRECTORIES "${PLE_INCLUDE_DIR}")
  endif()
endif()
unset(_ple_here)
unset(_ple_root)
unset(_ple_checkout)
unset(_ple_includes)
unset(_ple_libdirs)
unset(_ple_soname)
unset(_ple_shared_dir)
unset(_ple_link)
