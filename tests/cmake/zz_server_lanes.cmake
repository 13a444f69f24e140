# zz_server_lanes.cmake - every test that uses the shared server ("integration" label, the
# fixture's own start/stop excepted) asks ctest for one "dbserver" lane. Without a resource spec
# file ctest ignores this and the tests run against the one server as before; scripts/test.sh
# runs `ctest -j N --resource-spec-file` with N lanes, and tests/dbserver.sh fixture-start
# starts one local server per lane (DBPOOL_TEST_LANES), so that tests running at the same time
# never share a server. Named zz_ so that tests/CMakeLists.txt includes it after every other
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
