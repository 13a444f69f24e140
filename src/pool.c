/*
 * pool.c - the process-wide pool: slots, a mutex + a futex word per waiter, waiters served in
 * arrival order with bounded barging (DB_QUEUE_OVERTAKE_US), counters.
 *
 * Invariants (under P.mu):
 *  - P.open counts every slot that is not FREE (opening, idle, checking, busy, returning,
 *    closing) and never exceeds P.opts.limit: a session is counted from before connect until
 *    after close.
 *  - A slot is IDLE iff it is on the idle stack.
 *  - No network I/O under P.mu: a slot leaves IDLE/BUSY for CHECKING/RETURNING/CLOSING/OPENING
 *    under the lock, the I/O runs unlocked by the one thread that moved it, and the result is
 *    published under the lock.
 *  - Only a head-of-queue waiter takes an idle connection or opens a new one among waiters; a
 *    caller that has not queued may take an idle connection (barge) unless the head has waited
 *    longer than P.starve_ns (DB_QUEUE_OVERTAKE_US), in which case releases hand connections
 *    to it directly.
 *  - A dbpool_query() waiter (w->req) at the head may instead be dequeued by a thread that
 *    holds a connection inside its own dbpool_query() (dbpool__claim_request): that thread runs
 *    the waiter's statement on its connection (shared turns, DB_QUERY_SHARE_US).
 *  - Slot arrays are never freed while a slot in them may be borrowed: on close with borrowed
 *    connections the array is retired, and late releases close their slot there.
 *
 * Lock order: init_mu -> P.mu -> cell_mu.
 */
#include "dbpool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BYPASS_NS 250000000ull       /* reused within 250 ms: no liveness syscall */
#define BACKOFF_MIN_MS 10u
#define BACKOFF_MAX_MS 500u /* worst-case recovery after an outage = this + a handshake: < 1 s */

enum pool_state { POOL_UNINIT = 0, POOL_RUNNING, POOL_CLOSING };
/* R_NOT_OPENED: a reservation whose connect failed. No connection was created, so none is
 * counted as closed (created - closed = open holds). */
enum close_reason { R_IDLE, R_LIFETIME, R_BROKEN, R_RESET, R_SHUTDOWN, R_NOT_OPENED };

struct dbpool__pool_array {
    struct dbpool__pool_array *next; /* retired list */
    dbpool__budget *budget;          /* host budget the slots' budget_slot refer to */
    unsigned n;
    struct dbpool_conn slots[];
};

/* A thread that reserved a slot and waits for a host-budget slot before connecting. `stop` is the
 * budget wait's cancel word: BW_IDLE when a connection of this process became idle (give the
 * reservation back and take that one: otherwise a process whose threads all wait for the budget
 * would sit on idle connections that hold the budget), BW_CLOSING when the pool closes. Listed
 * under P.mu in P.bwait. */
enum { BW_WAITING = 0, BW_IDLE = 1, BW_CLOSING = 2 };
struct bwaiter {
    struct bwaiter *next;
    int stop;
    bool linked;
};

/* A thread waiting in the queue for a connection; lives on its stack and is listed under P.mu.
 * It sleeps on the futex word of its thread's cell (struct wcell, below), whose states are:
 *   W_SLEEP   it sleeps (or is about to) and nothing is for it;
 *   W_KICK    look again (capacity freed, the pool closes, it became the head): it re-takes
 *             P.mu before doing anything, so a kick is sent under P.mu;
 *   W_HANDED  a releaser dequeued it and gave it `handed`, already marked borrowed in its name
 *             (under P.mu); the releaser wakes the cell after unlocking, and the waiter returns
 *             at once without touching P.mu: one thread switch per hand-off;
 *   W_CLAIMED a dbpool_query() waiter whose request a connection holder took off the queue
 *             (under P.mu) and runs: it must wait, without a deadline, until
 *   W_SERVED  the holder stored the outcome in the request and wakes the cell: the waiter
 *             returns without touching P.mu. */
enum { W_SLEEP = 0, W_KICK, W_HANDED, W_CLAIMED, W_SERVED };

/* The futex word a thread waits on. Cells are never freed: a releaser's FUTEX_WAKE may arrive
 * after the waiter has returned (its stack frame gone, its thread even exited), which on a
 * cell is at worst a spurious wake-up for the cell's next wait, and every wait loop re-checks.
 * (A word on the waiter's stack would need the waiter to wait for the waker to be done with
 * it, which costs two more thread switches whenever the woken waiter preempts its waker; and
 * valgrind rightly flags a wake on a dead frame.) One cell per thread, made at its first wait,
 * recycled through cell_free when the thread exits. */
struct wcell {
    _Atomic uint32_t word;
    struct wcell *next;
};

struct getctx;
struct waiter {
    struct waiter *next;
    struct wcell *cell;
    bool timed;                 /* sleeps as head with a timeout at its starvation point */
    uint64_t since_ns;
    unsigned epoch;             /* P.epoch when queued: a close ends the wait */
    struct dbpool_conn *handed; /* direct hand-off */
    struct getctx *g;           /* call site and wait accounting, for the releaser */
    struct dbpool__req *req;    /* a dbpool_query() waiter: another holder may run it */
    pthread_t owner;
};

static struct pool {
    pthread_mutex_t mu;
    _Atomic int state;
    dbpool__options opts;
    struct dbpool__pool_array *_Atomic arr;
    struct dbpool__pool_array *retired;
    struct dbpool_conn *idle; /* LIFO stack: the warmest connection first */
    unsigned open, nidle, busy, waiting, peak;
    _Atomic unsigned nreq; /* queued waiters with a request (changed under P.mu, peeked without) */
    struct waiter *qhead, *qtail;
    pthread_cond_t drained; /* signalled when a slot becomes FREE while closing, when a close
                             * ends, and when the last budget pin goes; timed waits use
                             * pthread_cond_clockwait(CLOCK_MONOTONIC) (dbpool__ts deadlines) */
    unsigned budget_pins;   /* readers of P.budget outside the lock (budget_pin) */
    dbpool__budget *budget;
    struct bwaiter *bwait; /* threads waiting for the host budget */
    unsigned epoch; /* incremented by every close */
    uint64_t starve_ns; /* DB_QUEUE_OVERTAKE_US: a waiter older than this is handed connections */
    uint64_t share_ns;  /* DB_QUERY_SHARE_US: how long a holder may run queued requests */
    struct {
        uint64_t gets, waits, wait_ns_total, wait_ns_max, timeouts, queue_full, created;
        uint64_t closed[5], conn_transient, conn_permanent, leaks, served;
    } st;
} P = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
unsigned dbpool__fork_generation;

/* ---- small helpers (P.mu held) ---------------------------------------------------------- */

/* Clocks. The fast path (a get or release with nobody waiting) reads CLOCK_MONOTONIC_COARSE:
 * a few ns instead of ~30 ns for the precise clock through kvm-clock, with a resolution of one
 * tick (<= 4 ms), which is plenty for the bypass window and the idle, lifetime and leak
 * thresholds. The precise clock is read only where waiting is involved (the starvation test,
 * wait accounting, deadlines). Both share one epoch, but a coarse reading may lag a precise
 * one taken just before it, so readings are compared through elapsed(), never subtracted. */
static uint64_t coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t elapsed(uint64_t now, uint64_t then) { return now > then ? now - then : 0; }

static void set_state(struct dbpool_conn *c, int s) { atomic_store_explicit((_Atomic int *)&c->state, s, memory_order_release); }
static int get_state(struct dbpool_conn *c) { return atomic_load_explicit((_Atomic int *)&c->state, memory_order_acquire); }

static long futex(_Atomic uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, (uint32_t *)word, op, val, ts, NULL, FUTEX_BITSET_MATCH_ANY);
}

static pthread_mutex_t cell_mu = PTHREAD_MUTEX_INITIALIZER; /* after P.mu in lock order */
static struct wcell *cell_free;
static pthread_key_t cell_key;
static pthread_once_t cell_once = PTHREAD_ONCE_INIT;
static _Thread_local struct wcell *my_cell;

static void cell_recycle(void *p)
{
    struct wcell *c = p;
    pthread_mutex_lock(&cell_mu);
    c->next = cell_free;
    cell_free = c;
    pthread_mutex_unlock(&cell_mu);
}

static void cell_key_create(void) { (void)pthread_key_create(&cell_key, cell_recycle); }

/* This thread's cell, made or recycled at its first wait; NULL when out of memory. */
static struct wcell *my_wcell(void)
{
    if (my_cell)
        return my_cell;
    pthread_once(&cell_once, cell_key_create);
    pthread_mutex_lock(&cell_mu);
    struct wcell *c = cell_free;
    if (c)
        cell_free = c->next;
    pthread_mutex_unlock(&cell_mu);
    if (!c && !(c = calloc(1, sizeof *c)))
        return NULL;
    c->next = NULL;
    pthread_setspecific(cell_key, c); /* recycled when the thread exits */
    return my_cell = c;
}

/* Under P.mu: make a queued waiter look again. */
static void kick(struct waiter *w)
{
    w->timed = false;
    atomic_store_explicit(&w->cell->word, W_KICK, memory_order_release);
    futex(&w->cell->word, FUTEX_WAKE_PRIVATE, 1, NULL);
}

static void wake_head(void)
{
    if (P.qhead)
        kick(P.qhead);
}

/* Under P.mu, after a waiter left the queue: if something is left to take (an idle connection,
 * a free slot), the new head must look. The waiter that left may have been kicked for exactly
 * that and then served otherwise (handed another connection, or it took one and timed out on
 * nothing): without this the kick would be lost and the head would sleep until its deadline
 * while capacity sits unused. */
static void pass_kick_on(void)
{
    if (P.qhead && (P.nidle || P.open < P.opts.limit))
        wake_head();
}

/* Not under P.mu: wake the cell of a waiter that publish() handed a connection. The waiter
 * may be gone already; the cell is not. */
static void handoff_wake(struct wcell *c)
{
    if (c)
        futex(&c->word, FUTEX_WAKE_PRIVATE, 1, NULL);
}

static void dequeue(struct waiter *w)
{
    struct waiter **pp = &P.qhead, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = w->next;
    if (P.qtail == w)
        P.qtail = prev;
    P.waiting--;
    if (w->req)
        atomic_fetch_sub_explicit(&P.nreq, 1, memory_order_relaxed);
}

static void enqueue(struct waiter *w)
{
    w->next = NULL;
    if (P.qtail)
        P.qtail->next = w;
    else
        P.qhead = w;
    P.qtail = w;
    P.waiting++;
    if (w->req)
        atomic_fetch_add_explicit(&P.nreq, 1, memory_order_relaxed);
}

static struct dbpool_conn *pop_idle(void)
{
    struct dbpool_conn *c = P.idle;
    if (c) {
        P.idle = c->next;
        c->next = NULL;
        P.nidle--;
    }
    return c;
}

static void bwake(struct bwaiter *w, int why)
{
    w->linked = false;
    __atomic_store_n(&w->stop, why, __ATOMIC_RELEASE);
    syscall(SYS_futex, &w->stop, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void push_idle(struct dbpool_conn *c, uint64_t now)
{
    c->last_used_ns = now;
    c->next = P.idle;
    P.idle = c;
    P.nidle++;
    set_state(c, DBPOOL__SLOT_IDLE);
    struct bwaiter *w = P.bwait; /* one idle connection: one budget waiter tries it */
    if (w) {
        P.bwait = w->next;
        bwake(w, BW_IDLE);
    }
}

static void mark_borrowed(struct dbpool_conn *c, const char *file, int line, pthread_t owner, uint64_t now)
{
    set_state(c, DBPOOL__SLOT_BUSY);
    c->site_file = file;
    c->site_line = line;
    c->owner = owner;
    c->borrowed_ns = now;
    c->leak_reported = false;
    P.busy++;
}

/* A slot goes back to FREE: capacity for a waiter, or progress for a close. */
static void slot_freed(struct dbpool_conn *c, int reason)
{
    set_state(c, DBPOOL__SLOT_FREE);
    if (c->arr == atomic_load(&P.arr)) { /* a retired slot is no longer counted */
        P.open--;
        if (reason != R_NOT_OPENED)
            P.st.closed[reason]++;
        wake_head();
    }
    if (atomic_load(&P.state) != POOL_RUNNING)
        pthread_cond_broadcast(&P.drained);
}

static struct dbpool_conn *reserve_free_slot(void)
{
    struct dbpool__pool_array *a = atomic_load(&P.arr);
    for (unsigned i = 0; i < a->n; i++) {
        struct dbpool_conn *c = &a->slots[i];
        if (get_state(c) == DBPOOL__SLOT_FREE) {
            set_state(c, DBPOOL__SLOT_OPENING);
            if (++P.open > P.peak)
                P.peak = P.open;
            return c;
        }
    }
    return NULL; /* cannot happen while P.open < limit */
}

/* ---- initialisation ---------------------------------------------------------------------- */

bool dbpool__pool_running(void) { return atomic_load(&P.state) != POOL_UNINIT; }

const dbpool__options *dbpool__pool_options(void) { return &P.opts; }

static struct dbpool__pool_array *new_array(unsigned n)
{
    struct dbpool__pool_array *a = calloc(1, sizeof *a + n * sizeof(struct dbpool_conn));
    if (!a)
        return NULL;
    a->n = n;
    for (unsigned i = 0; i < n; i++) {
        a->slots[i].magic = DBPOOL__CONN_MAGIC;
        a->slots[i].fd_dup = -1;
        a->slots[i].budget_slot = -1;
        a->slots[i].arr = a;
    }
    return a;
}

static int start_locked(const char *env_file)
{
    dbpool__options o;
    int rc = dbpool__hooks_init();
    if (rc == 0)
        rc = dbpool__config_load(&o, env_file);
    if (rc != 0)
        return rc;
    dbpool__set_log_level(o.log_level);
    static unsigned starts;
    snprintf(o.pool_id, sizeof o.pool_id, "%ld-%u", (long)getpid(), ++starts);
    dbpool__budget *b = NULL;
    if (o.host_budget && (rc = dbpool__budget_open(&b, &o)) != 0)
        return rc;
    struct dbpool__pool_array *a = new_array(o.limit);
    if (!a) {
        dbpool__budget_close(b);
        return dbpool__fail(DBPOOL_ENOMEM, "allocating %u slots", o.limit);
    }
    if ((rc = dbpool__keeper_start()) != 0 || (o.signal_hooks && (rc = dbpool__hooks_install_signals()) != 0)) {
        free(a);
        dbpool__budget_close(b);
        return rc;
    }
    a->budget = b;
    pthread_mutex_lock(&P.mu);
    P.opts = o;
    P.starve_ns = (uint64_t)o.queue_overtake_us * 1000u;
    /* With DB_RESET_ON_RELEASE every statement of dbpool_query() gets a reset session, which
     * running another caller's statement before the release would skip. */
    P.share_ns = o.reset_on_release ? 0 : (uint64_t)o.query_share_us * 1000u;
    P.budget = b;
    atomic_store(&P.arr, a);
    P.bwait = NULL;
    P.open = P.nidle = P.busy = P.peak = 0;
    memset(&P.st, 0, sizeof P.st);
    atomic_store(&P.state, POOL_RUNNING);
    pthread_mutex_unlock(&P.mu);
    dbpool__log(DBPOOL_LOG_INFO, "pool started: limit %u, host budget %u", o.limit, o.host_budget);
    return 0;
}

static int ensure_running(const char *env_file)
{
    if (atomic_load_explicit(&P.state, memory_order_acquire) == POOL_RUNNING)
        return 0;
    pthread_mutex_lock(&init_mu);
    int s = atomic_load(&P.state), rc = 0;
    if (s == POOL_CLOSING)
        rc = dbpool__fail(DBPOOL_ECLOSED, "the pool is closing");
    else if (s == POOL_UNINIT)
        rc = start_locked(env_file);
    pthread_mutex_unlock(&init_mu);
    return rc;
}

int dbpool_init(const char *env_file)
{
    dbpool__clear_error();
    return ensure_running(env_file);
}

/* ---- get ---------------------------------------------------------------------------------- */

struct getctx {
    const char *file;
    int line;
    uint64_t start, deadline;
    uint64_t wait_ns; /* set by account_wait(), for dbpool_last_wait_ns() */
    bool waited;
    bool precise; /* start and deadline are on the precise clock */
};

/* dbpool_get() stamps its start with the coarse clock (the fast path never needs more), which
 * may lag the precise one by a tick (up to 4 ms): a deadline or a wait measured from it would
 * be short or long by that much, which matters for a DB_ACQUIRE_TIMEOUT_MS of a few ms. The
 * first step off the fast path re-bases both on the precise clock, microseconds after the
 * call. */
static void go_precise(struct getctx *g)
{
    if (g->precise)
        return;
    g->precise = true;
    g->start = dbpool__now_ns();
    g->deadline = g->start + (uint64_t)P.opts.acquire_timeout_ms * 1000000u;
}

static void holders_text(char *buf, size_t n)
{
    size_t used = 0;
    struct dbpool__pool_array *a = atomic_load(&P.arr);
    buf[0] = '\0';
    for (unsigned i = 0; a && i < a->n && used + 1 < n; i++) {
        struct dbpool_conn *c = &a->slots[i];
        if (get_state(c) == DBPOOL__SLOT_BUSY && c->site_file) {
            int k = snprintf(buf + used, n - used, "%s%s:%d", used ? ", " : "", c->site_file, c->site_line);
            used += k > 0 ? (size_t)k : 0;
        }
    }
    if (!buf[0])
        snprintf(buf, n, "none recorded");
}

static int fail_timeout(const struct getctx *g)
{
    char holders[512];
    holders_text(holders, sizeof holders);
    P.st.timeouts++;
    return dbpool__fail(DBPOOL_ETIMEDOUT,
                        "no connection within DB_ACQUIRE_TIMEOUT_MS=%u: limit %u, %u in use, "
                        "%u waiting; borrowed at: %s",
                        P.opts.acquire_timeout_ms, P.opts.limit, P.busy, P.waiting, holders);
}

/* Under P.mu: a connection of the current array this thread has borrowed, other than
 * `except`, or NULL. */
static struct dbpool_conn *held_by_me(const struct dbpool_conn *except)
{
    struct dbpool__pool_array *a = atomic_load(&P.arr);
    pthread_t me = pthread_self();
    for (unsigned i = 0; i < a->n; i++) {
        struct dbpool_conn *c = &a->slots[i];
        if (c != except && get_state(c) == DBPOOL__SLOT_BUSY && pthread_equal(c->owner, me))
            return c;
    }
    return NULL;
}

static void warn_self_deadlock(const struct getctx *g)
{
    struct dbpool_conn *c = held_by_me(NULL);
    if (c)
        dbpool__log(DBPOOL_LOG_WARN,
                    "possible self-deadlock: this thread holds the connection borrowed at "
                    "%s:%d and waits for another at %s:%d with all %u in use",
                    c->site_file ? c->site_file : "?", c->site_line, g->file ? g->file : "?",
                    g->line, P.opts.limit);
}

/* Give back a reservation whose connection never opened or was closed (P.mu not held). */
static void unreserve(struct dbpool_conn *c, int reason)
{
    if (c->budget_slot >= 0) {
        dbpool__budget_release(c->arr->budget, c->budget_slot);
        c->budget_slot = -1;
    }
    pthread_mutex_lock(&P.mu);
    slot_freed(c, reason);
    pthread_mutex_unlock(&P.mu);
}

/* Close a connection we own outside the lock, then free its slot. */
static void close_owned(struct dbpool_conn *c, int reason)
{
    pthread_mutex_lock(&P.mu);
    set_state(c, DBPOOL__SLOT_CLOSING);
    pthread_mutex_unlock(&P.mu);
    dbpool__conn_close(c);
    unreserve(c, reason);
}

static unsigned backoff_ms(unsigned attempt)
{
    unsigned cap = BACKOFF_MIN_MS << (attempt < 7 ? attempt : 7);
    if (cap > BACKOFF_MAX_MS)
        cap = BACKOFF_MAX_MS;
    return cap / 2 + dbpool__rand(cap / 2 + 1); /* jitter: spread retries of many clients */
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Take a host-budget slot for reserved slot c. Returns 0, a DBPOOL_E* code, or 1 when a
 * connection of this process became idle meanwhile (the caller gives the reservation back and
 * takes that one). */
static int take_budget(struct dbpool_conn *c, const struct getctx *g)
{
    struct bwaiter w = {.stop = BW_WAITING};
    pthread_mutex_lock(&P.mu);
    if (atomic_load(&P.state) != POOL_RUNNING)
        w.stop = BW_CLOSING;
    else if (P.nidle)
        w.stop = BW_IDLE;
    else {
        w.next = P.bwait;
        P.bwait = &w;
        w.linked = true;
    }
    pthread_mutex_unlock(&P.mu);
    int rc = DBPOOL_ECLOSED;
    if (w.stop == BW_WAITING)
        rc = dbpool__budget_acquire(c->arr->budget, g->deadline, &w.stop, &c->budget_slot);
    pthread_mutex_lock(&P.mu);
    for (struct bwaiter **pp = &P.bwait; w.linked && *pp; pp = &(*pp)->next)
        if (*pp == &w) {
            *pp = w.next;
            w.linked = false;
            break;
        }
    /* Signalled "idle" but got a budget slot anyway (the two raced): the idle connection is
     * still there for another budget waiter, which would otherwise keep polling the budget. */
    if (rc == 0 && __atomic_load_n(&w.stop, __ATOMIC_ACQUIRE) == BW_IDLE && P.nidle && P.bwait) {
        struct bwaiter *next = P.bwait;
        P.bwait = next->next;
        bwake(next, BW_IDLE);
    }
    pthread_mutex_unlock(&P.mu);
    if (rc == 0)
        return 0;
    c->budget_slot = -1;
    if (rc == DBPOOL_ECLOSED && __atomic_load_n(&w.stop, __ATOMIC_ACQUIRE) == BW_IDLE)
        return 1;
    if (rc == DBPOOL_ECLOSED)
        return dbpool__fail(DBPOOL_ECLOSED, "the pool was closed while waiting for the host budget");
    return rc;
}

/* Connect a reserved slot, retrying transient errors with capped backoff inside the deadline. */
static int open_reserved(struct dbpool_conn *c, const struct getctx *g)
{
    int rc = 0, cls = 0;
    if (c->arr->budget && (rc = take_budget(c, g)) != 0)
        return rc;
    for (unsigned attempt = 0;; attempt++) {
        rc = dbpool__conn_open(c, &P.opts, &cls);
        if (rc == 0 || cls != DBPOOL__ERR_TRANSIENT)
            break;
        unsigned ms = backoff_ms(attempt);
        if (dbpool__now_ns() + (uint64_t)ms * 1000000u >= g->deadline || atomic_load(&P.state) != POOL_RUNNING)
            break;
        __atomic_fetch_add(&P.st.conn_transient, 1, __ATOMIC_RELAXED);
        sleep_ms(ms);
    }
    if (rc != 0)
        __atomic_fetch_add(cls == DBPOOL__ERR_TRANSIENT ? &P.st.conn_transient : &P.st.conn_permanent, 1, __ATOMIC_RELAXED);
    return rc;
}

static void set_expiry(struct dbpool_conn *c)
{
    uint64_t now = dbpool__now_ns(), life = (uint64_t)P.opts.max_lifetime_ms * 1000000u;
    c->created_ns = now;
    /* Up to 10% earlier, so connections opened together do not all retire together. */
    c->expires_ns = life ? now + life - (life / 10 ? dbpool__rand((uint32_t)(life / 10 / 1000)) * 1000ull : 0) : 0;
}

static void account_wait(struct getctx *g, uint64_t now)
{
    if (!g->waited)
        return;
    uint64_t w = elapsed(now, g->start);
    g->wait_ns = w;
    P.st.waits++;
    P.st.wait_ns_total += w;
    if (w > P.st.wait_ns_max)
        P.st.wait_ns_max = w;
}

/* Called with P.mu held, returns with it released: hand c, opened or checked outside the lock,
 * to the caller. Meanwhile the pool may have been closed, or closed and started again (c's
 * array is then retired, and counting it as borrowed would skew the new pool's counters): then
 * c is closed and the caller gets DBPOOL_ECLOSED (`doing`: what it was doing). */
static int hand_out(struct dbpool_conn *c, struct getctx *g, const char *doing)
{
    if (atomic_load(&P.state) != POOL_RUNNING || c->arr != atomic_load(&P.arr)) {
        pthread_mutex_unlock(&P.mu);
        close_owned(c, R_SHUTDOWN);
        return dbpool__fail(DBPOOL_ECLOSED, "the pool was closed while %s", doing);
    }
    uint64_t now = dbpool__now_ns();
    account_wait(g, now); /* a waiter given a free slot or an idle connection */
    mark_borrowed(c, g->file, g->line, pthread_self(), now);
    P.st.gets++;
    pthread_mutex_unlock(&P.mu);
    return 0;
}

static int finish_open(struct dbpool_conn *c, struct getctx *g)
{
    int rc = open_reserved(c, g);
    if (rc != 0) {
        unreserve(c, R_NOT_OPENED);
        return rc;
    }
    set_expiry(c);
    pthread_mutex_lock(&P.mu);
    P.st.created++;
    return hand_out(c, g, "connecting");
}

/* An idle connection taken for a check (state CHECKING): alive and young enough? */
static bool check_idle(struct dbpool_conn *c, uint64_t now)
{
    if (c->expires_ns && now >= c->expires_ns)
        return false;
    if (!dbpool__conn_alive(c))
        return false;
    if (elapsed(now, c->last_used_ns) > (uint64_t)P.opts.validate_after_ms * 1000000u && dbpool__conn_ping(c) != 0)
        return false;
    return true;
}

enum take { TAKE_NONE, TAKE_READY, TAKE_CHECK, TAKE_OPEN, TAKE_HANDED, TAKE_SERVED };

/* Under P.mu: take an idle connection or reserve a slot to open. */
static enum take try_take(struct dbpool_conn **out, uint64_t now)
{
    struct dbpool_conn *c = pop_idle();
    if (c) {
        *out = c;
        if (elapsed(now, c->last_used_ns) < BYPASS_NS && (!c->expires_ns || now < c->expires_ns))
            return TAKE_READY;
        set_state(c, DBPOOL__SLOT_CHECKING);
        return TAKE_CHECK;
    }
    if (P.open < P.opts.limit) {
        *out = reserve_free_slot();
        return *out ? TAKE_OPEN : TAKE_NONE;
    }
    return TAKE_NONE;
}

/* Not under P.mu: a claimed request's waiter waits for its outcome. Without a deadline: the
 * claimer runs the statement as the waiter would have, and a close ends it by shutting the
 * connection's socket. */
static void await_served(struct wcell *cell)
{
    while (atomic_load_explicit(&cell->word, memory_order_acquire) != W_SERVED)
        futex(&cell->word, FUTEX_WAIT_BITSET_PRIVATE, W_CLAIMED, NULL);
}

/* Wait in the queue until something can be taken. Returns TAKE_* or a negative code, with P.mu
 * held, except TAKE_HANDED: the connection was handed over, already marked borrowed in our
 * name, and P.mu is not held, and TAKE_SERVED: a holder claimed `req` and ran it (P.mu not
 * held). Only the head takes idle connections or free slots by itself;
 * the others wait to be handed one or to become the head. A head that is not starving yet
 * sleeps with a timeout at the moment it would (P.starve_ns): a release that pushes a connection
 * to the idle stack does not wake it, because the releasing thread usually takes it straight
 * back (barging); if nobody does, the head takes it itself at that moment. */
static int wait_turn(struct dbpool_conn **out, struct getctx *g, struct dbpool__req *req)
{
    if (P.opts.queue_limit && P.waiting >= P.opts.queue_limit) {
        P.st.queue_full++;
        return dbpool__fail(DBPOOL_EQUEUEFULL, "%u callers already waiting (DB_QUEUE_LIMIT=%u, limit %u)",
                            P.waiting, P.opts.queue_limit, P.opts.limit);
    }
    warn_self_deadlock(g);
    struct waiter w = {.cell = my_wcell(), .since_ns = dbpool__now_ns(), .epoch = P.epoch,
                       .g = g, .req = P.share_ns ? req : NULL, .owner = pthread_self()};
    if (!w.cell)
        return dbpool__fail(DBPOOL_ENOMEM, "allocating a wait cell");
    /* Left at W_HANDED or W_SERVED by this thread's last wait; nobody else writes it while we
     * are not queued (late wakes only wake). */
    atomic_store_explicit(&w.cell->word, W_SLEEP, memory_order_relaxed);
    enqueue(&w);
    g->waited = true;
    int r = TAKE_NONE;
    for (;;) {
        uint32_t word = atomic_load_explicit(&w.cell->word, memory_order_acquire);
        if (word == W_HANDED || word >= W_CLAIMED) {
            pthread_mutex_unlock(&P.mu);
            if (word != W_HANDED) {
                await_served(w.cell);
                return TAKE_SERVED;
            }
            *out = w.handed;
            return TAKE_HANDED;
        }
        if (atomic_load(&P.state) != POOL_RUNNING || P.epoch != w.epoch) {
            r = dbpool__fail(DBPOOL_ECLOSED, "the pool was closed while waiting");
            break;
        }
        uint64_t now = dbpool__now_ns();
        if (P.qhead == &w && (r = try_take(out, now)) != TAKE_NONE)
            break;
        if (now >= g->deadline) {
            r = fail_timeout(g);
            break;
        }
        uint64_t until = g->deadline;
        w.timed = P.qhead == &w && now < w.since_ns + P.starve_ns;
        if (w.timed && w.since_ns + P.starve_ns < until)
            until = w.since_ns + P.starve_ns;
        struct timespec ts = dbpool__ts(until);
        atomic_store_explicit(&w.cell->word, W_SLEEP, memory_order_relaxed);
        pthread_mutex_unlock(&P.mu);
        /* Absolute CLOCK_MONOTONIC timeout; EINTR, EAGAIN and timeouts all lead back to the
         * checks above. */
        futex(&w.cell->word, FUTEX_WAIT_BITSET_PRIVATE, W_SLEEP, &ts);
        word = atomic_load_explicit(&w.cell->word, memory_order_acquire);
        if (word == W_HANDED) {
            *out = w.handed; /* written before W_HANDED was stored */
            return TAKE_HANDED;
        }
        if (word >= W_CLAIMED) {
            await_served(w.cell);
            return TAKE_SERVED;
        }
        pthread_mutex_lock(&P.mu);
    }
    dequeue(&w);
    pass_kick_on(); /* the new head may take what is left (a second idle connection, a slot) */
    return r;
}

static int get_once(struct dbpool_conn **out, struct getctx *g, struct dbpool__req *req)
{
    pthread_mutex_lock(&P.mu);
    uint64_t now = coarse_ns();
    int r = TAKE_NONE;
    if (atomic_load(&P.state) != POOL_RUNNING)
        r = dbpool__fail(DBPOOL_ECLOSED, "the pool is closed");
    else if (!P.qhead || (P.starve_ns && elapsed(dbpool__now_ns(), P.qhead->since_ns) <= P.starve_ns))
        r = try_take(out, now); /* barging allowed while no waiter starves */
    if (r == TAKE_NONE) {
        go_precise(g);
        r = wait_turn(out, g, req);
    }
    if (r == TAKE_SERVED)
        return r; /* dbpool__claim_request() did the accounting; P.mu is not held */
    if (r == TAKE_HANDED)
        return TAKE_READY; /* publish() did the accounting; P.mu is not held */
    if (r == TAKE_READY) {
        if (g->waited)
            now = dbpool__now_ns();
        account_wait(g, now);
        mark_borrowed(*out, g->file, g->line, pthread_self(), now);
        P.st.gets++;
    }
    pthread_mutex_unlock(&P.mu);
    return r;
}

static _Thread_local uint64_t last_wait_ns;

uint64_t dbpool_last_wait_ns(void) { return last_wait_ns; }

void dbpool__last_wait_clear(void) { last_wait_ns = 0; }

/* Callers have set last_wait_ns to 0. */
static int get_common(dbpool_conn **out, const char *file, int line, struct dbpool__req *req)
{
    int rc = ensure_running(NULL);
    if (rc != 0)
        return rc;
    struct getctx g = {.file = file, .line = line, .start = coarse_ns()};
    g.deadline = g.start + (uint64_t)P.opts.acquire_timeout_ms * 1000000u;
    for (;;) {
        struct dbpool_conn *c = NULL;
        int r = get_once(&c, &g, req);
        if (r < 0) {
            if (g.waited)
                last_wait_ns = elapsed(dbpool__now_ns(), g.start);
            return r;
        }
        if (r == TAKE_SERVED) {
            last_wait_ns = g.wait_ns; /* written by the claimer before W_CLAIMED */
            return DBPOOL__SERVED;
        }
        if (r != TAKE_READY)
            go_precise(&g);
        if (r == TAKE_OPEN) {
            if ((rc = finish_open(c, &g)) > 0)
                continue; /* an idle connection appeared while waiting for the budget */
            if (rc != 0)
                return rc;
        } else if (r == TAKE_CHECK) {
            if (!check_idle(c, dbpool__now_ns())) {
                close_owned(c, c->expires_ns && dbpool__now_ns() >= c->expires_ns ? R_LIFETIME : R_BROKEN);
                continue; /* replaced transparently, inside the same deadline */
            }
            pthread_mutex_lock(&P.mu);
            if ((rc = hand_out(c, &g, "checking a connection")) != 0)
                return rc;
        }
        last_wait_ns = g.wait_ns;
        *out = c;
        return 0;
    }
}

int dbpool_get_at(dbpool_conn **out, const char *file, int line)
{
    dbpool__clear_error();
    last_wait_ns = 0;
    if (!out)
        return dbpool__fail(DBPOOL_EINVAL, "dbpool_get: out is NULL");
    *out = NULL;
    return get_common(out, file, line, NULL);
}

int dbpool__get_or_serve(dbpool_conn **out, struct dbpool__req *req, const char *file, int line)
{
    *out = NULL;
    return get_common(out, file, line, req);
}

#undef dbpool_get
int dbpool_get(dbpool_conn **out) { return dbpool_get_at(out, NULL, 0); }

/* ---- handle validation --------------------------------------------------------------------- */

static bool in_array(const struct dbpool__pool_array *a, const void *p)
{
    if (!a)
        return false;
    uintptr_t lo = (uintptr_t)a->slots, hi = lo + a->n * sizeof(struct dbpool_conn), x = (uintptr_t)p;
    return x >= lo && x < hi && (x - lo) % sizeof(struct dbpool_conn) == 0;
}

/* Under P.mu: p is a slot of the current array or of a retired one. */
static bool known_handle_locked(const void *p)
{
    bool found = in_array(atomic_load(&P.arr), p);
    for (struct dbpool__pool_array *a = P.retired; a && !found; a = a->next)
        found = in_array(a, p);
    return found;
}

/* Lock-free for the current array: a handle its caller holds borrowed keeps that array alive
 * (a close retires an array with borrowed slots instead of freeing it). */
static bool known_handle(const void *p)
{
    if (in_array(atomic_load(&P.arr), p))
        return true;
    pthread_mutex_lock(&P.mu);
    bool found = known_handle_locked(p);
    pthread_mutex_unlock(&P.mu);
    return found;
}

static int misuse(const char *op, const void *p, const char *why)
{
    dbpool__log(DBPOOL_LOG_ERROR, "%s(%p): %s", op, p, why);
    return dbpool__fail(DBPOOL_EMISUSE, "%s(%p): %s", op, p, why);
}

struct dbpool_conn *dbpool__conn_check(dbpool_conn *c, const char *op)
{
    if (!c) {
        dbpool__fail(DBPOOL_EINVAL, "%s: connection is NULL", op);
        return NULL;
    }
    if (!known_handle(c)) {
        misuse(op, c, "not a connection of this pool (foreign pointer or from a closed pool)");
        return NULL;
    }
    if (get_state(c) != DBPOOL__SLOT_BUSY) {
        misuse(op, c, "connection is not borrowed (already released?)");
        return NULL;
    }
    return c;
}

struct st_mysql *dbpool_mysql(dbpool_conn *conn)
{
    struct dbpool_conn *c = dbpool__conn_check(conn, "dbpool_mysql");
    return c ? c->mysql : NULL;
}

unsigned long dbpool_conn_id(dbpool_conn *conn)
{
    struct dbpool_conn *c = dbpool__conn_check(conn, "dbpool_conn_id");
    return c ? c->thread_id : 0;
}

void dbpool_conn_discard(dbpool_conn *conn)
{
    struct dbpool_conn *c = dbpool__conn_check(conn, "dbpool_conn_discard");
    if (c)
        c->discard = true;
}

/* ---- release -------------------------------------------------------------------------------- */

/* Under P.mu: give a healthy connection to the next caller. Returns the cell of the waiter it
 * was handed to, for handoff_wake() once P.mu is released, or NULL. */
static struct wcell *publish(struct dbpool_conn *c, uint64_t now)
{
    struct waiter *h = P.qhead;
    if (h) {
        uint64_t precise = dbpool__now_ns();
        if (elapsed(precise, h->since_ns) > P.starve_ns) {
            /* Starvation mode: hand it over, so later arrivals cannot overtake this waiter. */
            dequeue(h);
            h->handed = c;
            account_wait(h->g, precise);
            mark_borrowed(c, h->g->file, h->g->line, h->owner, precise);
            P.st.gets++;
            struct wcell *cell = h->cell;
            /* From this store on, h may return without P.mu (it may be awake already): no
             * access to *h after it. */
            atomic_store_explicit(&cell->word, W_HANDED, memory_order_release);
            pass_kick_on(); /* h may have been kicked for a slot or idle connection */
            return cell;
        }
    }
    push_idle(c, now);
    if (h && !h->timed)
        kick(h); /* a head without its own timer must look; a timed one takes it when due */
    return NULL;
}

static bool needs_io(struct dbpool_conn *c, uint64_t now)
{
    /* The borrower may have met a dead-session error on the raw handle (2013 after a KILL):
     * such a connection is broken, not merely in need of a reset. */
    if (dbpool__errclass(mysql_errno(c->mysql)) == DBPOOL__ERR_DEAD)
        c->discard = true;
    if (c->discard || P.opts.reset_on_release || (c->expires_ns && now >= c->expires_ns))
        return true;
    if (c->mysql->status != MYSQL_STATUS_READY)
        return true;
    return (c->mysql->server_status & SERVER_STATUS_IN_TRANS) != 0; /* from the last OK packet */
}

struct wcell *dbpool__claim_request(struct dbpool_conn *c, uint64_t *since_ns, struct dbpool__req **req)
{
    if (!P.share_ns || !atomic_load_explicit(&P.nreq, memory_order_relaxed))
        return NULL;
    pthread_mutex_lock(&P.mu);
    struct waiter *h = P.qhead;
    struct wcell *cell = NULL;
    /* Capacity is free (an idle connection, an unopened slot): the head runs its statement
     * itself, in parallel, instead of after this thread's. A thread that holds another
     * connection shares no turn: the statement could wait for a lock that connection holds (a
     * row lock of its open transaction, GET_LOCK, a metadata lock), which the thread cannot
     * release before it returns, a lock wait the server cannot see as a deadlock. */
    bool spare = P.nidle || P.open < P.opts.limit;
    if (h && h->req && !spare && atomic_load(&P.state) == POOL_RUNNING && h->epoch == P.epoch &&
        c->arr == atomic_load(&P.arr) && get_state(c) == DBPOOL__SLOT_BUSY &&
        !needs_io(c, coarse_ns()) && !held_by_me(c)) {
        uint64_t now = dbpool__now_ns();
        if (!*since_ns)
            *since_ns = now;
        if (elapsed(now, *since_ns) < P.share_ns) {
            dequeue(h);
            account_wait(h->g, now);
            P.st.served++;
            /* Timeout errors and leak reports name the caller whose statement runs. */
            c->site_file = h->g->file;
            c->site_line = h->g->line;
            c->borrowed_ns = now;
            c->leak_reported = false;
            *req = h->req;
            cell = h->cell;
            /* From here h waits for W_SERVED and touches nothing of the pool. */
            atomic_store_explicit(&cell->word, W_CLAIMED, memory_order_release);
            pass_kick_on(); /* h may have been kicked for a slot or idle connection */
        }
    } else if (spare) {
        pass_kick_on();
    }
    pthread_mutex_unlock(&P.mu);
    return cell;
}

void dbpool__request_done(struct wcell *cell)
{
    atomic_store_explicit(&cell->word, W_SERVED, memory_order_release);
    futex(&cell->word, FUTEX_WAKE_PRIVATE, 1, NULL);
}

static void release_slow(struct dbpool_conn *c, bool live_array)
{
    uint64_t now = dbpool__now_ns();
    int reason = R_SHUTDOWN;
    if (live_array && !c->discard && !(c->expires_ns && now >= c->expires_ns)) {
        if (dbpool__conn_reset(c, &P.opts, P.opts.reset_on_release) == 0) {
            pthread_mutex_lock(&P.mu);
            if (atomic_load(&P.state) == POOL_RUNNING && c->arr == atomic_load(&P.arr)) {
                struct wcell *h = publish(c, coarse_ns());
                pthread_mutex_unlock(&P.mu);
                handoff_wake(h);
                return;
            }
            pthread_mutex_unlock(&P.mu);
        } else {
            dbpool__log(DBPOOL_LOG_INFO, "connection %lu discarded on release: %s", c->thread_id, dbpool_last_error());
            reason = R_RESET;
        }
    } else if (live_array) {
        reason = c->discard ? R_BROKEN : R_LIFETIME;
    }
    close_owned(c, reason);
}

void dbpool_release(dbpool_conn *conn)
{
    if (!conn)
        return;
    struct dbpool_conn *c = conn;
    /* Checked under the lock: a double release may race a close that frees the array. */
    pthread_mutex_lock(&P.mu);
    if (!known_handle_locked(c)) {
        pthread_mutex_unlock(&P.mu);
        misuse("dbpool_release", c, "not a connection of this pool (foreign pointer or from a closed pool)");
        return;
    }
    if (get_state(c) != DBPOOL__SLOT_BUSY) {
        pthread_mutex_unlock(&P.mu);
        misuse("dbpool_release", c, "connection is not borrowed (double release?)");
        return;
    }
    bool current = c->arr == atomic_load(&P.arr);
    if (current)
        P.busy--;
    uint64_t now = coarse_ns();
    bool live = current && atomic_load(&P.state) == POOL_RUNNING;
    if (live && !needs_io(c, now)) {
        struct wcell *h = publish(c, now);
        pthread_mutex_unlock(&P.mu);
        handoff_wake(h);
        return;
    }
    set_state(c, DBPOOL__SLOT_RETURNING);
    pthread_mutex_unlock(&P.mu);
    release_slow(c, live);
}

/* ---- health check and statistics -------------------------------------------------------------- */

int dbpool_health_check(unsigned *rtt_us)
{
    dbpool_conn *c;
    int rc = dbpool_get_at(&c, __FILE__, __LINE__);
    if (rc != 0)
        return rc;
    uint64_t t0 = dbpool__now_ns();
    rc = dbpool__conn_ping(c);
    if (rtt_us)
        *rtt_us = (unsigned)((dbpool__now_ns() - t0) / 1000);
    dbpool_release(c);
    return rc;
}

/* Under P.mu: the pool's host budget (NULL if none), pinned for use outside the lock: a close
 * frees it only once every pin is gone (budget_unpin, which takes P.mu). */
static dbpool__budget *budget_pin(void)
{
    if (P.budget)
        P.budget_pins++;
    return P.budget;
}

static void budget_unpin(void)
{
    pthread_mutex_lock(&P.mu);
    if (--P.budget_pins == 0)
        pthread_cond_broadcast(&P.drained);
    pthread_mutex_unlock(&P.mu);
}

int dbpool_stats_get_sized(dbpool_stats *out, size_t size)
{
    dbpool__clear_error();
    if (!out || size == 0)
        return dbpool__fail(DBPOOL_EINVAL, "dbpool_stats_get: out is NULL");
    dbpool_stats s;
    memset(&s, 0, sizeof s);
    pthread_mutex_lock(&P.mu);
    bool running = atomic_load(&P.state) != POOL_UNINIT;
    s.limit = running ? P.opts.limit : 0;
    s.open = P.open;
    s.idle = P.nidle;
    s.in_use = P.busy;
    s.waiting = P.waiting;
    s.peak_open = P.peak;
    s.gets = P.st.gets;
    s.waits = P.st.waits;
    s.wait_ns_total = P.st.wait_ns_total;
    s.wait_ns_max = P.st.wait_ns_max;
    s.timeouts = P.st.timeouts;
    s.queue_full = P.st.queue_full;
    s.created = P.st.created;
    s.closed_idle = P.st.closed[R_IDLE];
    s.closed_lifetime = P.st.closed[R_LIFETIME];
    s.closed_broken = P.st.closed[R_BROKEN];
    s.closed_reset = P.st.closed[R_RESET];
    s.closed_shutdown = P.st.closed[R_SHUTDOWN];
    s.connect_errors_transient = __atomic_load_n(&P.st.conn_transient, __ATOMIC_RELAXED);
    s.connect_errors_permanent = __atomic_load_n(&P.st.conn_permanent, __ATOMIC_RELAXED);
    s.leaks_reported = P.st.leaks;
    s.served = P.st.served;
    dbpool__budget *b = running ? budget_pin() : NULL;
    s.budget_size = b ? P.opts.host_budget : 0;
    pthread_mutex_unlock(&P.mu);
    /* Budget usage reads lock files: outside the pool lock. */
    if (b) {
        size_t n = 0;
        dbpool__budget_usage(b, &s.budget_used, &s.budget_held, NULL, 0, &n);
        budget_unpin();
    }
    memcpy(out, &s, size < sizeof s ? size : sizeof s);
    return 0;
}

int dbpool_budget_holders(long *pids, size_t cap, size_t *n)
{
    dbpool__clear_error();
    if (!n || (cap && !pids))
        return dbpool__fail(DBPOOL_EINVAL, "dbpool_budget_holders: NULL argument");
    int rc = ensure_running(NULL);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&P.mu);
    bool running = atomic_load(&P.state) == POOL_RUNNING;
    dbpool__budget *b = running ? budget_pin() : NULL;
    pthread_mutex_unlock(&P.mu);
    if (!running)
        return dbpool__fail(DBPOOL_ECLOSED, "the pool is closing");
    if (!b)
        return dbpool__fail(DBPOOL_ECONFIG, "no host budget configured (DB_HOST_BUDGET=0)");
    unsigned used, held;
    rc = dbpool__budget_usage(b, &used, &held, pids, cap, n);
    budget_unpin();
    return rc;
}

/* ---- housekeeping (keeper thread) ---------------------------------------------------------- */

static void report_leaks(uint64_t now, uint64_t *next)
{
    uint64_t thr = (uint64_t)P.opts.leak_threshold_ms * 1000000u;
    struct dbpool__pool_array *a = atomic_load(&P.arr);
    for (unsigned i = 0; thr && a && i < a->n; i++) {
        struct dbpool_conn *c = &a->slots[i];
        if (get_state(c) != DBPOOL__SLOT_BUSY || c->leak_reported)
            continue;
        if (elapsed(now, c->borrowed_ns) >= thr) {
            c->leak_reported = true;
            P.st.leaks++;
            dbpool__log(DBPOOL_LOG_WARN, "connection %lu held for %llu ms (DB_LEAK_THRESHOLD_MS=%u), "
                        "borrowed at %s:%d and not released",
                        c->thread_id, (unsigned long long)(elapsed(now, c->borrowed_ns) / 1000000u),
                        P.opts.leak_threshold_ms, c->site_file ? c->site_file : "?", c->site_line);
        } else if (c->borrowed_ns + thr < *next) {
            *next = c->borrowed_ns + thr;
        }
    }
}

/* Under P.mu: unlink idle connections past their idle timeout or lifetime into *victims. */
static unsigned collect_expired(uint64_t now, uint64_t *next, struct dbpool_conn **victims, int *reasons, unsigned cap)
{
    uint64_t idle_ns = (uint64_t)P.opts.idle_timeout_ms * 1000000u;
    unsigned n = 0;
    for (struct dbpool_conn **pp = &P.idle; *pp;) {
        struct dbpool_conn *c = *pp;
        bool idle_out = idle_ns && elapsed(now, c->last_used_ns) >= idle_ns;
        bool life_out = c->expires_ns && now >= c->expires_ns;
        if ((idle_out || life_out) && n < cap) {
            *pp = c->next;
            P.nidle--;
            set_state(c, DBPOOL__SLOT_CLOSING);
            reasons[n] = life_out ? R_LIFETIME : R_IDLE;
            victims[n++] = c;
            continue;
        }
        if (idle_ns && c->last_used_ns + idle_ns < *next)
            *next = c->last_used_ns + idle_ns;
        if (c->expires_ns && c->expires_ns < *next)
            *next = c->expires_ns;
        pp = &c->next;
    }
    return n;
}

unsigned dbpool__pool_housekeep(void)
{
    struct dbpool_conn *victims[64];
    int reasons[64];
    pthread_mutex_lock(&P.mu);
    /* The clock is read under the lock: a get or release stamping its time meanwhile would
     * otherwise be "in the future" and make the differences below wrap. */
    uint64_t now = dbpool__now_ns(), next = now + 1000000000ull;
    if (atomic_load(&P.state) != POOL_RUNNING) {
        pthread_mutex_unlock(&P.mu);
        return 1000;
    }
    unsigned n = collect_expired(now, &next, victims, reasons, 64);
    report_leaks(now, &next);
    pthread_mutex_unlock(&P.mu);
    for (unsigned i = 0; i < n; i++) {
        dbpool__log(DBPOOL_LOG_DEBUG, "closing connection %lu (%s)", victims[i]->thread_id,
                    reasons[i] == R_IDLE ? "idle timeout" : "max lifetime");
        dbpool__conn_close(victims[i]);
        unreserve(victims[i], reasons[i]);
    }
    if (n == 64)
        return 0;
    now = dbpool__now_ns();
    return next > now ? (unsigned)((next - now) / 1000000u) + 1 : 0;
}

/* ---- close ------------------------------------------------------------------------------------ */

static int lock_timed(unsigned ms)
{
    if (ms == 0)
        return pthread_mutex_lock(&P.mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return pthread_mutex_timedlock(&P.mu, &ts);
}

static bool occupied(const struct dbpool_conn *c) { return get_state((struct dbpool_conn *)c) != DBPOOL__SLOT_FREE; }

/* Slots not yet FREE; with `pending_only`, those not yet forced either. */
static unsigned count_slots(const struct dbpool__pool_array *a, bool pending_only)
{
    unsigned n = 0;
    for (unsigned i = 0; i < a->n; i++)
        n += occupied(&a->slots[i]) && !(pending_only && a->slots[i].killed_on_close);
    return n;
}

/* Under P.mu: wait up to ms for count_slots(a, pending_only) to reach 0. */
static unsigned wait_drained(struct dbpool__pool_array *a, unsigned ms, bool pending_only)
{
    uint64_t dl = dbpool__now_ns() + (uint64_t)ms * 1000000u;
    struct timespec ts = dbpool__ts(dl);
    unsigned left;
    while ((left = count_slots(a, pending_only)) > 0 && dbpool__now_ns() < dl)
        pthread_cond_clockwait(&P.drained, &P.mu, CLOCK_MONOTONIC, &ts);
    return left;
}

static bool forceable(const struct dbpool_conn *c, bool own_only, pthread_t me)
{
    int s = get_state((struct dbpool_conn *)c);
    if ((s != DBPOOL__SLOT_BUSY && s != DBPOOL__SLOT_RETURNING) || c->killed_on_close)
        return false;
    return !own_only || (s == DBPOOL__SLOT_BUSY && pthread_equal(c->owner, me));
}

/* Under P.mu. End a borrowed session without touching the borrower's MYSQL (it may be in use
 * by another thread): a raw COM_QUIT on a plain socket lets the server end the session
 * cleanly once its statement is over; shutdown() makes the borrower's next I/O fail.
 * Doing this under the lock guarantees fd_dup is not being closed concurrently (a releaser
 * moves its slot to CLOSING under the lock before closing). Both calls are local and
 * non-blocking. */
static void quit_socket(struct dbpool_conn *c)
{
    static const unsigned char com_quit[5] = {1, 0, 0, 0, 1};
    if (c->fd_dup < 0)
        return;
    if (!c->tls && send(c->fd_dup, com_quit, sizeof com_quit, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        /* the socket is already gone: nothing more to say on it */
    }
    shutdown(c->fd_dup, SHUT_RDWR);
}

/* Under P.mu (released around the KILL QUERY connection): stop the statements of borrowed
 * connections (a closed socket does not stop a running statement) and end their sessions.
 * `own_only`: only those borrowed by the calling thread, which cannot be waited for. */
static void force_borrowed(struct dbpool__pool_array *a, bool own_only)
{
    unsigned long ids[256];
    size_t n = 0;
    pthread_t me = pthread_self();
    for (unsigned i = 0; i < a->n && n < 256; i++)
        if (forceable(&a->slots[i], own_only, me) && a->slots[i].thread_id)
            ids[n++] = a->slots[i].thread_id;
    if (n == 0)
        return;
    dbpool__options o = P.opts;
    pthread_mutex_unlock(&P.mu);
    dbpool__conn_kill_queries(&o, ids, n);
    pthread_mutex_lock(&P.mu);
    for (unsigned i = 0; i < a->n; i++) {
        struct dbpool_conn *c = &a->slots[i];
        if (forceable(c, own_only, me)) {
            quit_socket(c);
            c->killed_on_close = true;
        }
    }
}

static void close_idle_all(void)
{
    struct dbpool_conn *c;
    pthread_mutex_lock(&P.mu);
    while ((c = pop_idle()) != NULL) {
        set_state(c, DBPOOL__SLOT_CLOSING);
        pthread_mutex_unlock(&P.mu);
        dbpool__conn_close(c);
        if (c->budget_slot >= 0)
            dbpool__budget_release(c->arr->budget, c->budget_slot);
        c->budget_slot = -1;
        pthread_mutex_lock(&P.mu);
        slot_freed(c, R_SHUTDOWN);
    }
    pthread_mutex_unlock(&P.mu);
}

static void wake_all_waiters(void)
{
    for (struct waiter *w = P.qhead; w; w = w->next)
        kick(w);
}

/* Under P.mu: forget the array; free it only when no slot can still be used. */
static dbpool__budget *detach_array(struct dbpool__pool_array *a)
{
    unsigned left = count_slots(a, false);
    dbpool__budget *b = NULL;
    if (left) {
        /* Borrowers still hold slots: keep the array (and its budget); their release closes
         * the slot there. */
        a->next = P.retired;
        P.retired = a;
        dbpool__log(DBPOOL_LOG_WARN, "pool closed with %u connection(s) still borrowed", left);
    } else {
        b = a->budget;
        free(a);
    }
    atomic_store(&P.arr, NULL);
    P.budget = NULL;
    P.idle = NULL;
    P.open = P.nidle = P.busy = 0;
    return b;
}

/* Under P.mu, the pool CLOSING: another thread (the library's thread, after a signal) is
 * closing it. Wait until that close is over, so that an exit() or a dbpool_close() meanwhile
 * does not return while the close still talks to the server (exit() would go on and end the
 * process under it). With a lock timeout (the exit hook) the wait is bounded too: by the grace
 * period plus that timeout plus 5 s for the forced stop. Returns 0, or -1 on timeout. */
static int wait_closed(unsigned grace_ms, unsigned lock_timeout_ms)
{
    uint64_t dl = dbpool__now_ns() + ((uint64_t)grace_ms + lock_timeout_ms + 5000u) * 1000000u;
    struct timespec ts = dbpool__ts(dl);
    while (atomic_load(&P.state) == POOL_CLOSING) {
        if (!lock_timeout_ms)
            pthread_cond_wait(&P.drained, &P.mu);
        else if (dbpool__now_ns() >= dl)
            return -1;
        else
            pthread_cond_clockwait(&P.drained, &P.mu, CLOCK_MONOTONIC, &ts);
    }
    return 0;
}

int dbpool__pool_shutdown(unsigned grace_ms, unsigned lock_timeout_ms, int reason)
{
    (void)reason;
    if (lock_timed(lock_timeout_ms) != 0)
        return DBPOOL_ETIMEDOUT;
    if (atomic_load(&P.state) == POOL_CLOSING && wait_closed(grace_ms, lock_timeout_ms) != 0) {
        pthread_mutex_unlock(&P.mu);
        return DBPOOL_ETIMEDOUT;
    }
    if (atomic_load(&P.state) != POOL_RUNNING) {
        pthread_mutex_unlock(&P.mu);
        return 0;
    }
    atomic_store(&P.state, POOL_CLOSING);
    P.epoch++;
    for (struct bwaiter *w = P.bwait, *next; w; w = next) {
        next = w->next;
        bwake(w, BW_CLOSING);
    }
    P.bwait = NULL;
    wake_all_waiters();
    pthread_mutex_unlock(&P.mu);
    close_idle_all();
    pthread_mutex_lock(&P.mu);
    struct dbpool__pool_array *a = atomic_load(&P.arr);
    force_borrowed(a, true); /* waiting for ourselves would only waste the grace */
    if (wait_drained(a, grace_ms, true) > 0) {
        force_borrowed(a, false);
        wait_drained(a, 200, false); /* let borrowers that got the error release */
    }
    dbpool__budget *b = detach_array(a);
    /* A stats reader still counts the budget's slots: wait for it, except in the exit hook
     * (a lock timeout), which leaves the budget to the process's end rather than wait. */
    while (b && P.budget_pins && !lock_timeout_ms)
        pthread_cond_wait(&P.drained, &P.mu);
    if (P.budget_pins)
        b = NULL;
    atomic_store(&P.state, POOL_UNINIT);
    pthread_cond_broadcast(&P.drained); /* for wait_closed() */
    pthread_mutex_unlock(&P.mu);
    dbpool__budget_close(b);
    return 0;
}

void dbpool_close(void)
{
    if (dbpool__keeper_is_self())
        return; /* the keeper closes through dbpool__pool_shutdown itself */
    pthread_mutex_lock(&init_mu);
    dbpool__pool_shutdown(P.opts.shutdown_grace_ms, 0, R_SHUTDOWN);
    /* With no pool, signals behave as if the library were not there (the handler finds no
     * keeper and chains); the next start starts the keeper again. */
    dbpool__keeper_stop();
    pthread_mutex_unlock(&init_mu);
}

/* ---- fork ------------------------------------------------------------------------------------- */

void dbpool__pool_atfork_prepare(void)
{
    pthread_mutex_lock(&init_mu);
    pthread_mutex_lock(&P.mu);
    pthread_mutex_lock(&cell_mu);
}

void dbpool__pool_atfork_parent(void)
{
    pthread_mutex_unlock(&cell_mu);
    pthread_mutex_unlock(&P.mu);
    pthread_mutex_unlock(&init_mu);
}

static void forget_array(struct dbpool__pool_array *a, int devnull)
{
    for (unsigned i = 0; a && i < a->n; i++)
        dbpool__conn_forget_in_child(&a->slots[i], devnull);
}

/* The child owns none of the parent's sessions: close our copies of their sockets without a
 * byte sent, drop the pool (its memory is left as is: a borrowed handle of the forking thread
 * may still point into it), and start afresh on first use. Only async-signal-safe calls. */
void dbpool__pool_atfork_child(void)
{
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    struct dbpool__pool_array *a = atomic_load(&P.arr);
    forget_array(a, devnull);
    for (struct dbpool__pool_array *r = P.retired; r; r = r->next)
        forget_array(r, devnull);
    if (devnull >= 0)
        close(devnull);
    if (a) {
        a->next = P.retired;
        P.retired = a;
    }
    dbpool__budget_forget_in_child(P.budget);
    for (struct dbpool__pool_array *r = P.retired; r; r = r->next)
        if (r->budget != P.budget)
            dbpool__budget_forget_in_child(r->budget);
    P.budget = NULL;
    atomic_store(&P.arr, NULL);
    P.idle = NULL;
    P.open = P.nidle = P.busy = P.waiting = 0;
    P.qhead = P.qtail = NULL;
    atomic_store_explicit(&P.nreq, 0, memory_order_relaxed);
    P.bwait = NULL; /* threads of the parent */
    P.budget_pins = 0;
    pthread_cond_init(&P.drained, NULL); /* its copied state may count a parent's waiter */
    atomic_store(&P.state, POOL_UNINIT);
    __atomic_fetch_add(&dbpool__fork_generation, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&cell_mu); /* the cells of the parent's other threads stay unused */
    pthread_mutex_unlock(&P.mu);
    pthread_mutex_unlock(&init_mu);
}
