/*
 * testutil.h - what the tests share: the server coordinates from the fixture, an admin
 * connection for checking facts on the server, private server instances, child processes.
 *
 * Server coordinates come from the DBPOOL_TEST_* environment variables when they name an
 * external server, else from the file $DBPOOL_TEST_ENV_FILE written by the fixture
 * (tests/dbserver.sh fixture-start): lines KEY=VALUE with the keys
 *   DBPOOL_TEST_HOST DBPOOL_TEST_PORT DBPOOL_TEST_SOCKET DBPOOL_TEST_DB
 *   DBPOOL_TEST_USER DBPOOL_TEST_PASSWORD            (the non-privileged application user)
 *   DBPOOL_TEST_ADMIN_USER DBPOOL_TEST_ADMIN_PASSWORD (for PROCESSLIST, KILL, SET GLOBAL)
 *   DBPOOL_TEST_ERRLOG                                (server error log, "" if unreadable)
 *   DBPOOL_TEST_KIND                                  (external | docker | local)
 */
#ifndef DBPOOL_TESTUTIL_H
#define DBPOOL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>
#include <mysql.h>

#include "dbpool.h"

typedef struct tu_server {
    char host[64];
    unsigned port;
    char socket[512];
    char db[64];
    char user[64];
    char password[64];
    char admin_user[64];
    char admin_password[64];
    char errlog[512];
    char datadir[512];   /* private instances only */
    long pid;            /* private instances only: mariadbd pid */
} tu_server;

/* The shared fixture server. If none is available: exit(77) (skip) when run by hand, but
 * print why and exit(1) when $CI or $DBPOOL_TEST_REQUIRE_SERVER is set. Never returns NULL. */
const tu_server *tu_server_shared(void);

/* Point the library at `s` as the application user: clears every DB_* and DBPOOL_* variable
 * of the environment, sets DB_HOST/DB_PORT/DB_USER/DB_PASSWORD/DB_NAME (TCP on 127.0.0.1),
 * DBPOOL_ENV_FILE to an empty temporary file (so a stray ./.env never interferes),
 * DB_LOG_LEVEL=warn. Tests then setenv() the pool keys they want before the first get.
 * (The harness's own DBPOOL_TEST_* and DBPOOL_FIXTURE_SCRIPT variables are kept.) */
void tu_use_server(const tu_server *s);
/* Shortcut: tu_use_server(tu_server_shared()). */
void tu_use_shared(void);
/* setenv(k, "<v>") for a number. */
void tu_setenv_u(const char *k, unsigned v);
/* dbpool_stats_get(), which must succeed: the library's own counters. */
dbpool_stats tu_stats(void);

/* A new admin connection to `s` (fails the test if it cannot connect). Close with mysql_close. */
MYSQL *tu_admin(const tu_server *s);
/* A new connection as the application user to `s` (TCP, database selected), for raw
 * Connector/C checks without the pool. Fails the test if it cannot connect. */
MYSQL *tu_app(const tu_server *s);
/* Run a statement on `m`, failing the test on error. */
void tu_exec(MYSQL *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* First column of the first row as an integer (-1 on SQL NULL / no row); fails the test on
 * error. */
long long tu_scalar(MYSQL *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sessions of `user` in the server's process list, excluding the admin's own. (Read with SHOW
 * PROCESSLIST, which needs no internal temporary table: see testutil.c.) */
long tu_count_sessions(MYSQL *admin, const char *user);
/* 1 if a session with this id is in PROCESSLIST. */
int tu_session_exists(MYSQL *admin, unsigned long id);
/* Sessions of `user` (any when NULL) with this id (any when 0) whose statement (Info) starts
 * with `info` (any when NULL), the admin's own excluded; -1 on error (no test failure: safe
 * from other threads). */
long tu_processlist_count(MYSQL *admin, const char *user, unsigned long id, const char *info);
/* The id of a session of `user` (the first listed), 0 if none. */
unsigned long tu_session_id(MYSQL *admin, const char *user);
/* Wait up to `ms` for tu_count_sessions(admin, user) to equal `want`; returns the last count. */
long tu_wait_sessions(MYSQL *admin, const char *user, long want, unsigned ms);
/* Number of "Aborted connection <id> " lines for this id in the server error log (-1 if the
 * log cannot be read). Counts only lines since the server's last start (thread ids start again
 * at every start). The server writes the line when it notices the disconnect: to prove a line
 * appears use tu_errlog_wait_aborted(); to prove none does, wait a moment first. */
int tu_errlog_aborted(const tu_server *s, unsigned long id);
/* Wait up to `ms` for tu_errlog_aborted(s, id) to become non-zero; returns the last value. */
int tu_errlog_wait_aborted(const tu_server *s, unsigned long id, unsigned ms);
/* SHOW GLOBAL STATUS value. */
long long tu_global_status(MYSQL *admin, const char *name);

/* A private server instance (for restart, freeze, reconfigure tests), through the fixture
 * script. Same users and database as the shared one. Fails the test if it cannot start.
 * Extra mariadbd options (TLS, ...): setenv("DBPOOL_TEST_SERVER_ARGS", "--opt=x --opt2", 1)
 * before the start; they are kept across restarts. An instance still running when the test
 * process exits (or dies) is destroyed automatically. */
void tu_private_start(tu_server *s);
void tu_private_stop(tu_server *s);     /* SIGTERM, wait; keeps the data directory */
void tu_private_restart(tu_server *s);  /* stop, start again on the same port */
void tu_private_freeze(tu_server *s);   /* SIGSTOP */
void tu_private_thaw(tu_server *s);     /* SIGCONT */
void tu_private_destroy(tu_server *s);  /* stop and remove the data directory */

/* Start a helper program from tests/progs (built next to the tests) with argv (NULL-terminated,
 * argv[0] = program name), environment inherited, stdout/stderr to the test's. Returns pid. */
pid_t tu_spawn(const char *prog, char *const argv[]);
/* Wait for `pid` up to `ms`; returns the raw wait status, or -1 on timeout (child killed). */
int tu_wait(pid_t pid, unsigned ms);
/* Path of a helper program. */
const char *tu_prog_path(const char *prog, char *buf, size_t n);

/* Skip the current test: print the reason and exit(77) (ctest reports it as skipped). One
 * test case per process, so this ends only this case. */
void tu_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Monotonic milliseconds. */
uint64_t tu_now_ms(void);
void tu_sleep_ms(unsigned ms);
/* Work scale for long tests: 1.0 normally, smaller under valgrind/sanitizers
 * ($DBPOOL_TEST_SCALE). Returns max(1, n * scale). */
unsigned tu_scaled(unsigned n);
/* A time bound for a timing assertion ("fails within 3 s"): `ms` times how much slower this
 * build runs: 10 under valgrind, 3 under TSan, 2 under ASan, else 1; $DBPOOL_TEST_TIME_FACTOR
 * overrides. Use it for upper bounds only (a lower bound, "waited at least 1 s", stays as is). */
unsigned tu_slack_ms(unsigned ms);
/* Number of open file descriptors of this process. */
int tu_count_fds(void);
/* Resident set size in KiB. */
long tu_rss_kb(void);

/* main() for a test file: runs only the case named by argv[1] when given. */
#define TU_MAIN(tests)                                                                       \
    int main(int argc, char **argv)                                                          \
    {                                                                                        \
        if (argc > 1)                                                                        \
            cmocka_set_test_filter(argv[1]);                                                 \
        return cmocka_run_group_tests(tests, NULL, NULL);                                    \
    }

#endif /* DBPOOL_TESTUTIL_H */
