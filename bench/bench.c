/*
 * bench.c - one point of the benchmark grid of issue 9, for one system.
 *
 *   dbpool-bench --system dbpool|raw|connect|zdb --workload w1|w2 --limit L --threads C
 *                [--duration S] [--warmup S] [--reset 0|1] [--api conn|query]
 *   dbpool-bench --version
 *
 * One op = obtain a connection, run one statement, read the whole result, give the
 * connection back:
 *   W1  SELECT 1 (text protocol; libzdb has no text protocol for queries and prepares it, and
 *       dbpool_query() prepares every statement)
 *   W2  SELECT id, name, email FROM users WHERE id = ?  with a random id in [1, 10000], through
 *       bound parameters (prepared-statement protocol)
 * Systems (the RESULT line's system= name; "-reset" is appended with --reset 1):
 *   dbpool   C threads share one libdbpool pool of limit L (DB_RESET_ON_RELEASE per --reset),
 *            through the get/release API: W1 runs on dbpool_mysql(); W2 goes through
 *            dbpool_conn_query() (statement cache) between dbpool_get() and dbpool_release(),
 *            so the time inside dbpool_get() can be measured.
 *   dbpool-query  (--system dbpool --api query) the same pool through the one-call API: every
 *            op is one dbpool_query(), W1 included, so W1 goes through the prepared-statement
 *            protocol and the statement cache too. With every connection in use a caller waits
 *            in the queue with its statement and may have it run by another caller on that
 *            caller's connection (shared turns, DB_QUERY_SHARE_US; off with --reset 1).
 *   raw      min(C, L) threads, each with its own dedicated Connector/C connection and its own
 *            statement prepared once: the ceiling no pool can beat (with C > L, L threads).
 *   connect  C threads, each op connects, runs, closes (no pool at all).
 *   zdb      C threads share a libzdb ConnectionPool of max L. libzdb returns NULL instead of
 *            waiting when all L are in use: the caller retries with a capped backoff
 *            (50 us doubling to 1 ms), which is what its users have to write.
 *
 * Connection coordinates come from DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME (libdbpool
 * reads the same variables itself). Output: one line "RESULT key=value ..." on stdout (the
 * format bench/mysql2/bench.js prints too), diagnostics on stderr. Exit 0 when the run
 * completed without a failed op, 1 otherwise, 2 for bad arguments.
 *
 * RESULT keys: ops and ops_per_s over the measured window; lat_p50/p99/p999_us of whole ops;
 * wait_p50/p99_us to obtain a connection (dbpool: inside dbpool_get(); dbpool-query:
 * dbpool_last_wait_ns(), the wait for a connection or for another caller to start the
 * statement; zdb: getConnection() with retries; connect: connect + handshake; raw: 0);
 * cpu_us_per_op (getrusage user + sys of the process / ops); rss_kib (ru_maxrss); ttfq_ms
 * (from before the pool or first connection exists to the first completed op);
 * ops_thread_max/min and fairness (max/min); server_* (the server's Com_stmt_prepare,
 * Com_stmt_execute, Connections, Com_admin_commands during the run, warm-up included);
 * csw_per_op (context switches); pool_* (libdbpool's own counters); ops_all (ops including
 * the warm-up, for per-op cost counts); conn_switch (pools: fraction of ops on which the
 * thread got another connection than on its previous op; raw, and dbpool-query, which never
 * sees the connection: 0); pool_served (statements run by another caller: dbpool-query only,
 * warm-up included, so relative to ops_all).
 *
 * Measurement: all threads run during the warm-up, then counters start (getrusage, clock);
 * after the duration they stop. Latencies go into per-thread log-linear histograms (1/64 octave,
 * under 1.6 % error) of fixed size, so the harness's memory does not depend on the op rate.
 */
#include <dbpool.h>
#include <mysql.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifdef BENCH_HAVE_ZDB
#include <zdb.h>
#endif

#define W2_SQL "SELECT id, name, email FROM users WHERE id = ?"
#define W2_ROWS 10000u
#define MAX_THREADS 1024

/* ---- options ---------------------------------------------------------------------------- */

enum sysid { SYS_DBPOOL, SYS_RAW, SYS_CONNECT, SYS_ZDB };

static struct opts {
    enum sysid sys;
    const char *sys_name;
    int w2; /* 0: W1, 1: W2 */
    unsigned limit, threads;
    double duration_s, warmup_s;
    int reset;     /* dbpool: DB_RESET_ON_RELEASE */
    int api_query; /* dbpool: dbpool_query() instead of get + statement + release */
    const char *host, *user, *password, *db;
    unsigned port;
} O = {.duration_s = 3, .warmup_s = 1, .limit = 3, .threads = 1};

static void usage(void)
{
    fprintf(stderr, "usage: dbpool-bench --system dbpool|raw|connect|zdb --workload w1|w2 "
                    "--limit L --threads C [--duration S] [--warmup S] [--reset 0|1] "
                    "[--api conn|query]\n");
    exit(2);
}

static unsigned parse_uint(const char *s, unsigned lo, unsigned hi)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        usage();
    return (unsigned)v;
}

static double parse_secs(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0 && v <= 3600))
        usage();
    return v;
}

static int parse_system(const char *s)
{
    static const char *const names[] = {"dbpool", "raw", "connect", "zdb"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            O.sys_name = names[i];
            return i;
        }
    usage();
    return -1;
}

static const char *env_or(const char *k, const char *dflt)
{
    const char *v = getenv(k);
    return v && *v ? v : dflt;
}

/* The versions RESULTS.md records: libdbpool, Connector/C (built against / running), libzdb. */
static void print_versions(void)
{
    printf("VERSIONS dbpool=%s connector_c=%s connector_c_runtime=%s zdb=%s\n",
           DBPOOL_VERSION_STRING, MARIADB_PACKAGE_VERSION, mysql_get_client_info(),
#ifdef BENCH_HAVE_ZDB
           ConnectionPool_version()
#else
           "none"
#endif
    );
    exit(0);
}

static void parse_args(int argc, char **argv)
{
    int have_sys = 0;
    if (argc == 2 && strcmp(argv[1], "--version") == 0)
        print_versions();
    for (int i = 1; i < argc; i += 2) { /* --option value pairs */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (strcmp(a, "--system") == 0)
            O.sys = (enum sysid)parse_system(v), have_sys = 1;
        else if (strcmp(a, "--workload") == 0 && (!strcmp(v, "w1") || !strcmp(v, "w2")))
            O.w2 = v[1] == '2';
        else if (strcmp(a, "--limit") == 0)
            O.limit = parse_uint(v, 1, MAX_THREADS);
        else if (strcmp(a, "--threads") == 0)
            O.threads = parse_uint(v, 1, MAX_THREADS);
        else if (strcmp(a, "--duration") == 0)
            O.duration_s = parse_secs(v);
        else if (strcmp(a, "--warmup") == 0)
            O.warmup_s = parse_secs(v);
        else if (strcmp(a, "--reset") == 0)
            O.reset = (int)parse_uint(v, 0, 1);
        else if (strcmp(a, "--api") == 0 && (!strcmp(v, "conn") || !strcmp(v, "query")))
            O.api_query = v[0] == 'q';
        else
            usage();
    }
    if (!have_sys || O.duration_s <= 0)
        usage();
    if (O.api_query && !BENCH_HAVE_QUERY) { /* would run get/release under the name dbpool-query */
        fprintf(stderr, "dbpool-bench: built without dbpool_conn_query(): no --api query\n");
        exit(2);
    }
    O.host = env_or("DB_HOST", "127.0.0.1");
    O.port = parse_uint(env_or("DB_PORT", "3306"), 1, 65535);
    O.user = env_or("DB_USER", "root");
    O.password = env_or("DB_PASSWORD", "");
    O.db = env_or("DB_NAME", "");
}

/* ---- clock and histograms ------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define SUB_BITS 6
#define SUB (1u << SUB_BITS)
#define OCTAVES 40 /* up to 2^(40+6) ns: far beyond any run */
#define NBUCKETS (SUB * (OCTAVES + 1))

typedef struct hist {
    uint64_t n;
    uint32_t b[NBUCKETS];
} hist;

static unsigned bucket_of(uint64_t v)
{
    if (v < SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= SUB_BITS */
    unsigned shift = msb - SUB_BITS + 1;
    /* v >> shift is in [SUB/2, SUB): row `shift` uses the upper half of its SUB buckets. */
    unsigned idx = shift * SUB + (unsigned)(v >> shift);
    return idx < NBUCKETS ? idx : NBUCKETS - 1;
}

/* Midpoint of a bucket's range, in ns. */
static double bucket_value(unsigned idx)
{
    if (idx < SUB)
        return idx;
    unsigned shift = idx / SUB, m = idx % SUB;
    return ((double)m + 0.5) * (double)(1ull << shift);
}

static void hist_add(hist *h, uint64_t v)
{
    h->b[bucket_of(v)]++;
    h->n++;
}

static void hist_merge(hist *dst, const hist *src)
{
    for (unsigned i = 0; i < NBUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->n += src->n;
}

/* Value (ns) at quantile q, 0 for an empty histogram. */
static double hist_q(const hist *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n);
    if (rank >= h->n)
        rank = h->n - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        seen += h->b[i];
        if (seen > rank)
            return bucket_value(i);
    }
    return bucket_value(NBUCKETS - 1);
}

/* ---- run state -------------------------------------------------------------------------- */

enum phase { PH_WARMUP = 0, PH_MEASURE, PH_STOP };

static _Atomic int phase;
static _Atomic uint64_t first_done_ns; /* first completed op of the run, any thread */
static uint64_t t_start_ns;            /* before any connection or pool exists */
static _Atomic unsigned long failures;
static char first_error[512];
static pthread_mutex_t err_mu = PTHREAD_MUTEX_INITIALIZER;
static volatile unsigned long sink; /* results are read into it so nothing is optimised out */

struct worker {
    pthread_t tid;
    unsigned idx;
    uint32_t rng;
    uint64_t ops, ops_all; /* measured / all, warm-up included */
    uint64_t switches;     /* measured ops that got another connection than the thread's last */
    const void *last_conn;
    hist lat, wait;
    void *state; /* per-system, per-thread */
};

/* Pools: note which connection this op got (a thread that keeps getting the same one keeps it
 * in its CPU's caches, as a dedicated connection is). */
static void note_conn(struct worker *w, const void *conn)
{
    if (w->last_conn && conn != w->last_conn && atomic_load_explicit(&phase, memory_order_relaxed) == PH_MEASURE)
        w->switches++;
    w->last_conn = conn;
}

static void record_error(const char *what, const char *detail)
{
    atomic_fetch_add(&failures, 1);
    pthread_mutex_lock(&err_mu);
    if (!first_error[0])
        snprintf(first_error, sizeof first_error, "%s: %s", what, detail ? detail : "");
    pthread_mutex_unlock(&err_mu);
}

static int fail_mysql(MYSQL *m, const char *what)
{
    char d[400];
    snprintf(d, sizeof d, "%u %s", mysql_errno(m), mysql_error(m));
    record_error(what, d);
    return -1;
}

static unsigned next_id(struct worker *w)
{
    uint32_t x = w->rng; /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    w->rng = x;
    return 1 + x % W2_ROWS;
}

/* ---- Connector/C building blocks (raw, connect, dbpool W1) ---------------------------------- */

static MYSQL *raw_connect(void)
{
    MYSQL *m = mysql_init(NULL);
    if (!m)
        return NULL;
    unsigned proto = MYSQL_PROTOCOL_TCP, tmo = 10;
    mysql_optionsv(m, MYSQL_OPT_PROTOCOL, &proto);
    mysql_optionsv(m, MYSQL_OPT_CONNECT_TIMEOUT, &tmo);
    if (!mysql_real_connect(m, O.host, O.user, O.password, O.db, O.port, NULL, 0)) {
        fail_mysql(m, "connect");
        mysql_close(m);
        return NULL;
    }
    return m;
}

static int text_select1(MYSQL *m)
{
    if (mysql_real_query(m, "SELECT 1", 8) != 0)
        return fail_mysql(m, "SELECT 1");
    MYSQL_RES *r = mysql_store_result(m);
    if (!r)
        return fail_mysql(m, "SELECT 1 result");
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(r)) != NULL)
        sink += (unsigned char)row[0][0];
    mysql_free_result(r);
    return 0;
}

/* W2 on a statement prepared by the application itself, buffers bound once. */
struct ustmt {
    MYSQL_STMT *st;
    MYSQL_BIND par, res[3];
    long long pid, rid;
    char name[64], email[128];
    unsigned long len[3];
    my_bool isnull[3], trunc[3];
};

static int fail_stmt(MYSQL_STMT *st, const char *what)
{
    char d[400];
    snprintf(d, sizeof d, "%u %s", mysql_stmt_errno(st), mysql_stmt_error(st));
    record_error(what, d);
    return -1;
}

static void ustmt_bind(struct ustmt *u)
{
    memset(&u->par, 0, sizeof u->par);
    u->par.buffer_type = MYSQL_TYPE_LONGLONG;
    u->par.buffer = &u->pid;
    memset(u->res, 0, sizeof u->res);
    u->res[0].buffer_type = MYSQL_TYPE_LONGLONG;
    u->res[0].buffer = &u->rid;
    u->res[1].buffer_type = MYSQL_TYPE_STRING;
    u->res[1].buffer = u->name;
    u->res[1].buffer_length = sizeof u->name;
    u->res[2].buffer_type = MYSQL_TYPE_STRING;
    u->res[2].buffer = u->email;
    u->res[2].buffer_length = sizeof u->email;
    for (int i = 0; i < 3; i++) {
        u->res[i].length = &u->len[i];
        u->res[i].is_null = &u->isnull[i];
        u->res[i].error = &u->trunc[i];
    }
}

static int ustmt_prepare(struct ustmt *u, MYSQL *m)
{
    u->st = mysql_stmt_init(m);
    if (!u->st)
        return fail_mysql(m, "stmt_init");
    ustmt_bind(u);
    if (mysql_stmt_prepare(u->st, W2_SQL, sizeof W2_SQL - 1) != 0 ||
        mysql_stmt_bind_param(u->st, &u->par) != 0 || mysql_stmt_bind_result(u->st, u->res) != 0) {
        fail_stmt(u->st, "prepare W2");
        mysql_stmt_close(u->st);
        u->st = NULL;
        return -1;
    }
    return 0;
}

static int ustmt_run(struct ustmt *u, unsigned id)
{
    u->pid = id;
    if (mysql_stmt_execute(u->st) != 0)
        return fail_stmt(u->st, "execute W2");
    int rc, rows = 0;
    while ((rc = mysql_stmt_fetch(u->st)) == 0 || rc == MYSQL_DATA_TRUNCATED) {
        sink += (unsigned long)u->rid + u->len[1] + u->len[2];
        rows++;
    }
    if (rc != MYSQL_NO_DATA)
        return fail_stmt(u->st, "fetch W2");
    mysql_stmt_free_result(u->st);
    if (rows != 1) {
        record_error("W2", "expected exactly one row");
        return -1;
    }
    return 0;
}

/* ---- system: raw dedicated connections ------------------------------------------------------ */

struct rawstate {
    MYSQL *m;
    struct ustmt u;
};

static int raw_thread_init(struct worker *w)
{
    struct rawstate *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    w->state = s;
    if (!(s->m = raw_connect()))
        return -1;
    return O.w2 ? ustmt_prepare(&s->u, s->m) : 0;
}

static int raw_op(struct worker *w, uint64_t *wait_ns)
{
    struct rawstate *s = w->state;
    *wait_ns = 0;
    return O.w2 ? ustmt_run(&s->u, next_id(w)) : text_select1(s->m);
}

static void raw_thread_done(struct worker *w)
{
    struct rawstate *s = w->state;
    if (!s)
        return;
    if (s->u.st)
        mysql_stmt_close(s->u.st);
    if (s->m)
        mysql_close(s->m);
    free(s);
}

/* ---- system: connect per op ---------------------------------------------------------------- */

static int connect_op(struct worker *w, uint64_t *wait_ns)
{
    uint64_t t0 = now_ns();
    MYSQL *m = raw_connect();
    *wait_ns = now_ns() - t0;
    if (!m)
        return -1;
    int rc;
    if (O.w2) {
        struct ustmt u;
        rc = ustmt_prepare(&u, m);
        if (rc == 0) {
            rc = ustmt_run(&u, next_id(w));
            mysql_stmt_close(u.st);
        }
    } else {
        rc = text_select1(m);
    }
    mysql_close(m);
    return rc;
}

/* ---- system: libdbpool ------------------------------------------------------------------------ */

static int fail_dbpool(int rc, const char *what)
{
    char d[400];
    snprintf(d, sizeof d, "%s: %s", dbpool_errname(rc), dbpool_last_error());
    record_error(what, d);
    return -1;
}

static int dbpool_setup(void)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%u", O.limit);
    const char *kv[][2] = {{"DB_CONNECTION_LIMIT", lim},
                           {"DB_RESET_ON_RELEASE", O.reset ? "1" : "0"},
                           {"DB_SSL_MODE", "DISABLED"}, /* as the raw connections */
                           {"DB_ACQUIRE_TIMEOUT_MS", "60000"}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        int rc = dbpool_config_set(kv[i][0], kv[i][1]);
        if (rc != 0)
            return fail_dbpool(rc, kv[i][0]);
    }
    int rc = dbpool_init(NULL);
    return rc ? fail_dbpool(rc, "dbpool_init") : 0;
}

#if BENCH_HAVE_QUERY
static int dbpool_read_w2(dbpool_result *r)
{
    int64_t id = 0;
    size_t l1 = 0, l2 = 0;
    if (dbpool_result_rows(r) != 1 || dbpool_result_int64(r, 0, 0, &id) != 0 ||
        !dbpool_result_text(r, 0, 1, &l1) || !dbpool_result_text(r, 0, 2, &l2)) {
        dbpool_result_free(r);
        record_error("W2", "unexpected result");
        return -1;
    }
    sink += (unsigned long)id + l1 + l2;
    dbpool_result_free(r);
    return 0;
}

static int dbpool_w2(dbpool_conn *c, unsigned id)
{
    dbpool_param p = dbpool_param_int64(id);
    dbpool_result *r = NULL;
    int rc = dbpool_conn_query(c, &r, W2_SQL, &p, 1);
    return rc ? fail_dbpool(rc, "dbpool_conn_query") : dbpool_read_w2(r);
}

/* The one-call API: get, statement, release inside the library; the wait is the library's
 * own account of it (for a connection, or for another caller to run the statement). */
static int dbpool_query_op(struct worker *w, uint64_t *wait_ns)
{
    dbpool_result *r = NULL;
    if (!O.w2) {
        int rc = dbpool_query(&r, "SELECT 1", NULL, 0);
        *wait_ns = dbpool_last_wait_ns();
        if (rc)
            return fail_dbpool(rc, "dbpool_query");
        int64_t one = 0;
        if (dbpool_result_rows(r) != 1 || dbpool_result_int64(r, 0, 0, &one) != 0 || one != 1) {
            dbpool_result_free(r);
            record_error("W1", "unexpected result");
            return -1;
        }
        sink += (unsigned long)one;
        dbpool_result_free(r);
        return 0;
    }
    dbpool_param p = dbpool_param_int64(next_id(w));
    int rc = dbpool_query(&r, W2_SQL, &p, 1);
    *wait_ns = dbpool_last_wait_ns();
    return rc ? fail_dbpool(rc, "dbpool_query") : dbpool_read_w2(r);
}
#else
static int dbpool_w2(dbpool_conn *c, unsigned id)
{
    struct ustmt u; /* no statement cache in this build: prepare every time */
    int rc = ustmt_prepare(&u, dbpool_mysql(c));
    if (rc == 0) {
        rc = ustmt_run(&u, id);
        mysql_stmt_close(u.st);
    }
    return rc;
}
#endif

static int dbpool_op(struct worker *w, uint64_t *wait_ns)
{
#if BENCH_HAVE_QUERY
    if (O.api_query)
        return dbpool_query_op(w, wait_ns);
#endif
    dbpool_conn *c;
    uint64_t t0 = now_ns();
    int rc = dbpool_get(&c);
    *wait_ns = now_ns() - t0;
    if (rc != 0)
        return fail_dbpool(rc, "dbpool_get");
    note_conn(w, c);
    rc = O.w2 ? dbpool_w2(c, next_id(w)) : text_select1(dbpool_mysql(c));
    dbpool_release(c);
    return rc;
}

/* ---- system: libzdb ------------------------------------------------------------------------- */

#ifdef BENCH_HAVE_ZDB
static URL_T zurl;
static ConnectionPool_T zpool;

static void zdb_abort(const char *error) { record_error("libzdb abort handler", error); }

static int zdb_setup(void)
{
    zurl = URL_create("mysql://%s:%u/%s?user=%s&password=%s", O.host, O.port, O.db, O.user,
                      O.password);
    if (!zurl) {
        record_error("zdb", "bad URL");
        return -1;
    }
    zpool = ConnectionPool_new(zurl);
    ConnectionPool_setAbortHandler(zpool, zdb_abort);
    ConnectionPool_setInitialConnections(zpool, 1); /* opens more on demand, like dbpool */
    ConnectionPool_setMaxConnections(zpool, (int)O.limit);
    volatile int rc = 0;
    TRY
    {
        ConnectionPool_start(zpool);
    }
    ELSE
    {
        record_error("ConnectionPool_start", Exception_frame.message);
        rc = -1;
    }
    END_TRY;
    return rc;
}

/* NULL means "all in use" or "cannot connect": libzdb does not say which. */
static Connection_T zdb_get(void)
{
    unsigned us = 50;
    Connection_T c;
    while (!(c = ConnectionPool_getConnection(zpool)) && atomic_load(&phase) != PH_STOP) {
        struct timespec ts = {0, (long)us * 1000};
        nanosleep(&ts, NULL);
        us = us < 1000 ? us * 2 : 1000;
    }
    return c;
}

static void zdb_statement(Connection_T c, unsigned id)
{
    ResultSet_T r;
    if (O.w2) {
        PreparedStatement_T p = Connection_prepareStatement(c, W2_SQL);
        PreparedStatement_setInt(p, 1, (int)id);
        r = PreparedStatement_executeQuery(p);
        while (ResultSet_next(r)) {
            const char *n = ResultSet_getString(r, 2), *e = ResultSet_getString(r, 3);
            sink += (unsigned long)ResultSet_getLLong(r, 1) + (n ? strlen(n) : 0) + (e ? strlen(e) : 0);
        }
    } else {
        r = Connection_executeQuery(c, "SELECT 1");
        while (ResultSet_next(r))
            sink += (unsigned long)ResultSet_getInt(r, 1);
    }
}

static int zdb_op(struct worker *w, uint64_t *wait_ns)
{
    uint64_t t0 = now_ns();
    Connection_T c = zdb_get();
    *wait_ns = now_ns() - t0;
    if (!c)
        return atomic_load(&phase) == PH_STOP ? 1 : -1;
    note_conn(w, c);
    unsigned id = next_id(w);
    volatile int rc = 0;
    TRY
    {
        zdb_statement(c, id);
    }
    ELSE
    {
        record_error("libzdb", Exception_frame.message);
        rc = -1;
    }
    END_TRY;
    Connection_close(c); /* returns it to the pool */
    return rc;
}

static void zdb_teardown(void)
{
    if (zpool)
        ConnectionPool_free(&zpool);
    if (zurl)
        URL_free(&zurl);
}
#endif

/* ---- the systems table ------------------------------------------------------------------------ */

struct system {
    int (*setup)(void);
    int (*thread_init)(struct worker *w);
    int (*op)(struct worker *w, uint64_t *wait_ns);
    void (*thread_done)(struct worker *w);
    void (*teardown)(void);
};

static void dbpool_teardown(void) { dbpool_close(); }

static const struct system *system_of(enum sysid s)
{
    static const struct system dbp = {dbpool_setup, NULL, dbpool_op, NULL, dbpool_teardown};
    static const struct system raw = {NULL, raw_thread_init, raw_op, raw_thread_done, NULL};
    static const struct system con = {NULL, NULL, connect_op, NULL, NULL};
#ifdef BENCH_HAVE_ZDB
    static const struct system zdb = {zdb_setup, NULL, zdb_op, NULL, zdb_teardown};
#endif
    switch (s) {
    case SYS_DBPOOL:
        return &dbp;
    case SYS_RAW:
        return &raw;
    case SYS_CONNECT:
        return &con;
    case SYS_ZDB:
#ifdef BENCH_HAVE_ZDB
        return &zdb;
#else
        fprintf(stderr, "dbpool-bench: built without libzdb (pkg-config zdb not found)\n");
        exit(2);
#endif
    }
    return NULL;
}

static const struct system *SYS;

/* ---- workers -------------------------------------------------------------------------------- */

static void note_first_done(uint64_t t)
{
    uint64_t cur = atomic_load_explicit(&first_done_ns, memory_order_relaxed);
    while (cur == 0 && !atomic_compare_exchange_weak(&first_done_ns, &cur, t))
        ;
}

static void pause_after_error(void)
{
    struct timespec ts = {0, 1000000}; /* never spin on a failing server */
    nanosleep(&ts, NULL);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (SYS->thread_init && SYS->thread_init(w) != 0) {
        record_error("thread init", "failed");
        return NULL;
    }
    int ph;
    while ((ph = atomic_load_explicit(&phase, memory_order_relaxed)) != PH_STOP) {
        uint64_t wait = 0, t0 = now_ns();
        int rc = SYS->op(w, &wait);
        uint64_t t1 = now_ns();
        if (rc < 0) {
            pause_after_error();
            continue;
        }
        if (rc > 0)
            break; /* stopped while waiting */
        note_first_done(t1);
        w->ops_all++;
        if (ph == PH_MEASURE && atomic_load_explicit(&phase, memory_order_relaxed) == PH_MEASURE) {
            hist_add(&w->lat, t1 - t0);
            hist_add(&w->wait, wait);
            w->ops++;
        }
    }
    if (SYS->thread_done)
        SYS->thread_done(w);
    return NULL;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Process CPU seconds (user + sys, all threads) and context switches (voluntary + involuntary). */
static double cpu_s(long *csw)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *csw = ru.ru_nvcsw + ru.ru_nivcsw;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- server counters: is the statement cache used? ------------------------------------------ */

struct srv_counters {
    long long prepares, executes, connections, admin;
    bool ok;
};

static struct srv_counters server_counters(void)
{
    struct srv_counters c = {0};
    MYSQL *m = raw_connect();
    if (!m)
        return c;
    if (mysql_query(m, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_stmt_prepare',"
                       "'Com_stmt_execute','Connections','Com_admin_commands')") == 0) {
        MYSQL_RES *r = mysql_store_result(m);
        MYSQL_ROW row;
        while (r && (row = mysql_fetch_row(r)) != NULL) {
            long long v = atoll(row[1]);
            if (!strcmp(row[0], "Com_stmt_prepare"))
                c.prepares = v;
            else if (!strcmp(row[0], "Com_stmt_execute"))
                c.executes = v;
            else if (!strcmp(row[0], "Connections"))
                c.connections = v;
            else
                c.admin = v;
        }
        mysql_free_result(r);
        c.ok = r != NULL;
    }
    mysql_close(m);
    return c;
}

/* ---- main ------------------------------------------------------------------------------------ */

struct totals {
    hist lat, wait;
    uint64_t ops, ops_all, switches, tmax, tmin;
    double secs, cpu;
    long rss_kib, csw;
    dbpool_stats pool; /* dbpool only: the pool's own counters at the end */
};

static unsigned worker_count(void)
{
    /* Dedicated connections: more threads than connections would only queue on nothing. */
    return O.sys == SYS_RAW && O.threads > O.limit ? O.limit : O.threads;
}

static int start_workers(struct worker *ws, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        ws[i].idx = i;
        ws[i].rng = 0x9e3779b9u * (i + 1) ^ (uint32_t)getpid();
        if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
            fprintf(stderr, "dbpool-bench: pthread_create failed\n");
            atomic_store(&phase, PH_STOP);
            for (unsigned j = 0; j < i; j++)
                pthread_join(ws[j].tid, NULL);
            return -1;
        }
    }
    return 0;
}

static void run_phases(struct totals *t)
{
    long w0, w1;
    sleep_s(O.warmup_s);
    double c0 = cpu_s(&w0);
    uint64_t t0 = now_ns();
    atomic_store(&phase, PH_MEASURE);
    sleep_s(O.duration_s);
    atomic_store(&phase, PH_STOP);
    t->secs = (double)(now_ns() - t0) / 1e9;
    t->cpu = cpu_s(&w1) - c0;
    t->csw = w1 - w0;
}

static void collect(struct totals *t, struct worker *ws, unsigned n)
{
    t->tmin = UINT64_MAX;
    for (unsigned i = 0; i < n; i++) {
        hist_merge(&t->lat, &ws[i].lat);
        hist_merge(&t->wait, &ws[i].wait);
        t->ops += ws[i].ops;
        t->ops_all += ws[i].ops_all;
        t->switches += ws[i].switches;
        if (ws[i].ops > t->tmax)
            t->tmax = ws[i].ops;
        if (ws[i].ops < t->tmin)
            t->tmin = ws[i].ops;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    t->rss_kib = ru.ru_maxrss;
}

static void print_result(const struct totals *t, unsigned n, const struct srv_counters *a,
                         const struct srv_counters *b)
{
    uint64_t fd = atomic_load(&first_done_ns);
    double ops = (double)t->ops;
    printf("RESULT system=%s%s%s workload=w%d limit=%u threads=%u workers=%u duration_s=%.2f "
           "ops=%" PRIu64 " ops_per_s=%.1f lat_p50_us=%.1f lat_p99_us=%.1f lat_p999_us=%.1f "
           "wait_p50_us=%.2f wait_p99_us=%.1f wait_p999_us=%.1f cpu_us_per_op=%.2f rss_kib=%ld ttfq_ms=%.2f "
           "ops_thread_max=%" PRIu64 " ops_thread_min=%" PRIu64 " fairness=%.3f "
           "server_prepares=%lld server_executes=%lld server_connections=%lld "
           "server_admin_cmds=%lld errors=%lu stmt_cache=%d csw_per_op=%.2f pool_created=%" PRIu64
           " pool_closed=%" PRIu64 " pool_waits=%" PRIu64 " ops_all=%" PRIu64 " conn_switch=%.3f pool_served=%" PRIu64 "\n",
           O.sys_name, O.sys == SYS_DBPOOL && O.api_query ? "-query" : "",
           O.sys == SYS_DBPOOL && O.reset ? "-reset" : "", O.w2 + 1, O.limit,
           O.threads, n, t->secs, t->ops, ops / t->secs, hist_q(&t->lat, .5) / 1e3,
           hist_q(&t->lat, .99) / 1e3, hist_q(&t->lat, .999) / 1e3, hist_q(&t->wait, .5) / 1e3,
           hist_q(&t->wait, .99) / 1e3, hist_q(&t->wait, .999) / 1e3, t->ops ? t->cpu * 1e6 / ops : 0, t->rss_kib,
           fd ? (double)(fd - t_start_ns) / 1e6 : -1, t->tmax, t->tmin,
           t->tmin ? (double)t->tmax / (double)t->tmin : 0, b->prepares - a->prepares,
           b->executes - a->executes, b->connections - a->connections, b->admin - a->admin,
           atomic_load(&failures), BENCH_HAVE_QUERY && O.sys == SYS_DBPOOL,
           t->ops ? (double)t->csw / ops : 0, t->pool.created,
           t->pool.closed_idle + t->pool.closed_lifetime + t->pool.closed_broken +
               t->pool.closed_reset,
           t->pool.waits, t->ops_all, t->ops ? (double)t->switches / ops : 0, t->pool.served);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    SYS = system_of(O.sys);
    if (mysql_library_init(0, NULL, NULL) != 0)
        return 1;
    struct srv_counters before = server_counters();
    unsigned n = worker_count();
    /* The harness's own per-thread memory (two latency histograms, ~21 KiB per worker) must not
     * count against the systems that run more threads: every system allocates and touches C
     * worker records, also raw, which runs only min(C, L) of them. What is left of an RSS
     * difference is the systems' own (threads' stacks and arenas, libraries). */
    struct worker *ws = calloc(O.threads, sizeof *ws);
    for (size_t i = 0; ws && i < O.threads * sizeof *ws; i += 4096)
        ((volatile char *)ws)[i] = 0; /* a write faults the page in (calloc + memset is folded) */
    struct totals *t = calloc(1, sizeof *t);
    if (!ws || !t)
        return 1;
    t_start_ns = now_ns();
    if ((SYS->setup && SYS->setup() != 0) || start_workers(ws, n) != 0) {
        fprintf(stderr, "dbpool-bench: setup failed: %s\n", first_error);
        return 1;
    }
    run_phases(t);
    for (unsigned i = 0; i < n; i++)
        pthread_join(ws[i].tid, NULL);
    collect(t, ws, n);
    if (O.sys == SYS_DBPOOL)
        dbpool_stats_get(&t->pool);
    if (SYS->teardown)
        SYS->teardown();
    struct srv_counters after = server_counters();
    print_result(t, n, &before, &after);
    if (atomic_load(&failures))
        fprintf(stderr, "dbpool-bench: %lu failed ops; first: %s\n", atomic_load(&failures), first_error);
    free(ws);
    free(t);
    mysql_library_end();
    return atomic_load(&failures) ? 1 : 0;
}
