# fuzz.cmake - the libFuzzer target for the .env parser and its bounded ctest run.
#
# Two roles in one file:
#  - included by tests/CMakeLists.txt: with DBPOOL_BUILD_FUZZ=ON and clang, builds fuzz_config
#    (src/config.c + src/error.c compiled directly with -fsanitize=fuzzer,address,undefined, so
#    the parser itself is instrumented) and adds the ctest "fuzz.config" (label fuzz);
#  - run by that test as `cmake -P fuzz.cmake`: copies the seed corpus into the build tree (the
#    fuzzer adds inputs to its corpus directory; the tree's seeds stay untouched) and runs the
#    fuzzer for $DBPOOL_FUZZ_SECONDS seconds (default 60). A crash, leak, UB report or timeout
#    fails the test and leaves the reproducer in <build>/tests/fuzz/artifacts/.

if(CMAKE_SCRIPT_MODE_FILE)
  set(seconds 60)
  if(NOT "$ENV{DBPOOL_FUZZ_SECONDS}" STREQUAL "")
    set(seconds "$ENV{DBPOOL_FUZZ_SECONDS}")
  endif()
  if(NOT seconds MATCHES "^[1-9][0-9]*$")
    message(FATAL_ERROR "DBPOOL_FUZZ_SECONDS must be a positive whole number, not '${seconds}'")
  endif()
  file(REMOVE_RECURSE "${WORK}")
  file(MAKE_DIRECTORY "${WORK}" "${ARTIFACTS}")
  file(GLOB seeds "${CORPUS}/*")
  file(COPY ${seeds} DESTINATION "${WORK}")
  message(STATUS "fuzz_config: ${seconds} s over a copy of ${CORPUS}")
  execute_process(
    COMMAND "${FUZZER}" -max_total_time=${seconds} -max_len=8192 -timeout=10 -rss_limit_mb=2048
            -print_final_stats=1 -dict=${DICT} -artifact_prefix=${ARTIFACTS}/ "${WORK}"
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "fuzz_config failed (exit ${rc}); reproducer in ${ARTIFACTS}/")
  endif()
  return()
endif()

if(NOT DBPOOL_BUILD_FUZZ)
  return()
endif()
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(WARNING "DBPOOL_BUILD_FUZZ needs clang (libFuzzer); compiler is "
    "${CMAKE_C_COMPILER_ID}: fuzz targets not built")
  return()
endif()

set(DBPOOL_FUZZ_FLAGS -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
  -fno-omit-frame-pointer -g -O1)
add_executable(fuzz_config
  ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_config.c
  ${PROJECT_SOURCE_DIR}/src/config.c
  ${PROJECT_SOURCE_DIR}/src/error.c)
target_include_directories(fuzz_config PRIVATE ${PROJECT_BINARY_DIR}/include
  ${PROJECT_SOURCE_DIR}/src)
target_compile_definitions(fuzz_config PRIVATE _GNU_SOURCE)
# DBPOOL_WARNINGS may carry GCC-only options: clang must not fail on them under -Werror.
target_compile_options(fuzz_config PRIVATE ${DBPOOL_WARNINGS} -Wno-unknown-warning-option
  ${DBPOOL_FUZZ_FLAGS})
target_link_options(fuzz_config PRIVATE ${DBPOOL_FUZZ_FLAGS})
target_link_libraries(fuzz_config PRIVATE PkgConfig::MARIADB PkgConfig::INIH Threads::Threads)

# The ctest timeout follows the run time known at configure time, plus start-up and the final
# minimisation margin; export DBPOOL_FUZZ_SECONDS before configuring for longer runs.
set(fuzz_seconds 60)
if(NOT "$ENV{DBPOOL_FUZZ_SECONDS}" STREQUAL "")
  set(fuzz_seconds "$ENV{DBPOOL_FUZZ_SECONDS}")
endif()
math(EXPR fuzz_timeout "${fuzz_seconds} + 120")
add_test(NAME fuzz.config COMMAND ${CMAKE_COMMAND}
  -DFUZZER=$<TARGET_FILE:fuzz_config>
  -DCORPUS=${PROJECT_SOURCE_DIR}/tests/fuzz/corpus
  -DDICT=${PROJECT_SOURCE_DIR}/tests/fuzz/config.dict
  -DWORK=${CMAKE_CURRENT_BINARY_DIR}/fuzz/corpus
  -DARTIFACTS=${CMAKE_CURRENT_BINARY_DIR}/fuzz/artifacts
  -P ${CMAKE_CURRENT_LIST_FILE})
set_tests_properties(fuzz.config PROPERTIES LABELS fuzz TIMEOUT ${fuzz_timeout})
