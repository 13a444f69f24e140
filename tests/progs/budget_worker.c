/*
 * budget_worker.c - one process of an application under a host budget, for
 * tests/integration/test_host_budget.c. It uses only the public API; its configuration comes
 * from the DB_* environment the test sets (DB_HOST_BUDGET, DB_HOST_BUDGET_DIR, ...).
 *
 * Usage: budget_worker MODE ARGS... REPORT_FILE
 *   burst THREADS ITERS SLEEP_MS REPORT   THREADS threads each run ITERS x (dbpool_get,
 *                                         SELECT SLEEP(SLEEP_MS/1000), dbpool_release); writes
 *                                         "done gets=.. errors=.. created=.. peak=.. budget=..
 *                                         used_max=.." and exits 0 only if every get and query
 *                                         succeeded and the stats agree
 *   hold K REPORT                         borrows K connections, writes "ready", then waits to be
 *                                         killed
 *   wait REPORT                           writes "waiting", borrows one connection, writes
 *                                         "got <CLOCK_MONOTONIC ns> rc=<code> held=<n>", exits 0
 *                                         on success
 *   holdfork K REPORT                     borrows K connections, forks a child that lingers
 *                                         without touching the pool ("child <pid>"), checks that
 *                                         its K connections still work after the fork and that
 *                                         it still holds K budget slots ("afterfork ok held=K"),
 *                                         writes "ready", then waits to be killed
 * Every line starts with nothing else; each is written with one write(2) (O_APPEND).
 * A safety alarm ends the process after 240 s whatever happens.
 */
#include "dbpool.h"

#include <fcntl.h>
#include <mysql.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int report_fd = -1;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char line[1536];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (write(report_fd, line, (size_t)n) < 0)
        _exit(4);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int run_sql(dbpool_conn *c, const char *sql)
{
    MYSQL *m = dbpool_mysql(c);
    if (!m || mysql_query(m, sql) != 0)
        return -1;
    MYSQL_RES *r = mysql_store_result(m);
    if (r)
        mysql_free_result(r);
    return mysql_errno(m) ? -1 : 0;
}

static void forever(void)
{
    for (;;)
        pause();
}

/* ---- burst ----------------------------------------------------------------------------------- */

struct burst {
    unsigned iters;
    char sql[64];
    int errors;
    unsigned used_max;
    pthread_mutex_t mu;
    char first_error[1024];
};

static void note_error(struct burst *b, const char *what)
{
    pthread_mutex_lock(&b->mu);
    if (b->errors++ == 0)
        snprintf(b->first_error, sizeof b->first_error, "%s: %s", what, dbpool_last_error());
    pthread_mutex_unlock(&b->mu);
}

static void *burst_thread(void *arg)
{
    struct burst *b = arg;
    for (unsigned i = 0; i < b->iters; i++) {
        dbpool_conn *c;
        if (dbpool_get(&c) != 0) {
            note_error(b, "dbpool_get");
            continue;
        }
        if (run_sql(c, b->sql) != 0)
            note_error(b, "query");
        dbpool_stats st;
        if (dbpool_stats_get(&st) == 0) {
            pthread_mutex_lock(&b->mu);
            if (st.budget_used > b->used_max)
                b->used_max = st.budget_used;
            pthread_mutex_unlock(&b->mu);
        }
        dbpool_release(c);
    }
    return NULL;
}

static int burst(unsigned threads, unsigned iters, unsigned sleep_ms)
{
    static struct burst b;
    pthread_t t[64];
    if (threads == 0 || threads > 64)
        return 64;
    b.iters = iters;
    pthread_mutex_init(&b.mu, NULL);
    snprintf(b.sql, sizeof b.sql, "SELECT SLEEP(%u.%03u)", sleep_ms / 1000, sleep_ms % 1000);
    for (unsigned i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, burst_thread, &b) != 0)
            return 65;
    for (unsigned i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    dbpool_stats st;
    dbpool_stats_get(&st);
    say("done gets=%llu errors=%d created=%llu peak=%u limit=%u budget=%u used_max=%u",
        (unsigned long long)st.gets, b.errors, (unsigned long long)st.created, st.peak_open,
        st.limit, st.budget_size, b.used_max);
    if (b.errors)
        say("error %s", b.first_error);
    bool ok = b.errors == 0 && st.gets == (uint64_t)threads * iters && st.peak_open <= st.limit &&
              b.used_max <= st.budget_size;
    dbpool_close();
    return ok ? 0 : 2;
}

/* ---- hold / wait / holdfork ------------------------------------------------------------------ */

static int borrow_k(dbpool_conn **c, unsigned k)
{
    for (unsigned i = 0; i < k; i++) {
        if (dbpool_get(&c[i]) != 0) {
            say("error get %u: %s", i, dbpool_last_error());
            return 3;
        }
        if (run_sql(c[i], "SELECT 1") != 0) {
            say("error query on connection %u", i);
            return 3;
        }
    }
    return 0;
}

static int hold(unsigned k)
{
    dbpool_conn *c[64];
    if (k > 64 || borrow_k(c, k) != 0)
        return 3;
    say("ready");
    forever();
    return 0;
}

static int wait_one(void)
{
    dbpool_conn *c;
    say("waiting");
    int rc = dbpool_get(&c);
    uint64_t t = mono_ns();
    dbpool_stats st;
    dbpool_stats_get(&st);
    say("got %llu rc=%d held=%u", (unsigned long long)t, rc, st.budget_held);
    if (rc != 0) {
        say("error %s", dbpool_last_error());
        return 3;
    }
    rc = run_sql(c, "SELECT 1");
    dbpool_release(c);
    return rc == 0 && st.budget_held == 1 ? 0 : 5;
}

static int holdfork(unsigned k)
{
    dbpool_conn *c[64];
    if (k > 64 || borrow_k(c, k) != 0)
        return 3;
    int ready[2];
    if (pipe(ready) != 0)
        return 6;
    pid_t child = fork();
    if (child < 0)
        return 6;
    if (child == 0) {
        /* The lingering child: never touches the pool, stays until the test kills it. */
        alarm(240);
        close(ready[0]);
        say("child %ld", (long)getpid());
        if (write(ready[1], "c", 1) != 1)
            _exit(7);
        forever();
    }
    char x;
    close(ready[1]);
    if (read(ready[0], &x, 1) != 1)
        return 7;
    close(ready[0]);
    for (unsigned i = 0; i < k; i++)
        if (run_sql(c[i], "SELECT 1") != 0) {
            say("error connection %u broken after fork", i);
            return 8;
        }
    dbpool_stats st;
    dbpool_stats_get(&st);
    say("afterfork %s held=%u used=%u", st.budget_held == k ? "ok" : "bad", st.budget_held,
        st.budget_used);
    if (st.budget_held != k)
        return 9;
    say("ready");
    forever();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: budget_worker burst|hold|wait|holdfork ARGS... REPORT\n");
        return 64;
    }
    alarm(240);
    report_fd = open(argv[argc - 1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (report_fd < 0) {
        perror(argv[argc - 1]);
        return 64;
    }
    say("pid %ld", (long)getpid());
    const char *mode = argv[1];
    if (strcmp(mode, "burst") == 0 && argc == 6)
        return burst((unsigned)atoi(argv[2]), (unsigned)atoi(argv[3]), (unsigned)atoi(argv[4]));
    if (strcmp(mode, "hold") == 0 && argc == 4)
        return hold((unsigned)atoi(argv[2]));
    if (strcmp(mode, "wait") == 0 && argc == 3)
        return wait_one();
    if (strcmp(mode, "holdfork") == 0 && argc == 4)
        return holdfork((unsigned)atoi(argv[2]));
    fprintf(stderr, "budget_worker: bad arguments for mode %s\n", mode);
    return 64;
}
