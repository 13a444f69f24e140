# zz_server_lanes.cmake - every test that uses the shared server ("integration" label, the
# fixture's own start/stop excepted) asks ctest for one "dbserver" lane. scripts/test.sh runs
# `ctest -j N --resource-spec-file` with N lanes, and tests/dbserver.sh fixture-start starts one
# local server per lane (DBPOOL_TEST_LANES), so that tests running at the same time never share
# a server. A plain `ctest -j N` by hand gets the build's default spec below: one lane, which
# the fixture always starts, so integration tests run one at a time (they count sessions and
# change server settings: two at once on one server would fail each other) while unit tests
# still run in parallel. Named zz_ so that tests/CMakeLists.txt includes it after every other
# fragment (it only sees the tests defined before it).
get_property(_dbpool_all_tests DIRECTORY PROPERTY TESTS)
foreach(t ${_dbpool_all_tests})
  if(t MATCHES "^fixture\\.")
    continue()
  endif()
  get_test_property(${t} LABELS _dbpool_labels)
  if(_dbpool_labels AND "integration" IN_LIST _dbpool_labels)
    set_tests_properties(${t} PROPERTIES RESOURCE_GROUPS "dbserver:1")
  endif()
endforeach()

set(_dbpool_lanes_spec ${CMAKE_BINARY_DIR}/dbserver-lanes-default.json)
file(WRITE ${_dbpool_lanes_spec}
  "{\"version\": {\"major\": 1, \"minor\": 0}, \"local\": [{\"dbserver\": [{\"id\": \"0\", \"slots\": 1}]}]}\n")
set(CTEST_RESOURCE_SPEC_FILE ${_dbpool_lanes_spec} CACHE FILEPATH
  "Default ctest resource spec: one shared-server lane (scripts/test.sh passes its own)" FORCE)
