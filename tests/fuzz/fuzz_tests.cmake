# Included by tests/CMakeLists.txt when MQ_FUZZ_TREE names a built fuzz tree: each target runs for a
# few seconds over a copy of its seed corpus, as ctest tests labelled `fuzz`, so that the main tree's
# one ctest summary covers them. Long runs: README, "Fuzzing".
include(${CMAKE_CURRENT_LIST_DIR}/targets.cmake)
set(MQ_FUZZ_SECONDS 5 CACHE STRING "How long ctest runs each fuzz target (seconds)")
foreach(target ${MQ_FUZZ_TARGETS})
  string(REGEX REPLACE "^fuzz_" "fuzz." test_name ${target})
  add_test(NAME ${test_name}
    COMMAND ${CMAKE_COMMAND} -DPROGRAM=${MQ_FUZZ_TREE}/tests/fuzz/${target}
            -DCORPUS=${CMAKE_CURRENT_LIST_DIR}/corpus/${target}
            -DWORK=${CMAKE_CURRENT_BINARY_DIR}/fuzz/${target} -DSECONDS=${MQ_FUZZ_SECONDS}
            -P ${CMAKE_CURRENT_LIST_DIR}/run_fuzz.cmake)
  set_tests_properties(${test_name} PROPERTIES LABELS fuzz TIMEOUT 120)
endforeach()
