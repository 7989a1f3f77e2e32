# pleConfigVersion.cmake: the version comes from the PLE_VERSION_* macros of ple.h (themselves
# tested against Cargo.toml). Compatible: the same major version, and for 0.x the same minor.
get_filename_component(_plev_here "${CMAKE_CURRENT_LIST_DIR}" REALPATH)
if(EXISTS "${_plev_here}/../Cargo.toml")
  set(_plev_header "${_plev_here}/../include/ple.h")
else()
  set(_plev_header "${_plev_here}/../../../include/ple/ple.h")
endif()
file(STRINGS "${_plev_header}" _plev_lines REGEX "^#define PLE_VERSION_(MAJOR|MINOR|PATCH) ")
foreach(_plev_part MAJOR MINOR PATCH)
  string(REGEX REPLACE ".*#define PLE_VERSION_${_plev_part} ([0-9]+).*" "\\1"
         _plev_${_plev_part} "${_plev_lines}")
endforeach()
set(PACKAGE_VERSION "${_plev_MAJOR}.${_plev_MINOR}.${_plev_PATCH}")

set(PACKAGE_VERSION_COMPATIBLE FALSE)
if(PACKAGE_FIND_VERSION)
  if(PACKAGE_FIND_VERSION_MAJOR EQUAL _plev_MAJOR
     AND NOT PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION
     AND (NOT _plev_MAJOR EQUAL 0 OR PACKAGE_FIND_VERSION_MINOR EQUAL _plev_MINOR))
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
  endif()
  if(PACKAGE_VERSION VERSION_EQUAL PACKAGE_FIND_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
