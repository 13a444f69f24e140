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
#include <signal.h>
#include <string.h>
#include <unistd.h>

enum rec_kind { REC_WAKE = 0, REC_SIGNAL = 1, REC_STOP = 2 };

struct rec {
    int kind;
    siginfo_t info;
};

static pthread_mutex_t kmu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local bool am_keeper; /* lock-free: keeper_stop holds kmu while joining */
static pthread_t ktid;
static bool krunning;
/* Read by signal handlers: plain ints written before the handlers are installed. */
static volatile int pipe_r = -1, pipe_w = -1;

static void handle(const struct rec *r, bool *stop)
{
    if (r->kind == REC_SIGNAL)
        dbpool__hooks_on_signal(&r->info);
    else if (r->kind == REC_STOP)
        *stop = true;
}

static void *keeper_main(void *arg)
{
    (void)arg;
    am_keeper = true;
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
    pipe_w = fds[1];
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the new thread inherits "all blocked" */
    int e = pthread_create(&ktid, NULL, keeper_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        close(fds[0]);
        close(fds[1]);
        pipe_r = pipe_w = -1;
        rc = dbpool__fail(DBPOOL_ESYS, "starting the library thread: %s", strerror(e));
        goto out;
    }
    krunning = true;
out:
    pthread_mutex_unlock(&kmu);
    return rc;
}

static void send_rec(int kind)
{
    struct rec r;
    memset(&r, 0, sizeof r);
    r.kind = kind;
    if (pipe_w >= 0 && write(pipe_w, &r, sizeof r) < 0) {
        /* a full pipe already holds a wake-up */
    }
}

void dbpool__keeper_wake(void) { send_rec(REC_WAKE); }

void dbpool__keeper_stop(void)
{
    pthread_mutex_lock(&kmu);
    if (krunning && !pthread_equal(pthread_self(), ktid)) {
        send_rec(REC_STOP);
        pthread_join(ktid, NULL);
        /* Publish "no keeper" before closing, so a signal handler on another thread does not
         * write into a descriptor number that may be reused at once. */
        int r = pipe_r, w = pipe_w;
        pipe_w = -1;
        pipe_r = -1;
        close(r);
        close(w);
        krunning = false;
    }
    pthread_mutex_unlock(&kmu);
}

int dbpool__keeper_signal_fd(void) { return pipe_w; }

bool dbpool__keeper_is_self(void) { return am_keeper; }

/* The child has no keeper thread: the inherited pipe belongs to the parent's keeper, so close
 * our copies (a signal to the child must never reach the parent's thread). */
void dbpool__keeper_atfork_child(void)
{
    if (pipe_r >= 0)
        close(pipe_r);
    if (pipe_w >= 0)
        close(pipe_w);
    pipe_r = pipe_w = -1;
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
    int fd = pipe_w;
    return fd >= 0 && write(fd, &r, sizeof r) == (ssize_t)sizeof r ? 0 : -1;
}
