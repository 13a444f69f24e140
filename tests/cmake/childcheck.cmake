# Child-process checks shared by the exit and TLS tests.
target_sources(dbpool_testutil PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support/childcheck.c)
