/*
 * test_budget.c - the host budget's lock-file semantics, no server needed (src/budget.c).
 *
 * Every test works in its own mkdtemp() directory, forks real processes where the property is
 * about processes (kill -9, fork children, many holders), and ends with every budget closed
 * and every child reaped, so ASan/valgrind runs stay clean. Timing bounds are measured.
 */
#include "testutil.h"
#include "dbpool_int.h"

#include <dirent.h>
#include <linux/futex.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static char base[64]; /* this test's mkdtemp directory */

static uint64_t now_ms(void) { return dbpool__now_ns() / 1000000u; }
static uint64_t ms_from_now(unsigned ms) { return dbpool__now_ns() + (uint64_t)ms * 1000000u; }

static void make_base(void)
{
    snprintf(base, sizeof base, "/tmp/dbpool-budget-test-XXXXXX");
    assert_non_null(mkdtemp(base));
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static void remove_base(void)
{
    chmod(base, 0700);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void path_in(char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", base, rel);
}

static void set_opts(dbpool__options *o, const char *dir, unsigned n, const char *user,
                     const char *host)
{
    memset(o, 0, sizeof *o);
    snprintf(o->host, sizeof o->host, "%s", host);
    o->port = 3306;
    snprintf(o->user, sizeof o->user, "%s", user);
    snprintf(o->budget_dir, sizeof o->budget_dir, "%s", dir);
    o->host_budget = n;
}

/* Open a budget of n slots for app@127.0.0.1:3306 in dir, failing the test on error. */
static dbpool__budget *open_ok(const char *dir, unsigned n)
{
    dbpool__options o;
    set_opts(&o, dir, n, "app", "127.0.0.1");
    dbpool__budget *b = NULL;
    int rc = dbpool__budget_open(&b, &o);
    if (rc != 0)
        print_error("budget_open(%s): %s\n", dir, dbpool_last_error());
    assert_int_equal(rc, 0);
    assert_non_null(b);
    return b;
}

/* Names of the slot files in dir (sorted by nothing; count returned). */
static int list_slots(const char *dir, char names[][256], int cap)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".slot") == 0 && n < cap)
            snprintf(names[n++], 256, "%s", e->d_name);
    }
    closedir(d);
    return n;
}

/* A child process H that opens its own budget (n slots) in dir, takes k slots and reports 'R'
 * (or 'E') on the pipe, then stays until killed. With `fork_child`, H first forks a lingering
 * child C that calls dbpool__budget_forget_in_child() when `forget` (what the pool's atfork
 * handler does) and tells H it is ready; H then reports C's pid before its 'R'. Both die by
 * themselves after SAFETY_S even if the test fails before killing them (a lingering child
 * would also keep ctest's output pipe open). */
#define SAFETY_S 30
struct holder {
    pid_t pid;
    pid_t grandchild;
};

static void holder_body(int wfd, const char *dir, unsigned n, unsigned k, bool fork_child, bool forget)
{
    alarm(SAFETY_S);
    dbpool__options o;
    set_opts(&o, dir, n, "app", "127.0.0.1");
    dbpool__budget *b = NULL;
    int slot, ready[2];
    char ok = 'R';
    if (dbpool__budget_open(&b, &o) != 0)
        ok = 'E';
    for (unsigned i = 0; ok == 'R' && i < k; i++)
        if (dbpool__budget_acquire(b, ms_from_now(5000), NULL, &slot) != 0)
            ok = 'E';
    if (fork_child && ok == 'R') {
        if (pipe(ready) != 0)
            _exit(3);
        pid_t c = fork();
        if (c == 0) {
            alarm(SAFETY_S);
            if (forget)
                dbpool__budget_forget_in_child(b);
            if (write(ready[1], "c", 1) != 1)
                _exit(3);
            for (;;)
                pause();
        }
        char x;
        if (c < 0 || read(ready[0], &x, 1) != 1 || write(wfd, &c, sizeof c) != sizeof c)
            _exit(3);
    }
    if (write(wfd, &ok, 1) != 1)
        _exit(3);
    for (;;)
        pause();
}

static struct holder start_holder(const char *dir, unsigned n, unsigned k, bool fork_child, bool forget)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct holder h = {0, 0};
    h.pid = fork();
    assert_true(h.pid >= 0);
    if (h.pid == 0) {
        close(p[0]);
        holder_body(p[1], dir, n, k, fork_child, forget);
    }
    close(p[1]);
    if (fork_child)
        assert_int_equal(read(p[0], &h.grandchild, sizeof h.grandchild), (ssize_t)sizeof h.grandchild);
    char c = 0;
    assert_int_equal(read(p[0], &c, 1), 1);
    close(p[0]);
    assert_int_equal(c, 'R');
    return h;
}

static void kill_reap(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static int exit_code(pid_t pid)
{
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Acquire must fail with EBUDGET within deadline_ms (proves the budget is full now). */
static void assert_full(dbpool__budget *b, unsigned deadline_ms)
{
    int slot = 99;
    assert_int_equal(dbpool__budget_acquire(b, ms_from_now(deadline_ms), NULL, &slot), DBPOOL_EBUDGET);
    assert_int_equal(slot, -1);
}

/* ---- creation, files, permissions ------------------------------------------------------- */

static void open_creates_dir_0700_and_reuses_files(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "budget");
    mode_t old = umask(0);
    dbpool__budget *b = open_ok(dir, 3);
    umask(old);
    struct stat st;
    assert_int_equal(lstat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);

    char names[8][256];
    assert_int_equal(list_slots(dir, names, 8), 3);
    ino_t ino[3];
    for (int i = 0; i < 3; i++) {
        char p[PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/app@127.0.0.1_3306-", dir);
        assert_non_null(strstr(names[i], "app@127.0.0.1_3306-")); /* readable prefix */
        snprintf(p, sizeof p, "%s/%.255s", dir, names[i]);
        assert_int_equal(lstat(p, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0600); /* umask 0 did not widen it */
        ino[i] = st.st_ino;
    }
    dbpool__budget_close(b);

    /* Never unlinked or recreated: the same inodes after a close and a new open. */
    b = open_ok(dir, 3);
    for (int i = 0; i < 3; i++) {
        char p[PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/%.255s", dir, names[i]);
        assert_int_equal(lstat(p, &st), 0);
        assert_int_equal(st.st_ino, ino[i]);
    }
    dbpool__budget_close(b);
    assert_int_equal(list_slots(dir, names, 8), 3);
    remove_base();
}

static void group_shared_dir_gives_0660_files(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "shared");
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(dir, 02770), 0);
    mode_t old = umask(077); /* a strict umask must not break sharing */
    dbpool__budget *b = open_ok(dir, 2);
    umask(old);
    char names[4][256];
    assert_int_equal(list_slots(dir, names, 4), 2);
    for (int i = 0; i < 2; i++) {
        char p[PATH_MAX * 2];
        struct stat st;
        snprintf(p, sizeof p, "%s/%.255s", dir, names[i]);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0660);
    }
    dbpool__budget_close(b);
    remove_base();
}

static void missing_parent_is_econfig_and_not_created(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX], parent[PATH_MAX];
    path_in(parent, sizeof parent, "no-such-parent");
    path_in(dir, sizeof dir, "no-such-parent/budget");
    dbpool__options o;
    set_opts(&o, dir, 2, "app", "127.0.0.1");
    dbpool__budget *b = (dbpool__budget *)&o; /* must be reset to NULL */
    assert_int_equal(dbpool__budget_open(&b, &o), DBPOOL_ECONFIG);
    assert_null(b);
    const char *e = dbpool_last_error();
    print_message("error: %s\n", e);
    assert_non_null(strstr(e, dir));
    assert_non_null(strstr(e, "No such file or directory"));
    assert_non_null(strstr(e, "parent"));
    struct stat st;
    assert_int_equal(stat(parent, &st), -1); /* parents are never created */
    remove_base();
}

static void file_in_the_way_is_econfig(void **state)
{
    (void)state;
    make_base();
    char file[PATH_MAX], below[PATH_MAX];
    path_in(file, sizeof file, "budget");
    path_in(below, sizeof below, "budget/sub");
    int fd = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
    dbpool__options o;
    dbpool__budget *b = NULL;

    set_opts(&o, file, 2, "app", "127.0.0.1");
    assert_int_equal(dbpool__budget_open(&b, &o), DBPOOL_ECONFIG);
    print_message("error: %s\n", dbpool_last_error());
    assert_non_null(strstr(dbpool_last_error(), file));
    assert_non_null(strstr(dbpool_last_error(), "not a directory"));

    set_opts(&o, below, 2, "app", "127.0.0.1"); /* a file as a parent component */
    assert_int_equal(dbpool__budget_open(&b, &o), DBPOOL_ECONFIG);
    print_message("error: %s\n", dbpool_last_error());
    assert_non_null(strstr(dbpool_last_error(), below));
    assert_non_null(strstr(dbpool_last_error(), "Not a directory"));
    assert_null(b);
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    assert_true(S_ISREG(st.st_mode)); /* left alone */
    remove_base();
}

/* Run dbpool__budget_open(dir) as uid/gid 65534 in a child; return its exit code and the
 * error text (through a pipe). Exit 0 = ECONFIG, 1 = other result, 77 = cannot drop root. */
static int open_as_nobody(const char *dir, char *err, size_t n)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(SAFETY_S);
        close(p[0]);
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0 || getuid() == 0)
            _exit(77);
        dbpool__options o;
        set_opts(&o, dir, 2, "app", "127.0.0.1");
        dbpool__budget *b = NULL;
        int rc = dbpool__budget_open(&b, &o);
        const char *e = dbpool_last_error();
        if (write(p[1], e, strlen(e)) < 0)
            _exit(2);
        dbpool__budget_close(b);
        _exit(rc == DBPOOL_ECONFIG && !b ? 0 : 1);
    }
    close(p[1]);
    ssize_t r = read(p[0], err, n - 1);
    err[r > 0 ? r : 0] = '\0';
    close(p[0]);
    return exit_code(pid);
}

static void no_permission_is_econfig(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX], missing[PATH_MAX], err[2048];
    path_in(dir, sizeof dir, "root-only");
    path_in(missing, sizeof missing, "not-yet");
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(base, 0755), 0); /* others may traverse base, not enter dir */
    if (geteuid() != 0) {
        /* Not root: take write permission away from our own directory instead. */
        assert_int_equal(chmod(dir, 0500), 0);
        dbpool__options o;
        dbpool__budget *b = NULL;
        set_opts(&o, dir, 2, "app", "127.0.0.1");
        assert_int_equal(dbpool__budget_open(&b, &o), DBPOOL_ECONFIG);
        assert_non_null(strstr(dbpool_last_error(), dir));
        assert_non_null(strstr(dbpool_last_error(), "Permission denied"));
        remove_base();
        return;
    }
    int rc = open_as_nobody(dir, err, sizeof err);
    if (rc == 77) {
        remove_base();
        tu_skip("running as root and setuid(65534) failed, so a permission error cannot be "
                "provoked");
    }
    print_message("existing dir, no access: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(err, dir));
    assert_non_null(strstr(err, "Permission denied"));

    /* Missing directory in a parent the user cannot write: not created, clear error. */
    rc = open_as_nobody(missing, err, sizeof err);
    print_message("cannot create: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(err, missing));
    assert_non_null(strstr(err, "Permission denied"));
    struct stat st;
    assert_int_equal(stat(missing, &st), -1);
    remove_base();
}

static void symlink_world_writable_relative_refused(void **state)
{
    (void)state;
    make_base();
    char real[PATH_MAX], lnk[PATH_MAX], open_dir[PATH_MAX];
    path_in(real, sizeof real, "real");
    path_in(lnk, sizeof lnk, "link");
    path_in(open_dir, sizeof open_dir, "open");
    assert_int_equal(mkdir(real, 0700), 0);
    assert_int_equal(symlink(real, lnk), 0);
    assert_int_equal(mkdir(open_dir, 0700), 0);
    assert_int_equal(chmod(open_dir, 0777), 0);
    dbpool__options o;
    dbpool__budget *b = NULL;
    const char *cases[][2] = {{lnk, "symbolic link"}, {open_dir, "world-writable"},
                              {"relative/dir", "absolute"}, {"", "empty"}};
    for (size_t i = 0; i < 4; i++) {
        set_opts(&o, cases[i][0], 2, "app", "127.0.0.1");
        assert_int_equal(dbpool__budget_open(&b, &o), DBPOOL_ECONFIG);
        print_message("error: %s\n", dbpool_last_error());
        assert_non_null(strstr(dbpool_last_error(), cases[i][0]));
        assert_non_null(strstr(dbpool_last_error(), cases[i][1]));
        assert_null(b);
    }
    char names[4][256];
    assert_int_equal(list_slots(real, names, 4), 0); /* nothing created through the link */
    remove_base();
}

static void foreign_owner_refused_unless_group_shared(void **state)
{
    (void)state;
    if (geteuid() != 0)
        tu_skip("needs root to give a directory to another user");
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "theirs");
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chown(dir, 65534, 65534), 0);
    dbpool__options o;
    dbpool__budget *b = NULL;
    set_opts(&o, dir, 2, "app", "127.0.0.1");
    assert_int_equal(dbpool__budget_open(&b, &o), DBPOOL_ECONFIG);
    print_message("error: %s\n", dbpool_last_error());
    assert_non_null(strstr(dbpool_last_error(), dir));
    assert_non_null(strstr(dbpool_last_error(), "belongs to uid 65534"));
    assert_null(b);
    /* The documented way to share: group-writable with setgid. */
    assert_int_equal(chmod(dir, 02770), 0);
    b = open_ok(dir, 2);
    dbpool__budget_close(b);
    remove_base();
}

static void slot_path_not_regular_is_econfig(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX], names[4][256], p[PATH_MAX + 256];
    path_in(dir, sizeof dir, "b");
    dbpool__budget_close(open_ok(dir, 2));
    assert_int_equal(list_slots(dir, names, 4), 2);
    snprintf(p, sizeof p, "%s/%.255s", dir, names[0]);
    assert_int_equal(unlink(p), 0); /* nobody holds it: safe in a test */
    assert_int_equal(mkdir(p, 0700), 0);
    dbpool__options o;
    dbpool__budget *b = NULL;
    set_opts(&o, dir, 2, "app", "127.0.0.1");
    assert_int_equal(dbpool__budget_open(&b, &o), DBPOOL_ECONFIG);
    print_message("error: %s\n", dbpool_last_error());
    assert_non_null(strstr(dbpool_last_error(), names[0]));
    assert_null(b);
    remove_base();
}

static void descriptors_cloexec_and_none_leaked(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    int before = tu_count_fds();
    dbpool__budget *b = open_ok(dir, 4);
    int slot;
    assert_int_equal(dbpool__budget_acquire(b, 0, NULL, &slot), 0);
    long pids[4];
    size_t n;
    unsigned used, held;
    assert_int_equal(dbpool__budget_usage(b, &used, &held, pids, 4, &n), 0); /* probes close */
    /* Every descriptor into the directory is close-on-exec: 4 slots + the directory. */
    int ours = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char lp[300], target[PATH_MAX];
        snprintf(lp, sizeof lp, "/proc/self/fd/%s", e->d_name);
        ssize_t r = readlink(lp, target, sizeof target - 1);
        if (r <= 0)
            continue;
        target[r] = '\0';
        if (strncmp(target, dir, strlen(dir)) != 0)
            continue;
        int fl = fcntl(atoi(e->d_name), F_GETFD);
        assert_true(fl >= 0 && (fl & FD_CLOEXEC));
        ours++;
    }
    closedir(d);
    assert_int_equal(ours, 5);
    assert_int_equal(tu_count_fds(), before + 5);
    dbpool__budget_release(b, slot);
    dbpool__budget_close(b);
    assert_int_equal(tu_count_fds(), before);

    /* forget_in_child closes everything too (here in the same process, as a simulation). */
    b = open_ok(dir, 4);
    dbpool__budget_forget_in_child(b);
    assert_int_equal(tu_count_fds(), before);
    dbpool__budget_close(b);
    remove_base();
}

/* ---- acquire / release within one process ------------------------------------------------- */

static void acquire_distinct_slots_then_ebudget(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    dbpool__budget *b = open_ok(dir, 3);
    int s[3], seen[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dbpool__budget_acquire(b, 0, NULL, &s[i]), 0); /* deadline past: one try */
        assert_in_range(s[i], 0, 2);
        seen[s[i]]++;
    }
    assert_int_equal(seen[0] + seen[1] + seen[2], 3);
    assert_true(seen[0] == 1 && seen[1] == 1 && seen[2] == 1);

    uint64_t t0 = now_ms();
    int slot = 7;
    assert_int_equal(dbpool__budget_acquire(b, ms_from_now(150), NULL, &slot), DBPOOL_EBUDGET);
    uint64_t waited = now_ms() - t0;
    print_message("EBUDGET after %llu ms: %s\n", (unsigned long long)waited, dbpool_last_error());
    assert_true(waited >= 149 && waited < 1000);
    assert_int_equal(slot, -1);
    char me[32];
    snprintf(me, sizeof me, "%ld", (long)getpid());
    const char *e = dbpool_last_error();
    assert_non_null(strstr(e, "all 3 slots"));
    assert_non_null(strstr(e, dir));
    assert_non_null(strstr(e, me));
    assert_non_null(strstr(e, "app@127.0.0.1:3306"));

    dbpool__budget_release(b, s[1]);
    assert_int_equal(dbpool__budget_acquire(b, 0, NULL, &slot), 0);
    assert_int_equal(slot, s[1]);
    dbpool__budget_release(b, slot);
    dbpool__budget_release(b, s[0]);
    dbpool__budget_release(b, s[2]);
    unsigned used, held;
    size_t n;
    assert_int_equal(dbpool__budget_usage(b, &used, &held, NULL, 0, &n), 0);
    assert_int_equal(used, 0);
    assert_int_equal(held, 0);
    dbpool__budget_close(b);
    remove_base();
}

static void pid_written_while_held_blanked_after(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX], names[2][256], p[PATH_MAX * 2], buf[64], want[32];
    path_in(dir, sizeof dir, "b");
    dbpool__budget *b = open_ok(dir, 1);
    int slot;
    assert_int_equal(dbpool__budget_acquire(b, 0, NULL, &slot), 0);
    assert_int_equal(list_slots(dir, names, 2), 1);
    snprintf(p, sizeof p, "%s/%.255s", dir, names[0]);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
    assert_int_equal(r, 11);
    buf[r] = '\0';
    snprintf(want, sizeof want, "%10ld\n", (long)getpid());
    assert_string_equal(buf, want);
    dbpool__budget_release(b, slot);
    r = pread(fd, buf, sizeof buf - 1, 0);
    assert_int_equal(r, 11);
    buf[r] = '\0';
    assert_string_equal(buf, "          \n");
    close(fd);
    dbpool__budget_close(b);
    remove_base();
}

struct race {
    dbpool__budget *b;
    unsigned n, iters;
    int owner[8];      /* per slot: threads that think they hold it (must stay <= 1) */
    int current, max, violations, errors;
};

static void *race_thread(void *arg)
{
    struct race *r = arg;
    for (unsigned i = 0; i < r->iters; i++) {
        int slot;
        if (dbpool__budget_acquire(r->b, ms_from_now(10000), NULL, &slot) != 0) {
            __atomic_fetch_add(&r->errors, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (__atomic_add_fetch(&r->owner[slot], 1, __ATOMIC_ACQ_REL) != 1)
            __atomic_fetch_add(&r->violations, 1, __ATOMIC_RELAXED);
        int cur = __atomic_add_fetch(&r->current, 1, __ATOMIC_ACQ_REL), m;
        while ((m = __atomic_load_n(&r->max, __ATOMIC_RELAXED)) < cur &&
               !__atomic_compare_exchange_n(&r->max, &m, cur, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            ;
        usleep(100);
        __atomic_sub_fetch(&r->current, 1, __ATOMIC_ACQ_REL);
        __atomic_sub_fetch(&r->owner[slot], 1, __ATOMIC_ACQ_REL);
        dbpool__budget_release(r->b, slot);
    }
    return NULL;
}

static void threads_never_share_a_slot(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    struct race r = {.b = open_ok(dir, 3), .n = 3, .iters = tu_scaled(300)};
    pthread_t t[12];
    for (int i = 0; i < 12; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race_thread, &r), 0);
    for (int i = 0; i < 12; i++)
        pthread_join(t[i], NULL);
    print_message("12 threads x %u: max concurrent %d, violations %d, errors %d\n", r.iters, r.max,
                  r.violations, r.errors);
    assert_int_equal(r.violations, 0);
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.max, 3); /* the budget was reached, never passed */
    unsigned used, held;
    size_t n;
    dbpool__budget_usage(r.b, &used, &held, NULL, 0, &n);
    assert_int_equal(used, 0);
    dbpool__budget_close(r.b);
    remove_base();
}

static void *cancel_waiter(void *arg)
{
    void **a = arg;
    int slot;
    uint64_t t0 = dbpool__now_ns();
    intptr_t rc = dbpool__budget_acquire(a[0], ms_from_now(10000), a[1], &slot);
    *(uint64_t *)a[2] = dbpool__now_ns() - t0;
    return (void *)rc;
}

/* Wait on a full budget in a thread, cancel after 200 ms (with a futex wake when `wake`);
 * returns how long after the cancel the waiter returned, in ns. */
static uint64_t cancel_after(dbpool__budget *b, bool wake)
{
    int cancel = 0;
    uint64_t waited = 0;
    void *args[3] = {b, &cancel, &waited};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_waiter, args), 0);
    usleep(200000);
    uint64_t t_cancel = dbpool__now_ns();
    __atomic_store_n(&cancel, 1, __ATOMIC_RELEASE);
    if (wake)
        syscall(SYS_futex, &cancel, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    void *rc;
    pthread_join(t, &rc);
    uint64_t after = dbpool__now_ns() - t_cancel;
    print_message("cancel%s noticed %.2f ms after it was set (waited %.1f ms in all)\n",
                  wake ? " + futex wake" : "", after / 1e6, waited / 1e6);
    assert_int_equal((intptr_t)rc, DBPOOL_ECLOSED);
    assert_true(waited >= 190000000u); /* it did wait for the budget before */
    return after;
}

static void cancel_gives_eclosed(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    dbpool__budget *holder = open_ok(dir, 1), *b = open_ok(dir, 1);
    int cancel = 1, slot;
    /* Already cancelled: ECLOSED even though a slot is free. */
    assert_int_equal(dbpool__budget_acquire(b, ms_from_now(1000), &cancel, &slot), DBPOOL_ECLOSED);
    assert_int_equal(dbpool__budget_acquire(holder, 0, NULL, &slot), 0);
    assert_true(cancel_after(b, false) < 100000000u); /* backoff is capped at 50 ms */
    assert_true(cancel_after(b, true) < 20000000u);   /* woken at once */
    dbpool__budget_release(holder, slot);
    dbpool__budget_close(b);
    dbpool__budget_close(holder);
    remove_base();
}

static void null_and_misuse_are_harmless(void **state)
{
    (void)state;
    int slot;
    unsigned used = 9, held = 9;
    size_t n = 9;
    dbpool__budget_release(NULL, 0);
    dbpool__budget_close(NULL);
    dbpool__budget_forget_in_child(NULL);
    assert_int_equal(dbpool__budget_usage(NULL, &used, &held, NULL, 0, &n), 0);
    assert_true(used == 0 && held == 0 && n == 0);
    assert_int_equal(dbpool__budget_acquire(NULL, 0, NULL, &slot), DBPOOL_EINVAL);
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    dbpool__budget *b = open_ok(dir, 2);
    assert_int_equal(dbpool__budget_acquire(b, 0, NULL, &slot), 0);
    dbpool__budget_release(b, -1);    /* out of range: logged */
    dbpool__budget_release(b, 2);
    dbpool__budget_release(b, !slot); /* not held: logged, nothing unlocked */
    dbpool__budget_usage(b, &used, &held, NULL, 0, &n);
    assert_int_equal(used, 1);
    assert_int_equal(held, 1);
    dbpool__options o;
    set_opts(&o, dir, 0, "app", "127.0.0.1");
    dbpool__budget *z = NULL;
    assert_int_equal(dbpool__budget_open(&z, &o), DBPOOL_ECONFIG); /* 0 slots */
    dbpool__budget_release(b, slot);
    dbpool__budget_close(b);
    remove_base();
}

static void two_keys_are_independent(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    /* user, host: each row is its own budget of 1 (rows 4/5 are the same key as 0/2). */
    const char *keys[][2] = {{"alice", "127.0.0.1"}, {"bob", "127.0.0.1"}, {"alice", "db2.example"},
                             {"a/b c", "localhost"}, {"alice", "127.0.0.1"}, {"alice", "DB2.example"}};
    dbpool__budget *b[6];
    int slot[6];
    for (int i = 0; i < 6; i++) {
        dbpool__options o;
        set_opts(&o, dir, 1, keys[i][0], keys[i][1]);
        b[i] = NULL;
        assert_int_equal(dbpool__budget_open(&b[i], &o), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(dbpool__budget_acquire(b[i], 0, NULL, &slot[i]), 0);
    assert_full(b[4], 30); /* alice@127.0.0.1 taken by b[0] */
    assert_full(b[5], 30); /* host names compare case-insensitively */
    char names[16][256];
    assert_int_equal(list_slots(dir, names, 16), 4);
    for (int i = 0; i < 4; i++)
        assert_null(strchr(names[i], ' ')); /* "a/b c" sanitised */
    for (int i = 0; i < 4; i++)
        dbpool__budget_release(b[i], slot[i]);
    for (int i = 0; i < 6; i++)
        dbpool__budget_close(b[i]);
    remove_base();
}

static int last_level = -1;
static char last_msg[1024];
static void capture_log(int level, const char *msg, void *ud)
{
    (void)ud;
    if (level <= DBPOOL_LOG_WARN) {
        last_level = level;
        snprintf(last_msg, sizeof last_msg, "%s", msg);
    }
}

static void larger_budget_elsewhere_is_warned(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    dbpool__budget *big = open_ok(dir, 3);
    int s[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool__budget_acquire(big, 0, NULL, &s[i]), 0);
    dbpool_set_logger(capture_log, NULL);
    dbpool__budget *small = open_ok(dir, 2);
    dbpool_set_logger(NULL, NULL);
    print_message("warning: %s\n", last_msg);
    assert_int_equal(last_level, DBPOOL_LOG_WARN);
    assert_non_null(strstr(last_msg, "larger than 2"));
    dbpool__budget_close(small);
    for (int i = 0; i < 3; i++)
        dbpool__budget_release(big, s[i]);
    dbpool__budget_close(big);
    remove_base();
}

/* ---- across processes ----------------------------------------------------------------------- */

struct shared {
    int current, max, violations, errors;
    pid_t owner[8];
};

static void proc_worker(struct shared *sh, const char *dir, unsigned n, unsigned iters)
{
    alarm(SAFETY_S);
    dbpool__options o;
    set_opts(&o, dir, n, "app", "127.0.0.1");
    dbpool__budget *b = NULL;
    if (dbpool__budget_open(&b, &o) != 0)
        _exit(2);
    for (unsigned i = 0; i < iters; i++) {
        int slot;
        if (dbpool__budget_acquire(b, ms_from_now(30000), NULL, &slot) != 0) {
            __atomic_fetch_add(&sh->errors, 1, __ATOMIC_RELAXED);
            _exit(3);
        }
        pid_t zero = 0;
        if (!__atomic_compare_exchange_n(&sh->owner[slot], &zero, getpid(), false, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
            __atomic_fetch_add(&sh->violations, 1, __ATOMIC_RELAXED);
        int cur = __atomic_add_fetch(&sh->current, 1, __ATOMIC_ACQ_REL), m;
        while ((m = __atomic_load_n(&sh->max, __ATOMIC_RELAXED)) < cur &&
               !__atomic_compare_exchange_n(&sh->max, &m, cur, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            ;
        usleep(500);
        __atomic_sub_fetch(&sh->current, 1, __ATOMIC_ACQ_REL);
        __atomic_store_n(&sh->owner[slot], 0, __ATOMIC_RELEASE);
        dbpool__budget_release(b, slot);
    }
    dbpool__budget_close(b);
    _exit(0);
}

static void many_processes_never_exceed_budget(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    enum { NPROC = 10 };
    unsigned iters = 40; /* not scaled: enough overlap to reach the budget in slow builds too */
    pid_t pids[NPROC];
    uint64_t t0 = now_ms();
    for (int i = 0; i < NPROC; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0)
            proc_worker(sh, dir, 3, iters);
    }
    int bad = 0;
    for (int i = 0; i < NPROC; i++)
        bad += exit_code(pids[i]) != 0;
    print_message("%d processes x %u acquisitions in %llu ms: max concurrent %d (budget 3), "
                  "violations %d, errors %d\n", NPROC, iters, (unsigned long long)(now_ms() - t0),
                  sh->max, sh->violations, sh->errors);
    assert_int_equal(bad, 0);
    assert_int_equal(sh->violations, 0);
    assert_int_equal(sh->max, 3);
    munmap(sh, sizeof *sh);
    remove_base();
}

static void sigkill_of_holder_frees_slot_at_once(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    struct holder h = start_holder(dir, 1, 1, false, false); /* before our open: no shared fds */
    dbpool__budget *b = open_ok(dir, 1);
    assert_full(b, 100);
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)h.pid);
    assert_non_null(strstr(dbpool_last_error(), pid));
    long pids[2] = {0, 0};
    size_t n;
    unsigned used, held;
    assert_int_equal(dbpool__budget_usage(b, &used, &held, pids, 2, &n), 0);
    assert_int_equal(used, 1);
    assert_int_equal(held, 0);
    assert_int_equal(n, 1);
    assert_int_equal(pids[0], h.pid);

    int slot;
    uint64_t t_kill = dbpool__now_ns();
    assert_int_equal(kill(h.pid, SIGKILL), 0); /* not reaped yet: the lock goes at exit */
    assert_int_equal(dbpool__budget_acquire(b, t_kill + 2000000000ull, NULL, &slot), 0);
    double ms = (dbpool__now_ns() - t_kill) / 1e6;
    print_message("slot of the SIGKILLed holder taken %.2f ms after kill()\n", ms);
    assert_true(ms < 200.0);
    waitpid(h.pid, NULL, 0);
    dbpool__budget_release(b, slot);
    dbpool__budget_close(b);
    remove_base();
}

static void fork_child_neither_releases_nor_consumes(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    dbpool__budget *b = open_ok(dir, 2);
    int slot;
    assert_int_equal(dbpool__budget_acquire(b, 0, NULL, &slot), 0);
    pid_t parent = getpid(), c = fork();
    assert_true(c >= 0);
    if (c == 0) {
        alarm(SAFETY_S);
        /* What the pool's atfork child handler does, then everything a confused child might. */
        dbpool__budget_forget_in_child(b);
        dbpool__budget_release(b, slot);
        unsigned used = 9, held = 9;
        size_t n = 9;
        dbpool__budget_usage(b, &used, &held, NULL, 0, &n);
        if (used || held || n)
            _exit(10);
        int s2;
        if (dbpool__budget_acquire(b, 0, NULL, &s2) != DBPOOL_ECLOSED)
            _exit(11);
        dbpool__budget_close(b); /* frees the forgotten object, unlocks nothing */
        dbpool__options o;
        set_opts(&o, dir, 2, "app", "127.0.0.1");
        dbpool__budget *mine = NULL;
        if (dbpool__budget_open(&mine, &o) != 0)
            _exit(12);
        long pids[2];
        dbpool__budget_usage(mine, &used, &held, pids, 2, &n);
        if (used != 1 || held != 0 || pids[0] != parent) /* the parent's slot is still held */
            _exit(13);
        if (dbpool__budget_acquire(mine, 0, NULL, &s2) != 0 || s2 == slot) /* the other one */
            _exit(14);
        int s3;
        if (dbpool__budget_acquire(mine, ms_from_now(50), NULL, &s3) != DBPOOL_EBUDGET)
            _exit(15);
        dbpool__budget_release(mine, s2);
        dbpool__budget_close(mine);
        _exit(0);
    }
    assert_int_equal(exit_code(c), 0);
    /* The parent still holds its slot; the child's one is back. */
    dbpool__budget *probe = open_ok(dir, 2);
    unsigned used, held;
    long pids[2];
    size_t n;
    assert_int_equal(dbpool__budget_usage(probe, &used, &held, pids, 2, &n), 0);
    assert_int_equal(used, 1);
    assert_int_equal(pids[0], getpid());
    int s2;
    assert_int_equal(dbpool__budget_acquire(probe, 0, NULL, &s2), 0);
    assert_int_not_equal(s2, slot);
    assert_full(probe, 20);
    dbpool__budget_release(probe, s2);
    dbpool__budget_close(probe);
    dbpool__budget_usage(b, &used, &held, NULL, 0, &n);
    assert_int_equal(held, 1);
    dbpool__budget_release(b, slot);
    dbpool__budget_close(b);
    remove_base();
}

/* Holder H takes the only slot and forks a lingering child C; then H is SIGKILLed. */
static void lingering_child_case(bool forget)
{
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    struct holder h = start_holder(dir, 1, 1, true, forget);
    dbpool__budget *b = open_ok(dir, 1);
    long pids[2] = {0, 0};
    size_t n;
    unsigned used, held;
    assert_int_equal(dbpool__budget_usage(b, &used, &held, pids, 2, &n), 0);
    assert_int_equal(used, 1); /* H's slot; C, alive, holds nothing of its own */
    assert_int_equal(pids[0], h.pid);
    assert_full(b, 50);

    int slot = -1;
    uint64_t t_kill = dbpool__now_ns();
    kill_reap(h.pid);
    assert_int_equal(kill(h.grandchild, 0), 0); /* C still lingers */
    if (forget) {
        assert_int_equal(dbpool__budget_acquire(b, t_kill + 2000000000ull, NULL, &slot), 0);
        double ms = (dbpool__now_ns() - t_kill) / 1e6;
        print_message("holder killed, its forked child alive: slot free after %.2f ms\n", ms);
        assert_true(ms < 200.0);
        dbpool__budget_release(b, slot);
    } else {
        /* Control: a child that kept the inherited descriptors keeps the dead parent's lock,
         * which the error names. Proves the case above tests something. */
        assert_full(b, 300);
        char tag[64];
        snprintf(tag, sizeof tag, "%ld (exited", (long)h.pid);
        print_message("control: %s\n", dbpool_last_error());
        assert_non_null(strstr(dbpool_last_error(), tag));
    }
    kill_reap(h.grandchild); /* reparented to init or a subreaper: may not be ours to reap */
    if (!forget) {
        assert_int_equal(dbpool__budget_acquire(b, ms_from_now(2000), NULL, &slot), 0);
        dbpool__budget_release(b, slot);
    }
    dbpool__budget_close(b);
    remove_base();
}

static void lingering_fork_child_keeps_nothing_after_holder_dies(void **state)
{
    (void)state;
    lingering_child_case(true);
}

static void control_child_without_forget_keeps_the_lock(void **state)
{
    (void)state;
    lingering_child_case(false);
}

static void usage_counts_and_pids(void **state)
{
    (void)state;
    make_base();
    char dir[PATH_MAX];
    path_in(dir, sizeof dir, "b");
    struct holder h = start_holder(dir, 4, 2, false, false);
    dbpool__budget *b = open_ok(dir, 4);
    int slot;
    assert_int_equal(dbpool__budget_acquire(b, 0, NULL, &slot), 0);
    long pids[4] = {0, 0, 0, 0};
    size_t n;
    unsigned used, held;
    assert_int_equal(dbpool__budget_usage(b, &used, &held, pids, 4, &n), 0);
    assert_int_equal(used, 3);
    assert_int_equal(held, 1);
    assert_int_equal(n, 3);
    int of_h = 0, of_me = 0;
    for (size_t i = 0; i < n; i++) {
        of_h += pids[i] == h.pid;
        of_me += pids[i] == getpid();
    }
    assert_int_equal(of_h, 2);
    assert_int_equal(of_me, 1);
    long one[1] = {0};
    assert_int_equal(dbpool__budget_usage(b, &used, &held, one, 1, &n), 0);
    assert_int_equal(n, 3); /* the count exceeds cap; only one pid written */
    assert_true(one[0] == h.pid || one[0] == getpid());
    kill_reap(h.pid);
    assert_int_equal(dbpool__budget_usage(b, &used, &held, pids, 4, &n), 0);
    assert_int_equal(used, 1);
    assert_int_equal(n, 1);
    dbpool__budget_release(b, slot);
    dbpool__budget_close(b);
    remove_base();
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(open_creates_dir_0700_and_reuses_files),
        cmocka_unit_test(group_shared_dir_gives_0660_files),
        cmocka_unit_test(missing_parent_is_econfig_and_not_created),
        cmocka_unit_test(file_in_the_way_is_econfig),
        cmocka_unit_test(no_permission_is_econfig),
        cmocka_unit_test(symlink_world_writable_relative_refused),
        cmocka_unit_test(foreign_owner_refused_unless_group_shared),
        cmocka_unit_test(slot_path_not_regular_is_econfig),
        cmocka_unit_test(descriptors_cloexec_and_none_leaked),
        cmocka_unit_test(acquire_distinct_slots_then_ebudget),
        cmocka_unit_test(pid_written_while_held_blanked_after),
        cmocka_unit_test(threads_never_share_a_slot),
        cmocka_unit_test(cancel_gives_eclosed),
        cmocka_unit_test(null_and_misuse_are_harmless),
        cmocka_unit_test(two_keys_are_independent),
        cmocka_unit_test(larger_budget_elsewhere_is_warned),
        cmocka_unit_test(many_processes_never_exceed_budget),
        cmocka_unit_test(sigkill_of_holder_frees_slot_at_once),
        cmocka_unit_test(fork_child_neither_releases_nor_consumes),
        cmocka_unit_test(lingering_fork_child_keeps_nothing_after_holder_dies),
        cmocka_unit_test(control_child_without_forget_keeps_the_lock),
        cmocka_unit_test(usage_counts_and_pids),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
