/*
 * error.c - the code table, thread-local error text, logging.
 */
#include "dbpool_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ERRBUF 1024

static _Thread_local char err_text[ERRBUF];
static _Thread_local unsigned err_server;

const char *dbpool_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define X(name, value, text) \
    case value:              \
        return text;
        DBPOOL_ERRNO_MAP(X)
#undef X
    default:
        return "unknown error";
    }
}

const char *dbpool_errname(int code)
{
    switch (code) {
    case 0:
        return "DBPOOL_OK";
#define X(name, value, text) \
    case value:              \
        return "DBPOOL_" #name;
        DBPOOL_ERRNO_MAP(X)
#undef X
    default:
        return "DBPOOL_EUNKNOWN";
    }
}

const char *dbpool_last_error(void) { return err_text; }

unsigned dbpool_last_server_errno(void) { return err_server; }

void dbpool__clear_error(void)
{
    err_text[0] = '\0';
    err_server = 0;
}

DBPOOL_PRINTF(3, 0) static int vfail(int code, unsigned server_errno, const char *fmt, va_list ap)
{
    int n = snprintf(err_text, sizeof err_text, "%s: ", dbpool_errname(code));
    if (n < 0 || (size_t)n >= sizeof err_text)
        n = 0;
    vsnprintf(err_text + n, sizeof err_text - (size_t)n, fmt, ap);
    err_server = server_errno;
    return code;
}

int dbpool__fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(code, 0, fmt, ap);
    va_end(ap);
    return code;
}

int dbpool__fail_server(int code, unsigned server_errno, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(code, server_errno, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- logging ------------------------------------------------------------------------------
 * The logger pair is swapped under a mutex; the level is an atomic so that a disabled level
 * costs one load. */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static dbpool_log_fn log_fn;
static void *log_ud;
static atomic_int log_level = DBPOOL_LOG_WARN;

void dbpool_set_logger(dbpool_log_fn fn, void *userdata)
{
    pthread_mutex_lock(&log_mu);
    log_fn = fn;
    log_ud = userdata;
    pthread_mutex_unlock(&log_mu);
}

/* fork: the lock is a leaf (nothing is locked under it, and it is taken under any other lock
 * of the library), so hooks.c takes it last in its prepare handler. */
void dbpool__log_atfork_prepare(void) { pthread_mutex_lock(&log_mu); }
void dbpool__log_atfork_release(void) { pthread_mutex_unlock(&log_mu); }

void dbpool__set_log_level(int level) { atomic_store(&log_level, level); }

int dbpool__log_enabled(int level) { return level <= atomic_load_explicit(&log_level, memory_order_relaxed); }

static const char *level_name(int level)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    return level >= 0 && level <= 3 ? names[level] : "log";
}

void dbpool__log(int level, const char *fmt, ...)
{
    if (!dbpool__log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mu);
    dbpool_log_fn fn = log_fn;
    void *ud = log_ud;
    pthread_mutex_unlock(&log_mu);
    if (fn) {
        fn(level, msg, ud);
        return;
    }
    /* One write per line so lines from several threads do not interleave. */
    char line[2200];
    int n = snprintf(line, sizeof line, "dbpool[%ld] %s: %s\n", (long)getpid(), level_name(level), msg);
    if (n > 0) {
        ssize_t w = write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        (void)w;
    }
}

/* xorshift per thread, seeded from the clock and the thread's stack address. */
uint32_t dbpool__rand(uint32_t n)
{
    static _Thread_local uint64_t s;
    if (s == 0)
        s = dbpool__now_ns() ^ (uint64_t)(uintptr_t)&s ^ 0x9e3779b97f4a7c15ull;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return n ? (uint32_t)(s % n) : 0;
}
