/*
 * test_host_budget.c - DB_HOST_BUDGET across real processes against a real server (issue 7,
 * RELIABILITY.md items 28 and 29). The processes are tests/progs/budget_worker; what they
 * do to the server is checked on the server (information_schema.PROCESSLIST through the admin
 * connection), and hand-over times are measured on CLOCK_MONOTONIC, which all processes share.
 *
 * Each test creates its own application user(s) (so sessions of other tests running at the
 * same time never count) and its own budget directory, and drops/removes them at the end.
 * (The unit-level flock semantics are in tests/unit/test_budget.c; this file is named
 * differently because test executables are named after their file.)
 */
#include "testutil.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define USER_PW "budget-pw-7"

struct env {
    const tu_server *s;
    MYSQL *admin;
    char user[64], user2[64];
    char base[64];
    char dir[128];
    pid_t kids[32]; /* workers (and a worker's child) still to be killed at the end */
    int nkids;
};

/* The current test's environment: global so that the cmocka teardown cleans up (users, files,
 * processes) even when an assertion ended the test early. */
static struct env E;

static void kid_add(pid_t pid)
{
    if (pid > 0 && E.nkids < (int)(sizeof E.kids / sizeof E.kids[0]))
        E.kids[E.nkids++] = pid;
}

/* `pid` was reaped (or is gone): never signal that number again, it may be reused. */
static void kid_done(pid_t pid)
{
    for (int i = 0; i < E.nkids; i++)
        if (E.kids[i] == pid)
            E.kids[i] = E.kids[--E.nkids];
}

/* Kill what is left, but only processes that are still budget_worker (pids get reused). */
static void kill_kids(void)
{
    for (int i = 0; i < E.nkids; i++) {
        char path[64], cmd[256] = "";
        snprintf(path, sizeof path, "/proc/%ld/cmdline", (long)E.kids[i]);
        FILE *f = fopen(path, "r");
        if (f) {
            size_t r = fread(cmd, 1, sizeof cmd - 1, f);
            cmd[r] = '\0';
            fclose(f);
        }
        if (strstr(cmd, "budget_worker")) {
            kill(E.kids[i], SIGKILL);
            waitpid(E.kids[i], NULL, 0); /* ECHILD at once for a worker's child */
        }
    }
    E.nkids = 0;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void make_user(struct env *e, char *user, size_t n, const char *tag)
{
    snprintf(user, n, "dbpb_%ld_%s", (long)getpid(), tag);
    tu_exec(e->admin, "DROP USER IF EXISTS '%s'@'%%'", user);
    tu_exec(e->admin, "CREATE USER '%s'@'%%' IDENTIFIED BY '" USER_PW "'", user);
    tu_exec(e->admin, "GRANT SELECT ON `%s`.* TO '%s'@'%%'", e->s->db, user);
}

static void use_user(const char *user)
{
    setenv("DB_USER", user, 1);
    setenv("DB_PASSWORD", USER_PW, 1);
}

/* Server, admin connection, a fresh user, a budget directory (created by the library inside a
 * mkdtemp base), and the pool keys every process of the test inherits. */
static void setup(struct env *e, unsigned budget, unsigned limit, unsigned acquire_ms)
{
    memset(e, 0, sizeof *e);
    e->s = tu_server_shared();
    tu_use_server(e->s);
    e->admin = tu_admin(e->s);
    make_user(e, e->user, sizeof e->user, "a");
    snprintf(e->base, sizeof e->base, "/tmp/dbpool-hb-XXXXXX");
    assert_non_null(mkdtemp(e->base));
    snprintf(e->dir, sizeof e->dir, "%s/budget", e->base);
    use_user(e->user);
    tu_setenv_u("DB_HOST_BUDGET", budget);
    setenv("DB_HOST_BUDGET_DIR", e->dir, 1);
    tu_setenv_u("DB_CONNECTION_LIMIT", limit);
    tu_setenv_u("DB_ACQUIRE_TIMEOUT_MS", acquire_ms);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static void teardown(struct env *e)
{
    kill_kids();
    dbpool_close();
    tu_exec(e->admin, "DROP USER IF EXISTS '%s'@'%%'", e->user);
    if (e->user2[0])
        tu_exec(e->admin, "DROP USER IF EXISTS '%s'@'%%'", e->user2);
    mysql_close(e->admin);
    nftw(e->base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void report_path(const struct env *e, char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s.report", e->base, name);
}

/* The first line of the report that starts with `prefix` (copied to line), or 0. */
static int report_line(const char *path, const char *prefix, char *line, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[2048];
    int found = 0;
    while (!found && fgets(buf, sizeof buf, f)) {
        if (strncmp(buf, prefix, strlen(prefix)) == 0) {
            buf[strcspn(buf, "\n")] = '\0';
            snprintf(line, n, "%s", buf);
            found = 1;
        }
    }
    fclose(f);
    return found;
}

static int wait_line(const char *path, const char *prefix, char *line, size_t n, unsigned ms)
{
    uint64_t end = tu_now_ms() + ms;
    do {
        if (report_line(path, prefix, line, n))
            return 1;
        tu_sleep_ms(2);
    } while (tu_now_ms() < end);
    return 0;
}

static pid_t spawn_worker(const char *mode, const char *a1, const char *report)
{
    char *argv[8] = {"budget_worker", (char *)mode, NULL, NULL, NULL};
    int i = 2;
    if (a1)
        argv[i++] = (char *)a1;
    argv[i] = (char *)report;
    pid_t pid = tu_spawn("budget_worker", argv);
    kid_add(pid);
    return pid;
}

/* Start a "hold K" (or "holdfork K") worker and wait until it holds its connections. */
static pid_t start_holder(const struct env *e, const char *mode, unsigned k, const char *name,
                          char *rep, size_t n)
{
    char ks[16], line[256];
    snprintf(ks, sizeof ks, "%u", k);
    report_path(e, rep, n, name);
    pid_t pid = spawn_worker(mode, ks, rep);
    if (!wait_line(rep, "ready", line, sizeof line, 20000)) {
        if (report_line(rep, "error", line, sizeof line))
            print_error("%s: %s\n", name, line);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        kid_done(pid);
        fail_msg("%s worker did not become ready", name);
    }
    return pid;
}

static int cleanup(void **state)
{
    (void)state;
    if (E.admin)
        teardown(&E);
    memset(&E, 0, sizeof E);
    return 0;
}

static void assert_exit0(pid_t pid, int st, const char *what)
{
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fail_msg("%s (pid %ld) ended with status 0x%x", what, (long)pid, (unsigned)st);
}

/* ---- the headline: 8 processes x limit 10 under a budget of 5 ----------------------------- */

struct monitor {
    long max_sessions;
    unsigned samples;
    unsigned max_used; /* the budget as this process's probes see it */
};

/* Poll PROCESSLIST every few ms until every worker has ended (or the deadline). */
static void monitor_until_done(const struct env *e, pid_t *pids, int *status, int n,
                               struct monitor *m, unsigned ms)
{
    int left = n;
    bool done[16] = {false};
    uint64_t end = tu_now_ms() + ms;
    while (left > 0 && tu_now_ms() < end) {
        long s = tu_count_sessions(e->admin, e->user);
        if (s > m->max_sessions)
            m->max_sessions = s;
        m->samples++;
        dbpool_stats st;
        if (dbpool_stats_get(&st) == 0 && st.budget_used > m->max_used)
            m->max_used = st.budget_used;
        for (int i = 0; i < n; i++)
            if (!done[i] && waitpid(pids[i], &status[i], WNOHANG) == pids[i]) {
                done[i] = true;
                kid_done(pids[i]);
                left--;
            }
        tu_sleep_ms(3);
    }
    for (int i = 0; i < n; i++)
        if (!done[i]) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], &status[i], 0);
            kid_done(pids[i]);
        }
}

static void eight_processes_share_a_budget_of_five(void **state)
{
    (void)state;
    setup(&E, 5, 10, 30000); /* the whole run takes ~6 s: 30 s per get is a wide margin */
    enum { NPROC = 8 };
    unsigned iters = tu_scaled(6);
    char its[16], rep[NPROC][160], line[2048];
    snprintf(its, sizeof its, "%u", iters);
    pid_t pids[NPROC];
    int status[NPROC];
    uint64_t t0 = tu_now_ms();
    for (int i = 0; i < NPROC; i++) {
        char name[32];
        snprintf(name, sizeof name, "burst%d", i);
        report_path(&E, rep[i], sizeof rep[i], name);
        char *argv[] = {"budget_worker", "burst", "10", its, "50", rep[i], NULL};
        pids[i] = tu_spawn("budget_worker", argv);
        kid_add(pids[i]);
    }
    assert_int_equal(dbpool_init(NULL), 0); /* this process's pool: budget probes only */
    struct monitor m = {0, 0, 0};
    monitor_until_done(&E, pids, status, NPROC, &m, 120000);
    uint64_t took = tu_now_ms() - t0;
    print_message("%d processes x 10 threads x %u queries of 50 ms, DB_HOST_BUDGET=5: %llu ms, "
                  "%u PROCESSLIST samples, max %ld sessions of %s, max budget used seen %u\n",
                  NPROC, iters, (unsigned long long)took, m.samples, m.max_sessions, E.user,
                  m.max_used);
    for (int i = 0; i < NPROC; i++) {
        if (report_line(rep[i], "done", line, sizeof line))
            print_message("  pid %ld: %s\n", (long)pids[i], line);
        if (report_line(rep[i], "error", line, sizeof line))
            print_message("  pid %ld: %s\n", (long)pids[i], line);
    }
    for (int i = 0; i < NPROC; i++)
        assert_exit0(pids[i], status[i], "burst worker");
    assert_true(m.samples >= 20);
    assert_true(m.max_sessions <= 5); /* the server never saw more than the budget */
    assert_int_equal(m.max_sessions, 5); /* and the budget was actually the bottleneck */
    assert_true(m.max_used <= 5);
    assert_int_equal(tu_wait_sessions(E.admin, E.user, 0, 3000), 0);
}

/* ---- SIGKILL of a holder --------------------------------------------------------------------- */

static void sigkill_holder_slot_goes_to_waiter_at_once(void **state)
{
    (void)state;
    setup(&E, 2, 10, 20000);
    char rep_h[160], rep_w[160], line[2048];
    pid_t h = start_holder(&E, "hold", 2, "holder", rep_h, sizeof rep_h);
    assert_int_equal(tu_count_sessions(E.admin, E.user), 2);

    report_path(&E, rep_w, sizeof rep_w, "waiter");
    pid_t w = spawn_worker("wait", NULL, rep_w);
    assert_true(wait_line(rep_w, "waiting", line, sizeof line, 10000));
    tu_sleep_ms(400);
    assert_false(report_line(rep_w, "got", line, sizeof line)); /* blocked on the budget... */
    assert_int_equal(tu_count_sessions(E.admin, E.user), 2);   /* ...without a session */

    assert_int_equal(dbpool_init(NULL), 0);
    long pids[4] = {0, 0, 0, 0};
    size_t n = 0;
    assert_int_equal(dbpool_budget_holders(pids, 4, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(pids[0], h);
    assert_int_equal(pids[1], h);

    uint64_t t_kill = mono_ns();
    assert_int_equal(kill(h, SIGKILL), 0);
    assert_true(wait_line(rep_w, "got ", line, sizeof line, 10000));
    unsigned long long t_got = 0;
    int rc = -99;
    assert_int_equal(sscanf(line, "got %llu rc=%d", &t_got, &rc), 2);
    double ms = ((double)t_got - (double)t_kill) / 1e6;
    print_message("waiter got its connection %.1f ms after the SIGKILL of the holder\n", ms);
    assert_int_equal(rc, 0);
    assert_true(ms >= 0.0 && ms < 500.0);
    int wst = tu_wait(w, 10000);
    kid_done(w);
    assert_exit0(w, wst, "waiter");
    waitpid(h, NULL, 0);
    kid_done(h);
    assert_int_equal(tu_wait_sessions(E.admin, E.user, 0, 3000), 0);
}

/* ---- a holder that forks ---------------------------------------------------------------------- */

static void holder_fork_child_keeps_nothing(void **state)
{
    (void)state;
    setup(&E, 3, 10, 20000);
    char rep[160], line[2048];
    pid_t h = start_holder(&E, "holdfork", 2, "holdfork", rep, sizeof rep);
    assert_true(report_line(rep, "afterfork ok held=2", line, sizeof line)); /* H kept its 2 */
    assert_true(report_line(rep, "child ", line, sizeof line));
    long c = 0;
    assert_int_equal(sscanf(line, "child %ld", &c), 1);
    kid_add((pid_t)c);
    assert_int_equal(kill((pid_t)c, 0), 0);

    tu_setenv_u("DB_ACQUIRE_TIMEOUT_MS", 300); /* this process's own pool */
    assert_int_equal(dbpool_init(NULL), 0);
    long pids[4] = {0, 0, 0, 0};
    size_t n = 0;
    assert_int_equal(dbpool_budget_holders(pids, 4, &n), 0);
    assert_int_equal(n, 2); /* H twice, never its child */
    assert_true(pids[0] == h && pids[1] == h);
    dbpool_stats st;
    assert_int_equal(dbpool_stats_get(&st), 0);
    assert_int_equal(st.budget_size, 3);
    assert_int_equal(st.budget_used, 2);
    assert_int_equal(st.budget_held, 0);
    assert_int_equal(tu_count_sessions(E.admin, E.user), 2);

    dbpool_conn *k[3] = {NULL, NULL, NULL}, *extra = NULL;
    assert_int_equal(dbpool_get(&k[0]), 0); /* the third slot: the child consumes none */
    assert_int_equal(dbpool_stats_get(&st), 0);
    assert_int_equal(st.budget_used, 3);
    assert_int_equal(st.budget_held, 1);
    assert_int_equal(dbpool_get(&extra), DBPOOL_EBUDGET);
    print_message("full: %s\n", dbpool_last_error());
    char hs[32];
    snprintf(hs, sizeof hs, "%ld", (long)h);
    assert_non_null(strstr(dbpool_last_error(), hs));

    /* H dies; its child lives on and must not keep H's slots or sessions. */
    uint64_t t_kill = mono_ns();
    kill(h, SIGKILL);
    waitpid(h, NULL, 0);
    kid_done(h);
    assert_int_equal(kill((pid_t)c, 0), 0);
    assert_int_equal(dbpool_get(&k[1]), 0);
    assert_int_equal(dbpool_get(&k[2]), 0);
    double ms = (mono_ns() - t_kill) / 1e6;
    print_message("two slots of the killed holder taken %.1f ms after SIGKILL, its child alive\n", ms);
    assert_true(ms < 500.0);
    assert_int_equal(tu_wait_sessions(E.admin, E.user, 3, 3000), 3); /* H's 2 sessions ended */
    assert_int_equal(dbpool_budget_holders(pids, 4, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pids[i], getpid());
    assert_int_equal(dbpool_stats_get(&st), 0);
    assert_int_equal(st.budget_held, 3);
    for (int i = 0; i < 3; i++)
        dbpool_release(k[i]);
    kill((pid_t)c, SIGKILL); /* reparented: not ours to reap */
    kid_done((pid_t)c);
}

/* ---- two users --------------------------------------------------------------------------------- */

static void two_users_have_independent_budgets(void **state)
{
    (void)state;
    setup(&E, 2, 10, 20000);
    make_user(&E, E.user2, sizeof E.user2, "b");
    char rep[160];
    pid_t h = start_holder(&E, "hold", 2, "holder-a", rep, sizeof rep); /* user a: full */

    use_user(E.user2);
    /* Both the wait that must not happen and the bound scale with the build's slowness. */
    tu_setenv_u("DB_ACQUIRE_TIMEOUT_MS", tu_slack_ms(300));
    dbpool_conn *c[2] = {NULL, NULL}, *extra = NULL;
    uint64_t t0 = tu_now_ms();
    assert_int_equal(dbpool_get(&c[0]), 0);
    assert_int_equal(dbpool_get(&c[1]), 0);
    uint64_t took = tu_now_ms() - t0;
    print_message("user b got 2 connections in %llu ms while user a holds its whole budget\n",
                  (unsigned long long)took);
    assert_true(took < tu_slack_ms(250)); /* never waited for a's budget (that wait lasts the timeout) */
    assert_int_equal(dbpool_get(&extra), DBPOOL_EBUDGET); /* b's own budget of 2 is full */
    assert_non_null(strstr(dbpool_last_error(), E.user2));
    assert_int_equal(tu_count_sessions(E.admin, E.user), 2);
    assert_int_equal(tu_count_sessions(E.admin, E.user2), 2);
    dbpool_release(c[0]);
    dbpool_release(c[1]);
    kill(h, SIGKILL);
    waitpid(h, NULL, 0);
    kid_done(h);
}

/* ---- bad directory: an error at initialisation, never "no budget" ----------------------------- */

static void bad_budget_dir_fails_init(void **state)
{
    (void)state;
    setup(&E, 2, 10, 2000);
    char missing[192], file[192];
    snprintf(missing, sizeof missing, "%s/no-parent/budget", E.base);
    snprintf(file, sizeof file, "%s/a-file", E.base);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    const char *cases[][2] = {{missing, "does not exist"}, {file, "not a directory"}};
    for (int i = 0; i < 2; i++) {
        setenv("DB_HOST_BUDGET_DIR", cases[i][0], 1);
        assert_int_equal(dbpool_init(NULL), DBPOOL_ECONFIG);
        print_message("init: %s\n", dbpool_last_error());
        assert_non_null(strstr(dbpool_last_error(), cases[i][0]));
        assert_non_null(strstr(dbpool_last_error(), cases[i][1]));
        dbpool_conn *c = NULL;
        assert_int_equal(dbpool_get(&c), DBPOOL_ECONFIG); /* no silent fallback */
        assert_null(c);
    }
    assert_int_equal(tu_count_sessions(E.admin, E.user), 0);
}

/* ---- readers of the budget during a close ------------------------------------------------------ */

/* dbpool_stats_get() and dbpool_budget_holders() read the budget's lock files outside the pool
 * lock, and a close frees the budget: they pin it, and the close waits for them. Here a thread
 * reads both without pause while the main thread starts and closes the pool again and again;
 * a reader that used a freed budget is a heap-use-after-free under ASan and valgrind. */
struct budget_reader {
    pthread_t t;
    atomic_bool stop;
    atomic_ulong reads;
    unsigned long with_budget, holders_ok, holders_closed;
};

static void *budget_reader_main(void *p)
{
    struct budget_reader *r = p;
    while (!atomic_load(&r->stop)) {
        dbpool_stats s;
        if (dbpool_stats_get(&s) == 0 && s.budget_size)
            r->with_budget++;
        long pids[8];
        size_t n = 0;
        int rc = dbpool_budget_holders(pids, 8, &n);
        if (rc == 0)
            r->holders_ok++;
        else if (rc == DBPOOL_ECLOSED)
            r->holders_closed++;
        atomic_fetch_add(&r->reads, 1);
    }
    return NULL;
}

static void budget_read_during_close(void **state)
{
    (void)state;
    setup(&E, 4, 2, 2000);
    struct budget_reader r[2] = {0};
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_create(&r[k].t, NULL, budget_reader_main, &r[k]), 0);
    while (atomic_load(&r[0].reads) == 0 || atomic_load(&r[1].reads) == 0)
        tu_sleep_ms(1);
    /* For 1.5 s (at least 50 cycles), whatever the build's speed. */
    unsigned cycles = 0;
    uint64_t end = tu_now_ms() + 1500;
    while (cycles < 50 || tu_now_ms() < end) {
        if (dbpool_init(NULL) != 0)
            fail_msg("cycle %u: dbpool_init: %s", cycles, dbpool_last_error());
        dbpool_close();
        cycles++;
    }
    for (int k = 0; k < 2; k++) {
        atomic_store(&r[k].stop, true);
        assert_int_equal(pthread_join(r[k].t, NULL), 0);
        print_message("%u cycles; reader %d: %lu reads, %lu with the budget, holders %lu read / "
                      "%lu closed\n", cycles, k, atomic_load(&r[k].reads), r[k].with_budget,
                      r[k].holders_ok, r[k].holders_closed);
        assert_true(r[k].with_budget > 0); /* the readers did meet a live budget */
        assert_true(r[k].holders_ok > 0);
    }
    assert_int_equal(tu_count_sessions(E.admin, E.user), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(eight_processes_share_a_budget_of_five, cleanup),
        cmocka_unit_test_teardown(sigkill_holder_slot_goes_to_waiter_at_once, cleanup),
        cmocka_unit_test_teardown(holder_fork_child_keeps_nothing, cleanup),
        cmocka_unit_test_teardown(two_users_have_independent_budgets, cleanup),
        cmocka_unit_test_teardown(bad_budget_dir_fails_init, cleanup),
        cmocka_unit_test_teardown(budget_read_during_close, cleanup),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
