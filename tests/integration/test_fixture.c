/*
 * test_fixture.c - the test server fixture does what the other tests rely on: a non-privileged
 * application user, an admin that sees and controls every session, an error log that records
 * unclean disconnects by thread id, and private instances that start, freeze, restart and stop.
 * Uses Connector/C directly, never libdbpool.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ER_SPECIFIC_ACCESS_DENIED_ERROR, ER_KILL_DENIED_ERROR */
#define ERR_NEED_PRIVILEGE 1227
#define ERR_KILL_DENIED 1095

static int try_sql(MYSQL *m, const char *sql)
{
    if (mysql_query(m, sql) != 0)
        return (int)mysql_errno(m);
    MYSQL_RES *r = mysql_store_result(m);
    if (r)
        mysql_free_result(r);
    return 0;
}

/* Close the connection's socket without COM_QUIT: dup2() replaces it by /dev/null in one step,
 * so the later mysql_close() frees the handle while its COM_QUIT goes nowhere. */
static void close_uncleanly(MYSQL *m)
{
    int fd = mysql_get_socket(m);
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_true(nul >= 0);
    assert_int_equal(dup2(nul, fd), fd);
    close(nul);
    mysql_close(m);
}

static void app_user_is_not_privileged(void **state)
{
    (void)state;
    const tu_server *s = tu_server_shared();
    MYSQL *admin = tu_admin(s);
    MYSQL *app = tu_app(s);
    unsigned long admin_id = mysql_thread_id(admin);
    char sql[128];

    assert_int_equal(try_sql(app, "SET GLOBAL max_connections = @@global.max_connections"),
                     ERR_NEED_PRIVILEGE);
    snprintf(sql, sizeof sql, "KILL %lu", admin_id);
    assert_int_equal(try_sql(app, sql), ERR_KILL_DENIED);
    /* Without PROCESS it sees only its own sessions (the admin's are there, but not to it). */
    assert_false(tu_session_exists(app, admin_id));
    assert_int_equal(tu_count_sessions(app, s->admin_user), 0);
    assert_true(tu_session_exists(admin, mysql_thread_id(app)));
    /* But it owns the test database. */
    tu_exec(app, "CREATE TABLE IF NOT EXISTS fixture_probe (id INT PRIMARY KEY) ENGINE=InnoDB");
    tu_exec(app, "REPLACE INTO fixture_probe VALUES (1)");
    assert_int_equal(tu_scalar(app, "SELECT COUNT(*) FROM fixture_probe"), 1);
    tu_exec(app, "DROP TABLE fixture_probe");

    mysql_close(app);
    mysql_close(admin);
}

static void admin_sees_and_controls_sessions(void **state)
{
    (void)state;
    const tu_server *s = tu_server_shared();
    MYSQL *admin = tu_admin(s);
    assert_int_equal(tu_wait_sessions(admin, s->user, 0, 5000), 0);

    MYSQL *a = tu_app(s), *b = tu_app(s);
    assert_true(tu_session_exists(admin, mysql_thread_id(a)));
    assert_int_equal(tu_count_sessions(admin, s->user), 2);
    /* The admin's own session is never counted, even for its own user. */
    assert_int_equal(tu_count_sessions(admin, s->admin_user), 0);

    tu_exec(admin, "KILL %lu", mysql_thread_id(b));
    assert_int_equal(tu_wait_sessions(admin, s->user, 1, 5000), 1);
    assert_int_not_equal(try_sql(b, "SELECT 1"), 0); /* killed: 2013 or 2006 */

    /* SET GLOBAL (to the value it has: the shared server is not reconfigured). */
    tu_exec(admin, "SET GLOBAL max_connections = @@global.max_connections");
    assert_true(tu_global_status(admin, "Threads_connected") >= 2);
    assert_true(tu_global_status(admin, "uptime") > 0);

    mysql_close(a);
    mysql_close(b);
    assert_int_equal(tu_wait_sessions(admin, s->user, 0, 5000), 0);
    mysql_close(admin);
}

static void connect_attrs_are_visible(void **state)
{
    (void)state;
    const tu_server *s = tu_server_shared();
    MYSQL *admin = tu_admin(s);
    if (tu_scalar(admin, "SELECT @@performance_schema") != 1)
        tu_skip("performance_schema is off on this server");
    MYSQL *app = tu_app(s);
    assert_true(tu_scalar(admin, "SELECT COUNT(*) FROM performance_schema.session_connect_attrs "
                                 "WHERE PROCESSLIST_ID = %lu AND ATTR_NAME = '_pid'",
                          mysql_thread_id(app)) == 1);
    mysql_close(app);
    mysql_close(admin);
}

static void require_errlog(const tu_server *s)
{
    if (!s->errlog[0])
        tu_skip("the server's error log is not readable here");
    FILE *f = fopen(s->errlog, "r");
    if (!f)
        fail_msg("DBPOOL_TEST_ERRLOG %s: %s", s->errlog, strerror(errno));
    fclose(f);
}

/* Unclean disconnects (socket closed without COM_QUIT) are logged with their thread id; a
 * mysql_close() is not. */
static void errlog_records_unclean_close(void **state)
{
    (void)state;
    const tu_server *s = tu_server_shared();
    require_errlog(s);
    MYSQL *admin = tu_admin(s);

    MYSQL *clean = tu_app(s);
    unsigned long clean_id = mysql_thread_id(clean);
    mysql_close(clean);

    MYSQL *rude = tu_app(s);
    unsigned long rude_id = mysql_thread_id(rude);
    close_uncleanly(rude);

    assert_int_equal(tu_errlog_wait_aborted(s, rude_id, 5000), 1);
    assert_int_equal(tu_wait_sessions(admin, s->user, 0, 5000), 0);
    tu_sleep_ms(200);
    assert_int_equal(tu_errlog_aborted(s, clean_id), 0);
    mysql_close(admin);
}

/* A process that dies without closing (here _exit) leaves an Aborted connection line. */
static void errlog_records_child_exit(void **state)
{
    (void)state;
    const tu_server *s = tu_server_shared();
    require_errlog(s);
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* No cmocka here: a failure just exits. */
        unsigned long id = 0;
        unsigned proto = MYSQL_PROTOCOL_TCP;
        MYSQL *m = mysql_init(NULL);
        mysql_options(m, MYSQL_OPT_PROTOCOL, &proto);
        if (mysql_real_connect(m, "127.0.0.1", s->user, s->password, s->db, s->port, NULL, 0))
            id = mysql_thread_id(m);
        if (write(p[1], &id, sizeof id) != (ssize_t)sizeof id)
            _exit(2);
        _exit(id ? 0 : 1);
    }
    close(p[1]);
    unsigned long id = 0;
    assert_int_equal(read(p[0], &id, sizeof id), (ssize_t)sizeof id);
    close(p[0]);
    int st = tu_wait(pid, 10000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(id > 0);
    assert_int_equal(tu_errlog_wait_aborted(s, id, 5000), 1);
}

static void use_server_sets_environment(void **state)
{
    (void)state;
    const tu_server *s = tu_server_shared();
    setenv("DB_CONNECTION_LIMIT", "7", 1);
    setenv("DBPOOL_SOMETHING", "x", 1);
    tu_use_shared();
    assert_null(getenv("DB_CONNECTION_LIMIT"));
    assert_null(getenv("DBPOOL_SOMETHING"));
    assert_string_equal(getenv("DB_HOST"), strcmp(s->host, "localhost") ? s->host : "127.0.0.1");
    assert_string_equal(getenv("DB_USER"), s->user);
    assert_string_equal(getenv("DB_PASSWORD"), s->password);
    assert_string_equal(getenv("DB_NAME"), s->db);
    assert_int_equal(atoi(getenv("DB_PORT")), (int)s->port);
    assert_string_equal(getenv("DB_LOG_LEVEL"), "warn");
    struct stat st;
    const char *env_file = getenv("DBPOOL_ENV_FILE");
    assert_non_null(env_file);
    assert_int_equal(stat(env_file, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 0);
    assert_int_equal(st.st_mode & 0077, 0);
    assert_true(tu_scaled(10) >= 1);
    assert_true(tu_slack_ms(1000) >= 1000);
    assert_true(tu_count_fds() >= 3);
    assert_true(tu_rss_kb() > 0);
}

static int connect_fails(const tu_server *p)
{
    unsigned t = 1, proto = MYSQL_PROTOCOL_TCP;
    MYSQL *m = mysql_init(NULL);
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &t);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &t);
    mysql_options(m, MYSQL_OPT_PROTOCOL, &proto);
    int failed = !mysql_real_connect(m, "127.0.0.1", p->user, p->password, p->db, p->port, NULL, 0);
    mysql_close(m);
    return failed;
}

static void private_instance_lifecycle(void **state)
{
    (void)state;
    const tu_server *shared_server = tu_server_shared();
    tu_server p;
    uint64_t t0 = tu_now_ms();
    tu_private_start(&p);
    print_message("private instance started in %llu ms\n", (unsigned long long)(tu_now_ms() - t0));
    assert_true(p.pid > 0);
    assert_true(p.port > 0);
    assert_true(p.port != shared_server->port || strcmp(shared_server->host, "127.0.0.1") != 0);
    assert_non_null(strstr(p.datadir, "/data"));

    MYSQL *admin = tu_admin(&p);
    MYSQL *app = tu_app(&p);
    assert_int_equal(try_sql(app, "SET GLOBAL max_connections = 50"), ERR_NEED_PRIVILEGE);
    tu_exec(admin, "SET GLOBAL max_connections = 50"); /* private: reconfigure at will */
    assert_int_equal(tu_scalar(admin, "SELECT @@global.max_connections"), 50);
    tu_exec(app, "CREATE TABLE kept (id INT) ENGINE=InnoDB");
    tu_exec(app, "INSERT INTO kept VALUES (42)");
    mysql_close(app);

    /* Frozen: a connect attempt times out; thawed: it works again. */
    tu_private_freeze(&p);
    assert_true(connect_fails(&p));
    tu_private_thaw(&p);
    assert_false(connect_fails(&p));

    long old_pid = p.pid;
    unsigned port = p.port;
    t0 = tu_now_ms();
    tu_private_restart(&p);
    print_message("private instance restarted in %llu ms\n", (unsigned long long)(tu_now_ms() - t0));
    assert_int_equal(p.port, port);
    assert_true(p.pid > 0 && p.pid != old_pid);
    assert_int_not_equal(try_sql(admin, "SELECT 1"), 0); /* the old session died */
    mysql_close(admin);
    admin = tu_admin(&p);
    assert_int_equal(tu_scalar(admin, "SELECT @@global.max_connections"), 200);
    assert_int_equal(tu_scalar(admin, "SELECT id FROM %s.kept", p.db), 42); /* data kept */
    mysql_close(admin);

    tu_private_stop(&p);
    assert_true(connect_fails(&p));
    struct stat st;
    assert_int_equal(stat(p.datadir, &st), 0); /* stop keeps the data directory */

    char datadir[sizeof p.datadir];
    snprintf(datadir, sizeof datadir, "%s", p.datadir);
    tu_private_destroy(&p);
    if (!getenv("DBPOOL_TEST_KEEP"))
        assert_int_not_equal(stat(datadir, &st), 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(app_user_is_not_privileged),
    cmocka_unit_test(admin_sees_and_controls_sessions),
    cmocka_unit_test(connect_attrs_are_visible),
    cmocka_unit_test(errlog_records_unclean_close),
    cmocka_unit_test(errlog_records_child_exit),
    cmocka_unit_test(use_server_sets_environment),
    cmocka_unit_test(private_instance_lifecycle),
};

TU_MAIN(tests)
