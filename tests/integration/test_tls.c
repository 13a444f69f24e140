/*
 * test_tls.c - TLS against a private server started with a test CA and certificate:
 * fail-closed modes, clean close over TLS on SIGTERM and exit, SIGPIPE survival.
 *
 * The server listens on 127.0.0.1 and 127.0.0.2; its certificate names only IP 127.0.0.1, so
 * connecting to 127.0.0.2 is the "wrong host name" case.
 */
#include "childcheck.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char certdir[256];
static tu_server srv;

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

/* A CA, a server certificate for IP:127.0.0.1 signed by it, and an unrelated CA. */
static void make_certs(void)
{
    snprintf(certdir, sizeof certdir, "/tmp/dbpool-tls-XXXXXX");
    assert_non_null(mkdtemp(certdir));
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh("cd %s && openssl req -x509 %s -days 2 -subj /CN=dbpool-test-ca -keyout ca-key.pem -out ca.pem 2>/dev/null"
       " && openssl req -x509 %s -days 2 -subj /CN=other-ca -keyout other-key.pem -out other-ca.pem 2>/dev/null"
       " && openssl req %s -subj /CN=127.0.0.1 -keyout server-key.pem -out server.csr 2>/dev/null"
       " && printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf"
       " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2"
       " -extfile ext.cnf -out server.pem 2>/dev/null",
       certdir, ec, ec, ec);
}

static int setup(void **state)
{
    (void)state;
    tu_server_shared(); /* skip (by hand) or fail (CI) like every integration test */
    make_certs();
    char args[1024];
    snprintf(args, sizeof args,
             "--bind-address=127.0.0.1,127.0.0.2 --ssl-ca=%s/ca.pem --ssl-cert=%s/server.pem "
             "--ssl-key=%s/server-key.pem",
             certdir, certdir, certdir);
    setenv("DBPOOL_TEST_SERVER_ARGS", args, 1);
    tu_private_start(&srv);
    unsetenv("DBPOOL_TEST_SERVER_ARGS");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_private_destroy(&srv);
    sh("rm -rf %s", certdir);
    return 0;
}

static void use_tls(const char *mode, const char *ca_file)
{
    char ca[512];
    tu_use_server(&srv);
    setenv("DB_SSL_MODE", mode, 1);
    snprintf(ca, sizeof ca, "%s/%s", certdir, ca_file);
    setenv("DB_SSL_CA", ca, 1);
}

static void verify_identity_connects_encrypted(void **state)
{
    (void)state;
    use_tls("VERIFY_IDENTITY", "ca.pem");
    dbpool_conn *c;
    if (dbpool_get(&c) != 0)
        fail_msg("get: %s", dbpool_last_error());
    MYSQL *m = dbpool_mysql(c);
    assert_non_null(mysql_get_ssl_cipher(m));
    assert_int_equal(mysql_query(m, "SHOW SESSION STATUS LIKE 'Ssl_version'"), 0);
    MYSQL_RES *r = mysql_store_result(m);
    MYSQL_ROW row = mysql_fetch_row(r);
    assert_non_null(row);
    assert_true(strncmp(row[1], "TLS", 3) == 0); /* the server agrees */
    mysql_free_result(r);
    dbpool_release(c);
    dbpool_close();
}

static void expect_tls_failure(const char *what)
{
    dbpool_conn *c = NULL;
    uint64_t t0 = tu_now_ms();
    int rc = dbpool_get(&c);
    if (rc != DBPOOL_ETLS)
        fail_msg("%s: expected DBPOOL_ETLS, got %s: %s", what, dbpool_errname(rc), dbpool_last_error());
    assert_null(c);
    assert_true(tu_now_ms() - t0 < tu_slack_ms(3000)); /* permanent: no retry loop */
    dbpool_stats s;
    dbpool_stats_get(&s);
    assert_int_equal(s.open, 0);
    dbpool_close();
}

static void wrong_ca_fails_closed(void **state)
{
    (void)state;
    use_tls("VERIFY_CA", "other-ca.pem");
    expect_tls_failure("wrong CA");
}

static void wrong_host_fails_closed(void **state)
{
    (void)state;
    use_tls("VERIFY_IDENTITY", "ca.pem");
    setenv("DB_HOST", "127.0.0.2", 1);
    expect_tls_failure("wrong host name");
}

static void required_without_server_tls_fails_closed(void **state)
{
    (void)state;
    tu_use_shared(); /* the shared server has no TLS configured */
    setenv("DB_SSL_MODE", "REQUIRED", 1);
    expect_tls_failure("server without TLS");
}

static void sigterm_closes_tls_cleanly(void **state)
{
    (void)state;
    use_tls("VERIFY_IDENTITY", "ca.pem");
    cc_child ch;
    cc_start(&ch, "idle");
    kill(ch.pid, SIGTERM);
    cc_expect_killed_by(&ch, SIGTERM, 5000);
    cc_assert_sessions_gone(&srv, &ch, 0);
}

static void exit_closes_tls_cleanly(void **state)
{
    (void)state;
    use_tls("VERIFY_IDENTITY", "ca.pem");
    cc_child ch;
    cc_start(&ch, "exit");
    int st = cc_wait(&ch, 10000);
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    cc_assert_sessions_gone(&srv, &ch, 0);
}

static void sigpipe_default_survives_killed_tls_session(void **state)
{
    (void)state;
    use_tls("VERIFY_IDENTITY", "ca.pem");
    cc_child ch;
    cc_start(&ch, "tls_sigpipe");
    char buf[4096];
    assert_null(strstr(cc_report(&ch, buf, sizeof buf), "cipher none"));
    MYSQL *admin = tu_admin(&srv);
    tu_exec(admin, "KILL %lu", ch.ids[0]);
    mysql_close(admin);
    tu_sleep_ms(200);
    kill(ch.pid, SIGUSR1); /* now write a large statement into the dead session */
    int st = cc_wait(&ch, 10000);
    if (st == -1 || !WIFEXITED(st))
        fail_msg("process did not survive (status 0x%x, SIGPIPE is %d): %s", st, SIGPIPE,
                 cc_report(&ch, buf, sizeof buf));
    assert_int_equal(WEXITSTATUS(st), 0);
    const char *p = strstr(cc_report(&ch, buf, sizeof buf), "survived rc=");
    assert_non_null(p);
    assert_true(atoi(p + 12) < 0); /* an error code, not a crash */
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(verify_identity_connects_encrypted),
        cmocka_unit_test(wrong_ca_fails_closed),
        cmocka_unit_test(wrong_host_fails_closed),
        cmocka_unit_test(required_without_server_tls_fails_closed),
        cmocka_unit_test(sigterm_closes_tls_cleanly),
        cmocka_unit_test(exit_closes_tls_cleanly),
        cmocka_unit_test(sigpipe_default_survives_killed_tls_session),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, setup, teardown);
}
