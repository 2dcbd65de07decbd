# ctest's build.benchmarks (configure option MQ_BENCH_BUILT_BY_CTEST): compiles the benchmark programs,
# one compile at a time, while the other tests run. Building them would also bring what they link
# (libmq, mqd) up to date, and that must not happen beside tests that run mqd or install libmq: a tree
# whose other targets are not built yet is refused, with what to do.
#   cmake -DBINARY_DIR=<tree> -DGENERATOR=<generator> -P build_benchmarks.cmake
if(GENERATOR STREQUAL "Ninja")
  execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY_DIR} -- -n
                  RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0 OR NOT out MATCHES "no work to do")
    message(FATAL_ERROR "build.benchmarks: ${BINARY_DIR} is not built (libmq, mqd or a test would be rebuilt "
                        "while other tests run them). Run `cmake --build ${BINARY_DIR}` first, then ctest.\n${out}${err}")
  endif()
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY_DIR} --target benchmarks --parallel 1 RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "build.benchmarks: the benchmarks do not build (see above)")
endif()
