# faultproxy.cmake - the fault-injection TCP proxy (tests/support/faultproxy.c) is part of the
# test support library, so any test or helper program can put it between the pool and a server.
# No new dependency: POSIX sockets and pthreads only.
target_sources(dbpool_testutil PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support/faultproxy.c)
