/*
 * budget.c - the host-wide connection budget (DB_HOST_BUDGET=N): all processes of the host that
 * use libdbpool with the same server, user and DB_HOST_BUDGET_DIR hold at most N connections.
 *
 * Slots are lock files. Slot i of a server+user is the file <dir>/<stem>.<i>.slot, and holding
 * it means holding flock(LOCK_EX) on it. Why flock:
 *  - the kernel drops the lock when the last descriptor of its open file description goes
 *    away, so a holder that dies (SIGKILL included) frees its slots at once; POSIX named
 *    semaphores leak a count on SIGKILL, SysV ones need SEM_UNDO and id management;
 *  - fcntl (POSIX) record locks belong to the process, so two threads of one process could not
 *    hold two slots of one file apart, and any close() of the file by the process (a library,
 *    a stat helper) would silently drop them. flock locks belong to the open file description.
 *
 * Invariants:
 *  - Each process opens every slot file once (b->fd[i]). flock on two open file descriptions
 *    conflicts even inside one process, but two threads sharing one descriptor would both
 *    "get" the lock: so b->held[] (under b->mu) decides which of our descriptors are in use
 *    between our threads, and flock decides between processes. held[i] is set only while
 *    b->fd[i] holds LOCK_EX, and cleared only after LOCK_UN.
 *  - Slot files are never unlinked or recreated: a process could otherwise lock a file that
 *    another has just replaced, and both would hold "slot i".
 *  - The holder writes its pid at offset 0 ("%10ld\n") after locking and blanks it before
 *    unlocking; the pid of a locked slot is the holder's (or blank for a moment while it is
 *    being taken; a holder killed mid-way leaves a stale pid in a FREE file, never read).
 *  - Every process must use the same N: a process configured with 8 also uses slots 5..7 that
 *    one configured with 5 never looks at. Open warns when it sees a slot beyond its N held.
 *
 * The key: one set of files per server+user, named
 *   <user>@<host>_<port>-<16 hex>   (TCP)      <user>@unix-<16 hex>   (Unix socket)
 * where the hex is FNV-1a 64 of the canonical "tcp:<host lowercased>:<port>\n<user>" or
 * "unix:<socket>\n<user>" (host "" or "localhost" means the Unix socket, as in Connector/C).
 * The readable prefix is sanitised and cut; the hash decides. "127.0.0.1" and "localhost" are
 * different keys even when they reach the same server: configure all processes alike.
 *
 * Permissions (documented in .env.example by config): a missing DB_HOST_BUDGET_DIR is created
 * 0700 (one user) if its parent exists; parents are never created. To share a budget between
 * users, create the directory with a common group and the setgid bit, e.g.
 *   install -d -m 2770 -g dbapps /run/dbpool-budget
 * Slot files are then created 0660 (0600 in a directory without group write) and get the
 * directory's group. A world-writable directory (anyone could replace the files), one owned by
 * another user (not root) that is not group-shared with setgid (the default lives in /tmp,
 * where anyone could create it first), a symbolic link as the directory, a relative path and
 * a non-directory are refused with DBPOOL_ECONFIG: never a silent fallback to "no budget". Keep the directory on a local file system: on NFS
 * or SMB, locks are emulated and a crashed client's locks live until its lease ends (a
 * warning is logged).
 *
 * Usage probes (stats, holders) open a separate description of each slot file and try
 * LOCK_SH|LOCK_NB: success means no process holds it (unlock at once). The alternative,
 * parsing /proc/locks, reads every lock of the host, matches inodes on device numbers that
 * differ on overlay and btrfs mounts, and shows pid 0 for holders outside our pid namespace.
 * The probe's shared lock lasts a few microseconds; an acquirer that meets it treats the slot
 * as busy and retries after its backoff.
 *
 * Waiting for a slot polls: one pass of LOCK_NB over the slots from a random start, then a sleep
 * with capped exponential backoff and jitter (1 ms doubling to 50 ms), until the deadline or
 * *cancel. Nothing in flock can wake a waiter when another process unlocks, and the jitter keeps
 * many waiting processes from polling in step. The sleep is a FUTEX_WAIT on *cancel: a
 * canceller that stores non-zero and calls FUTEX_WAKE_PRIVATE on the word ends the wait at
 * once; without the wake the cancel is seen within one backoff step (<= 50 ms).
 *
 * Lock order: b->mu is a leaf; callers hold no pool lock (no I/O under the pool mutex).
 * fork: the child closes its copies (dbpool__budget_forget_in_child) and never unlocks them.
 */
#include "dbpool_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <linux/futex.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#define BUDGET_MAX 100000u     /* DB_HOST_BUDGET's range in config.c */
#define PID_WIDTH 10
#define PID_LEN (PID_WIDTH + 1) /* "%10ld\n" */
#define BACKOFF_MIN_US 1000u
#define BACKOFF_MAX_US 50000u
#define STEM_MAX 96

struct dbpool__budget {
    pthread_mutex_t mu;
    volatile sig_atomic_t forgotten; /* set in a fork child: every call is a no-op */
    unsigned n;
    unsigned nheld;         /* [mu] */
    long pid;               /* of the process that opened it (a child never uses it) */
    int dirfd;              /* O_PATH descriptor of the directory */
    int *fd;                /* n slot descriptors, O_RDWR|O_CLOEXEC */
    unsigned char *held;    /* [mu] n flags: slot taken by a thread of this process */
    char dir[DBPOOL__PATH_MAX];
    char stem[STEM_MAX + 24];
    char what[DBPOOL__STR_MAX * 2]; /* "user@host:port" for messages */
};

static const char *errtext(int e, char *buf, size_t n)
{
    return strerror_r(e, buf, n); /* GNU variant (_GNU_SOURCE) */
}

/* ---- key -------------------------------------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

static bool uses_socket(const dbpool__options *o)
{
    return !o->host[0] || strcasecmp(o->host, "localhost") == 0;
}

/* Readable and safe in a file name: [A-Za-z0-9._@-], the rest becomes '_'. */
static void sanitize(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (char)(isalnum(ch) || ch == '.' || ch == '_' || ch == '@' || ch == '-' ? ch : '_');
    }
    dst[i] = '\0';
}

static void make_key(dbpool__budget *b, const dbpool__options *o)
{
    char canon[DBPOOL__PATH_MAX + 2 * DBPOOL__STR_MAX + 32], host[DBPOOL__STR_MAX], label[STEM_MAX];
    size_t i = 0;
    for (; o->host[i] && i + 1 < sizeof host; i++)
        host[i] = (char)tolower((unsigned char)o->host[i]);
    host[i] = '\0';
    if (uses_socket(o)) {
        snprintf(canon, sizeof canon, "unix:%s\n%s", o->socket, o->user);
        snprintf(label, sizeof label, "%.64s@unix", o->user);
        snprintf(b->what, sizeof b->what, "%.200s@localhost (socket %.250s)", o->user,
                 o->socket[0] ? o->socket : "default");
    } else {
        snprintf(canon, sizeof canon, "tcp:%s:%u\n%s", host, o->port, o->user);
        snprintf(label, sizeof label, "%.40s@%.40s_%u", o->user, host, o->port);
        snprintf(b->what, sizeof b->what, "%.200s@%.200s:%u", o->user, o->host, o->port);
    }
    char clean[STEM_MAX];
    sanitize(clean, 64, label); /* cut: the hash, not the label, tells keys apart */
    snprintf(b->stem, sizeof b->stem, "%s-%016llx", clean,
             (unsigned long long)fnv1a(0xcbf29ce484222325ull, canon));
}

static void slot_name(const dbpool__budget *b, unsigned i, char *buf, size_t n)
{
    snprintf(buf, n, "%s.%u.slot", b->stem, i);
}

/* ---- directory ---------------------------------------------------------------------------- */

static int fail_path(int code, const char *what, const char *path, int e)
{
    char eb[128];
    return dbpool__fail(code, "%s %s: %s", what, path, errtext(e, eb, sizeof eb));
}

static int config_errno(int e)
{
    switch (e) {
    case EACCES: case EPERM: case ENOENT: case ENOTDIR: case ELOOP: case EROFS:
    case ENAMETOOLONG: case EEXIST: case EISDIR: case ENXIO:
        return DBPOOL_ECONFIG;
    case ENOMEM:
        return DBPOOL_ENOMEM;
    default:
        return DBPOOL_ESYS;
    }
}

/* Create the directory itself (never its parents). */
static int make_dir(const char *dir)
{
    if (mkdir(dir, 0700) == 0 || errno == EEXIST)
        return 0; /* EEXIST: another process was faster */
    int e = errno;
    char eb[128];
    if (e == ENOENT || e == ENOTDIR)
        return dbpool__fail(DBPOOL_ECONFIG, "DB_HOST_BUDGET_DIR %s: its parent directory does not "
                            "exist or is not a directory (%s); the budget directory is created "
                            "if missing, its parents never are", dir, errtext(e, eb, sizeof eb));
    return fail_path(config_errno(e), "cannot create DB_HOST_BUDGET_DIR", dir, e);
}

static int check_dir(const char *dir, const struct stat *st)
{
    if (S_ISLNK(st->st_mode))
        return dbpool__fail(DBPOOL_ECONFIG, "DB_HOST_BUDGET_DIR %s is a symbolic link: give the "
                            "real directory (a link could be swapped under the budget)", dir);
    if (!S_ISDIR(st->st_mode))
        return dbpool__fail(DBPOOL_ECONFIG, "DB_HOST_BUDGET_DIR %s exists and is not a directory",
                            dir);
    if (st->st_mode & S_IWOTH)
        return dbpool__fail(DBPOOL_ECONFIG, "DB_HOST_BUDGET_DIR %s is world-writable (mode %04o): "
                            "anyone could replace the slot files; use 0700, or 2770 with a "
                            "shared group", dir, (unsigned)(st->st_mode & 07777));
    /* The default lives in /tmp, where another user could create it first. */
    bool shared = (st->st_mode & (S_IWGRP | S_ISGID)) == (S_IWGRP | S_ISGID);
    if (st->st_uid != geteuid() && st->st_uid != 0 && !shared)
        return dbpool__fail(DBPOOL_ECONFIG, "DB_HOST_BUDGET_DIR %s belongs to uid %lu, not to this "
                            "user (uid %lu), and is not a group-shared (setgid, group-writable) "
                            "directory: another user could block or break the budget", dir,
                            (unsigned long)st->st_uid, (unsigned long)geteuid());
    return 0;
}

/* An O_PATH descriptor of the directory, created if missing; *st receives its status. */
static int open_dir(const char *dir, int *out, struct stat *st)
{
    if (!dir[0])
        return dbpool__fail(DBPOOL_ECONFIG, "DB_HOST_BUDGET_DIR is empty");
    if (dir[0] != '/')
        return dbpool__fail(DBPOOL_ECONFIG, "DB_HOST_BUDGET_DIR %s is not an absolute path: "
                            "processes started in other directories would not share it", dir);
    int rc, fd = open(dir, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if ((rc = make_dir(dir)) != 0)
            return rc;
        fd = open(dir, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return fail_path(config_errno(errno), "cannot open DB_HOST_BUDGET_DIR", dir, errno);
    if (fstat(fd, st) != 0) {
        rc = fail_path(DBPOOL_ESYS, "cannot stat DB_HOST_BUDGET_DIR", dir, errno);
        close(fd);
        return rc;
    }
    if ((rc = check_dir(dir, st)) != 0) {
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

/* ---- slot files ----------------------------------------------------------------------------- */

static int fail_slot(const dbpool__budget *b, unsigned i, const char *what, int e)
{
    char name[STEM_MAX + 48], eb[128];
    slot_name(b, i, name, sizeof name);
    return dbpool__fail(config_errno(e), "%s budget slot file %s/%s: %s (DB_HOST_BUDGET_DIR must "
                        "be writable and searchable by every user of the budget)", what, b->dir,
                        name, errtext(e, eb, sizeof eb));
}

/* Open slot i, creating it with `mode` (umask ignored) and the directory's group if needed. */
static int open_slot(dbpool__budget *b, unsigned i, mode_t mode, const struct stat *dst)
{
    char name[STEM_MAX + 48];
    slot_name(b, i, name, sizeof name);
    const int fl = O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
    int fd = openat(b->dirfd, name, fl | O_CREAT | O_EXCL, mode);
    if (fd >= 0) {
        if (fchmod(fd, mode) != 0 || ((mode & S_IRWXG) && fchown(fd, (uid_t)-1, dst->st_gid) != 0))
            dbpool__log(DBPOOL_LOG_DEBUG, "budget slot %s/%s: could not set mode or group", b->dir, name);
    } else if (errno == EEXIST) {
        fd = openat(b->dirfd, name, fl);
    }
    if (fd < 0)
        return fail_slot(b, i, "cannot open", errno);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail_slot(b, i, "not a regular file:", EEXIST);
    }
    b->fd[i] = fd;
    return 0;
}

/* The filesystem must support flock; warn when it is a network one. */
static int check_fs(dbpool__budget *b)
{
    if (flock(b->fd[0], LOCK_SH | LOCK_NB) == 0)
        flock(b->fd[0], LOCK_UN);
    else if (errno != EWOULDBLOCK && errno != EINTR)
        return fail_slot(b, 0, "flock() not supported on", errno);
    struct statfs sf;
    if (fstatfs(b->fd[0], &sf) == 0) {
        unsigned long t = (unsigned long)sf.f_type;
        if (t == 0x6969ul || t == 0x517Bul || t == 0xFF534D42ul || t == 0xFE534D42ul)
            dbpool__log(DBPOOL_LOG_WARN, "DB_HOST_BUDGET_DIR %s is on a network file system: "
                        "locks there are emulated and may outlive a crashed host; use a local "
                        "directory", b->dir);
    }
    return 0;
}

static long read_pid(int fd)
{
    char buf[32];
    ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
    if (r <= 0)
        return 0;
    buf[r] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    return pid > 0 && (*end == '\n' || *end == '\0' || *end == ' ') ? pid : 0;
}

/* Fresh open file description of slot i (never b->fd[i]: flock on our own description would
 * not conflict with our own lock). 1: someone holds it (*pid its holder, 0 if unknown),
 * 0: free, <0: error. */
static int probe_name(const dbpool__budget *b, const char *name, long *pid)
{
    int fd = openat(b->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    int r = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) == 0)
        flock(fd, LOCK_UN);
    else if (errno == EWOULDBLOCK)
        r = 1;
    else
        r = -errno;
    if (r == 1)
        *pid = read_pid(fd);
    close(fd);
    return r;
}

static int probe(const dbpool__budget *b, unsigned i, long *pid)
{
    char name[STEM_MAX + 48];
    slot_name(b, i, name, sizeof name);
    return probe_name(b, name, pid);
}

/* A held slot beyond our N means another process uses a larger DB_HOST_BUDGET. */
static void check_beyond(const dbpool__budget *b)
{
    long pid = 0;
    if (probe(b, b->n, &pid) == 1)
        dbpool__log(DBPOOL_LOG_WARN, "host budget %s in %s: slot %u is held (pid %ld), so another "
                    "process uses a DB_HOST_BUDGET larger than %u; all processes must use the same "
                    "value", b->what, b->dir, b->n, pid, b->n);
}

/* ---- open / close ----------------------------------------------------------------------------- */

static dbpool__budget *alloc_budget(unsigned n)
{
    dbpool__budget *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->fd = malloc(n * sizeof *b->fd);
    b->held = calloc(n, 1);
    if (!b->fd || !b->held) {
        free(b->fd);
        free(b->held);
        free(b);
        return NULL;
    }
    for (unsigned i = 0; i < n; i++)
        b->fd[i] = -1;
    b->n = n;
    b->dirfd = -1;
    b->pid = (long)getpid();
    pthread_mutex_init(&b->mu, NULL);
    return b;
}

static void close_fds(dbpool__budget *b)
{
    for (unsigned i = 0; i < b->n; i++)
        if (b->fd[i] >= 0) {
            close(b->fd[i]);
            b->fd[i] = -1;
        }
    if (b->dirfd >= 0) {
        close(b->dirfd);
        b->dirfd = -1;
    }
}

static void free_budget(dbpool__budget *b)
{
    if (!b->forgotten)
        pthread_mutex_destroy(&b->mu); /* a child's copy may look locked: leave it */
    free(b->fd);
    free(b->held);
    free(b);
}

static int open_all(dbpool__budget *b, const dbpool__options *o)
{
    struct stat dst;
    int rc = open_dir(o->budget_dir, &b->dirfd, &dst);
    if (rc != 0)
        return rc;
    make_key(b, o);
    mode_t mode = (dst.st_mode & S_IWGRP) ? 0660 : 0600;
    for (unsigned i = 0; i < b->n && rc == 0; i++)
        rc = open_slot(b, i, mode, &dst);
    if (rc == 0)
        rc = check_fs(b);
    if (rc == 0)
        check_beyond(b);
    return rc;
}

int dbpool__budget_open(dbpool__budget **out, const dbpool__options *o)
{
    if (!out || !o)
        return dbpool__fail(DBPOOL_EINVAL, "dbpool__budget_open: NULL argument");
    *out = NULL;
    if (o->host_budget == 0 || o->host_budget > BUDGET_MAX)
        return dbpool__fail(DBPOOL_ECONFIG, "DB_HOST_BUDGET=%u: must be 1..%u (0 turns it off)",
                            o->host_budget, BUDGET_MAX);
    dbpool__budget *b = alloc_budget(o->host_budget);
    if (!b)
        return dbpool__fail(DBPOOL_ENOMEM, "allocating a host budget of %u slots", o->host_budget);
    snprintf(b->dir, sizeof b->dir, "%s", o->budget_dir);
    int rc = open_all(b, o);
    if (rc != 0) {
        close_fds(b);
        free_budget(b);
        return rc;
    }
    dbpool__log(DBPOOL_LOG_DEBUG, "host budget %u for %s: %s/%s.*.slot", b->n, b->what, b->dir, b->stem);
    *out = b;
    return 0;
}

void dbpool__budget_close(dbpool__budget *b)
{
    if (!b)
        return;
    if (!b->forgotten) {
        pthread_mutex_lock(&b->mu);
        if (b->nheld)
            dbpool__log(DBPOOL_LOG_WARN, "host budget closed with %u slot(s) still held", b->nheld);
        /* LOCK_UN, not just close(): a child forked without our atfork handler may share the
         * descriptions, and then close() alone would not free the slots. */
        for (unsigned i = 0; i < b->n; i++)
            if (b->held[i] && b->fd[i] >= 0)
                flock(b->fd[i], LOCK_UN);
        close_fds(b);
        pthread_mutex_unlock(&b->mu);
    }
    free_budget(b);
}

/* Only close(): async-signal-safe, and never LOCK_UN, which would release the parent's locks
 * (they belong to the open file descriptions we share with it). close() of our copies
 * leaves the parent's locks alone as long as its descriptors stay open. */
void dbpool__budget_forget_in_child(dbpool__budget *b)
{
    if (!b)
        return;
    b->forgotten = 1;
    close_fds(b); /* only close(): async-signal-safe */
}

/* ---- acquire / release ------------------------------------------------------------------------- */

/* Random in [0, n): mixes the pid in, since a fork child inherits the thread's generator. */
static uint32_t rnd(const dbpool__budget *b, uint32_t n)
{
    return n ? (dbpool__rand(0xffffffffu) ^ ((uint32_t)b->pid * 0x9e3779b1u)) % n : 0;
}

static void write_pid(const dbpool__budget *b, unsigned i, long pid)
{
    char buf[32];
    int len = pid > 0 ? snprintf(buf, sizeof buf, "%*ld\n", PID_WIDTH, pid)
                      : snprintf(buf, sizeof buf, "%*s\n", PID_WIDTH, "");
    if (len == PID_LEN) { /* always on Linux: pid_max <= 2^22 */
        ssize_t w = pwrite(b->fd[i], buf, PID_LEN, 0);
        (void)w; /* the pid is diagnostic only; the lock is the slot */
    }
}

/* One pass over the slots from a random start. 0: *slot taken, 1: all busy, <0: error. */
static int try_once(dbpool__budget *b, int *slot)
{
    uint32_t start = rnd(b, b->n);
    pthread_mutex_lock(&b->mu);
    for (unsigned k = 0; k < b->n; k++) {
        unsigned i = (start + k) % b->n;
        if (b->held[i])
            continue;
        if (flock(b->fd[i], LOCK_EX | LOCK_NB) == 0) {
            b->held[i] = 1;
            b->nheld++;
            write_pid(b, i, b->pid);
            pthread_mutex_unlock(&b->mu);
            *slot = (int)i;
            return 0;
        }
        if (errno != EWOULDBLOCK && errno != EINTR) {
            int e = errno;
            pthread_mutex_unlock(&b->mu);
            char name[STEM_MAX + 48], eb[128];
            slot_name(b, i, name, sizeof name);
            return dbpool__fail(DBPOOL_ESYS, "flock(%s/%s): %s", b->dir, name, errtext(e, eb, sizeof eb));
        }
    }
    pthread_mutex_unlock(&b->mu);
    return 1;
}

/* Sleep up to `us`, or less if *cancel is non-zero or becomes so and the canceller wakes the
 * word: FUTEX_WAIT returns at once when *cancel is no longer 0, and early on a
 * FUTEX_WAKE(_PRIVATE) of it. Without a wake it is a plain timed sleep. */
static void sleep_us(const int *cancel, uint64_t us)
{
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000u), .tv_nsec = (long)(us % 1000000u) * 1000};
    if (cancel) {
        syscall(SYS_futex, cancel, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
        return; /* woken, cancelled, interrupted or timed out: the caller looks again */
    }
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* "123, 456 (exited: its lock is kept by an inherited descriptor), ..." */
static void holders_text(dbpool__budget *b, char *buf, size_t cap)
{
    long pids[64];
    size_t n = 0, used = 0;
    unsigned u, h;
    dbpool__budget_usage(b, &u, &h, pids, 64, &n);
    buf[0] = '\0';
    for (size_t i = 0; i < n && i < 64 && used + 1 < cap; i++) {
        const char *tag = pids[i] > 0 && kill((pid_t)pids[i], 0) != 0 && errno == ESRCH
                              ? " (exited: its lock is kept by a descriptor it passed on)" : "";
        int k = pids[i] > 0 ? snprintf(buf + used, cap - used, "%s%ld%s", used ? ", " : "", pids[i], tag)
                            : snprintf(buf + used, cap - used, "%s?", used ? ", " : "");
        used += k > 0 ? (size_t)k : 0;
    }
    if (!buf[0])
        snprintf(buf, cap, "none visible now");
}

static int fail_full(dbpool__budget *b, uint64_t waited_ns)
{
    char who[512];
    holders_text(b, who, sizeof who);
    return dbpool__fail(DBPOOL_EBUDGET, "host budget full: all %u slots of DB_HOST_BUDGET for %s "
                        "are held host-wide (holder pids: %s; slot files %s/%s.*.slot), waited "
                        "%llu ms", b->n, b->what, who, b->dir, b->stem,
                        (unsigned long long)(waited_ns / 1000000u));
}

static int cancelled(const int *cancel)
{
    return cancel && __atomic_load_n(cancel, __ATOMIC_ACQUIRE) != 0;
}

int dbpool__budget_acquire(dbpool__budget *b, uint64_t deadline_ns, const int *cancel, int *slot)
{
    if (!b || !slot)
        return dbpool__fail(DBPOOL_EINVAL, "dbpool__budget_acquire: NULL argument");
    *slot = -1;
    if (b->forgotten)
        return dbpool__fail(DBPOOL_ECLOSED, "the host budget belongs to the parent process");
    uint64_t start = dbpool__now_ns();
    for (unsigned attempt = 0;; attempt++) {
        if (cancelled(cancel))
            return dbpool__fail(DBPOOL_ECLOSED, "the pool was closed while waiting for the host budget");
        int rc = try_once(b, slot);
        if (rc <= 0)
            return rc;
        uint64_t now = dbpool__now_ns();
        if (now >= deadline_ns)
            return fail_full(b, now - start);
        /* Capped exponential backoff with jitter: waiters of many processes spread out. */
        uint64_t cap = attempt < 6 ? (uint64_t)BACKOFF_MIN_US << attempt : BACKOFF_MAX_US;
        if (cap > BACKOFF_MAX_US)
            cap = BACKOFF_MAX_US;
        uint64_t us = cap / 2 + rnd(b, (uint32_t)(cap / 2 + 1)), left = (deadline_ns - now) / 1000u + 1;
        sleep_us(cancel, us < left ? us : left);
    }
}

void dbpool__budget_release(dbpool__budget *b, int slot)
{
    if (!b || b->forgotten)
        return;
    if (slot < 0 || (unsigned)slot >= b->n) {
        dbpool__log(DBPOOL_LOG_ERROR, "host budget: release of slot %d out of range 0..%u", slot, b->n - 1);
        return;
    }
    pthread_mutex_lock(&b->mu);
    if (b->held[slot]) {
        write_pid(b, (unsigned)slot, 0); /* blank before unlocking: a new holder writes its own */
        flock(b->fd[slot], LOCK_UN);
        b->held[slot] = 0; /* only after LOCK_UN: no other thread may lock our description */
        b->nheld--;
    } else {
        dbpool__log(DBPOOL_LOG_ERROR, "host budget: release of slot %d that this process does not hold", slot);
    }
    pthread_mutex_unlock(&b->mu);
}

/* ---- usage ---------------------------------------------------------------------------------------- */

int dbpool__budget_usage(dbpool__budget *b, unsigned *used, unsigned *held, long *pids, size_t cap,
                         size_t *n)
{
    unsigned u = 0, h = 0;
    size_t k = 0;
    int rc = 0, err = 0;
    if (b && !b->forgotten) {
        pthread_mutex_lock(&b->mu); /* serialises probes with our own acquires */
        for (unsigned i = 0; i < b->n; i++) {
            long pid = b->pid;
            int r = 1;
            if (b->held[i])
                h++;
            else
                r = probe(b, i, &pid);
            if (r < 0 && !err)
                err = -r;
            if (r != 1)
                continue;
            if (pids && k < cap)
                pids[k] = pid;
            k++;
            u++;
        }
        pthread_mutex_unlock(&b->mu);
        if (err)
            rc = fail_path(DBPOOL_ESYS, "probing the host budget slots in", b->dir, err);
    }
    if (used)
        *used = u;
    if (held)
        *held = h;
    if (n)
        *n = k;
    return rc;
}
