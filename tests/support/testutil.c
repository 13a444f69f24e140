/*
 * testutil.c - the shared test support of libdbpool (see testutil.h).
 *
 * Failures inside a test are reported with cmocka's fail_msg() (which longjmps out of the
 * running test), so the tu_* helpers that can fail must be called from the thread that runs the
 * test. Outside a cmocka test (helper programs in tests/progs) cmocka exits the process.
 */
#include "testutil.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef DBPOOL_FIXTURE_SCRIPT
#define DBPOOL_FIXTURE_SCRIPT "tests/dbserver.sh"
#endif
#ifndef DBPOOL_TEST_PROGS_DIR
#define DBPOOL_TEST_PROGS_DIR "."
#endif

extern char **environ;

/* ---- small helpers ------------------------------------------------------------------------ */

static int env_true(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
}

static void copy_str(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/* TCP, never the Unix socket: "localhost" would make Connector/C use the socket. */
static const char *tcp_host(const tu_server *s)
{
    return (!s->host[0] || strcmp(s->host, "localhost") == 0) ? "127.0.0.1" : s->host;
}

static const char *fixture_script(void)
{
    const char *p = getenv("DBPOOL_FIXTURE_SCRIPT");
    return p && *p ? p : DBPOOL_FIXTURE_SCRIPT;
}

static const char *progs_dir(void)
{
    const char *p = getenv("DBPOOL_TEST_PROGS_DIR");
    return p && *p ? p : DBPOOL_TEST_PROGS_DIR;
}

void tu_skip(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "SKIP: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(77);
}

/* ---- server coordinates ------------------------------------------------------------------ */

/* Set one field of `s` from KEY (without the DBPOOL_TEST_ prefix). */
static void set_field(tu_server *s, const char *key, const char *val)
{
    static const struct {
        const char *key;
        size_t off, size;
    } f[] = {
#define F(k, m) {k, offsetof(tu_server, m), sizeof(((tu_server *)0)->m)}
        F("HOST", host),
        F("SOCKET", socket),
        F("DB", db),
        F("USER", user),
        F("PASSWORD", password),
        F("ADMIN_USER", admin_user),
        F("ADMIN_PASSWORD", admin_password),
        F("ERRLOG", errlog),
        F("DATADIR", datadir),
#undef F
    };
    if (strcmp(key, "PORT") == 0) {
        s->port = (unsigned)strtoul(val, NULL, 10);
        return;
    }
    if (strcmp(key, "PID") == 0) {
        s->pid = strtol(val, NULL, 10);
        return;
    }
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (strcmp(key, f[i].key) == 0) {
            if (strlen(val) >= f[i].size) {
                fprintf(stderr, "testutil: DBPOOL_TEST_%s is too long\n", key);
                exit(1);
            }
            copy_str((char *)s + f[i].off, f[i].size, val);
            return;
        }
}

/* Read DBPOOL_TEST_KEY=VALUE lines. Returns 0, or -1 if the file cannot be opened. */
static int load_env_file(tu_server *s, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *eq = strchr(line, '=');
        if (strncmp(line, "DBPOOL_TEST_", 12) != 0 || !eq)
            continue;
        *eq = '\0';
        set_field(s, line + 12, eq + 1);
    }
    fclose(f);
    return 0;
}

static void overlay_environment(tu_server *s)
{
    static const char *const keys[] = {"HOST", "PORT", "SOCKET", "DB", "USER", "PASSWORD",
                                       "ADMIN_USER", "ADMIN_PASSWORD", "ERRLOG"};
    char name[64];
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        snprintf(name, sizeof name, "DBPOOL_TEST_%s", keys[i]);
        const char *v = getenv(name);
        if (v)
            set_field(s, keys[i], v);
    }
}

static tu_server shared;
static char shared_why[1024];

/* The server lane ctest gave this test (resource type "dbserver", see tests/dbserver.sh), or
 * $DBPOOL_TEST_LANE; NULL for the main server. */
static const char *server_lane(char *buf, size_t n)
{
    const char *lane = getenv("DBPOOL_TEST_LANE");
    const char *count = getenv("CTEST_RESOURCE_GROUP_COUNT");
    if (lane && *lane)
        return strcmp(lane, "0") == 0 ? NULL : lane;
    for (int i = 0; count && i < atoi(count); i++) {
        char name[64];
        snprintf(name, sizeof name, "CTEST_RESOURCE_GROUP_%d", i);
        const char *types = getenv(name);
        if (!types || !strstr(types, "dbserver"))
            continue;
        snprintf(name, sizeof name, "CTEST_RESOURCE_GROUP_%d_DBSERVER", i);
        const char *alloc = getenv(name); /* "id:1,slots:1" */
        if (!alloc || strncmp(alloc, "id:", 3) != 0)
            continue;
        snprintf(buf, n, "%.*s", (int)strcspn(alloc + 3, ","), alloc + 3);
        return strcmp(buf, "0") == 0 ? NULL : buf;
    }
    return NULL;
}

static void load_shared(void)
{
    const char *file = getenv("DBPOOL_TEST_ENV_FILE");
    char fallback[PATH_MAX], lane_file[PATH_MAX + 32], lane_buf[32];
    if (!file || !*file) {
        /* Run by hand: the fixture's file of this build tree, if it is there. */
        snprintf(fallback, sizeof fallback, "%s/../test-server/server.env", progs_dir());
        file = fallback;
    }
    const char *lane = server_lane(lane_buf, sizeof lane_buf);
    if (lane) {
        const char *slash = strrchr(file, '/');
        snprintf(lane_file, sizeof lane_file, "%.*s/lane-%s/server.env",
                 slash ? (int)(slash - file) : 1, slash ? file : ".", lane);
        if (access(lane_file, R_OK) == 0)
            file = lane_file;
        else
            fprintf(stderr, "testutil: no server for lane %s (%s): using %s\n", lane, lane_file,
                    file);
    }
    int have_file = load_env_file(&shared, file) == 0;
    overlay_environment(&shared);
    if (!shared.port)
        shared.port = 3306;
    if (!shared.db[0])
        copy_str(shared.db, sizeof shared.db, "dbpool_test");
    if (!shared.host[0])
        snprintf(shared_why, sizeof shared_why,
                 "no test server: %s %s and DBPOOL_TEST_HOST is not set (run the tests through "
                 "ctest, whose fixture starts a server, or start one with `bash %s "
                 "fixture-start DIR` and set DBPOOL_TEST_ENV_FILE=DIR/server.env)",
                 file, have_file ? "names no host" : "does not exist", fixture_script());
    else if (!shared.user[0] || !shared.admin_user[0])
        snprintf(shared_why, sizeof shared_why,
                 "incomplete test server coordinates (%s%s%s): set DBPOOL_TEST_USER and "
                 "DBPOOL_TEST_ADMIN_USER", shared.user[0] ? "" : "no application user",
                 !shared.user[0] && !shared.admin_user[0] ? ", " : "",
                 shared.admin_user[0] ? "" : "no admin user");
}

const tu_server *tu_server_shared(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, load_shared);
    if (shared_why[0]) {
        fflush(stdout);
        if (env_true("CI") || env_true("DBPOOL_TEST_REQUIRE_SERVER")) {
            fprintf(stderr, "FAIL: %s\n(a server is required because %s is set)\n", shared_why,
                    env_true("CI") ? "CI" : "DBPOOL_TEST_REQUIRE_SERVER");
            exit(1);
        }
        fprintf(stderr, "SKIP: %s\n", shared_why);
        exit(77);
    }
    return &shared;
}

/* ---- pointing the library at a server ------------------------------------------------------- */

static char empty_env[PATH_MAX];
static pid_t empty_env_owner;

static void remove_empty_env(void)
{
    if (empty_env[0] && getpid() == empty_env_owner)
        unlink(empty_env);
}

static const char *empty_env_file(void)
{
    if (empty_env[0] && access(empty_env, R_OK) == 0)
        return empty_env;
    const char *tmp = getenv("TMPDIR");
    snprintf(empty_env, sizeof empty_env, "%s/dbpool-test-env.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(empty_env);
    if (fd < 0) {
        snprintf(empty_env, sizeof empty_env, "/tmp/dbpool-test-env.XXXXXX");
        fd = mkstemp(empty_env);
    }
    if (fd < 0)
        fail_msg("cannot create an empty .env file: %s", strerror(errno));
    close(fd);
    if (empty_env_owner == 0)
        atexit(remove_empty_env);
    empty_env_owner = getpid();
    return empty_env;
}

/* DB_* and DBPOOL_* belong to the library; DBPOOL_TEST_* and DBPOOL_FIXTURE_SCRIPT to this
 * harness (kept, so that private instances and helper programs still find the fixture). */
static int library_variable(const char *name, size_t len)
{
    if (len >= 3 && strncmp(name, "DB_", 3) == 0)
        return 1;
    if (len < 7 || strncmp(name, "DBPOOL_", 7) != 0)
        return 0;
    if (len >= 12 && strncmp(name, "DBPOOL_TEST_", 12) == 0)
        return 0;
    return !(len == 21 && strncmp(name, "DBPOOL_FIXTURE_SCRIPT", 21) == 0);
}

static void clear_library_environment(void)
{
    /* Collect first: unsetenv() reshuffles environ. */
    for (;;) {
        char name[256];
        int found = 0;
        for (char **e = environ; e && *e; e++) {
            size_t len = strcspn(*e, "=");
            if (library_variable(*e, len) && len < sizeof name) {
                memcpy(name, *e, len);
                name[len] = '\0';
                found = 1;
                break;
            }
        }
        if (!found)
            return;
        unsetenv(name);
    }
}

void tu_use_server(const tu_server *s)
{
    char port[16];
    clear_library_environment();
    snprintf(port, sizeof port, "%u", s->port);
    setenv("DB_HOST", tcp_host(s), 1);
    setenv("DB_PORT", port, 1);
    setenv("DB_USER", s->user, 1);
    setenv("DB_PASSWORD", s->password, 1);
    setenv("DB_NAME", s->db, 1);
    setenv("DB_LOG_LEVEL", "warn", 1);
    setenv("DBPOOL_ENV_FILE", empty_env_file(), 1);
}

void tu_use_shared(void)
{
    tu_use_server(tu_server_shared());
}

/* ---- direct connections ----------------------------------------------------------------------- */

static MYSQL *connect_as(const tu_server *s, const char *user, const char *password,
                         const char *db, const char *what)
{
    MYSQL *m = mysql_init(NULL);
    unsigned connect_timeout = 10, io_timeout = 120, protocol = MYSQL_PROTOCOL_TCP;
    my_bool off = 0;
    if (!m)
        fail_msg("mysql_init failed (out of memory)");
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    mysql_options(m, MYSQL_OPT_PROTOCOL, &protocol);
    mysql_options(m, MYSQL_OPT_LOCAL_INFILE, &off);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (!mysql_real_connect(m, tcp_host(s), user, password, db, s->port, NULL, 0)) {
        char err[512];
        unsigned no = mysql_errno(m);
        copy_str(err, sizeof err, mysql_error(m));
        mysql_close(m);
        fail_msg("cannot connect as %s (%s) to %s:%u: %u %s (is the test server running? its "
                 "error log: %s)", what, user, tcp_host(s), s->port, no, err,
                 s->errlog[0] ? s->errlog : "unknown");
    }
    /* Keep test connections out of exec'd helper programs (they would keep sessions alive). */
    int fd = mysql_get_socket(m);
    if (fd >= 0)
        fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
    return m;
}

MYSQL *tu_admin(const tu_server *s)
{
    return connect_as(s, s->admin_user, s->admin_password, NULL, "admin");
}

MYSQL *tu_app(const tu_server *s)
{
    return connect_as(s, s->user, s->password, s->db, "application user");
}

__attribute__((format(printf, 1, 0))) static char *format_sql(const char *fmt, va_list ap)
{
    char *sql = NULL;
    if (vasprintf(&sql, fmt, ap) < 0)
        fail_msg("out of memory formatting SQL");
    return sql;
}

/* Read and free every result of the last statement; fails the test on error. */
static void drain(MYSQL *m, const char *sql)
{
    int rc;
    do {
        MYSQL_RES *r = mysql_store_result(m);
        if (r)
            mysql_free_result(r);
        else if (mysql_field_count(m) != 0)
            fail_msg("reading the result of \"%s\": %u %s", sql, mysql_errno(m), mysql_error(m));
    } while ((rc = mysql_next_result(m)) == 0);
    if (rc > 0)
        fail_msg("\"%s\": %u %s", sql, mysql_errno(m), mysql_error(m));
}

static void run_sql(MYSQL *m, char *sql)
{
    if (mysql_real_query(m, sql, strlen(sql)) != 0) {
        char err[512];
        unsigned no = mysql_errno(m);
        copy_str(err, sizeof err, mysql_error(m));
        fprintf(stderr, "SQL failed: %s\n", sql);
        free(sql);
        fail_msg("statement failed: %u %s", no, err);
    }
}

void tu_exec(MYSQL *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = format_sql(fmt, ap);
    va_end(ap);
    run_sql(m, sql);
    drain(m, sql);
    free(sql);
}

static long long scalar_sql(MYSQL *m, char *sql)
{
    long long v = -1;
    run_sql(m, sql);
    MYSQL_RES *r = mysql_store_result(m);
    if (!r) {
        unsigned no = mysql_errno(m);
        fprintf(stderr, "SQL: %s\n", sql);
        free(sql);
        fail_msg("statement returned no result set (%u %s)", no, mysql_error(m));
    }
    MYSQL_ROW row = mysql_fetch_row(r);
    if (row && mysql_num_fields(r) > 0 && row[0]) {
        char *end;
        errno = 0;
        v = strtoll(row[0], &end, 10);
        if (errno || end == row[0] || (*end && *end != '.')) {
            char val[64];
            copy_str(val, sizeof val, row[0]);
            mysql_free_result(r);
            fprintf(stderr, "SQL: %s\n", sql);
            free(sql);
            fail_msg("not an integer: '%s'", val);
        }
    }
    mysql_free_result(r);
    while (mysql_next_result(m) == 0) {
        r = mysql_store_result(m);
        if (r)
            mysql_free_result(r);
    }
    free(sql);
    return v;
}

long long tu_scalar(MYSQL *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = format_sql(fmt, ap);
    va_end(ap);
    return scalar_sql(m, sql);
}

/* ---- facts on the server ------------------------------------------------------------------ */

/* Rows of SHOW FULL PROCESSLIST with this user (any when NULL), id (any when 0) and Info
 * starting with `info` (any when NULL), the caller's own session excluded; the id of the first
 * to *first (if not NULL). -1 on error, without failing the test: threads may call it. Not
 * information_schema.PROCESSLIST: that goes through an internal temporary table with files in
 * the server's tmpdir, and while tests polled it a server crashed (SIGSEGV in
 * ha_maria::drop_table) when those files vanished from a shared /tmp (now each test server has
 * its own tmpdir, see tests/dbserver.sh). SHOW PROCESSLIST needs no temporary table and is
 * cheaper to poll. */
static long processlist_scan(MYSQL *admin, const char *user, unsigned long id, const char *info,
                             unsigned long *first)
{
    unsigned long self = mysql_thread_id(admin);
    if (mysql_query(admin, "SHOW FULL PROCESSLIST") != 0)
        return -1;
    MYSQL_RES *r = mysql_store_result(admin);
    if (!r)
        return -1;
    MYSQL_FIELD *f = mysql_fetch_fields(r);
    if (mysql_num_fields(r) < 8 || strcasecmp(f[0].name, "Id") != 0 ||
        strcasecmp(f[1].name, "User") != 0 || strcasecmp(f[7].name, "Info") != 0) {
        mysql_free_result(r);
        return -1;
    }
    long n = 0;
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(r)) != NULL) {
        unsigned long rid = row[0] ? strtoul(row[0], NULL, 10) : 0;
        if (rid == self || (id && rid != id))
            continue;
        if (user && (!row[1] || strcmp(row[1], user) != 0))
            continue;
        if (info && (!row[7] || strncmp(row[7], info, strlen(info)) != 0))
            continue;
        if (n++ == 0 && first)
            *first = rid;
    }
    mysql_free_result(r);
    return n;
}

long tu_processlist_count(MYSQL *admin, const char *user, unsigned long id, const char *info)
{
    return processlist_scan(admin, user, id, info, NULL);
}

static long processlist_count(MYSQL *admin, const char *user, unsigned long id)
{
    long n = processlist_scan(admin, user, id, NULL, NULL);
    if (n < 0)
        fail_msg("SHOW FULL PROCESSLIST: %u %s", mysql_errno(admin), mysql_error(admin));
    return n;
}

unsigned long tu_session_id(MYSQL *admin, const char *user)
{
    unsigned long id = 0;
    if (processlist_scan(admin, user, 0, NULL, &id) < 0)
        fail_msg("SHOW FULL PROCESSLIST: %u %s", mysql_errno(admin), mysql_error(admin));
    return id;
}

long tu_count_sessions(MYSQL *admin, const char *user)
{
    return processlist_count(admin, user, 0);
}

int tu_session_exists(MYSQL *admin, unsigned long id)
{
    return id != 0 && processlist_count(admin, NULL, id) > 0;
}

long tu_wait_sessions(MYSQL *admin, const char *user, long want, unsigned ms)
{
    uint64_t deadline = tu_now_ms() + ms;
    for (;;) {
        long n = tu_count_sessions(admin, user);
        if (n == want || tu_now_ms() >= deadline)
            return n;
        tu_sleep_ms(20);
    }
}

int tu_errlog_aborted(const tu_server *s, unsigned long id)
{
    char needle[64], *line = NULL;
    size_t cap = 0;
    int n = 0;
    if (!s->errlog[0])
        return -1;
    FILE *f = fopen(s->errlog, "r");
    if (!f)
        return -1;
    snprintf(needle, sizeof needle, "Aborted connection %lu ", id);
    while (getline(&line, &cap, f) >= 0) {
        /* Thread ids start again at every server start: count only the current incarnation. */
        if (strstr(line, "] Starting MariaDB") || strstr(line, "starting as process"))
            n = 0;
        else if (strstr(line, needle))
            n++;
    }
    free(line);
    fclose(f);
    return n;
}

int tu_errlog_wait_aborted(const tu_server *s, unsigned long id, unsigned ms)
{
    uint64_t deadline = tu_now_ms() + ms;
    for (;;) {
        int n = tu_errlog_aborted(s, id);
        if (n != 0 || tu_now_ms() >= deadline)
            return n;
        tu_sleep_ms(20);
    }
}

long long tu_global_status(MYSQL *admin, const char *name)
{
    char esc[2 * 128 + 1];
    size_t n = strlen(name);
    if (n > 128)
        fail_msg("status name too long");
    mysql_real_escape_string(admin, esc, name, (unsigned long)n);
    long long v = tu_scalar(admin,
                            "SELECT COALESCE((SELECT VARIABLE_VALUE FROM information_schema."
                            "GLOBAL_STATUS WHERE VARIABLE_NAME = UPPER('%s')), 'missing')", esc);
    return v;
}

/* ---- private server instances --------------------------------------------------------------- */

#define TU_MAX_PRIVATE 32
static pthread_mutex_t priv_mu = PTHREAD_MUTEX_INITIALIZER;
static char priv_dirs[TU_MAX_PRIVATE][PATH_MAX];
static pid_t priv_owner;

/* Run `bash <fixture script> cmd dir`; returns the wait status. The child gets none of our
 * descriptors (a copy of a test connection kept in a background process would keep a session
 * alive) and names us as the owner whose death stops the instance. */
static int run_fixture(const char *cmd, const char *dir)
{
    char owner[48];
    size_t n = 0;
    snprintf(owner, sizeof owner, "DBPOOL_TEST_OWNER_PID=%ld", (long)getpid());
    for (char **e = environ; e && *e; e++)
        n++;
    char **envp = calloc(n + 2, sizeof *envp);
    if (!envp)
        fail_msg("out of memory");
    size_t k = 0;
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, "DBPOOL_TEST_OWNER_PID=", 22) != 0)
            envp[k++] = *e;
    envp[k++] = owner;
    char *argv[] = {"bash", (char *)fixture_script(), (char *)cmd, (char *)dir, NULL};
    struct rlimit rl;
    int maxfd = (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536) ? (int)rl.rlim_cur : 65536;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        free(envp);
        fail_msg("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        for (int fd = 3; fd < maxfd; fd++)
            close(fd);
        execve("/bin/bash", argv, envp);
        execve("/usr/bin/bash", argv, envp);
        _exit(127);
    }
    free(envp);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            fail_msg("waitpid: %s", strerror(errno));
    return st;
}

static void priv_dir_of(const tu_server *s, char *dir, size_t n)
{
    copy_str(dir, n, s->datadir);
    char *slash = strrchr(dir, '/');
    if (!slash || strcmp(slash, "/data") != 0)
        fail_msg("not a private server instance (datadir '%s')", s->datadir);
    *slash = '\0';
}

static void fixture_or_fail(const char *cmd, const char *dir)
{
    int st = run_fixture(cmd, dir);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("%s %s %s failed (status 0x%x; its output is above)", fixture_script(), cmd, dir,
                 (unsigned)st);
}

static void priv_forget(const char *dir)
{
    pthread_mutex_lock(&priv_mu);
    for (int i = 0; i < TU_MAX_PRIVATE; i++)
        if (strcmp(priv_dirs[i], dir) == 0)
            priv_dirs[i][0] = '\0';
    pthread_mutex_unlock(&priv_mu);
}

/* At exit (also after a failed test): destroy what is left, in the process that started it. */
static void priv_cleanup(void)
{
    if (getpid() != priv_owner)
        return;
    for (int i = 0; i < TU_MAX_PRIVATE; i++)
        if (priv_dirs[i][0]) {
            run_fixture("private-destroy", priv_dirs[i]);
            rmdir(priv_dirs[i]);
            priv_dirs[i][0] = '\0';
        }
}

static void priv_remember(const char *dir)
{
    pthread_mutex_lock(&priv_mu);
    if (priv_owner != getpid()) {
        if (priv_owner == 0)
            atexit(priv_cleanup);
        memset(priv_dirs, 0, sizeof priv_dirs);
        priv_owner = getpid();
    }
    for (int i = 0; i < TU_MAX_PRIVATE; i++)
        if (!priv_dirs[i][0]) {
            copy_str(priv_dirs[i], sizeof priv_dirs[i], dir);
            break;
        }
    pthread_mutex_unlock(&priv_mu);
}

static void priv_load(tu_server *s, const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/server.env", dir);
    memset(s, 0, sizeof *s);
    if (load_env_file(s, path) != 0)
        fail_msg("cannot read %s: %s", path, strerror(errno));
}

void tu_private_start(tu_server *s)
{
    const char *tmp = getenv("TMPDIR");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/dbpool-priv.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        fail_msg("mkdtemp %s: %s", dir, strerror(errno));
    priv_remember(dir);
    fixture_or_fail("private-start", dir);
    priv_load(s, dir);
}

void tu_private_stop(tu_server *s)
{
    char dir[PATH_MAX];
    priv_dir_of(s, dir, sizeof dir);
    fixture_or_fail("private-stop", dir);
    s->pid = 0;
}

void tu_private_restart(tu_server *s)
{
    char dir[PATH_MAX];
    priv_dir_of(s, dir, sizeof dir);
    fixture_or_fail("private-restart", dir);
    priv_load(s, dir);
}

static char proc_state(long pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

/* Signal the server and wait until the kernel shows the new state (SIGSTOP is asynchronous). */
static void signal_server(tu_server *s, int sig, int want_stopped)
{
    if (s->pid <= 0)
        fail_msg("private server is not running");
    if (kill((pid_t)s->pid, sig) != 0)
        fail_msg("kill(%ld, %d): %s", s->pid, sig, strerror(errno));
    for (int i = 0; i < 1000; i++) {
        char st = proc_state(s->pid);
        if (st == 0 || ((st == 'T' || st == 't') == want_stopped))
            return;
        tu_sleep_ms(1);
    }
}

void tu_private_freeze(tu_server *s)
{
    signal_server(s, SIGSTOP, 1);
}

void tu_private_thaw(tu_server *s)
{
    signal_server(s, SIGCONT, 0);
}

void tu_private_destroy(tu_server *s)
{
    char dir[PATH_MAX];
    priv_dir_of(s, dir, sizeof dir);
    fixture_or_fail("private-destroy", dir);
    if (!env_true("DBPOOL_TEST_KEEP"))
        rmdir(dir);
    priv_forget(dir);
    s->pid = 0;
}

/* ---- child processes ------------------------------------------------------------------------ */

const char *tu_prog_path(const char *prog, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s", progs_dir(), prog);
    return buf;
}

pid_t tu_spawn(const char *prog, char *const argv[])
{
    char path[PATH_MAX];
    tu_prog_path(prog, path, sizeof path);
    if (access(path, X_OK) != 0)
        fail_msg("helper program %s: %s", path, strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        execv(path, argv);
        _exit(127);
    }
    return pid;
}

int tu_wait(pid_t pid, unsigned ms)
{
    uint64_t deadline = tu_now_ms() + ms;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            fail_msg("waitpid(%ld): %s", (long)pid, strerror(errno));
        if (tu_now_ms() >= deadline)
            break;
        tu_sleep_ms(2);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return -1;
}

/* ---- time, scale, resources ------------------------------------------------------------------ */

uint64_t tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void tu_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

unsigned tu_scaled(unsigned n)
{
    double scale = 1.0;
    const char *v = getenv("DBPOOL_TEST_SCALE");
    if (v && *v) {
        char *end;
        double d = strtod(v, &end);
        if (end != v && *end == '\0' && d > 0)
            scale = d;
    }
    double r = (double)n * scale;
    return r < 1.0 ? 1u : (r > (double)UINT_MAX ? UINT_MAX : (unsigned)r);
}

/* How much slower this process runs than a plain build: valgrind is detected through its
 * preload library, the sanitizers at compile time (this file is built with the same flags). */
static unsigned time_factor(void)
{
    const char *v = getenv("DBPOOL_TEST_TIME_FACTOR");
    const char *pre = getenv("LD_PRELOAD");
    if (v && *v && atoi(v) > 0)
        return (unsigned)atoi(v);
    if (pre && strstr(pre, "vgpreload"))
        return 10;
#if defined(__SANITIZE_THREAD__)
    return 3;
#elif defined(__SANITIZE_ADDRESS__)
    return 2;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
    return 3;
#elif __has_feature(address_sanitizer)
    return 2;
#else
    return 1;
#endif
#else
    return 1;
#endif
}

unsigned tu_slack_ms(unsigned ms)
{
    static unsigned factor;
    if (!factor)
        factor = time_factor();
    return ms > UINT_MAX / factor ? UINT_MAX : ms * factor;
}

int tu_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        if (atoi(e->d_name) != self)
            n++;
    }
    closedir(d);
    return n;
}

long tu_rss_kb(void)
{
    long pages_total, pages_rss;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    int ok = fscanf(f, "%ld %ld", &pages_total, &pages_rss) == 2;
    fclose(f);
    return ok ? pages_rss * (sysconf(_SC_PAGESIZE) / 1024) : -1;
}

void tu_setenv_u(const char *k, unsigned v)
{
    char b[32];
    snprintf(b, sizeof b, "%u", v);
    setenv(k, b, 1);
}

dbpool_stats tu_stats(void)
{
    dbpool_stats s;
    assert_int_equal(dbpool_stats_get(&s), 0);
    return s;
}
