/*
 * dbpool_int.h - what the files of libdbpool share. Not installed.
 *
 * Names: dbpool__name for cross-file internals (hidden by -fvisibility=hidden and the
 * version script), static for file-local ones.
 *
 * Lock order: pool mutex (pool.c) -> nothing. No other lock is taken while it is held, and no
 * network or file I/O happens under it.
 */
#ifndef DBPOOL_INT_H
#define DBPOOL_INT_H

#include "dbpool.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <mysql.h>

#define DBPOOL__HIDDEN __attribute__((visibility("hidden")))

/* ---- options (config.c) ---------------------------------------------------------------- */

enum dbpool__ssl_mode {
    DBPOOL__SSL_DISABLED = 0,
    DBPOOL__SSL_PREFERRED,
    DBPOOL__SSL_REQUIRED,
    DBPOOL__SSL_VERIFY_CA,
    DBPOOL__SSL_VERIFY_IDENTITY
};

#define DBPOOL__STR_MAX 256   /* host, user, database */
#define DBPOOL__SECRET_MAX 512 /* password */
#define DBPOOL__PATH_MAX 4096  /* socket, TLS files, budget dir */

/* Validated configuration. Plain data: copying it is fine; nothing to free. */
typedef struct dbpool__options {
    /* connection */
    char host[DBPOOL__STR_MAX];
    unsigned port;
    char socket[DBPOOL__PATH_MAX];
    char user[DBPOOL__STR_MAX];
    char password[DBPOOL__SECRET_MAX];
    char database[DBPOOL__STR_MAX];
    /* pool */
    unsigned limit;
    unsigned acquire_timeout_ms;
    unsigned queue_limit;          /* 0 = unbounded */
    unsigned queue_overtake_us;    /* how long the oldest waiter may be overtaken; 0 = FIFO */
    unsigned query_share_us;       /* how long dbpool_query() may run queued callers' statements */
    unsigned idle_timeout_ms;
    unsigned max_lifetime_ms;      /* 0 = no limit */
    unsigned validate_after_ms;
    bool reset_on_release;
    unsigned leak_threshold_ms;    /* 0 = off */
    /* network and server */
    unsigned connect_timeout_ms;
    unsigned read_timeout_ms;
    unsigned write_timeout_ms;
    unsigned session_wait_timeout_s; /* 0 = leave the server's */
    /* TLS */
    int ssl_mode; /* enum dbpool__ssl_mode */
    char ssl_ca[DBPOOL__PATH_MAX];
    char ssl_cert[DBPOOL__PATH_MAX];
    char ssl_key[DBPOOL__PATH_MAX];
    /* process */
    bool signal_hooks;
    unsigned shutdown_grace_ms;
    unsigned host_budget;          /* 0 = off */
    char budget_dir[DBPOOL__PATH_MAX];
    int log_level;                 /* enum dbpool_log_level */
    /* set by the pool at start: "<pid>-<n>", sent as the dbpool_pool_id connection attribute */
    char pool_id[32];
    /* where the file came from, for messages */
    char env_file[DBPOOL__PATH_MAX];
} dbpool__options;

/* Set every option to its default. */
DBPOOL__HIDDEN void dbpool__config_defaults(dbpool__options *o);

/* Apply the .env text in buf[0..len) on top of *o (dotenv rules, see config.c). `name` is the
 * file name used in messages. Sets the error text and returns DBPOOL_ECONFIG on the first
 * error; warns (through dbpool__log) on unknown DB_* keys. Reads nothing else. */
DBPOOL__HIDDEN int dbpool__config_parse_buffer(dbpool__options *o, const char *buf, size_t len,
                                               const char *name);

/* The whole load: defaults, then the file (`env_file` explicit and required; NULL means
 * $DBPOOL_ENV_FILE, required, or ./.env, optional), then the environment, then the
 * dbpool_config_set() overrides, then validation of the result. */
DBPOOL__HIDDEN int dbpool__config_load(dbpool__options *o, const char *env_file);

/* Cross-field checks (wait timeout vs idle/lifetime, TLS mode needs CA, ...). */
DBPOOL__HIDDEN int dbpool__config_validate(const dbpool__options *o);

/* dbpool_config_set() storage, used by dbpool__config_load. Drop all overrides. */
DBPOOL__HIDDEN void dbpool__config_clear_overrides(void);

/* ---- errors and logging (error.c) ------------------------------------------------------ */

/* Record `code` with detail text for the calling thread and return `code`. */
DBPOOL__HIDDEN int dbpool__fail(int code, const char *fmt, ...) DBPOOL_PRINTF(2, 3);
/* Same, also recording the server errno. */
DBPOOL__HIDDEN int dbpool__fail_server(int code, unsigned server_errno, const char *fmt, ...)
    DBPOOL_PRINTF(3, 4);
/* Clear the calling thread's error (start of each public call that can fail). */
DBPOOL__HIDDEN void dbpool__clear_error(void);

DBPOOL__HIDDEN void dbpool__log(int level, const char *fmt, ...) DBPOOL_PRINTF(2, 3);
/* fork (hooks.c): hold the logger's lock across fork(); release it in the parent and child. */
DBPOOL__HIDDEN void dbpool__log_atfork_prepare(void);
DBPOOL__HIDDEN void dbpool__log_atfork_release(void);
/* fork (hooks.c): the same for dbpool_config_set()'s lock. */
DBPOOL__HIDDEN void dbpool__config_atfork_prepare(void);
DBPOOL__HIDDEN void dbpool__config_atfork_release(void);
DBPOOL__HIDDEN void dbpool__set_log_level(int level);
DBPOOL__HIDDEN int dbpool__log_enabled(int level);

/* ---- time -------------------------------------------------------------------------------- */
static inline uint64_t dbpool__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
/* A CLOCK_MONOTONIC timespec for ns since the monotonic epoch. */
static inline struct timespec dbpool__ts(uint64_t ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    return ts;
}
/* Random number in [0, n) for jitter (thread-safe, not for security). */
DBPOOL__HIDDEN uint32_t dbpool__rand(uint32_t n);

/* ---- connections (conn.c) --------------------------------------------------------------- */

enum dbpool__slot_state {
    DBPOOL__SLOT_FREE = 0, /* no connection */
    DBPOOL__SLOT_OPENING,  /* reserved, being connected outside the lock */
    DBPOOL__SLOT_IDLE,     /* in the idle stack */
    DBPOOL__SLOT_CHECKING, /* taken from idle for a liveness check outside the lock */
    DBPOOL__SLOT_BUSY,     /* borrowed by the application */
    DBPOOL__SLOT_RETURNING,/* being rolled back / reset outside the lock */
    DBPOOL__SLOT_CLOSING   /* being closed outside the lock; still counts against the limit */
};

/* Connect-error classes (RELIABILITY.md). */
enum dbpool__err_class {
    DBPOOL__ERR_NONE = 0,
    DBPOOL__ERR_STATEMENT, /* connection healthy */
    DBPOOL__ERR_DEAD,      /* discard the connection */
    DBPOOL__ERR_TRANSIENT, /* at connect: retry with backoff */
    DBPOOL__ERR_PERMANENT  /* at connect: fail fast */
};

struct dbpool__pool_array;

/* One pool slot. The handle given to the application is a pointer to its slot. Fields marked
 * [lock] are guarded by the pool mutex; [owner] ones belong to whoever holds the slot in a
 * non-idle state (the borrower, or the thread doing I/O on it). */
struct dbpool_conn {
    uint32_t magic;              /* DBPOOL__CONN_MAGIC while the array lives */
    int state;                   /* [lock] enum dbpool__slot_state */
    MYSQL *mysql;                /* [owner] NULL when FREE */
    int fd_dup;                  /* [owner] F_DUPFD_CLOEXEC copy of the socket, -1 if none */
    unsigned long thread_id;     /* [owner] server connection id */
    uint64_t created_ns;         /* [owner] */
    uint64_t expires_ns;         /* [owner] created + lifetime with jitter, 0 = never */
    uint64_t last_used_ns;       /* [lock] when it became idle */
    uint64_t borrowed_ns;        /* [lock] when it was handed out */
    const char *site_file;       /* [lock] dbpool_get call site */
    int site_line;               /* [lock] */
    pthread_t owner;             /* [lock] borrowing thread */
    bool discard;                /* [owner] close instead of reuse */
    bool leak_reported;          /* [lock] */
    bool killed_on_close;        /* [lock] shut down by dbpool_close while borrowed */
    bool tls;                    /* [owner] the session is encrypted (SIGPIPE guard needed) */
    int budget_slot;             /* [owner] host-budget slot, -1 if none */
    void *stmt_cache;            /* [owner] query.c's per-connection cache */
    unsigned lock_errno;         /* [owner] 1213 or 1205 met since dbpool_transaction's attempt
                                  * began (query.c), 0 if none: decides the retry, whatever
                                  * the body called after the failure */
    struct dbpool_conn *next;    /* [lock] idle stack link */
    struct dbpool__pool_array *arr;
};
#define DBPOOL__CONN_MAGIC 0x6462636fu /* "dbco" */

/* Open slot->mysql per the options (timeouts, no reconnect, no LOCAL INFILE, TLS per mode,
 * connection attributes, session wait_timeout), set FD_CLOEXEC and keepalive, make fd_dup.
 * On failure the handle is closed, *err_class says what kind of failure, the error text is
 * set and a DBPOOL_E* code returned. */
DBPOOL__HIDDEN int dbpool__conn_open(struct dbpool_conn *c, const dbpool__options *o,
                                     int *err_class);
/* Close cleanly (COM_QUIT) and forget; safe on a FREE slot. Clears the statement cache. */
DBPOOL__HIDDEN void dbpool__conn_close(struct dbpool_conn *c);
/* Free poll() liveness check: 1 alive, 0 dead. */
DBPOOL__HIDDEN int dbpool__conn_alive(struct dbpool_conn *c);
/* mysql_ping with the read timeout: 0 alive, else a DBPOOL_E* code. */
DBPOOL__HIDDEN int dbpool__conn_ping(struct dbpool_conn *c);
/* Make the connection fit for the next borrower: rollback of an open transaction, or a full
 * reset (+ session settings) when `full`. 0 ok, else a DBPOOL_E* code (then discard). */
DBPOOL__HIDDEN int dbpool__conn_reset(struct dbpool_conn *c, const dbpool__options *o,
                                      bool full);
/* Classify a server/client error number. */
DBPOOL__HIDDEN int dbpool__errclass(unsigned server_errno);
/* After an error on c's handle: mark it for discard if the error means the session is dead
 * (by class, or because Connector/C already closed the socket). Returns the class. */
DBPOOL__HIDDEN int dbpool__conn_note_error(struct dbpool_conn *c);
/* Record the handle's last error (errno, SQLSTATE, message) as `code` in the thread's error
 * text, prefixed by `what`. Returns `code`. */
DBPOOL__HIDDEN int dbpool__fail_mysql(int code, MYSQL *m, const char *what);
/* In a fork child: close our copies of the socket without sending anything. The MYSQL
 * structure is left to be freed later: its fd now points at /dev/null. Async-signal-safe. */
DBPOOL__HIDDEN void dbpool__conn_forget_in_child(struct dbpool_conn *c, int devnull);
/* KILL QUERY <id> for each id over one short-lived extra connection. Best effort. */
DBPOOL__HIDDEN void dbpool__conn_kill_queries(const dbpool__options *o, const unsigned long *ids,
                                              size_t n);

/* ---- pool (pool.c) ----------------------------------------------------------------------- */

/* Validate a handle: returns it if it is a slot of a live or retired pool in `want` state,
 * else NULL with DBPOOL_EMISUSE recorded. Never dereferences a foreign pointer. */
DBPOOL__HIDDEN struct dbpool_conn *dbpool__conn_check(dbpool_conn *c, const char *op);
/* True from the start of initialisation until the pool is closed (dbpool_config_set refuses
 * then). */
DBPOOL__HIDDEN bool dbpool__pool_running(void);
/* The options of the running pool (NULL if none). Stable while a connection is borrowed. */
DBPOOL__HIDDEN const dbpool__options *dbpool__pool_options(void);
/* A dbpool_query() call waiting in the queue. A thread that holds a connection inside its
 * own dbpool_query() may take it off the queue (dbpool__claim_request) and run it on that
 * connection (query.c), which keeps the connection busy instead of moving it to the waiting
 * thread. The waiter's stack holds it; it stays put until the claimer calls
 * dbpool__request_done(). */
/* A copy of a thread's error (code, server errno, text), to carry it across calls that may
 * overwrite it, or to another thread (query.c: err_save, err_restore). */
typedef struct dbpool__saved_err {
    int code;
    unsigned server_errno;
    char text[1024];
} dbpool__saved_err;

struct dbpool__req {
    const char *sql;
    const dbpool_param *params;
    size_t nparams;
    dbpool_result **out;
    dbpool__saved_err err; /* the outcome, set by the thread that ran it: code 0 or an error */
};
struct wcell;
/* Returned by dbpool__get_or_serve when another thread ran the request (req->err holds the
 * outcome). */
#define DBPOOL__SERVED 1
/* dbpool_get_at() for dbpool_query(): 0 with *out (run it yourself), DBPOOL__SERVED, or an
 * error code. */
DBPOOL__HIDDEN int dbpool__get_or_serve(dbpool_conn **out, struct dbpool__req *req,
                                        const char *file, int line);
/* For the holder of c inside dbpool_query(), which started serving at *since_ns (0: not yet;
 * set at the first claim): the request at
 * the head of the queue, now claimed, and its waiter's cell; NULL when there is none, c may
 * not run another caller's statement (not ready, in a transaction, to be discarded or reset,
 * the pool closing) or DB_QUERY_SHARE_US since since_ns has passed. */
DBPOOL__HIDDEN struct wcell *dbpool__claim_request(struct dbpool_conn *c, uint64_t *since_ns,
                                                   struct dbpool__req **req);
/* dbpool_last_wait_ns() = 0, for calls that fail before waiting could start. */
DBPOOL__HIDDEN void dbpool__last_wait_clear(void);
/* The claimed request is done: wake its waiter. No access to the request after this. */
DBPOOL__HIDDEN void dbpool__request_done(struct wcell *cell);
/* Close the pool as dbpool_close() does, with `grace_ms` for borrowed connections and a
 * bounded wait for the lock (`lock_timeout_ms`, 0 = wait forever). Returns 0 when done,
 * DBPOOL_ETIMEDOUT when the lock could not be had. Used by hooks.c for exit and signals. */
DBPOOL__HIDDEN int dbpool__pool_shutdown(unsigned grace_ms, unsigned lock_timeout_ms,
                                         int reason);
/* Housekeeping pass (idle timeout, lifetime, leak reports); returns ms until the next. */
DBPOOL__HIDDEN unsigned dbpool__pool_housekeep(void);
/* fork handlers. */
DBPOOL__HIDDEN void dbpool__pool_atfork_prepare(void);
DBPOOL__HIDDEN void dbpool__pool_atfork_parent(void);
DBPOOL__HIDDEN void dbpool__pool_atfork_child(void);
/* Incremented in every fork child (relaxed atomic). */
DBPOOL__HIDDEN extern unsigned dbpool__fork_generation;

/* ---- keeper thread (keeper.c) ------------------------------------------------------------ */

/* Start the library thread if not running (idempotent). Returns 0 or DBPOOL_ESYS. */
DBPOOL__HIDDEN int dbpool__keeper_start(void);
/* Stop and join it (not from the keeper itself). */
DBPOOL__HIDDEN void dbpool__keeper_stop(void);
/* The write end of its self-pipe, for the signal handler (-1 if not running). */
DBPOOL__HIDDEN int dbpool__keeper_signal_fd(void);
DBPOOL__HIDDEN bool dbpool__keeper_is_self(void);
DBPOOL__HIDDEN void dbpool__keeper_atfork_child(void);
/* From a signal handler: queue the signal for the keeper. Async-signal-safe; -1 if no keeper. */
DBPOOL__HIDDEN int dbpool__keeper_post_signal(const siginfo_t *info);

/* ---- hooks (hooks.c) -------------------------------------------------------------------- */

/* Once per process: mysql_library_init, then atexit/at_quick_exit and pthread_atfork. */
DBPOOL__HIDDEN int dbpool__hooks_init(void);
/* Install the signal hooks (SIGINT, SIGTERM, SIGHUP) if not installed. */
DBPOOL__HIDDEN int dbpool__hooks_install_signals(void);
/* Called on the keeper thread with a signal delivered through the self-pipe. */
DBPOOL__HIDDEN void dbpool__hooks_on_signal(const siginfo_t *info);
/* Around I/O on a TLS connection: block SIGPIPE in this thread, then consume a SIGPIPE the
 * call raised and restore the mask (as libpq does), so a write to a killed TLS session cannot
 * kill a process whose SIGPIPE disposition is the default. */
typedef struct dbpool__sigpipe {
    bool active;
    bool was_pending;
    sigset_t old;
} dbpool__sigpipe;
DBPOOL__HIDDEN void dbpool__sigpipe_block(dbpool__sigpipe *s, const struct dbpool_conn *c);
DBPOOL__HIDDEN void dbpool__sigpipe_restore(dbpool__sigpipe *s);

/* ---- host budget (budget.c) ------------------------------------------------------------- */

typedef struct dbpool__budget dbpool__budget;

/* Open (creating if needed) the slot files for this server+user in o->budget_dir. Errors
 * (missing parent, no permission, a file in the way) return DBPOOL_ECONFIG with the path. */
DBPOOL__HIDDEN int dbpool__budget_open(dbpool__budget **out, const dbpool__options *o);
/* Take one slot, waiting with backoff until `deadline_ns` (dbpool__now_ns clock) or until
 * *cancel becomes non-zero. *slot receives its index. Returns 0, DBPOOL_EBUDGET (deadline),
 * DBPOOL_ECLOSED (cancelled), DBPOOL_ESYS. No lock of the pool is held by the caller. */
DBPOOL__HIDDEN int dbpool__budget_acquire(dbpool__budget *b, uint64_t deadline_ns,
                                          const int *cancel, int *slot);
DBPOOL__HIDDEN void dbpool__budget_release(dbpool__budget *b, int slot);
/* Slots in use host-wide, held by this process, and the holders' pids. */
DBPOOL__HIDDEN int dbpool__budget_usage(dbpool__budget *b, unsigned *used, unsigned *held,
                                        long *pids, size_t cap, size_t *n);
/* Release everything and free. */
DBPOOL__HIDDEN void dbpool__budget_close(dbpool__budget *b);
/* In a fork child: close the inherited descriptors without unlocking (never LOCK_UN: that would
 * release the parent's lock). Async-signal-safe. The object stays allocated; later
 * release/usage/close calls on it must be harmless no-ops on the closed descriptors.
 * All functions accept b == NULL as a no-op. */
DBPOOL__HIDDEN void dbpool__budget_forget_in_child(dbpool__budget *b);

/* ---- queries (query.c) ------------------------------------------------------------------ */

/* Free c->stmt_cache's statements (before reset or close; the handle is still open, or
 * `handle_dead` when statements must only be freed locally). */
DBPOOL__HIDDEN void dbpool__stmt_cache_clear(struct dbpool_conn *c, bool handle_dead);

#endif /* DBPOOL_INT_H */
