/*
 * test_share.c - shared turns of dbpool_query() (DB_QUERY_SHARE_US) against a real server:
 * a caller whose statement finished runs the statements queued behind it on its connection.
 *
 * The scenes are staged: one holder keeps the only connection busy with a statement that waits
 * for a named lock the test's admin session holds (the gate), the requesters queue one after
 * the other (each waits until the pool counts it as waiting), then the test opens the gate and
 * the holder's statement ends. No scene depends on how fast the machine is (valgrind). What was run and how often is checked on the server (rows
 * stored, Com_stmt_execute, sessions), what each caller got is checked by that caller's own
 * thread (recorded, asserted by the main thread).
 */
#include "testutil.h"

#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *db(void) { return tu_server_shared()->db; }

/* Wait until the pool's counters satisfy `ok` (at most 10 s). */
static void wait_stats(bool (*ok)(const dbpool_stats *, unsigned), unsigned arg, const char *what)
{
    uint64_t end = tu_now_ms() + tu_slack_ms(10000);
    for (;;) {
        dbpool_stats s = tu_stats();
        if (ok(&s, arg))
            return;
        if (tu_now_ms() > end)
            fail_msg("timed out waiting for %s (%u): in_use %u waiting %u served %" PRIu64, what, arg,
                     s.in_use, s.waiting, s.served);
        tu_sleep_ms(2);
    }
}

static bool in_use_is(const dbpool_stats *s, unsigned n) { return s->in_use == n; }
static bool waiting_is(const dbpool_stats *s, unsigned n) { return s->waiting == n; }
static bool served_is(const dbpool_stats *s, unsigned n) { return s->served == n; }

/* One dbpool_query() call on its own thread, and what it saw. */
struct call {
    pthread_t t;
    const char *sql;
    dbpool_param p[2];
    size_t np;
    int rc;
    unsigned server_errno;
    char err[512];
    int64_t v0;          /* first column of the first row, if any */
    uint64_t insert_id;
    uint64_t conn_id;    /* second column (CONNECTION_ID()), if any */
    uint64_t wait_ns;    /* dbpool_last_wait_ns() */
    uint64_t took_ms;
};

static void *run_call(void *p)
{
    struct call *c = p;
    dbpool_result *r = NULL;
    uint64_t t0 = tu_now_ms();
    c->rc = dbpool_query(&r, c->sql, c->np ? c->p : NULL, c->np);
    c->took_ms = tu_now_ms() - t0;
    c->wait_ns = dbpool_last_wait_ns();
    c->server_errno = dbpool_last_server_errno();
    snprintf(c->err, sizeof c->err, "%s", dbpool_last_error());
    if (c->rc == 0 && r)
        c->insert_id = dbpool_result_insert_id(r);
    if (c->rc == 0 && r && dbpool_result_rows(r) > 0) {
        uint64_t id = 0;
        dbpool_result_int64(r, 0, 0, &c->v0);
        if (dbpool_result_columns(r) > 1 && dbpool_result_uint64(r, 0, 1, &id) == 0)
            c->conn_id = id;
    }
    dbpool_result_free(r);
    return NULL;
}

static void start_call(struct call *c) { assert_int_equal(pthread_create(&c->t, NULL, run_call, c), 0); }
static void join_call(struct call *c) { assert_int_equal(pthread_join(c->t, NULL), 0); }

/* The gate: a named lock held by the admin session. The holder's statement takes and releases
 * it, so it ends when the test releases it. */
#define GATED "SELECT GET_LOCK('share_gate', 60) + RELEASE_LOCK('share_gate')"

static void gate_close(MYSQL *a) { assert_int_equal(tu_scalar(a, "SELECT GET_LOCK('share_gate', 0)"), 1); }
static void gate_open(MYSQL *a) { assert_int_equal(tu_scalar(a, "SELECT RELEASE_LOCK('share_gate')"), 1); }

/* The holder's statement starts and waits at the gate, the requests queue in order behind it. */
static void queue_behind(MYSQL *a, struct call *holder, struct call *q, unsigned n)
{
    gate_close(a);
    start_call(holder);
    wait_stats(in_use_is, 1, "the holder's connection");
    for (unsigned i = 0; i < n; i++) {
        start_call(&q[i]);
        wait_stats(waiting_is, i + 1, "requests queued");
    }
}

/* The scene: queue_behind(), open the gate, and wait until every call has returned. */
static void stage(MYSQL *a, struct call *holder, struct call *q, unsigned n)
{
    queue_behind(a, holder, q, n);
    gate_open(a);
    join_call(holder);
    for (unsigned i = 0; i < n; i++)
        join_call(&q[i]);
}

static MYSQL *start(unsigned share_us)
{
    tu_use_shared();
    setenv("DB_CONNECTION_LIMIT", "1", 1);
    tu_setenv_u("DB_QUERY_SHARE_US", share_us);
    return tu_admin(tu_server_shared());
}

/* Close the pool, drop the test's table (if any) on the server, close the admin connection. */
static void finish(MYSQL *a, const char *table)
{
    dbpool_close();
    if (table)
        tu_exec(a, "DROP TABLE %s.%s", db(), table);
    mysql_close(a);
}

static struct call echo_call(int64_t v)
{
    struct call c = {.sql = "SELECT ?, CONNECTION_ID()", .np = 1};
    c.p[0] = dbpool_param_int64(v);
    return c;
}

static struct call holder_call(void) { return (struct call){.sql = GATED, .rc = -1}; }

/* The holder's connection runs every queued statement, in arrival order (AUTO_INCREMENT on the
 * server), each caller gets its own result, the server executes each statement once, and the
 * holder's own call succeeds with a clean error state. */
static void queued_queries_run_on_the_holders_connection(void **state)
{
    (void)state;
    MYSQL *a = start(10000000);
    tu_exec(a, "DROP TABLE IF EXISTS %s.s_fifo", db());
    tu_exec(a, "CREATE TABLE %s.s_fifo (seq INT AUTO_INCREMENT PRIMARY KEY, who INT NOT NULL)", db());
    struct call h = holder_call(), q[4];
    for (unsigned i = 0; i < 4; i++) {
        q[i] = (struct call){.sql = "INSERT INTO s_fifo (who) VALUES (?)", .np = 1};
        q[i].p[0] = dbpool_param_int64(1000 + i);
    }
    long long exec0 = tu_global_status(a, "Com_stmt_execute");
    stage(a, &h, q, 4);
    long long execs = tu_global_status(a, "Com_stmt_execute") - exec0;

    assert_int_equal(h.rc, 0);
    assert_string_equal(h.err, "");
    for (unsigned i = 0; i < 4; i++) {
        if (q[i].rc != 0)
            fail_msg("request %u: %s", i, q[i].err);
        assert_int_equal(q[i].insert_id, i + 1); /* its own result, in arrival order */
        assert_true(q[i].wait_ns > 0);
        assert_true(q[i].wait_ns < 10000000000ull);
    }
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(tu_scalar(a, "SELECT who FROM %s.s_fifo WHERE seq = %u", db(), i + 1), 1000 + i);
    dbpool_stats s = tu_stats();
    assert_int_equal(s.served, 4);
    assert_int_equal(s.created, 1);
    assert_int_equal(execs, 5); /* each statement once: nothing lost, nothing run twice */
    assert_int_equal(tu_count_sessions(a, tu_server_shared()->user), 1);
    finish(a, "s_fifo");
}

/* A queued statement that fails gives its own caller the code, the server's message and errno;
 * the holder and the other requests are not affected. */
static void shared_turn_errors_reach_their_caller(void **state)
{
    (void)state;
    MYSQL *a = start(10000000);
    tu_exec(a, "DROP TABLE IF EXISTS %s.s_dup", db());
    tu_exec(a, "CREATE TABLE %s.s_dup (id INT PRIMARY KEY)", db());
    tu_exec(a, "INSERT INTO %s.s_dup VALUES (7)", db());
    struct call h = holder_call();
    struct call q[3] = {{.sql = "SELEC 1"}, {.sql = "INSERT INTO s_dup VALUES (?)", .np = 1}, echo_call(42)};
    q[1].p[0] = dbpool_param_int64(7);
    stage(a, &h, q, 3);

    assert_int_equal(h.rc, 0);
    assert_string_equal(h.err, "");
    assert_int_equal(q[0].rc, DBPOOL_EQUERY);
    assert_int_equal(q[0].server_errno, 1064);
    assert_non_null(strstr(q[0].err, "DBPOOL_EQUERY"));
    assert_non_null(strstr(q[0].err, "SELEC 1"));
    assert_int_equal(q[1].rc, DBPOOL_EQUERY);
    assert_int_equal(q[1].server_errno, 1062);
    assert_non_null(strstr(q[1].err, "Duplicate entry"));
    assert_int_equal(q[2].rc, 0);
    assert_string_equal(q[2].err, "");
    assert_int_equal(q[2].v0, 42);
    assert_int_equal(tu_stats().served, 3);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.s_dup", db()), 1);
    finish(a, "s_dup");
}

/* A statement that leaves the connection in a transaction ends the shared turn: the next
 * queued INSERTs must not run inside it (the release rolls it back, which would lose them).
 * They run on the connection after the rollback, and both rows are on the server. */
static void shared_turn_stops_at_a_transaction(void **state)
{
    (void)state;
    MYSQL *a = start(10000000);
    tu_exec(a, "DROP TABLE IF EXISTS %s.s_rows", db());
    tu_exec(a, "CREATE TABLE %s.s_rows (id INT PRIMARY KEY) ENGINE=InnoDB", db());
    struct call h = holder_call();
    struct call q[3] = {{.sql = "START TRANSACTION"},
                        {.sql = "INSERT INTO s_rows VALUES (?)", .np = 1},
                        {.sql = "INSERT INTO s_rows VALUES (?)", .np = 1}};
    q[1].p[0] = dbpool_param_int64(1);
    q[2].p[0] = dbpool_param_int64(2);
    stage(a, &h, q, 3);

    for (unsigned i = 0; i < 3; i++)
        if (q[i].rc != 0)
            fail_msg("request %u: %s", i, q[i].err);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.s_rows", db()), 2);
    /* The holder ran START TRANSACTION and stopped; the first INSERT's caller was handed the
     * rolled-back connection, ran its own and shared a turn with the second. */
    assert_int_equal(tu_stats().served, 2);
    finish(a, "s_rows");
}

/* DB_QUERY_SHARE_US bounds a shared turn: with 1 us, a caller runs at most one queued statement
 * (the first is always run) before it returns. Four queued: the holder serves the first, the
 * second is handed the connection and serves the third, the fourth is handed it. */
static void shared_turn_bounded_by_setting(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    struct call h = holder_call(), q[4];
    for (unsigned i = 0; i < 4; i++)
        q[i] = echo_call(i);
    stage(a, &h, q, 4);
    for (unsigned i = 0; i < 4; i++) {
        if (q[i].rc != 0)
            fail_msg("request %u: %s", i, q[i].err);
        assert_int_equal(q[i].v0, i);
    }
    assert_int_equal(tu_stats().served, 2);
    finish(a, NULL);
}

/* Off: DB_QUERY_SHARE_US=0, and DB_RESET_ON_RELEASE=1 (every statement gets a reset session,
 * which another caller's turn would skip): every caller runs its own statement. */
static void shared_turns_off(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        MYSQL *a = start(round == 0 ? 0 : 10000000);
        if (round == 1)
            setenv("DB_RESET_ON_RELEASE", "1", 1);
        struct call h = holder_call(), q[3];
        for (unsigned i = 0; i < 3; i++)
            q[i] = echo_call(i + 10);
        long long resets0 = tu_global_status(a, "Com_admin_commands");
        stage(a, &h, q, 3);
        for (unsigned i = 0; i < 3; i++) {
            if (q[i].rc != 0)
                fail_msg("round %d request %u: %s", round, i, q[i].err);
            assert_int_equal(q[i].v0, i + 10);
        }
        assert_int_equal(tu_stats().served, 0);
        if (round == 1) /* COM_RESET_CONNECTION: one per release */
            assert_true(tu_global_status(a, "Com_admin_commands") - resets0 >= 4);
        dbpool_close();
        mysql_close(a);
    }
}

/* Under churn (limit 2, 12 threads, a 3 ms acquire timeout scaled for slow runs, INSERTs with
 * unique keys): a statement is run exactly when its caller got 0. Rows on the server =
 * successes, so no request that timed out ran, and none ran twice or was dropped after it was
 * claimed. */
struct churn {
    pthread_t t;
    unsigned id, n;
    unsigned ok, timeouts, other;
    char err[256];
};

static void *churn_thread(void *p)
{
    struct churn *c = p;
    for (unsigned i = 0; i < c->n; i++) {
        dbpool_param k = dbpool_param_int64((int64_t)c->id * 100000 + i);
        int rc = dbpool_query(NULL, "INSERT INTO s_churn VALUES (?)", &k, 1);
        if (rc == 0)
            c->ok++;
        else if (rc == DBPOOL_ETIMEDOUT)
            c->timeouts++;
        else if (c->other++ == 0)
            snprintf(c->err, sizeof c->err, "%s", dbpool_last_error());
    }
    return NULL;
}

static void churn_runs_each_statement_exactly_when_it_succeeds(void **state)
{
    (void)state;
    MYSQL *a = start(1000);
    setenv("DB_CONNECTION_LIMIT", "2", 1);
    /* Short enough that some requests time out in the queue, long enough (scaled for the
     * sanitizer and valgrind runs) that others are claimed before they do. */
    tu_setenv_u("DB_ACQUIRE_TIMEOUT_MS", tu_slack_ms(3));
    tu_exec(a, "DROP TABLE IF EXISTS %s.s_churn", db());
    tu_exec(a, "CREATE TABLE %s.s_churn (id BIGINT PRIMARY KEY) ENGINE=InnoDB", db());
    struct churn c[12];
    unsigned n = tu_scaled(300);
    for (unsigned i = 0; i < 12; i++) {
        c[i] = (struct churn){.id = i, .n = n};
        assert_int_equal(pthread_create(&c[i].t, NULL, churn_thread, &c[i]), 0);
    }
    unsigned ok = 0, timeouts = 0;
    for (unsigned i = 0; i < 12; i++) {
        assert_int_equal(pthread_join(c[i].t, NULL), 0);
        if (c[i].other)
            fail_msg("thread %u: %u unexpected errors, first: %s", i, c[i].other, c[i].err);
        ok += c[i].ok;
        timeouts += c[i].timeouts;
    }
    dbpool_stats s = tu_stats();
    print_message("churn: %u ok, %u timed out, %" PRIu64 " served by another caller\n", ok, timeouts, s.served);
    assert_int_equal(ok + timeouts, 12 * n);
    assert_true(s.served > 0); /* the mechanism under test ran */
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.s_churn", db()), ok);
    dbpool_close();
    assert_int_equal(tu_wait_sessions(a, tu_server_shared()->user, 0, tu_slack_ms(5000)), 0);
    tu_exec(a, "DROP TABLE %s.s_churn", db());
    mysql_close(a);
}

/* dbpool_close() during a shared turn: the queued callers that were not claimed get
 * DBPOOL_ECLOSED at once, the one whose statement runs gets its outcome (the close stops the
 * statement after the grace period), nobody hangs, no session is left on the server. */
static void close_during_a_shared_turn(void **state)
{
    (void)state;
    MYSQL *a = start(10000000);
    setenv("DB_SHUTDOWN_GRACE_MS", "200", 1);
    struct call h = holder_call();
    struct call q[4] = {{.sql = "SELECT SLEEP(5)"}, echo_call(1), echo_call(2), echo_call(3)};
    queue_behind(a, &h, q, 4);
    gate_open(a);
    /* The holder claims the first request (its SLEEP(5)) and runs it. */
    wait_stats(served_is, 1, "the first request claimed");
    uint64_t t0 = tu_now_ms();
    dbpool_close();
    join_call(&h);
    for (unsigned i = 0; i < 4; i++)
        join_call(&q[i]);
    assert_true(tu_now_ms() - t0 < 4000); /* the SLEEP(5) was stopped, not waited for */
    assert_int_equal(h.rc, 0);
    /* Stopped by the close: KILL QUERY makes SLEEP() return 1, or the socket shutdown lost the
     * session first. */
    if (!(q[0].rc == 0 && q[0].v0 == 1) && q[0].rc != DBPOOL_ECONNLOST && q[0].rc != DBPOOL_EQUERY)
        fail_msg("the SLEEP(5) run for a caller: %s (%d) %s", dbpool_errname(q[0].rc), q[0].rc, q[0].err);
    for (unsigned i = 1; i < 4; i++) {
        assert_int_equal(q[i].rc, DBPOOL_ECLOSED);
        assert_non_null(strstr(q[i].err, "closed"));
    }
    assert_int_equal(tu_wait_sessions(a, tu_server_shared()->user, 0, tu_slack_ms(5000)), 0);
    mysql_close(a);
}

/* A thread that holds another connection never shares its turn: the statement it would run
 * could wait for a lock of that connection (here a row lock of its open transaction), which the
 * thread cannot release before it returns: a lock wait the server does not see as a deadlock.
 * With the rule, the holder returns after its own statement, commits, and the queued UPDATE
 * then goes through. */
struct txn_holder {
    pthread_t t;
    int rc_query, rc_commit;
    uint64_t done_ms; /* when its dbpool_query() returned */
    char err[256];
};

static void *txn_holder_thread(void *p)
{
    struct txn_holder *t = p;
    dbpool_conn *x = NULL;
    t->rc_query = t->rc_commit = -1;
    if (dbpool_get(&x) != 0 || dbpool_begin(x) != 0 ||
        dbpool_conn_exec(x, "UPDATE s_acct SET v = v + 1 WHERE id = 1") != 0) {
        snprintf(t->err, sizeof t->err, "%s", dbpool_last_error());
        dbpool_release(x);
        return NULL;
    }
    t->rc_query = dbpool_query(NULL, GATED, NULL, 0);
    t->done_ms = tu_now_ms();
    if (t->rc_query != 0)
        snprintf(t->err, sizeof t->err, "%s", dbpool_last_error());
    t->rc_commit = dbpool_commit(x);
    dbpool_release(x);
    return NULL;
}

static void no_shared_turn_while_holding_another_connection(void **state)
{
    (void)state;
    MYSQL *a = start(10000000);
    setenv("DB_CONNECTION_LIMIT", "2", 1);
    long long lock_wait = tu_scalar(a, "SELECT @@GLOBAL.innodb_lock_wait_timeout");
    tu_exec(a, "SET GLOBAL innodb_lock_wait_timeout = 5"); /* for the pool's new sessions */
    tu_exec(a, "DROP TABLE IF EXISTS %s.s_acct", db());
    tu_exec(a, "CREATE TABLE %s.s_acct (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB", db());
    tu_exec(a, "INSERT INTO %s.s_acct VALUES (1, 0)", db());
    struct txn_holder t = {0};
    gate_close(a);
    assert_int_equal(pthread_create(&t.t, NULL, txn_holder_thread, &t), 0);
    wait_stats(in_use_is, 2, "the transaction and the holder's statement");
    struct call u = {.sql = "UPDATE s_acct SET v = v + 10 WHERE id = 1"};
    start_call(&u);
    wait_stats(waiting_is, 1, "the UPDATE queued");
    uint64_t opened_ms = tu_now_ms();
    gate_open(a);
    assert_int_equal(pthread_join(t.t, NULL), 0);
    join_call(&u);
    tu_exec(a, "SET GLOBAL innodb_lock_wait_timeout = %lld", lock_wait);

    if (t.rc_query != 0 || t.rc_commit != 0)
        fail_msg("holder: query %d commit %d: %s", t.rc_query, t.rc_commit, t.err);
    if (u.rc != 0)
        fail_msg("the queued UPDATE: %s", u.err);
    /* Not held up by a lock wait on its own transaction (5 s, see above). */
    assert_true(t.done_ms - opened_ms < 3000);
    assert_int_equal(tu_stats().served, 0);
    assert_int_equal(tu_scalar(a, "SELECT v FROM %s.s_acct WHERE id = 1", db()), 11);
    finish(a, "s_acct");
}

/* The connection dies during a statement run for another caller (its session is killed): that
 * caller gets DBPOOL_ECONNLOST, the sharing caller's own call still succeeds with a clean error
 * state, the turn ends, the broken connection is closed and the next caller runs on a new one. */
static void lost_connection_during_a_shared_turn(void **state)
{
    (void)state;
    MYSQL *a = start(10000000);
    struct call h = holder_call();
    struct call q[2] = {{.sql = "SELECT SLEEP(30)"}, echo_call(5)};
    queue_behind(a, &h, q, 2);
    gate_open(a);
    wait_stats(served_is, 1, "the first request claimed");
    unsigned long id = tu_session_id(a, tu_server_shared()->user);
    assert_true(id != 0);
    tu_exec(a, "KILL CONNECTION %lu", id);
    join_call(&h);
    join_call(&q[0]);
    join_call(&q[1]);

    assert_int_equal(h.rc, 0);
    assert_string_equal(h.err, "");
    assert_int_equal(q[0].rc, DBPOOL_ECONNLOST);
    if (q[1].rc != 0)
        fail_msg("the next caller: %s", q[1].err);
    assert_int_equal(q[1].v0, 5);
    assert_int_not_equal(q[1].conn_id, (uint64_t)id);
    dbpool_stats s = tu_stats();
    assert_int_equal(s.served, 1); /* the turn ended with the lost connection */
    assert_int_equal(s.closed_broken, 1);
    assert_int_equal(s.created, 2);
    finish(a, NULL);
}

/* dbpool_last_wait_ns() on every path: no wait (0), a caller given a slot freed by a broken
 * connection (the wait until then), a caller whose statement another caller ran (tested
 * above). */
struct getter {
    pthread_t t;
    int rc;
    uint64_t wait_ns;
    const char *sql; /* run on the connection it got, if set */
    int sql_rc;
};

static void *getter_thread(void *p)
{
    struct getter *g = p;
    dbpool_conn *c = NULL;
    g->rc = dbpool_get(&c);
    g->wait_ns = dbpool_last_wait_ns();
    if (g->rc == 0 && g->sql)
        g->sql_rc = dbpool_conn_exec(c, g->sql);
    dbpool_release(c);
    return NULL;
}

static void last_wait_on_the_opened_slot_path(void **state)
{
    (void)state;
    MYSQL *a = start(10000000);
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_get(&c), 0);
    assert_int_equal(dbpool_last_wait_ns(), 0);
    struct getter g = {0};
    assert_int_equal(pthread_create(&g.t, NULL, getter_thread, &g), 0);
    wait_stats(waiting_is, 1, "the getter queued");
    tu_exec(a, "KILL CONNECTION %lu", mysql_thread_id(dbpool_mysql(c)));
    tu_sleep_ms(100);
    assert_int_equal(dbpool_conn_exec(c, "SELECT 1"), DBPOOL_ECONNLOST);
    dbpool_release(c); /* closed as broken: the getter opens a new connection in its slot */
    assert_int_equal(pthread_join(g.t, NULL), 0);
    assert_int_equal(g.rc, 0);
    assert_true(g.wait_ns >= 100000000ull);
    dbpool_stats s = tu_stats();
    assert_int_equal(s.created, 2);
    assert_int_equal(s.waits, 1);
    finish(a, NULL);
}

/* A dbpool_get() waiter in the queue ends a shared turn: statements queued behind it are not
 * run before it gets its connection. Queue: a request, a dbpool_get() caller, a request; each
 * inserts into an AUTO_INCREMENT table, and the server's order is the arrival order. */
static void get_waiter_keeps_its_place(void **state)
{
    (void)state;
    MYSQL *a = start(10000000);
    tu_exec(a, "DROP TABLE IF EXISTS %s.s_mixed", db());
    tu_exec(a, "CREATE TABLE %s.s_mixed (seq INT AUTO_INCREMENT PRIMARY KEY, who INT NOT NULL)", db());
    struct call h = holder_call();
    struct call r[2] = {{.sql = "INSERT INTO s_mixed (who) VALUES (1)"},
                        {.sql = "INSERT INTO s_mixed (who) VALUES (3)"}};
    struct getter g = {.sql = "INSERT INTO s_mixed (who) VALUES (2)"};
    gate_close(a);
    start_call(&h);
    wait_stats(in_use_is, 1, "the holder's connection");
    start_call(&r[0]);
    wait_stats(waiting_is, 1, "the first request queued");
    assert_int_equal(pthread_create(&g.t, NULL, getter_thread, &g), 0);
    wait_stats(waiting_is, 2, "the dbpool_get() caller queued");
    start_call(&r[1]);
    wait_stats(waiting_is, 3, "the second request queued");
    gate_open(a);
    join_call(&h);
    assert_int_equal(pthread_join(g.t, NULL), 0);
    join_call(&r[0]);
    join_call(&r[1]);

    assert_int_equal(h.rc, 0);
    assert_int_equal(g.rc, 0);
    assert_int_equal(g.sql_rc, 0);
    for (unsigned i = 0; i < 2; i++)
        if (r[i].rc != 0)
            fail_msg("request %u: %s", i, r[i].err);
    for (unsigned i = 1; i <= 3; i++)
        assert_int_equal(tu_scalar(a, "SELECT who FROM %s.s_mixed WHERE seq = %u", db(), i), i);
    /* The holder ran the first request only; the second ran on a connection of its own. */
    assert_int_equal(tu_stats().served, 1);
    finish(a, "s_mixed");
}

/* Queued requests count against DB_QUEUE_LIMIT like any waiter: with two queued and a limit of
 * two, a third dbpool_query() fails at once with DBPOOL_EQUEUEFULL and is never run; the two
 * are served when the holder's statement ends. */
static void queued_requests_count_against_the_queue_limit(void **state)
{
    (void)state;
    MYSQL *a = start(10000000);
    setenv("DB_QUEUE_LIMIT", "2", 1);
    struct call h = holder_call(), q[2] = {echo_call(1), echo_call(2)};
    queue_behind(a, &h, q, 2);
    dbpool_result *r = NULL;
    long long exec0 = tu_global_status(a, "Com_stmt_execute");
    assert_int_equal(dbpool_query(&r, "SELECT 3", NULL, 0), DBPOOL_EQUEUEFULL);
    assert_null(r);
    assert_non_null(strstr(dbpool_last_error(), "DB_QUEUE_LIMIT=2"));
    assert_int_equal(dbpool_last_wait_ns(), 0);
    assert_int_equal(tu_global_status(a, "Com_stmt_execute"), exec0); /* never run */
    gate_open(a);
    join_call(&h);
    for (unsigned i = 0; i < 2; i++) {
        join_call(&q[i]);
        if (q[i].rc != 0)
            fail_msg("request %u: %s", i, q[i].err);
        assert_int_equal(q[i].v0, i + 1);
    }
    dbpool_stats s = tu_stats();
    assert_int_equal(s.served, 2);
    assert_int_equal(s.queue_full, 1);
    finish(a, NULL);
}

/* fork() while requests are queued: the child owns none of the parent's queue, turn or
 * connection. Its own dbpool_query() runs at once on a session of its own while the parent's
 * only connection is still held at the gate (a child that joined the copied queue would wait
 * forever: its "holder" is a thread that does not exist in the child). The parent's queued
 * requests are then served as before, on the parent's session, which the child left alone. */
struct fork_report {
    int rc;
    unsigned waiting, in_use; /* the child's pool before its call */
    uint64_t id;              /* the child's CONNECTION_ID() */
};

static void fork_child_query(int fd)
{
    struct fork_report m = {.rc = -1};
    dbpool_stats s;
    dbpool_stats_get(&s);
    m.waiting = s.waiting;
    m.in_use = s.in_use;
    dbpool_result *r = NULL;
    m.rc = dbpool_query(&r, "SELECT CONNECTION_ID()", NULL, 0);
    if (m.rc == 0 && dbpool_result_uint64(r, 0, 0, &m.id) != 0)
        m.rc = -2;
    dbpool_result_free(r);
    /* Close explicitly and _exit(): the blocks the parent's other threads had allocated (their
     * wait cells, the statement being prepared) are copied into the child with no thread left
     * to free them, and a leak checker at exit() would report them (LeakSanitizer; valgrind
     * checks at _exit() too). */
    dbpool_close();
    ssize_t w = write(fd, &m, sizeof m);
    _exit(w == (ssize_t)sizeof m && m.rc == 0 ? 0 : 1);
}

static void fork_while_requests_are_queued(void **state)
{
    (void)state;
    MYSQL *a = start(10000000);
    struct call h = holder_call();
    struct call q[2] = {echo_call(1), echo_call(2)};
    queue_behind(a, &h, q, 2);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        fork_child_query(pfd[1]);
    close(pfd[1]);
    struct pollfd pf = {.fd = pfd[0], .events = POLLIN};
    struct fork_report m = {.rc = -1};
    int ready = poll(&pf, 1, (int)tu_slack_ms(10000));
    ssize_t got = ready == 1 ? read(pfd[0], &m, sizeof m) : -1;
    close(pfd[0]);
    if (ready != 1)
        kill(pid, SIGKILL);
    int st = tu_wait(pid, tu_slack_ms(10000));
    if (ready != 1)
        fail_msg("the child's dbpool_query() did not return while the parent's queue waited");
    assert_int_equal(got, (ssize_t)sizeof m);
    /* Everything checked happened before the report was written; the exit code is not
     * checked: under valgrind it is the error exit code for those copied blocks. */
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(m.rc, 0);
    assert_int_equal(m.waiting, 0); /* the child's pool starts empty */
    assert_int_equal(m.in_use, 0);

    /* The parent's scene is untouched: holder at the gate, both requests still queued. */
    dbpool_stats s = tu_stats();
    assert_int_equal(s.in_use, 1);
    assert_int_equal(s.waiting, 2);
    gate_open(a);
    join_call(&h);
    join_call(&q[0]);
    join_call(&q[1]);
    assert_int_equal(h.rc, 0);
    for (unsigned i = 0; i < 2; i++) {
        if (q[i].rc != 0)
            fail_msg("request %u: %s", i, q[i].err);
        assert_int_equal(q[i].v0, i + 1);
        assert_int_not_equal(q[i].conn_id, m.id);
    }
    assert_int_equal(q[0].conn_id, q[1].conn_id); /* both on the holder's session */
    s = tu_stats();
    assert_int_equal(s.served, 2);
    assert_int_equal(s.closed_broken, 0);
    assert_int_equal(s.created, 1);
    /* The child's session ended cleanly (COM_QUIT at its exit); the parent's is the same one
     * and still works. */
    uint64_t end = tu_now_ms() + tu_slack_ms(5000);
    while (tu_session_exists(a, (unsigned long)m.id) && tu_now_ms() < end)
        tu_sleep_ms(10);
    assert_int_equal(tu_session_exists(a, (unsigned long)m.id), 0);
    struct call after = echo_call(3);
    start_call(&after);
    join_call(&after);
    assert_int_equal(after.rc, 0);
    assert_int_equal(after.conn_id, q[0].conn_id);
    tu_sleep_ms(200);
    assert_true(tu_errlog_aborted(tu_server_shared(), (unsigned long)m.id) <= 0);
    finish(a, NULL);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(queued_queries_run_on_the_holders_connection),
    cmocka_unit_test(shared_turn_errors_reach_their_caller),
    cmocka_unit_test(shared_turn_stops_at_a_transaction),
    cmocka_unit_test(shared_turn_bounded_by_setting),
    cmocka_unit_test(shared_turns_off),
    cmocka_unit_test(churn_runs_each_statement_exactly_when_it_succeeds),
    cmocka_unit_test(close_during_a_shared_turn),
    cmocka_unit_test(no_shared_turn_while_holding_another_connection),
    cmocka_unit_test(lost_connection_during_a_shared_turn),
    cmocka_unit_test(last_wait_on_the_opened_slot_path),
    cmocka_unit_test(get_waiter_keeps_its_place),
    cmocka_unit_test(queued_requests_count_against_the_queue_limit),
    cmocka_unit_test(fork_while_requests_are_queued),
};

TU_MAIN(tests)
