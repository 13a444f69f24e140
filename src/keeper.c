/*
 * keeper.c - the library's one thread. It sleeps in poll() on a self-pipe: signal handlers and
 * wake-ups write fixed-size records into it (atomic, below PIPE_BUF), and between records it
 * runs the pool's housekeeping (idle timeout, lifetime, leak reports) when due.
 *
 * The thread blocks every signal, so handlers run on application threads and the pipe is the
 * only way signals reach it.
 */
#include "dbpool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

enum rec_kind { REC_SIGNAL = 1, REC_STOP = 2 };

struct rec {
    int kind;
    siginfo_t info;
};

static pthread_mutex_t kmu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local bool am_keeper; /* lock-free: keeper_stop holds kmu while joining */
static pthread_t ktid;
static bool krunning;
static int pipe_r = -1; /* the keeper's; changed only under kmu while no keeper runs */
/* The write end, or -1 when no keeper takes records. Signal handlers on any thread load it, so
 * it and `writers` are lock-free atomics (async-signal-safe). A writer counts itself in
 * `writers` before loading pipe_w and out after its write(): once keeper_stop has published -1
 * and seen `writers` at 0 (seq_cst on both sides), no write to the old descriptor is under way
 * or can start, so STOP is the last record in the pipe and close() cannot race a write. */
static atomic_int pipe_w = -1;
static atomic_int writers;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "atomic_int must be lock-free in a signal handler");

static void handle(const struct rec *r, bool *stop)
{
    if (r->kind == REC_SIGNAL)
        dbpool__hooks_on_signal(&r->info);
    else if (r->kind == REC_STOP)
        *stop = true;
}

static void *keeper_main(void *arg)
{
    am_keeper = true;
    sem_post(arg); /* running: see dbpool__keeper_start */
    bool stop = false;
    while (!stop) {
        unsigned ms = dbpool__pool_housekeep();
        struct pollfd p = {.fd = pipe_r, .events = POLLIN};
        int n = poll(&p, 1, ms > 1000 ? 1000 : (int)ms);
        if (n <= 0)
            continue;
        struct rec r;
        while (!stop && read(pipe_r, &r, sizeof r) == (ssize_t)sizeof r)
            handle(&r, &stop);
    }
    return NULL;
}

int dbpool__keeper_start(void)
{
    int rc = 0, fds[2];
    pthread_mutex_lock(&kmu);
    if (krunning)
        goto out;
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = dbpool__fail(DBPOOL_ESYS, "pipe2: %s", strerror(errno));
        goto out;
    }
    pipe_r = fds[0];
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the new thread inherits "all blocked" */
    /* Wait until the thread runs our code: its start-up (which may allocate, in a sanitizer's
     * runtime too) is over before the pool is used, so a fork() right after the start never
     * copies an allocator lock held by a thread that is half started. (glibc's malloc is
     * fork-safe anyway; GCC 12's ASan allocator is not, and the keeper still allocates later,
     * e.g. when it closes an idle connection: this narrows that window, it cannot close it.) */
    sem_t started;
    sem_init(&started, 0, 0);
    int e = pthread_create(&ktid, NULL, keeper_main, &started);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    while (e == 0 && sem_wait(&started) != 0 && errno == EINTR)
        ;
    sem_destroy(&started);
    if (e != 0) {
        close(fds[0]);
        close(fds[1]);
        pipe_r = -1;
        rc = dbpool__fail(DBPOOL_ESYS, "starting the library thread: %s", strerror(e));
        goto out;
    }
    atomic_store(&pipe_w, fds[1]); /* open for records only once a keeper reads them */
    krunning = true;
out:
    pthread_mutex_unlock(&kmu);
    return rc;
}

/* Queue one record if a keeper takes records. Async-signal-safe. Returns 0 if it was queued. */
static int post(const struct rec *r)
{
    atomic_fetch_add(&writers, 1);
    int fd = atomic_load(&pipe_w);
    int rc = fd >= 0 && write(fd, r, sizeof *r) == (ssize_t)sizeof *r ? 0 : -1;
    atomic_fetch_sub(&writers, 1);
    return rc;
}

/* STOP must arrive: the keeper drains the pipe, so wait for room rather than give up. (A
 * write below PIPE_BUF is all or nothing, and the keeper holds the read end open.) */
static void put_stop(int w)
{
    struct rec r;
    memset(&r, 0, sizeof r);
    r.kind = REC_STOP;
    while (write(w, &r, sizeof r) < 0 && (errno == EAGAIN || errno == EINTR)) {
        struct pollfd p = {.fd = w, .events = POLLOUT};
        poll(&p, 1, 100);
    }
}

/* Stopping closes the door before STOP is sent: a signal handler that then finds no keeper
 * handles the signal itself (see hooks.c), while every record posted before lies ahead of STOP
 * and is handled by the keeper. No signal can be queued behind STOP and lost. */
void dbpool__keeper_stop(void)
{
    pthread_mutex_lock(&kmu);
    if (krunning && !pthread_equal(pthread_self(), ktid)) {
        int w = atomic_exchange(&pipe_w, -1);
        while (atomic_load(&writers) != 0)
            sched_yield(); /* a handler between its load of pipe_w and its write(): a few us */
        put_stop(w);
        pthread_join(ktid, NULL);
        close(pipe_r);
        close(w);
        pipe_r = -1;
        krunning = false;
    }
    pthread_mutex_unlock(&kmu);
}

int dbpool__keeper_signal_fd(void) { return atomic_load(&pipe_w); }

bool dbpool__keeper_is_self(void) { return am_keeper; }

/* The child has no keeper thread: the inherited pipe belongs to the parent's keeper, so close
 * our copies (a signal to the child must never reach the parent's thread). */
void dbpool__keeper_atfork_child(void)
{
    int w = atomic_exchange(&pipe_w, -1);
    if (pipe_r >= 0)
        close(pipe_r);
    if (w >= 0)
        close(w);
    pipe_r = -1;
    atomic_store(&writers, 0); /* counted writers were other threads: gone in the child */
    krunning = false;
    pthread_mutex_init(&kmu, NULL);
}

/* Write a signal record from a handler. Async-signal-safe. Returns 0 if it was queued. */
int dbpool__keeper_post_signal(const siginfo_t *info)
{
    struct rec r;
    memset(&r, 0, sizeof r); /* memset is async-signal-safe since POSIX.1-2016 */
    r.kind = REC_SIGNAL;
    r.info = *info;
    return post(&r);
}
