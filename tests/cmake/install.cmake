# Packaging tests (label "unit", no server needed):
#  unit.symbols.exported   nm -D --defined-only libdbpool.so lists only dbpool_* and every
#                          DBPOOL_EXPORT function of dbpool.h
#  unit.install.consumer   cmake --install into a temporary prefix, then a consumer program built
#                          and run through pkg-config (shared, --static) and find_package
#                          (dbpool::dbpool, dbpool::static)
# The install test is not registered in sanitizer or valgrind builds: an instrumented library
# needs the sanitizer runtime in every consumer, and the normal build already covers it.

add_test(NAME unit.symbols.exported
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/install/check_symbols.sh $<TARGET_FILE:dbpool>
    ${PROJECT_BINARY_DIR}/include/dbpool.h)
set_tests_properties(unit.symbols.exported PROPERTIES LABELS "unit" TIMEOUT 60)

string(TOUPPER "${CMAKE_BUILD_TYPE}" _dbpool_bt)
string(TOLOWER "${CMAKE_C_FLAGS} ${CMAKE_C_FLAGS_${_dbpool_bt}}" _dbpool_flags)
if(NOT _dbpool_flags MATCHES "-fsanitize" AND NOT DBPOOL_VALGRIND)
  add_test(NAME unit.install.consumer
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/install/install_test.sh ${PROJECT_BINARY_DIR}
      ${CMAKE_C_COMPILER} ${CMAKE_COMMAND} ${PROJECT_VERSION})
  set_tests_properties(unit.install.consumer PROPERTIES LABELS "unit" TIMEOUT 300)
endif()

# unit.install.release_build: the library configured and built the way a packager builds it
# (-DCMAKE_BUILD_TYPE=Release, i.e. -O3) with every warning an error. GCC's -O3 sees things
# -O2 does not (a "maybe uninitialized" in query.c once broke Release builds while every
# RelWithDebInfo build was clean).
if(NOT _dbpool_flags MATCHES "-fsanitize" AND NOT DBPOOL_VALGRIND)
  add_test(NAME unit.install.release_build
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/install/release_build.sh ${PROJECT_SOURCE_DIR}
      ${CMAKE_C_COMPILER} ${CMAKE_COMMAND})
  set_tests_properties(unit.install.release_build PROPERTIES LABELS "unit" TIMEOUT 300)
endif()
