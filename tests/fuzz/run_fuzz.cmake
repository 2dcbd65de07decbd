# Runs one libFuzzer target briefly over a copy of its seed corpus (the repo's corpus is never
# modified); fails when the target crashes or breaks an invariant, and names the input that did.
#   cmake -DPROGRAM=<target> -DCORPUS=<tests/fuzz/corpus/<target>> -DWORK=<scratch dir> -DSECONDS=<n> -P run_fuzz.cmake
foreach(var PROGRAM CORPUS WORK SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzz.cmake: -D${var}=... is required")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/artifacts")
file(COPY "${CORPUS}/" DESTINATION "${WORK}/corpus")
# -timeout: one input taking seconds is a hang; -rss_limit_mb: one input taking a GiB is a bug too.
execute_process(
  COMMAND "${PROGRAM}" -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          "-artifact_prefix=${WORK}/artifacts/" "${WORK}/corpus"
  RESULT_VARIABLE result
  OUTPUT_VARIABLE output
  ERROR_VARIABLE output)
string(REGEX MATCH "stat::number_of_executed_units: *[0-9]+" runs "${output}")
if(NOT result EQUAL 0)
  file(GLOB artifacts "${WORK}/artifacts/*")
  message("${output}")
  message(FATAL_ERROR "${PROGRAM} failed (${result}); the input that did it: ${artifacts}\n"
                      "Reproduce with: ${PROGRAM} <that file>; minimise with -minimize_crash=1")
endif()
message("${PROGRAM}: no crash in ${SECONDS} s (${runs})")
