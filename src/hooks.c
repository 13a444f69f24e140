/*
 * hooks.c - the exit guarantee: atexit and at_quick_exit, SIGINT/SIGTERM/SIGHUP through the
 * keeper's self-pipe, pthread_atfork, and the per-call SIGPIPE guard for TLS.
 *
 * Order at start-up matters: mysql_library_init() first (it initialises OpenSSL, which
 * registers its own atexit cleanup), then our atexit: handlers run in reverse order, so the
 * pool is closed before OpenSSL is torn down.
 */
#include "dbpool_int.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_LOCK_TIMEOUT_MS 1000u

static const int hooked[] = {SIGINT, SIGTERM, SIGHUP};
#define NHOOKED (sizeof hooked / sizeof *hooked)

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int once_rc;
static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction prev[NHOOKED];
/* Shared between handlers (any thread) and the keeper thread: lock-free atomics, which are
 * async-signal-safe, rather than volatile sig_atomic_t, which is not enough across threads. */
static atomic_int installed[NHOOKED];
static atomic_int in_cleanup;
/* Set by the keeper after clean-up when the application had a handler: the signal is raised
 * again, and our handler then calls the application's in a real signal context (on an
 * application thread, as it expects) with the original siginfo. */
static atomic_int chain_pending[NHOOKED];
static siginfo_t chain_info[NHOOKED];
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "atomic_int must be lock-free in a signal handler");

static int slot_of(int sig)
{
    for (size_t i = 0; i < NHOOKED; i++)
        if (hooked[i] == sig)
            return (int)i;
    return -1;
}

/* ---- exit ----------------------------------------------------------------------------------- */

/* exit() runs this while other threads may still be mid-query: the lock is taken with a
 * timeout, idle connections are closed with COM_QUIT, borrowed ones get the grace and are then
 * shut down, and no memory a worker may use is freed. */
static void on_exit_hook(void)
{
    const dbpool__options *o = dbpool__pool_options();
    unsigned grace = o->shutdown_grace_ms;
    if (dbpool__pool_shutdown(grace, EXIT_LOCK_TIMEOUT_MS, 0) != 0)
        dbpool__log(DBPOOL_LOG_WARN, "exit: the pool lock stayed busy (%u ms), or a close already "
                    "under way did not end in time; connections left to the kernel",
                    EXIT_LOCK_TIMEOUT_MS);
}

/* fork: no lock of ours may be inherited locked. The pool's prepare takes init_mu -> P.mu ->
 * cell_mu; sig_mu comes after them: it is taken under init_mu (installing the hooks) and
 * alone (the keeper restoring a default action), never with P.mu or cell_mu held, and nothing
 * is locked under it but the logger's and the overrides' locks, leaves taken last. kmu needs
 * nothing: it is only taken under init_mu, so it is free while prepare holds init_mu. */
static void fork_prepare(void)
{
    dbpool__pool_atfork_prepare();
    pthread_mutex_lock(&sig_mu);
    dbpool__log_atfork_prepare();
    dbpool__config_atfork_prepare(); /* dbpool_config_set()'s overrides: a leaf too */
}

static void fork_parent(void)
{
    dbpool__config_atfork_release();
    dbpool__log_atfork_release();
    pthread_mutex_unlock(&sig_mu);
    dbpool__pool_atfork_parent();
}

static void fork_child(void)
{
    atomic_store(&in_cleanup, 0);
    for (size_t i = 0; i < NHOOKED; i++)
        atomic_store(&chain_pending[i], 0);
    dbpool__config_atfork_release();
    dbpool__log_atfork_release();
    pthread_mutex_unlock(&sig_mu);
    dbpool__keeper_atfork_child();
    dbpool__pool_atfork_child();
}

static void init_once(void)
{
    if (mysql_library_init(0, NULL, NULL) != 0) {
        once_rc = DBPOOL_ESYS;
        return;
    }
    if (atexit(on_exit_hook) != 0 || at_quick_exit(on_exit_hook) != 0 ||
        pthread_atfork(fork_prepare, fork_parent, fork_child) != 0)
        once_rc = DBPOOL_ESYS;
}

int dbpool__hooks_init(void)
{
    pthread_once(&once, init_once);
    if (once_rc != 0)
        return dbpool__fail(once_rc, "initialising Connector/C or registering exit hooks failed");
    return 0;
}

/* ---- signals -------------------------------------------------------------------------------- */

static void die_now(int sig)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    raise(sig); /* pending until the handler returns, then fatal */
}

/* Behave as if we were not there: the disposition we replaced. Async-signal-safe. */
static void chain(int i, int sig, siginfo_t *info, void *uctx)
{
    const struct sigaction *p = &prev[i];
    if (p->sa_flags & SA_SIGINFO)
        p->sa_sigaction(sig, info, uctx);
    else if (p->sa_handler == SIG_DFL)
        die_now(sig);
    else if (p->sa_handler != SIG_IGN)
        p->sa_handler(sig);
}

/* Only async-signal-safe work here: hand the signal to the keeper thread.
 * in_cleanup is claimed before the record is posted: once posted, the keeper may finish and
 * re-raise, and the chained call (on another thread) clears the flag, which must not be set
 * again after that. It is cleared before calling the application, which may not return. */
static void on_signal(int sig, siginfo_t *info, void *uctx)
{
    int saved = errno;
    int i = slot_of(sig);
    if (i >= 0 && atomic_exchange(&chain_pending[i], 0)) {
        siginfo_t own = chain_info[i]; /* read before a next signal may overwrite it */
        atomic_store(&in_cleanup, 0);
        chain(i, sig, &own, uctx); /* after our clean-up: the application's turn */
    } else if (dbpool__keeper_signal_fd() < 0) {
        /* No keeper (no pool running, a fork child): nothing of ours to clean up. Not counted
         * as a clean-up, so two such signals at once are both the application's. */
        if (i >= 0)
            chain(i, sig, info, uctx);
    } else if (atomic_exchange(&in_cleanup, 1)) {
        die_now(sig); /* a second signal during clean-up: die at once */
    } else if (dbpool__keeper_post_signal(info) != 0) {
        /* The keeper stopped meanwhile (dbpool_close()): behave as before us. */
        atomic_store(&in_cleanup, 0);
        if (i >= 0)
            chain(i, sig, info, uctx);
    }
    errno = saved;
}

static int install_one(size_t i)
{
    struct sigaction old, sa;
    if (sigaction(hooked[i], NULL, &old) != 0)
        return dbpool__fail(DBPOOL_ESYS, "sigaction(%d): %s", hooked[i], strerror(errno));
    /* Ignored at start (e.g. SIGINT of a background job): the user wants it ignored. */
    if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN)
        return 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    prev[i] = old;
    if (sigaction(hooked[i], &sa, NULL) != 0)
        return dbpool__fail(DBPOOL_ESYS, "sigaction(%d): %s", hooked[i], strerror(errno));
    atomic_store(&installed[i], 1);
    return 0;
}

int dbpool__hooks_install_signals(void)
{
    int rc = 0;
    pthread_mutex_lock(&sig_mu);
    for (size_t i = 0; i < NHOOKED && rc == 0; i++)
        if (!atomic_load(&installed[i]))
            rc = install_one(i);
    pthread_mutex_unlock(&sig_mu);
    return rc;
}

/* On the keeper thread: close the pool, then end the process the way the signal would have
 * (default disposition: restore it and raise again), or raise it again for the application's
 * own handler, which our handler then calls in signal context. */
void dbpool__hooks_on_signal(const siginfo_t *info)
{
    int sig = info->si_signo, i = slot_of(sig);
    dbpool__log(DBPOOL_LOG_INFO, "signal %d: closing the pool", sig);
    dbpool__pool_shutdown(dbpool__pool_options()->shutdown_grace_ms, 0, 0);
    if (i < 0)
        return;
    const struct sigaction *p = &prev[i];
    if (!(p->sa_flags & SA_SIGINFO) && p->sa_handler == SIG_DFL) {
        pthread_mutex_lock(&sig_mu);
        sigaction(sig, p, NULL);
        atomic_store(&installed[i], 0);
        pthread_mutex_unlock(&sig_mu);
        kill(getpid(), sig); /* process-directed: delivered to a thread that does not block it */
        return;
    }
    chain_info[i] = *info;
    atomic_store(&chain_pending[i], 1); /* publishes chain_info (seq_cst) */
    kill(getpid(), sig);
}

/* ---- SIGPIPE guard for TLS ------------------------------------------------------------------ */

static bool sigpipe_pending(sigset_t *pipe_set)
{
    sigset_t pending;
    sigemptyset(pipe_set);
    sigaddset(pipe_set, SIGPIPE);
    sigpending(&pending);
    return sigismember(&pending, SIGPIPE) == 1;
}

void dbpool__sigpipe_block(dbpool__sigpipe *s, const struct dbpool_conn *c)
{
    s->active = c && c->tls;
    if (!s->active)
        return;
    sigset_t pipe_set;
    s->was_pending = sigpipe_pending(&pipe_set);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &s->old);
}

void dbpool__sigpipe_restore(dbpool__sigpipe *s)
{
    if (!s->active)
        return;
    sigset_t pipe_set;
    if (!s->was_pending && sigpipe_pending(&pipe_set)) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipe_set, NULL, &zero); /* consume the one our call raised */
    }
    pthread_sigmask(SIG_SETMASK, &s->old, NULL);
}
