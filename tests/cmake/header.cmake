# Header test: the generated dbpool.h compiles alone, as C99, C11 and C++ (11 and 17), with
# -Wall -Wextra -pedantic -Werror. Each compilation is a ctest entry labelled "unit"; a missing
# C++ compiler makes the C++ entries skip (exit 77), never pass silently.

set(DBPOOL_HEADER_TEST_DIR ${CMAKE_CURRENT_BINARY_DIR}/header-test)
set(DBPOOL_HEADER_FLAGS -Wall -Wextra -pedantic -Werror -I${PROJECT_BINARY_DIR}/include)

# The translation unit includes dbpool.h first and alone (twice: the guard must hold) and uses
# the macros that expand to code, so they are compiled too.
file(WRITE ${DBPOOL_HEADER_TEST_DIR}/header_alone.c [=[
#include "dbpool.h"
#include "dbpool.h"

int dbpool_header_test(void);
int dbpool_header_test(void)
{
    dbpool_stats st;
    dbpool_conn *c = 0;
    dbpool_param p[2];
    p[0] = dbpool_param_text("x");
    p[1] = dbpool_param_blob("y", 1);
    (void)p;
    (void)dbpool_stats_get(&st);
    (void)dbpool_get(&c);
    return DBPOOL_VERSION_NUM > 0 && DBPOOL_ETIMEDOUT < 0 ? 0 : 1;
}
]=])
configure_file(${DBPOOL_HEADER_TEST_DIR}/header_alone.c ${DBPOOL_HEADER_TEST_DIR}/header_alone.cpp
  COPYONLY)

foreach(std c99 c11)
  add_test(NAME unit.header.${std}
    COMMAND ${CMAKE_C_COMPILER} -std=${std} ${DBPOOL_HEADER_FLAGS} -Wstrict-prototypes
      -c ${DBPOOL_HEADER_TEST_DIR}/header_alone.c -o ${DBPOOL_HEADER_TEST_DIR}/header_${std}.o)
  set_tests_properties(unit.header.${std} PROPERTIES LABELS "unit" TIMEOUT 60)
endforeach()

# A C++ compiler: the project's if C++ is enabled, else one found next to the C compiler or on
# PATH (the project itself is C only).
if(CMAKE_CXX_COMPILER)
  set(DBPOOL_CXX ${CMAKE_CXX_COMPILER})
else()
  if(CMAKE_C_COMPILER_ID MATCHES "Clang")
    string(REGEX MATCH "^[0-9]+" _dbpool_cc_major "${CMAKE_C_COMPILER_VERSION}")
    set(_dbpool_cxx_names clang++-${_dbpool_cc_major} clang++ g++ c++)
  else()
    set(_dbpool_cxx_names g++ c++ clang++)
  endif()
  get_filename_component(_dbpool_cc_dir ${CMAKE_C_COMPILER} DIRECTORY)
  find_program(DBPOOL_CXX NAMES ${_dbpool_cxx_names} HINTS ${_dbpool_cc_dir})
endif()

foreach(std c++11 c++17)
  if(DBPOOL_CXX)
    add_test(NAME unit.header.${std}
      COMMAND ${DBPOOL_CXX} -std=${std} ${DBPOOL_HEADER_FLAGS}
        -c ${DBPOOL_HEADER_TEST_DIR}/header_alone.cpp
        -o ${DBPOOL_HEADER_TEST_DIR}/header_${std}.o)
  else()
    add_test(NAME unit.header.${std}
      COMMAND sh -c "echo 'SKIP: no C++ compiler found (install g++)'; exit 77")
  endif()
  set_tests_properties(unit.header.${std} PROPERTIES LABELS "unit" TIMEOUT 60
    SKIP_RETURN_CODE 77)
endforeach()
