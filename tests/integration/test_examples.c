/*
 * test_examples.c - every example program runs green against a real server, so the examples
 * and the documentation that shows them cannot rot.
 *
 * Each case runs example programs as child processes (fork + exec) with the environment that
 * tu_use_shared()/tu_use_server() prepares (DB_* variables, an empty DBPOOL_ENV_FILE), checks
 * their exit status and output, and checks the facts on the server through an admin
 * connection. The programs are built in <build>/examples, found from DBPOOL_TEST_PROGS_DIR
 * (<build>/tests) + "/../examples".
 *
 * Cases that need a fresh schema, a server near max_connections, or that KILL sessions of the
 * application user use a private server instance, so that they never disturb other tests
 * sharing the fixture server.
 *
 * No output of any example may contain the password (checked on every run).
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define RUN_TIMEOUT_MS 120000u

/* ---- running an example ----------------------------------------------------------------------- */

struct out {
    int status;  /* raw wait status */
    int code;    /* exit code, or 128 + signal */
    pid_t pid;
    char *text;  /* stdout */
    char *err;   /* stderr */
};

static const tu_server *cur; /* the server the environment points at: for the password check */

static void use(const tu_server *s)
{
    tu_use_server(s);
    cur = s;
}

static void out_free(struct out *o)
{
    free(o->text);
    free(o->err);
    memset(o, 0, sizeof *o);
}

static const char *examples_dir(char *buf, size_t n)
{
    const char *p = getenv("DBPOOL_TEST_PROGS_DIR");
    snprintf(buf, n, "%s/../examples", p && *p ? p : DBPOOL_TEST_PROGS_DIR);
    return buf;
}

static void example_path(const char *name, char *buf, size_t n)
{
    char dir[PATH_MAX];
    snprintf(buf, n, "%s/%s", examples_dir(dir, sizeof dir), name);
    if (access(buf, X_OK) != 0)
        tu_skip("example %s not built (%s): configure with DBPOOL_BUILD_EXAMPLES=ON", buf,
                strerror(errno));
}

struct sink {
    int fd;
    char *buf;
    size_t len, cap;
};

/* Read what is available; returns 0 at EOF. */
static int sink_read(struct sink *s)
{
    if (s->len + 4096 + 1 > s->cap) {
        s->cap = (s->cap ? s->cap * 2 : 8192) + 4096;
        s->buf = realloc(s->buf, s->cap);
        assert_non_null(s->buf);
    }
    ssize_t k = read(s->fd, s->buf + s->len, 4096);
    if (k < 0 && errno == EINTR)
        return 1;
    if (k <= 0)
        return 0;
    s->len += (size_t)k;
    return 1;
}

static void collect(struct sink *so, struct sink *se, pid_t pid, const char *name)
{
    uint64_t deadline = tu_now_ms() + RUN_TIMEOUT_MS;
    int open_fds = 2;
    while (open_fds > 0) {
        struct pollfd p[2] = {{.fd = so->fd, .events = POLLIN}, {.fd = se->fd, .events = POLLIN}};
        int left = (int)(deadline > tu_now_ms() ? deadline - tu_now_ms() : 0);
        if (left == 0 || poll(p, 2, left) == 0) {
            kill(pid, SIGKILL);
            fail_msg("%s did not finish within %u ms", name, RUN_TIMEOUT_MS);
        }
        for (int i = 0; i < 2; i++) {
            struct sink *s = i == 0 ? so : se;
            if (s->fd >= 0 && (p[i].revents & (POLLIN | POLLHUP | POLLERR)) && !sink_read(s)) {
                close(s->fd);
                s->fd = -1;
                open_fds--;
            }
        }
    }
}

static char *sink_text(struct sink *s)
{
    char *t = s->buf ? s->buf : malloc(1);
    assert_non_null(t);
    t[s->len] = '\0';
    return t;
}

/* Run examples/<name> with args (NULL-terminated, may be NULL); capture stdout and stderr. */
static void run(struct out *o, const char *name, const char *const *args)
{
    char path[PATH_MAX];
    char *argv[32] = {(char *)name};
    int po[2], pe[2], n = 1;
    example_path(name, path, sizeof path);
    for (; args && args[n - 1] && n < 31; n++)
        argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    assert_int_equal(pipe2(po, O_CLOEXEC), 0);
    assert_int_equal(pipe2(pe, O_CLOEXEC), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        execv(path, argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    struct sink so = {.fd = po[0]}, se = {.fd = pe[0]};
    collect(&so, &se, pid, name);
    memset(o, 0, sizeof *o);
    o->pid = pid;
    o->text = sink_text(&so);
    o->err = sink_text(&se);
    while (waitpid(pid, &o->status, 0) < 0)
        assert_int_equal(errno, EINTR);
    o->code = WIFEXITED(o->status) ? WEXITSTATUS(o->status) : 128 + WTERMSIG(o->status);
    /* printf, not print_message: cmocka's buffer would cut long reports. */
    printf("$ %s", name);
    for (int i = 1; i < n; i++)
        printf(" %s", argv[i]);
    printf("   -> exit %d\n%s%s", o->code, o->text, o->err);
    fflush(stdout);
    if (cur && cur->password[0] && (strstr(o->text, cur->password) || strstr(o->err, cur->password)))
        fail_msg("%s printed the password", name);
}

/* Run and require exit status 0. */
static void run_ok(struct out *o, const char *name, const char *const *args)
{
    run(o, name, args);
    if (o->code != 0)
        fail_msg("%s exited with %d (expected 0)", name, o->code);
}

static void expect_text(const struct out *o, const char *needle)
{
    if (!strstr(o->text, needle) && !strstr(o->err, needle))
        fail_msg("expected \"%s\" in the output", needle);
}

static void migrate_all(void)
{
    struct out o;
    run_ok(&o, "migrate-messaging-schema", NULL);
    out_free(&o);
}

/* ---- a small JSON reader for check-connections --json ------------------------------------------ */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jnode {
    enum jtype t;
    char key[64];
    char str[1024]; /* strings (truncated), and "true"/"false" */
    double num;
    int first, next, last; /* children: first child, next sibling, last child */
};

#define JMAX 8192
static struct jnode J[JMAX];
static int JN;

struct jparser {
    const char *p;
};

static void jws(struct jparser *P)
{
    while (*P->p == ' ' || *P->p == '\n' || *P->p == '\r' || *P->p == '\t')
        P->p++;
}

static int jnew(enum jtype t, int parent, const char *key)
{
    if (JN >= JMAX)
        fail_msg("JSON: too many values");
    int i = JN++;
    memset(&J[i], 0, sizeof J[i]);
    J[i].t = t;
    J[i].first = J[i].next = J[i].last = -1;
    snprintf(J[i].key, sizeof J[i].key, "%s", key ? key : "");
    if (parent >= 0) {
        if (J[parent].last >= 0)
            J[J[parent].last].next = i;
        else
            J[parent].first = i;
        J[parent].last = i;
    }
    return i;
}

/* A JSON string at P->p (the opening quote) into out; \u escapes outside ASCII become '?'. */
static void jstring(struct jparser *P, char *out, size_t n)
{
    size_t k = 0;
    if (*P->p++ != '"')
        fail_msg("JSON: expected a string at \"%.20s\"", P->p - 1);
    for (;;) {
        unsigned char c = (unsigned char)*P->p++;
        if (c == '"')
            break;
        if (c < 0x20)
            fail_msg("JSON: control character or end of input inside a string");
        if (c == '\\') {
            char e = *P->p++;
            const char *map = strchr("\"\\/bfnrt", e);
            if (!map && e != 'u')
                fail_msg("JSON: bad escape \\%c", e);
            if (e == 'u') {
                for (int i = 0; i < 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", P->p[i]) || !P->p[i])
                        fail_msg("JSON: bad \\u escape");
                unsigned v = (unsigned)strtoul((char[5]){P->p[0], P->p[1], P->p[2], P->p[3], 0}, NULL, 16);
                P->p += 4;
                c = v < 0x80 ? (unsigned char)v : '?';
            } else {
                c = (unsigned char)("\"\\/\b\f\n\r\t"[map - "\"\\/bfnrt"]);
            }
        }
        if (k + 1 < n)
            out[k++] = (char)c;
    }
    out[k] = '\0';
}

static void jnumber(struct jparser *P, int node)
{
    const char *s = P->p;
    if (*s == '-')
        s++;
    if (!(*s >= '0' && *s <= '9'))
        fail_msg("JSON: bad value at \"%.20s\"", P->p);
    if (*s == '0' && s[1] >= '0' && s[1] <= '9')
        fail_msg("JSON: leading zero");
    char *end;
    J[node].num = strtod(P->p, &end);
    P->p = end;
}

static int jvalue(struct jparser *P, int parent, const char *key, int depth);

static void jcontainer(struct jparser *P, int node, int depth)
{
    char closer = J[node].t == J_OBJ ? '}' : ']';
    P->p++;
    jws(P);
    if (*P->p == closer) {
        P->p++;
        return;
    }
    for (;;) {
        char key[64] = "";
        jws(P);
        if (J[node].t == J_OBJ) {
            jstring(P, key, sizeof key);
            jws(P);
            if (*P->p++ != ':')
                fail_msg("JSON: expected ':' after key \"%s\"", key);
        }
        jvalue(P, node, key, depth + 1);
        jws(P);
        if (*P->p == ',') {
            P->p++;
            continue;
        }
        if (*P->p++ != closer)
            fail_msg("JSON: expected ',' or '%c'", closer);
        return;
    }
}

static int jvalue(struct jparser *P, int parent, const char *key, int depth)
{
    if (depth > 64)
        fail_msg("JSON: nested too deeply");
    jws(P);
    char c = *P->p;
    int node;
    if (c == '{' || c == '[') {
        node = jnew(c == '{' ? J_OBJ : J_ARR, parent, key);
        jcontainer(P, node, depth);
    } else if (c == '"') {
        node = jnew(J_STR, parent, key);
        jstring(P, J[node].str, sizeof J[node].str);
    } else if (strncmp(P->p, "true", 4) == 0 || strncmp(P->p, "false", 5) == 0) {
        node = jnew(J_BOOL, parent, key);
        snprintf(J[node].str, sizeof J[node].str, "%s", c == 't' ? "true" : "false");
        P->p += c == 't' ? 4 : 5;
    } else if (strncmp(P->p, "null", 4) == 0) {
        node = jnew(J_NULL, parent, key);
        P->p += 4;
    } else {
        node = jnew(J_NUM, parent, key);
        jnumber(P, node);
    }
    return node;
}

/* Parse a whole document (nothing but whitespace may follow); returns the root. */
static int jparse(const char *text)
{
    struct jparser P = {text};
    JN = 0;
    int root = jvalue(&P, -1, NULL, 0);
    jws(&P);
    if (*P.p)
        fail_msg("JSON: trailing text \"%.20s\"", P.p);
    return root;
}

/* "a.b.2.c": object keys and array indexes. -1 when absent. */
static int jget(int node, const char *path)
{
    char seg[64];
    while (node >= 0 && *path) {
        size_t n = strcspn(path, ".");
        snprintf(seg, sizeof seg, "%.*s", (int)n, path);
        path += n + (path[n] == '.');
        int child = J[node].first, idx = J[node].t == J_ARR ? atoi(seg) : -1;
        for (int i = 0; child >= 0; child = J[child].next, i++)
            if (idx >= 0 ? i == idx : strcmp(J[child].key, seg) == 0)
                break;
        node = child;
    }
    return node;
}

static double jnum(int root, const char *path)
{
    int n = jget(root, path);
    if (n < 0 || J[n].t != J_NUM)
        fail_msg("JSON: %s is %s", path, n < 0 ? "missing" : "not a number");
    return J[n].num;
}

static const char *jstr(int root, const char *path)
{
    int n = jget(root, path);
    if (n < 0 || J[n].t != J_STR)
        fail_msg("JSON: %s is %s", path, n < 0 ? "missing" : "not a string");
    return J[n].str;
}

static int jlen(int node)
{
    int k = 0;
    for (int c = node >= 0 ? J[node].first : -1; c >= 0; c = J[c].next)
        k++;
    return k;
}

/* The element of array `arr` whose numeric field `field` equals v, or -1. */
static int jfind(int arr, const char *field, double v)
{
    for (int c = arr >= 0 ? J[arr].first : -1; c >= 0; c = J[c].next) {
        int f = jget(c, field);
        if (f >= 0 && J[f].t == J_NUM && J[f].num == v)
            return c;
    }
    return -1;
}

/* ---- raw sessions held by the test ---------------------------------------------------------------- */

/* A connection as the application user, or NULL when the server refuses it. Close-on-exec, so
 * the examples started later do not inherit it. */
static MYSQL *try_app(const tu_server *s)
{
    MYSQL *m = mysql_init(NULL);
    unsigned proto = MYSQL_PROTOCOL_TCP, timeout = 10;
    assert_non_null(m);
    mysql_options(m, MYSQL_OPT_PROTOCOL, &proto);
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (!mysql_real_connect(m, "127.0.0.1", s->user, s->password, s->db, s->port, NULL, 0)) {
        mysql_close(m);
        return NULL;
    }
    int fd = mysql_get_socket(m);
    fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
    return m;
}

/* ---- the cases ---------------------------------------------------------------------------------- */

static void hello_prints_the_server_version(void **state)
{
    (void)state;
    const tu_server *s = tu_server_shared();
    use(s);
    MYSQL *admin = tu_admin(s);
    assert_int_equal(mysql_query(admin, "SELECT VERSION()"), 0);
    MYSQL_RES *r = mysql_store_result(admin);
    char want[160];
    snprintf(want, sizeof want, "hello from MariaDB %s\n", mysql_fetch_row(r)[0]);
    mysql_free_result(r);
    mysql_close(admin);
    struct out o;
    run_ok(&o, "hello", NULL);
    assert_string_equal(o.text, want);
    out_free(&o);
}

/* Both migration programs, twice each: the second run applies nothing and succeeds. */
static void migrations_run_twice(void **state)
{
    (void)state;
    const tu_server *s = tu_server_shared();
    use(s);
    struct out o;
    for (int i = 0; i < 2; i++) {
        run_ok(&o, "run-migration-003", NULL);
        expect_text(&o, "run-migration-003: schema at version 3 or later");
        if (i == 1)
            expect_text(&o, ": 0 migration(s) applied");
        out_free(&o);
    }
    for (int i = 0; i < 2; i++) {
        run_ok(&o, "migrate-messaging-schema", NULL);
        expect_text(&o, "migrate-messaging-schema: schema at version 7:");
        if (i == 1)
            expect_text(&o, ": 0 migration(s) applied, 7 already applied");
        out_free(&o);
    }
    MYSQL *admin = tu_admin(s);
    assert_int_equal(tu_scalar(admin, "SELECT COUNT(*) FROM `%s`.schema_migrations WHERE version "
                               "BETWEEN 1 AND 7", s->db), 7);
    assert_int_equal(tu_scalar(admin, "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE "
                               "TABLE_SCHEMA = '%s' AND TABLE_NAME = 'users' AND COLUMN_NAME = "
                               "'profile_image'", s->db), 1);
    mysql_close(admin);
}

/* On a fresh database: three migration runs at once apply each migration exactly once. */
static void migrations_concurrent_runs_apply_each_once(void **state)
{
    (void)state;
    tu_server priv;
    tu_private_start(&priv);
    use(&priv);
    char path[PATH_MAX];
    example_path("migrate-messaging-schema", path, sizeof path);
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        char *argv[] = {"migrate-messaging-schema", NULL};
        fflush(stdout);
        if ((pids[i] = fork()) == 0) {
            int null = open("/dev/null", O_WRONLY);
            dup2(null, 1);
            execv(path, argv);
            _exit(127);
        }
        assert_true(pids[i] > 0);
    }
    for (int i = 0; i < 3; i++) {
        int st = tu_wait(pids[i], RUN_TIMEOUT_MS);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("concurrent migrate-messaging-schema %d: status 0x%x", i, (unsigned)st);
    }
    MYSQL *admin = tu_admin(&priv);
    assert_int_equal(tu_scalar(admin, "SELECT COUNT(*) FROM `%s`.schema_migrations", priv.db), 7);
    mysql_close(admin);
    struct out o;
    run_ok(&o, "check-db-schema", NULL);
    expect_text(&o, "schema at version 7 of 7");
    out_free(&o);
    tu_private_destroy(&priv);
}

static void check_db_schema_passes_and_reports_missing(void **state)
{
    (void)state;
    use(tu_server_shared());
    migrate_all();
    struct out o;
    run_ok(&o, "check-db-schema", NULL);
    expect_text(&o, "all 23 expected columns present; schema at version 7 of 7");
    out_free(&o);
    /* A database without the demo tables: everything is missing, exit status 1. */
    setenv("DB_NAME", "information_schema", 1);
    run(&o, "check-db-schema", NULL);
    assert_int_equal(o.code, 1);
    expect_text(&o, "missing users.profile_image (added by migration 003)");
    expect_text(&o, "23 of 23 columns missing");
    out_free(&o);
}

static void batch_job_creates_each_conversation_once(void **state)
{
    (void)state;
    const tu_server *s = tu_server_shared();
    use(s);
    migrate_all();
    struct out o;
    const char *small_batches[] = {"2", NULL};
    run_ok(&o, "create-conversations-for-existing-bookings", small_batches);
    expect_text(&o, "0 booking(s) left without one");
    out_free(&o);
    run_ok(&o, "create-conversations-for-existing-bookings", NULL);
    expect_text(&o, ": 0 conversation(s) created");
    out_free(&o);
    MYSQL *admin = tu_admin(s);
    assert_true(tu_scalar(admin, "SELECT COUNT(*) FROM `%s`.bookings", s->db) >= 5);
    assert_int_equal(tu_scalar(admin, "SELECT COUNT(*) FROM `%s`.bookings b LEFT JOIN `%s`."
                               "conversations c ON c.booking_id = b.id WHERE c.id IS NULL",
                               s->db, s->db), 0);
    assert_int_equal(tu_scalar(admin, "SELECT COUNT(*) FROM `%s`.conversations c WHERE NOT EXISTS "
                               "(SELECT 1 FROM `%s`.messages m WHERE m.conversation_id = c.id)",
                               s->db, s->db), 0);
    mysql_close(admin);
}

static void conversations_api_round_trip(void **state)
{
    (void)state;
    use(tu_server_shared());
    migrate_all();
    struct out o;
    run_ok(&o, "create-conversations-for-existing-bookings", NULL);
    out_free(&o);
    run_ok(&o, "test-conversations-api", NULL);
    expect_text(&o, "posted and read back unchanged; unknown conversation is empty: ok");
    out_free(&o);
}

static void profile_image_of_2_mib_round_trip(void **state)
{
    (void)state;
    const tu_server *s = tu_server_shared();
    use(s);
    migrate_all();
    struct out o;
    run_ok(&o, "test-profile-image-size", NULL);
    expect_text(&o, "stored and read back 2097152 bytes (2.0 MiB)");
    out_free(&o);
    MYSQL *admin = tu_admin(s);
    assert_int_equal(tu_scalar(admin, "SELECT LENGTH(profile_image) FROM `%s`.users WHERE email = "
                               "'profile-image@example.invalid'", s->db), 2097152);
    mysql_close(admin);
    const char *odd[] = {"1", NULL}; /* one byte, and an empty value */
    run_ok(&o, "test-profile-image-size", odd);
    out_free(&o);
    const char *empty[] = {"0", NULL};
    run_ok(&o, "test-profile-image-size", empty);
    out_free(&o);
}

static void check_connections_text_report(void **state)
{
    (void)state;
    use(tu_server_shared());
    struct out o;
    run(&o, "check-connections", NULL);
    assert_true(o.code == 0 || o.code == 1); /* 1 only if other tests crowd the server */
    expect_text(&o, "max_connections");
    expect_text(&o, "Threads_connected");
    expect_text(&o, "Sessions of user '");
    expect_text(&o, "check-connections");
    expect_text(&o, "Recommendations");
    expect_text(&o, "Status: ");
    out_free(&o);
    const char *help[] = {"--help", NULL};
    run_ok(&o, "check-connections", help);
    expect_text(&o, "Exit status");
    out_free(&o);
    const char *bad[] = {"--yes", NULL}; /* --yes without --kill-idle-over: refused */
    run(&o, "check-connections", bad);
    assert_int_equal(o.code, 3);
    out_free(&o);
}

static void check_connections_json_is_parsed(void **state)
{
    (void)state;
    const tu_server *s = tu_server_shared();
    use(s);
    setenv("DB_CONNECTION_LIMIT", "5", 1);
    MYSQL *admin = tu_admin(s);
    long long max_conn = tu_scalar(admin, "SELECT @@max_connections");
    mysql_close(admin);
    struct out o;
    const char *args[] = {"--json", NULL};
    run(&o, "check-connections", args);
    int root = jparse(o.text);
    assert_int_equal(J[root].t, J_OBJ);
    const char *status = jstr(root, "status");
    assert_true(strcmp(status, "ok") == 0 || strcmp(status, "warning") == 0);
    assert_int_equal((int)jnum(root, "exit_code"), o.code);
    assert_int_equal((long long)jnum(root, "server.max_connections"), max_conn);
    assert_true(jnum(root, "server.threads_connected") >= 1);
    for (const char *const *k = (const char *const[]){"server.max_used_connections",
             "server.aborted_clients", "server.aborted_connects",
             "server.connection_errors_max_connections", "server.wait_timeout",
             "server.pool_session_wait_timeout", "pool.open", "budget.size", NULL}; *k; k++)
        assert_true(jnum(root, *k) >= 0);
    assert_string_equal(jstr(root, "server.user"), s->user);
    assert_int_equal((int)jnum(root, "pool.limit"), 5); /* DB_CONNECTION_LIMIT from the environment */
    assert_int_equal((int)jnum(root, "budget.size"), 0);
    assert_true(jnum(root, "sessions.total") >= 1);
    /* Its own session is listed, and attributed to it by pid when the server has
     * performance_schema on (the fixture's local server does; an external one may not). */
    int own = jfind(jget(root, "sessions.list"), "id", jnum(root, "sessions.own_id"));
    assert_true(own >= 0);
    int pfs = jget(root, "server.performance_schema");
    assert_true(pfs >= 0 && J[pfs].t == J_BOOL);
    if (strcmp(J[pfs].str, "true") == 0) {
        assert_int_equal((long)jnum(own, "pid"), (long)o.pid);
        assert_string_equal(jstr(own, "program"), "check-connections");
    }
    assert_true(jlen(jget(root, "sessions.by_host")) >= 1);
    assert_true(jlen(jget(root, "recommendations")) >= 1);
    assert_non_null(jstr(root, "recommendations.0.level"));
    assert_non_null(jstr(root, "recommendations.0.text"));
    out_free(&o);
}

/* A wrong password: exit 2, the JSON says why, the password is nowhere. */
static void check_connections_cannot_connect_is_critical(void **state)
{
    (void)state;
    static tu_server canary;
    canary = *tu_server_shared();
    snprintf(canary.password, sizeof canary.password, "Canary-Pw-%ld-x", (long)getpid());
    use(&canary); /* run() then checks the canary never appears */
    setenv("DB_ACQUIRE_TIMEOUT_MS", "3000", 1);
    struct out o;
    const char *args[] = {"--json", NULL};
    run(&o, "check-connections", args);
    assert_int_equal(o.code, 2);
    int root = jparse(o.text);
    assert_string_equal(jstr(root, "status"), "critical");
    assert_int_equal((int)jnum(root, "exit_code"), 2);
    assert_non_null(strstr(jstr(root, "error"), "cannot connect"));
    out_free(&o);
    run(&o, "check-connections", NULL);
    assert_int_equal(o.code, 2);
    expect_text(&o, "CRITICAL: cannot connect");
    out_free(&o);
}

/* Run check-connections --json and check its exit status and status word. */
static void expect_status(int want_code, const char *want_status)
{
    struct out o;
    const char *args[] = {"--json", NULL};
    run(&o, "check-connections", args);
    int root = jparse(o.text);
    assert_string_equal(jstr(root, "status"), want_status);
    assert_int_equal(o.code, want_code);
    assert_int_equal((int)jnum(root, "exit_code"), want_code);
    out_free(&o);
}

/* Open application sessions until the server shows `want` Threads_connected. */
static int hold_until(const tu_server *s, MYSQL *admin, MYSQL **held, int n, long long want)
{
    while (tu_global_status(admin, "Threads_connected") < want) {
        if (n == 16 || !(held[n] = try_app(s)))
            fail_msg("cannot open application session %d", n + 1);
        n++;
    }
    return n;
}

/* max_connections = 10: ok, then warning at 80%, critical at 100%, and critical when the tool
 * itself is refused. */
static void check_connections_exit_status_follows_the_server(void **state)
{
    (void)state;
    tu_server priv;
    tu_private_start(&priv);
    use(&priv);
    setenv("DB_ACQUIRE_TIMEOUT_MS", "2000", 1);
    MYSQL *admin = tu_admin(&priv), *held[16];
    int n = 0;
    tu_exec(admin, "SET GLOBAL max_connections = 10");
    expect_status(0, "ok");
    n = hold_until(&priv, admin, held, n, 7); /* + the tool = 8 of 10 = 80% */
    expect_status(1, "warning");
    n = hold_until(&priv, admin, held, n, 9); /* + the tool = 10 of 10 */
    expect_status(2, "critical");
    while (n < 16 && (held[n] = try_app(&priv)) != NULL) /* fill the server */
        n++;
    struct out o;
    const char *args[] = {"--json", NULL};
    run(&o, "check-connections", args);
    assert_int_equal(o.code, 2);
    assert_non_null(strstr(jstr(jparse(o.text), "error"), "cannot connect"));
    out_free(&o);
    while (n > 0)
        mysql_close(held[--n]);
    mysql_close(admin);
    tu_private_destroy(&priv);
}

/* A child process holding one pooled connection idle; its connection id through a pipe. */
static pid_t idle_pool_child(unsigned long *id)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Dies with the test, even when a failed assertion skips the kill below, and keeps no
         * copy of ctest's output pipe (ctest would wait for it). */
        pid_t parent = getppid();
        int null = open("/dev/null", O_WRONLY);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        dup2(null, 1);
        dup2(null, 2);
        dbpool_conn *c;
        unsigned long cid = dbpool_get(&c) == 0 ? dbpool_conn_id(c) : 0;
        if (write(p[1], &cid, sizeof cid) != (ssize_t)sizeof cid)
            _exit(1);
        for (;;)
            pause(); /* killed by the test */
    }
    close(p[1]);
    assert_int_equal(read(p[0], id, sizeof *id), (ssize_t)sizeof *id);
    close(p[0]);
    assert_true(*id != 0);
    return pid;
}

/* --kill-idle-over lists idle sessions with pid and program, kills nothing without --yes, and
 * kills them with it. A private server: KILLing application sessions on the shared one would
 * break other tests. */
static void check_connections_kill_idle_sessions(void **state)
{
    (void)state;
    tu_server priv;
    tu_private_start(&priv);
    use(&priv);
    MYSQL *admin = tu_admin(&priv), *raw = try_app(&priv);
    assert_non_null(raw);
    unsigned long raw_id = mysql_thread_id(raw), pool_id = 0;
    pid_t child = idle_pool_child(&pool_id);
    tu_sleep_ms(2300); /* both idle for more than 1 s */

    struct out o;
    const char *dry[] = {"--kill-idle-over", "1", "--json", NULL};
    run(&o, "check-connections", dry);
    int root = jparse(o.text), list = jget(root, "idle_sessions.list");
    assert_string_equal(J[jget(root, "idle_sessions.dry_run")].str, "true");
    int r1 = jfind(list, "id", (double)raw_id), r2 = jfind(list, "id", (double)pool_id);
    assert_true(r1 >= 0 && r2 >= 0);
    assert_int_equal((long)jnum(r1, "pid"), (long)getpid()); /* Connector/C's _pid attribute */
    assert_int_equal((long)jnum(r2, "pid"), (long)child);    /* libdbpool's dbpool_pid */
    assert_string_not_equal(jstr(r2, "program"), "unknown");
    assert_int_equal(jfind(list, "id", jnum(root, "sessions.own_id")), -1);
    assert_string_equal(jstr(r1, "action"), "dry run: not killed");
    out_free(&o);
    assert_true(tu_session_exists(admin, raw_id));
    assert_true(tu_session_exists(admin, pool_id));

    /* An administrator sees the same list with --user (the troubleshooting path when the
     * application user itself can no longer log in). */
    setenv("DB_USER", priv.admin_user, 1);
    setenv("DB_PASSWORD", priv.admin_password, 1);
    const char *as_admin[] = {"--user", priv.user, "--kill-idle-over", "1", "--json", NULL};
    run(&o, "check-connections", as_admin);
    root = jparse(o.text);
    list = jget(root, "idle_sessions.list");
    assert_string_equal(jstr(root, "server.user"), priv.user);
    assert_string_equal(jstr(root, "server.login"), priv.admin_user);
    r2 = jfind(list, "id", (double)pool_id);
    assert_true(jfind(list, "id", (double)raw_id) >= 0 && r2 >= 0);
    assert_int_equal((long)jnum(r2, "pid"), (long)child);
    out_free(&o);
    use(&priv);

    const char *yes[] = {"--kill-idle-over", "1", "--yes", NULL};
    run_ok(&o, "check-connections", yes);
    expect_text(&o, "-> killed");
    out_free(&o);
    uint64_t end = tu_now_ms() + 2000;
    while ((tu_session_exists(admin, raw_id) || tu_session_exists(admin, pool_id)) &&
           tu_now_ms() < end)
        tu_sleep_ms(20);
    assert_false(tu_session_exists(admin, raw_id));
    assert_false(tu_session_exists(admin, pool_id));

    kill(child, SIGKILL);
    tu_wait(child, 5000);
    mysql_close(raw);
    mysql_close(admin);
    tu_private_destroy(&priv);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hello_prints_the_server_version),
        cmocka_unit_test(migrations_run_twice),
        cmocka_unit_test(migrations_concurrent_runs_apply_each_once),
        cmocka_unit_test(check_db_schema_passes_and_reports_missing),
        cmocka_unit_test(batch_job_creates_each_conversation_once),
        cmocka_unit_test(conversations_api_round_trip),
        cmocka_unit_test(profile_image_of_2_mib_round_trip),
        cmocka_unit_test(check_connections_text_report),
        cmocka_unit_test(check_connections_json_is_parsed),
        cmocka_unit_test(check_connections_cannot_connect_is_critical),
        cmocka_unit_test(check_connections_exit_status_follows_the_server),
        cmocka_unit_test(check_connections_kill_idle_sessions),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
