#!/usr/bin/env bash
# Builds and runs every test of the project (the README's test command; .ci/run runs it too).
#   1. an AddressSanitizer+UBSan tree built by clang (-O1: libmq, mqd and the in-process tests; the main
#      tree's end-to-end tests run against its mqd), which also builds the libFuzzer targets (tests/fuzz:
#      libmq and mqd's parsers) from the same object code, and a ThreadSanitizer tree (libmq and the
#      tests where threads meet);
#   2. the main tree with -Wall -Wextra -Werror (gcc): libmq, mqd, tests, examples; its benchmarks are
#      compiled by a ctest entry (build.benchmarks) while the other tests run.
# The main tree's ctest runs its own tests, the sanitizer trees' test programs and each fuzz target
# for a few seconds (label fuzz), so the output
# ends with one ctest summary over everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cmake/install-deps.sh redis-server python3-yaml clang libclang-rt-14-dev libnats-dev chromium prometheus libcli11-dev etcd-server
# The browser test and the OpenAPI validator run on Node.js (20 or later) with npm: machines of this
# project's kind have them; Debian's are the fallback.
command -v npm >/dev/null || bash cmake/install-deps.sh nodejs npm

root=$(realpath -m "${MQ_BUILD_ROOT:-build}")
jobs=$(nproc)
configure() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DMQ_WERROR=ON "$@" >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; exit 1; }
}
mkdir -p "$root"
# build/asan was a gcc tree before: a tree configured by another compiler is made afresh, since CMake
# would keep only the compiler of its cache and lose the options below.
if [[ -f "$root/asan/CMakeCache.txt" ]] && ! grep -q '^CMAKE_CXX_COMPILER:.*clang++' "$root/asan/CMakeCache.txt"; then
  rm -rf "$root/asan"
fi
# The ASan tree is clang's (libFuzzer is clang's only): the fuzz targets link the very objects the
# sanitizer tests run, which saves a third compilation of libmq and mqd, and two compilers' warnings
# are enforced.
configure "$root/asan" -DCMAKE_CXX_COMPILER=clang++ -DMQ_SANITIZE=address -DMQ_FUZZ=ON \
  -DMQ_BUILD_BENCH=OFF -DMQ_BUILD_E2E_TESTS=OFF
configure "$root/tsan" -DMQ_SANITIZE=thread -DMQ_BUILD_DAEMON=OFF -DMQ_BUILD_BENCH=OFF
# -g1 (functions and line tables, enough for stack traces) instead of -g: a third less compile time.
configure "$root/main" -DMQ_ASAN_TREE="$root/asan" -DMQ_TSAN_TREE="$root/tsan" -DMQ_FUZZ_TREE="$root/asan" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DMQ_BENCH_BUILT_BY_CTEST=ON

# The sanitizer trees build only what the main tree's ctest runs from them (tests/CMakeLists.txt,
# MQ_ASAN_TREE / MQ_TSAN_TREE), with what those programs start: on 2 cores every target saved counts.
started=$SECONDS
phase() { echo "== $1 ($((SECONDS - started)) s since the first build)"; }
phase "building $root/asan"
cmake --build "$root/asan" -j "$jobs" --target unit_tests concurrency_tests crash_tests crash_appender \
  crash_consumer mqd_unit_tests client_tests replication_tests mqd fuzz_targets
phase "building $root/tsan"
cmake --build "$root/tsan" -j "$jobs" --target concurrency_tests client_tests replication_tests
phase "building $root/main"
cmake --build "$root/main" -j "$jobs"

phase "running the tests"
cd "$root/main"
# One test more than cores: the tests wait on fdatasync, sockets and child processes for a third of
# their time (measured: 406 s with -j2, 345 s with -j3, on 2 cores, nothing failing).
exec ctest --output-on-failure --timeout 900 -j "$((jobs + 1))"
