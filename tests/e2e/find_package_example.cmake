# Installs this build of libmq into a scratch prefix, then configures, builds and runs
# examples/find_package against it, as a user's project would; then builds and runs
# examples/add_subdirectory, which compiles libmq from this source tree inside its own project, and
# the integration templates (examples/in_process, examples/services) against the installed libmq.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
# The builds take at most 2 jobs (Ninja would take 3 on 2 cores): ctest counts this test as one of
# its -j3, and tests with time bounds run beside it.
set(jobs --parallel 2)
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "failed (${result}): ${ARGV}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()
run(${CMAKE_COMMAND} --install ${BINARY_DIR} --prefix ${prefix})
# With pkg-config made unfindable: a storage-only user must not need the network libraries.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/find_package -B ${WORK_DIR}/build -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=TRUE)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build ${jobs})
run(${WORK_DIR}/build/find_package_example ${WORK_DIR}/data)
if(NOT last_output MATCHES "offset 0: .*hello from libmq")
  message(FATAL_ERROR "unexpected output: ${last_output}")
endif()
message(STATUS "example printed: ${last_output}")

run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/add_subdirectory -B ${WORK_DIR}/subdir-build -G ${GENERATOR})
# The example alone: what it links (the storage layer) is all a project like it compiles.
run(${CMAKE_COMMAND} --build ${WORK_DIR}/subdir-build --target add_subdirectory_example ${jobs})
if(EXISTS ${WORK_DIR}/subdir-build/libmq/mqd OR EXISTS ${WORK_DIR}/subdir-build/libmq/tests)
  message(FATAL_ERROR "add_subdirectory(libmq) built more than the library")
endif()
run(${WORK_DIR}/subdir-build/add_subdirectory_example ${WORK_DIR}/subdir-data)
if(NOT last_output MATCHES "offset 0: .*hello from libmq")
  message(FATAL_ERROR "unexpected output: ${last_output}")
endif()

# The integration templates build against the installed libmq too (the Queue's HTTP and Redis
# backends bring their pkg-config dependencies along through libmqConfig.cmake).
foreach(example in_process services)
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/${example} -B ${WORK_DIR}/${example}-build -G ${GENERATOR}
      -DCMAKE_PREFIX_PATH=${prefix})
  run(${CMAKE_COMMAND} --build ${WORK_DIR}/${example}-build ${jobs})
endforeach()
run(${WORK_DIR}/in_process-build/in_process_example ${WORK_DIR}/in-process-data 5)
if(NOT last_output MATCHES "handled 5 orders")
  message(FATAL_ERROR "unexpected output: ${last_output}")
endif()
