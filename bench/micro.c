/*
 * micro.c - the pool's own cost: dbpool_get() + dbpool_release() pairs on a warm pool, no
 * network I/O (DB_RESET_ON_RELEASE=0, every connection reused inside the liveness bypass
 * window, so neither a reset, a ping nor a poll() happens).
 *
 *   dbpool-micro [--threads 1,2,8,64] [--runs 5] [--ms 300] [--limits same,3]
 *
 * For each thread count T and each limit (`same` = T, i.e. every thread can hold a connection
 * and only the pool's lock is shared; a number = that limit, so threads also wait for each
 * other) it runs `runs` timed runs of `ms` milliseconds in which every thread does get+release
 * pairs back to back, and prints one line per (T, limit):
 *
 *   MICRO threads=T limit=L runs=R ns_per_pair=<median> ns_min=.. ns_max=.. cpu_ns_per_pair=..
 *         csw_per_kpair=.. created=.. closed=..
 *
 * ns_per_pair is wall time / pairs completed by all threads together (so with T > cores it is
 * the pool's aggregate rate, not one thread's latency); cpu_ns_per_pair is user+sys CPU of the
 * process per pair; csw_per_kpair counts context switches (voluntary + involuntary) per 1000
 * pairs; created/closed are the pool's own counters (created = limit and closed = 0 prove that
 * no connection was opened or closed during the runs). A real server is needed only to open the connections (DB_HOST, DB_PORT, DB_USER,
 * DB_PASSWORD, DB_NAME from the environment, as libdbpool reads them).
 */
#include <dbpool.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_T 1024
#define BATCH 64 /* pairs between two looks at the stop flag */

static _Atomic int stop;
static _Atomic int failed;
static pthread_barrier_t go;

struct thr {
    pthread_t tid;
    uint64_t pairs;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *loop(void *arg)
{
    struct thr *t = arg;
    pthread_barrier_wait(&go);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int i = 0; i < BATCH; i++) {
            dbpool_conn *c;
            int rc = dbpool_get(&c);
            if (rc != 0) {
                fprintf(stderr, "dbpool-micro: dbpool_get: %s\n", dbpool_last_error());
                atomic_store(&failed, 1);
                atomic_store(&stop, 1);
                return NULL;
            }
            dbpool_release(c);
        }
        t->pairs += BATCH;
    }
    return NULL;
}

/* Open every connection of the pool and make them all recently used (inside the bypass). */
static int warm(unsigned limit)
{
    dbpool_conn *held[MAX_T];
    unsigned n = 0;
    int rc = 0;
    while (n < limit && (rc = dbpool_get(&held[n])) == 0)
        n++;
    for (unsigned i = 0; i < n; i++)
        dbpool_release(held[i]);
    if (rc != 0)
        fprintf(stderr, "dbpool-micro: warm-up: %s\n", dbpool_last_error());
    return rc;
}

static int start_pool(unsigned limit)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%u", limit);
    int rc = dbpool_config_set("DB_CONNECTION_LIMIT", lim);
    if (!rc)
        rc = dbpool_config_set("DB_RESET_ON_RELEASE", "0");
    if (!rc)
        rc = dbpool_config_set("DB_SSL_MODE", "DISABLED");
    if (!rc)
        rc = dbpool_init(NULL);
    if (rc)
        fprintf(stderr, "dbpool-micro: starting the pool: %s\n", dbpool_last_error());
    return rc;
}

struct sample {
    double ns, cpu_ns, csw;
};

static void usage_now(double *cpu_s, long *csw)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
             (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    *csw = ru.ru_nvcsw + ru.ru_nivcsw;
}

static int one_run(unsigned nt, unsigned limit, unsigned ms, struct sample *s)
{
    static struct thr ts[MAX_T];
    if (warm(limit) != 0)
        return -1;
    memset(ts, 0, sizeof ts);
    atomic_store(&stop, 0);
    pthread_barrier_init(&go, NULL, nt + 1);
    for (unsigned i = 0; i < nt; i++)
        if (pthread_create(&ts[i].tid, NULL, loop, &ts[i]) != 0)
            return -1;
    double c0, c1;
    long w0, w1;
    usage_now(&c0, &w0);
    pthread_barrier_wait(&go);
    uint64_t t0 = now_ns();
    struct timespec d = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&d, &d) != 0 && errno == EINTR)
        ;
    atomic_store(&stop, 1);
    uint64_t pairs = 0;
    for (unsigned i = 0; i < nt; i++) {
        pthread_join(ts[i].tid, NULL);
        pairs += ts[i].pairs;
    }
    uint64_t t1 = now_ns();
    usage_now(&c1, &w1);
    pthread_barrier_destroy(&go);
    if (atomic_load(&failed) || pairs == 0)
        return -1;
    s->ns = (double)(t1 - t0) / (double)pairs;
    s->cpu_ns = (c1 - c0) * 1e9 / (double)pairs;
    s->csw = (double)(w1 - w0) * 1000.0 / (double)pairs;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int measure(unsigned nt, unsigned limit, unsigned runs, unsigned ms)
{
    double ns[64], cpu[64], csw[64];
    if (start_pool(limit) != 0)
        return -1;
    for (unsigned r = 0; r < runs; r++) {
        struct sample s;
        if (one_run(nt, limit, ms, &s) != 0) {
            dbpool_close();
            return -1;
        }
        ns[r] = s.ns, cpu[r] = s.cpu_ns, csw[r] = s.csw;
    }
    dbpool_stats st;
    dbpool_stats_get(&st);
    dbpool_close();
    double lo = ns[0], hi = ns[0];
    for (unsigned r = 1; r < runs; r++) {
        lo = ns[r] < lo ? ns[r] : lo;
        hi = ns[r] > hi ? ns[r] : hi;
    }
    printf("MICRO threads=%u limit=%u runs=%u ns_per_pair=%.1f ns_min=%.1f ns_max=%.1f "
           "cpu_ns_per_pair=%.1f csw_per_kpair=%.2f created=%llu closed=%llu\n",
           nt, limit, runs, median(ns, runs), lo, hi, median(cpu, runs), median(csw, runs),
           (unsigned long long)st.created,
           (unsigned long long)(st.closed_idle + st.closed_lifetime + st.closed_broken + st.closed_reset));
    fflush(stdout);
    return 0;
}

static unsigned parse_list(const char *s, unsigned *out, unsigned cap, int allow_same)
{
    unsigned n = 0;
    while (*s && n < cap) {
        char *end;
        if (allow_same && strncmp(s, "same", 4) == 0) {
            out[n++] = 0, end = (char *)s + 4;
        } else {
            unsigned long v = strtoul(s, &end, 10);
            if (end == s || v == 0 || v > MAX_T)
                return 0;
            out[n++] = (unsigned)v;
        }
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return 0;
    }
    return n;
}

int main(int argc, char **argv)
{
    unsigned threads[16] = {1, 2, 8, 64}, nth = 4, limits[8] = {0, 3}, nl = 2, runs = 5, ms = 300;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads"))
            nth = parse_list(argv[i + 1], threads, 16, 0);
        else if (!strcmp(argv[i], "--limits"))
            nl = parse_list(argv[i + 1], limits, 8, 1);
        else if (!strcmp(argv[i], "--runs"))
            runs = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--ms"))
            ms = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else
            nth = 0;
    }
    if (nth == 0 || nl == 0 || runs == 0 || runs > 64 || ms == 0 || argc % 2 == 0) {
        fprintf(stderr, "usage: dbpool-micro [--threads 1,2,8,64] [--limits same,3] [--runs 5] [--ms 300]\n");
        return 2;
    }
    for (unsigned l = 0; l < nl; l++)
        for (unsigned t = 0; t < nth; t++)
            if (measure(threads[t], limits[l] ? limits[l] : threads[t], runs, ms) != 0)
                return 1;
    return 0;
}
