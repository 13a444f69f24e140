/*
 * test_exit.c - the exit guarantee: whatever way a process using the pool ends, its sessions
 * end on the server, cleanly (COM_QUIT: no "Aborted connection <id>" line in the server's
 * error log) wherever the process gets to run code. Each case runs tests/progs/exit_child and
 * checks the server afterwards.
 */
#include "childcheck.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>


static void assert_sessions_gone(cc_child *ch, int clean_from)
{
    cc_assert_sessions_gone(tu_server_shared(), ch, clean_from);
}

static void signal_idle(int sig)
{
    tu_use_shared();
    cc_child ch;
    cc_start(&ch, "idle");
    assert_int_equal(kill(ch.pid, sig), 0);
    cc_expect_killed_by(&ch, sig, 5000);
    assert_sessions_gone(&ch, 0);
}

static void sigterm_idle(void **state) { (void)state; signal_idle(SIGTERM); }
static void sigint_idle(void **state) { (void)state; signal_idle(SIGINT); }
static void sighup_idle(void **state) { (void)state; signal_idle(SIGHUP); }

/* DB_SIGNAL_HOOKS=0: the application owns its signals. SIGTERM then takes its default course
 * with nothing of ours running: the kernel closes the sockets (sessions gone) but without
 * COM_QUIT, so the server logs them as aborted. This proves the hooks were really off. */
static void signal_hooks_off_leaves_signals_alone(void **state)
{
    (void)state;
    tu_use_shared();
    setenv("DB_SIGNAL_HOOKS", "0", 1);
    cc_child ch;
    cc_start(&ch, "idle");
    kill(ch.pid, SIGTERM);
    cc_expect_killed_by(&ch, SIGTERM, 5000);
    assert_sessions_gone(&ch, ch.nids); /* gone: the kernel's floor */
    const tu_server *s = tu_server_shared();
    for (int i = 0; i < ch.nids; i++)
        if (tu_errlog_wait_aborted(s, ch.ids[i], tu_slack_ms(2000)) <= 0)
            fail_msg("session %lu closed cleanly although the hooks were off", ch.ids[i]);
}

static void sigterm_during_long_query(void **state)
{
    (void)state;
    tu_use_shared();
    setenv("DB_SHUTDOWN_GRACE_MS", "1000", 1);
    cc_child ch;
    cc_start(&ch, "busy");
    tu_sleep_ms(300); /* SELECT SLEEP(60) is running */
    uint64_t t0 = tu_now_ms();
    kill(ch.pid, SIGTERM);
    cc_expect_killed_by(&ch, SIGTERM, 5000);
    uint64_t took = tu_now_ms() - t0;
    print_message("died %llu ms after SIGTERM (grace 1000 ms)\n", (unsigned long long)took);
    assert_true(took < 1000 + tu_slack_ms(1000)); /* grace + 1 s */
    /* The statement was stopped on the server and the session is gone (a socket shut down
     * mid-query may be logged as aborted: only presence is checked). */
    assert_sessions_gone(&ch, ch.nids);
}

/* SIGTERM while one caller's statement runs on another caller's connection (a shared turn of
 * dbpool_query()): the claimed caller waits without a deadline for its outcome, so the close
 * must end the statement and the turn; the process then dies by SIGTERM within the grace
 * period, and the session is gone from the server. */
static void sigterm_during_a_shared_turn(void **state)
{
    (void)state;
    tu_use_shared();
    setenv("DB_CONNECTION_LIMIT", "1", 1);
    setenv("DB_QUERY_SHARE_US", "10000000", 1);
    setenv("DB_SHUTDOWN_GRACE_MS", "1000", 1);
    MYSQL *admin = tu_admin(tu_server_shared());
    assert_int_equal(tu_scalar(admin, "SELECT GET_LOCK('exit_gate', 0)"), 1);
    cc_child ch;
    cc_start(&ch, "share_claimed");
    assert_int_equal(tu_scalar(admin, "SELECT RELEASE_LOCK('exit_gate')"), 1);
    char buf[4096];
    uint64_t end = tu_now_ms() + tu_slack_ms(10000);
    while (!strstr(cc_report(&ch, buf, sizeof buf), "claimed\n")) {
        if (tu_now_ms() > end)
            fail_msg("the queued statement was not claimed: %s", buf);
        tu_sleep_ms(5);
    }
    /* On the server: the claimed SLEEP(60) runs on the one session, the holder's. */
    end = tu_now_ms() + tu_slack_ms(10000);
    while (tu_processlist_count(admin, NULL, ch.ids[0], "SELECT SLEEP(60)") != 1) {
        if (tu_now_ms() > end)
            fail_msg("SELECT SLEEP(60) not running on session %lu", ch.ids[0]);
        tu_sleep_ms(5);
    }
    mysql_close(admin);
    uint64_t t0 = tu_now_ms();
    kill(ch.pid, SIGTERM);
    cc_expect_killed_by(&ch, SIGTERM, tu_slack_ms(5000));
    uint64_t took = tu_now_ms() - t0;
    print_message("died %llu ms after SIGTERM (grace 1000 ms)\n", (unsigned long long)took);
    assert_true(took < 1000 + tu_slack_ms(1000));
    assert_sessions_gone(&ch, ch.nids); /* stopped mid-statement: presence only */
}

static void end_normally(const char *mode)
{
    tu_use_shared();
    cc_child ch;
    cc_start(&ch, mode);
    int st = cc_wait(&ch, 10000);
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_sessions_gone(&ch, 0);
}

static void exit_closes_cleanly(void **state) { (void)state; end_normally("exit"); }
static void return_from_main_closes_cleanly(void **state) { (void)state; end_normally("return"); }
static void quick_exit_closes_cleanly(void **state) { (void)state; end_normally("quick_exit"); }

static void exit_while_other_thread_mid_query(void **state)
{
    (void)state;
    tu_use_shared();
    setenv("DB_SHUTDOWN_GRACE_MS", "500", 1);
    cc_child ch;
    cc_start(&ch, "exit_midquery");
    int st = cc_wait(&ch, 5000); /* no deadlock: grace + kill + a little */
    assert_true(st != -1);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0); /* no crash */
    /* ids[0] was idle: closed cleanly; ids[1] was mid-query: shut down, gone. */
    cc_child idle_only = ch;
    idle_only.nids = 1;
    assert_sessions_gone(&idle_only, 0);
    assert_sessions_gone(&ch, ch.nids);
}

/* exit() while the library's thread closes the pool after a SIGTERM: the exit hook waits for
 * that close instead of returning at once (the process would then end under it, the running
 * statement left on the server). The process ends either way the race goes: by the re-raised
 * SIGTERM or by exit(0); in both, within the grace period, with the idle session closed
 * cleanly and the busy one's statement stopped (its session gone). */
static void exit_during_a_signal_close(void **state)
{
    (void)state;
    tu_use_shared();
    setenv("DB_SHUTDOWN_GRACE_MS", "500", 1);
    cc_child ch;
    cc_start(&ch, "exit_in_signal_close");
    int st = cc_wait(&ch, tu_slack_ms(10000));
    char buf[512];
    print_message("status 0x%x; report: %s\n", st, cc_report(&ch, buf, sizeof buf));
    assert_true(st != -1);
    assert_non_null(strstr(cc_report(&ch, buf, sizeof buf), "closing\n"));
    assert_true((WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM) || (WIFEXITED(st) && WEXITSTATUS(st) == 0));
    cc_child idle_only = ch;
    idle_only.nids = 1;
    assert_sessions_gone(&idle_only, 0);
    assert_sessions_gone(&ch, ch.nids);
}

static void underscore_exit_floor(void **state)
{
    (void)state;
    tu_use_shared();
    cc_child ch;
    cc_start(&ch, "_exit");
    int st = cc_wait(&ch, 5000);
    assert_true(st != -1 && WIFEXITED(st));
    assert_sessions_gone(&ch, ch.nids); /* the kernel closes the sockets: gone, not clean */
}

static void sigkill_floor(void **state)
{
    (void)state;
    tu_use_shared();
    cc_child ch;
    cc_start(&ch, "idle");
    kill(ch.pid, SIGKILL);
    cc_expect_killed_by(&ch, SIGKILL, 5000);
    assert_sessions_gone(&ch, ch.nids);
}

static void sigint_ignored_survives(void **state)
{
    (void)state;
    tu_use_shared();
    struct sigaction ign, old;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(SIGINT, &ign, &old); /* inherited across exec, like a background job */
    cc_child ch;
    cc_start(&ch, "idle");
    sigaction(SIGINT, &old, NULL);
    kill(ch.pid, SIGINT);
    tu_sleep_ms(500);
    int st;
    assert_int_equal(waitpid(ch.pid, &st, WNOHANG), 0); /* still alive */
    MYSQL *admin = tu_admin(tu_server_shared());
    assert_true(tu_session_exists(admin, ch.ids[0])); /* and its pool untouched */
    mysql_close(admin);
    kill(ch.pid, SIGTERM);
    cc_expect_killed_by(&ch, SIGTERM, 5000);
    assert_sessions_gone(&ch, 0);
}

static void app_handler_chained(void **state)
{
    (void)state;
    tu_use_shared();
    cc_child ch;
    cc_start(&ch, "app_handler");
    kill(ch.pid, SIGTERM);
    int st = cc_wait(&ch, 5000);
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0); /* the process lived on */
    char buf[4096];
    assert_non_null(strstr(cc_report(&ch, buf, sizeof buf), "alive open=0"));
    assert_sessions_gone(&ch, 0);
}

/* A SIGHUP that arrives while dbpool_close() stops the library's thread reaches the
 * application's handler exactly once, and later signals still do (the process lives on). The
 * child holds the window open itself (see exit_child.c, mode hup_in_close). */
static void signal_during_close_reaches_app_handler(void **state)
{
    (void)state;
    tu_use_shared();
    cc_child ch;
    cc_start(&ch, "hup_in_close");
    int st = cc_wait(&ch, tu_slack_ms(20000));
    char buf[4096];
    cc_report(&ch, buf, sizeof buf);
    print_message("%s", buf);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("exit_child hup_in_close: wait status 0x%x: %s", st, buf);
    assert_non_null(strstr(buf, "during_close handler=1\n"));
    assert_non_null(strstr(buf, "after_close handler=2\n"));
    assert_non_null(strstr(buf, "restarted handler=3 open=0\n"));
    assert_sessions_gone(&ch, 0);
}

static void second_signal_kills_at_once(void **state)
{
    (void)state;
    tu_use_shared();
    setenv("DB_SHUTDOWN_GRACE_MS", "10000", 1);
    cc_child ch;
    cc_start(&ch, "busy");
    tu_sleep_ms(200);
    uint64_t t0 = tu_now_ms();
    kill(ch.pid, SIGTERM);
    tu_sleep_ms(300); /* the keeper is inside the 10 s grace */
    kill(ch.pid, SIGTERM);
    cc_expect_killed_by(&ch, SIGTERM, 3000);
    assert_true(tu_now_ms() - t0 < tu_slack_ms(2000)); /* not the 10 s grace */
    /* Dying at once is the floor: the kernel closes the socket, but the server only notices
     * when the running SLEEP(60) ends. End it here so later tests see a clean server. */
    MYSQL *admin = tu_admin(tu_server_shared());
    if (tu_session_exists(admin, ch.ids[0]))
        tu_exec(admin, "KILL %lu", ch.ids[0]);
    mysql_close(admin);
    assert_sessions_gone(&ch, ch.nids);
}

/* ---- fork ------------------------------------------------------------------------------------ */

static unsigned long conn_id_via_sql(dbpool_conn *c)
{
    MYSQL *m = dbpool_mysql(c);
    if (!m || mysql_query(m, "SELECT CONNECTION_ID()") != 0)
        return 0;
    MYSQL_RES *r = mysql_store_result(m);
    MYSQL_ROW row = mysql_fetch_row(r);
    unsigned long id = row ? strtoul(row[0], NULL, 10) : 0;
    mysql_free_result(r);
    return id;
}

static void fork_child_exits(int how)
{
    tu_use_shared();
    setenv("DB_CONNECTION_LIMIT", "2", 1);
    dbpool_conn *a, *b;
    assert_int_equal(dbpool_get(&a), 0);
    assert_int_equal(dbpool_get(&b), 0);
    unsigned long ida = dbpool_conn_id(a), idb = dbpool_conn_id(b);
    dbpool_release(a); /* one idle, one borrowed at fork time */
    pid_t pid = fork();
    if (pid == 0) {
        if (how)
            exit(0); /* runs the inherited atexit hook */
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    tu_sleep_ms(100);
    assert_int_equal(conn_id_via_sql(b), idb); /* the borrowed one still works */
    assert_int_equal(dbpool_get(&a), 0);
    assert_int_equal(conn_id_via_sql(a), ida); /* the idle one too, same session */
    dbpool_release(a);
    dbpool_release(b);
    dbpool_stats s;
    dbpool_stats_get(&s);
    assert_int_equal(s.closed_broken, 0);
    dbpool_close();
}

static void fork_child_exit_keeps_parent(void **state) { (void)state; fork_child_exits(1); }
static void fork_child_underscore_exit_keeps_parent(void **state) { (void)state; fork_child_exits(0); }

static void fork_child_uses_own_connections(void **state)
{
    (void)state;
    tu_use_shared();
    dbpool_conn *a;
    assert_int_equal(dbpool_get(&a), 0);
    unsigned long ida = dbpool_conn_id(a);
    dbpool_release(a);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dbpool_conn *c;
        unsigned long id = 0;
        if (dbpool_get(&c) == 0) {
            id = conn_id_via_sql(c);
            dbpool_release(c);
        }
        if (write(pfd[1], &id, sizeof id) != sizeof id)
            _exit(2);
        exit(id ? 0 : 1);
    }
    close(pfd[1]); /* a child that dies without writing gives EOF, not a hang */
    unsigned long child_id = 0;
    ssize_t got = read(pfd[0], &child_id, sizeof child_id);
    int st;
    waitpid(pid, &st, 0);
    close(pfd[0]);
    if (got != (ssize_t)sizeof child_id)
        fail_msg("the child reported nothing (wait status 0x%x)", st);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_true(child_id != 0 && child_id != ida);
    assert_int_equal(dbpool_get(&a), 0);
    assert_int_equal(conn_id_via_sql(a), ida);
    dbpool_release(a);
    /* the child closed its own session cleanly at exit */
    const tu_server *s = tu_server_shared();
    MYSQL *admin = tu_admin(s);
    assert_int_equal(tu_session_exists(admin, child_id), 0);
    mysql_close(admin);
    tu_sleep_ms(200);
    assert_true(tu_errlog_aborted(s, child_id) <= 0);
    dbpool_close();
}

static void fork_exec_then_sigkill_leaves_nothing(void **state)
{
    (void)state;
    tu_use_shared();
    cc_child ch;
    cc_start(&ch, "fork_exec");
    assert_true(ch.grandchild > 0);
    kill(ch.pid, SIGKILL);
    cc_expect_killed_by(&ch, SIGKILL, 5000);
    /* `sleep 30` still runs, but holds no copy of the socket (FD_CLOEXEC) */
    assert_int_equal(kill((pid_t)ch.grandchild, 0), 0);
    assert_sessions_gone(&ch, ch.nids);
    kill((pid_t)ch.grandchild, SIGKILL);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sigterm_idle),
        cmocka_unit_test(sigint_idle),
        cmocka_unit_test(sighup_idle),
        cmocka_unit_test(signal_hooks_off_leaves_signals_alone),
        cmocka_unit_test(sigterm_during_long_query),
        cmocka_unit_test(sigterm_during_a_shared_turn),
        cmocka_unit_test(exit_closes_cleanly),
        cmocka_unit_test(return_from_main_closes_cleanly),
        cmocka_unit_test(quick_exit_closes_cleanly),
        cmocka_unit_test(exit_while_other_thread_mid_query),
        cmocka_unit_test(exit_during_a_signal_close),
        cmocka_unit_test(underscore_exit_floor),
        cmocka_unit_test(sigkill_floor),
        cmocka_unit_test(sigint_ignored_survives),
        cmocka_unit_test(app_handler_chained),
        cmocka_unit_test(signal_during_close_reaches_app_handler),
        cmocka_unit_test(second_signal_kills_at_once),
        cmocka_unit_test(fork_child_exit_keeps_parent),
        cmocka_unit_test(fork_child_underscore_exit_keeps_parent),
        cmocka_unit_test(fork_child_uses_own_connections),
        cmocka_unit_test(fork_exec_then_sigkill_leaves_nothing),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
