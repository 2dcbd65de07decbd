# Every dependency comes from a Debian 12 package (cmake/install-deps.sh installs them), found through
# the CMake config files those packages ship.
find_package(Threads REQUIRED)
find_package(simdjson CONFIG REQUIRED)
find_package(nlohmann_json 3.11 CONFIG REQUIRED)
# The Queue's HTTP and Redis backends: cpp-httplib and hiredis ship pkg-config files only (hiredis's
# CMake config is broken). libmqConfig.cmake repeats these calls for an installed libmq.
find_package(PkgConfig REQUIRED)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
if(MQ_BUILD_TESTS)
  find_package(doctest CONFIG REQUIRED)
endif()
# mqctl's argument parsing (libcli11-dev, header-only).
if(MQ_BUILD_DAEMON)
  find_package(CLI11 CONFIG REQUIRED)
endif()
