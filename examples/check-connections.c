/*
 * check-connections - how close is the server to "Too many connections", who holds the
 * sessions of our user, and what to change. Also ends long-idle sessions of our user, only
 * when asked explicitly.
 *
 * It connects like any program using libdbpool (.env / environment: DB_HOST, DB_USER, ...),
 * over ONE pooled connection held for the whole run, and works as a non-privileged user:
 *  - global status (information_schema.GLOBAL_STATUS) and system variables are readable by
 *    every account;
 *  - information_schema.PROCESSLIST shows an account without the PROCESS privilege only its
 *    own user's sessions, which is exactly what this tool reports on (--user NAME reports on
 *    another user's, for an account that may see them);
 *  - performance_schema.session_account_connect_attrs shows the connection attributes
 *    (program_name, dbpool_pid set by libdbpool; _pid set by Connector/C) of sessions of the
 *    same account, when the server runs with performance_schema=ON;
 *  - KILL CONNECTION is allowed on sessions of one's own user.
 * It never prints the password (it never has it: the library keeps it).
 *
 * Pattern: a held connection (dbpool_get ... dbpool_release) for a sequence of statements that
 * must run in the same session (CONNECTION_ID() must name the session the tool excludes from
 * --kill-idle-over), and an explicit dbpool_close() before printing.
 *
 * Run with --help for options and exit statuses.
 */
#define _POSIX_C_SOURCE 200809L
#include <dbpool.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_RECS 16
#define MAX_HOLDERS 256
#define MAX_GROUPS 64
#define LONG_IDLE_S 600
#define LONG_WAIT_TIMEOUT_S 3600

enum level { L_OK = 0, L_ADVICE, L_WARNING, L_CRITICAL };
static const char *const level_names[] = {"ok", "advice", "warning", "critical"};

struct opts {
    bool json, yes;
    const char *user;    /* --user: whose sessions to report (default: the configured user) */
    long long kill_over; /* -1: no --kill-idle-over */
    long long warn_pct, crit_pct;
};

struct server {
    char version[96], hostname[128], account[192], login[96], database[96];
    char user[96]; /* whose sessions are reported: login, or --user */
    long long port, max_connections, max_user_connections, wait_timeout, pool_wait_timeout;
    bool pfs;
    unsigned long long own_id;
    long long threads_connected, max_used, aborted_clients, aborted_connects, errors_max_conn;
    long long connections, uptime;
};

struct session {
    unsigned long long id;
    char host[80], command[32], program[64];
    long long idle_s, pid;
    bool dbpool;         /* the pid came from libdbpool's dbpool_pid attribute */
    bool candidate;      /* listed by --kill-idle-over */
    char action[160];    /* what --kill-idle-over did */
};

struct rec {
    enum level level;
    char text[640];
};

struct report {
    struct opts opt;
    struct server srv;
    struct session *ses;
    size_t nses;
    bool attrs_read;
    char attrs_error[256];
    dbpool_stats pool;
    long holders[MAX_HOLDERS];
    size_t nholders;
    struct rec recs[MAX_RECS];
    unsigned nrecs;
    unsigned ncandidates, nkill_failed;
    enum level level;
};

/* ---- small helpers -------------------------------------------------------------------------- */

/* Copy text that comes from the server or from other clients (program names are whatever a
 * client sent) keeping printable ASCII only: no terminal escapes, always valid JSON. */
static void copy_clean(char *dst, size_t n, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < n; i++)
        dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
    dst[i] = '\0';
}

static long long col_ll(const dbpool_result *r, size_t row, unsigned col)
{
    int64_t v = 0;
    return dbpool_result_int64(r, row, col, &v) == 0 ? (long long)v : 0;
}

static void col_text(const dbpool_result *r, size_t row, unsigned col, char *dst, size_t n)
{
    copy_clean(dst, n, dbpool_result_text(r, row, col, NULL));
}

static void add_rec(struct report *R, enum level lv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_rec(struct report *R, enum level lv, const char *fmt, ...)
{
    if (R->nrecs == MAX_RECS)
        return;
    struct rec *r = &R->recs[R->nrecs++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof r->text, fmt, ap);
    va_end(ap);
    r->level = lv;
    if (lv > R->level)
        R->level = lv;
}

static double pct(long long part, long long whole)
{
    return whole > 0 ? 100.0 * (double)part / (double)whole : 0.0;
}

/* ---- options -------------------------------------------------------------------------------- */

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
        "usage: %s [--json] [--user NAME] [--kill-idle-over SECONDS [--yes]]\n"
        "          [--warn-percent N] [--critical-percent N]\n"
        "\n"
        "Reports the server's connection limits and counters, the sessions of the configured\n"
        "user (DB_USER) grouped by host and by program, this pool's limit and statistics, the\n"
        "host budget (DB_HOST_BUDGET) and its holders, and recommendations. Configuration comes\n"
        "from .env / $DBPOOL_ENV_FILE and the DB_* environment variables.\n"
        "\n"
        "  --json                 one JSON object on stdout instead of the text report\n"
        "  --user NAME            report (and --kill-idle-over) the sessions of NAME instead\n"
        "                         of the configured user: connect as an account with the\n"
        "                         PROCESS privilege (and CONNECTION ADMIN or SUPER to kill)\n"
        "                         to see another user's sessions; such an account can still\n"
        "                         log in when max_connections is reached\n"
        "  --kill-idle-over S     list sessions of the configured user idle (Sleep) for more\n"
        "                         than S seconds, with host, pid and program when known;\n"
        "                         a dry run unless --yes is given; never this tool's session\n"
        "  --yes                  with --kill-idle-over: end the listed sessions (KILL\n"
        "                         CONNECTION); a libdbpool process replaces a killed idle\n"
        "                         connection on its next get, other programs may see errors\n"
        "  --warn-percent N       Threads_connected >= N%% of max_connections is a warning\n"
        "                         (default 80)\n"
        "  --critical-percent N   ... and >= N%% is critical (default 95)\n"
        "  -h, --help             this text\n"
        "\n"
        "Exit status (for cron and monitoring; the same values as Nagios plugins):\n"
        "  0  OK: below the warning threshold\n"
        "  1  WARNING: Threads_connected >= --warn-percent of max_connections, or this\n"
        "     account's sessions >= that share of its max_user_connections, or a session\n"
        "     could not be ended\n"
        "  2  CRITICAL: >= --critical-percent, or cannot connect, or a query failed\n"
        "  3  usage error\n",
        prog);
}

static int parse_number(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int bad_usage(const char *prog, const char *what, const char *arg)
{
    fprintf(stderr, "%s: %s%s%s (see --help)\n", prog, what, arg ? ": " : "", arg ? arg : "");
    return -1;
}

/* 0 ok, 1 help shown, -1 usage error (reported) */
static int parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.kill_over = -1, .warn_pct = 80, .crit_pct = 95};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout, argv[0]);
            return 1;
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strcmp(a, "--yes") == 0) {
            o->yes = true;
        } else if (strcmp(a, "--user") == 0) {
            if (!next || !*next)
                return bad_usage(argv[0], "--user needs a user name", NULL);
            for (const char *p = next; *p; p++)
                if (*p < 0x20 || *p >= 0x7f)
                    return bad_usage(argv[0], "--user: printable ASCII only", NULL);
            o->user = next;
            i++;
        } else if (strcmp(a, "--kill-idle-over") == 0) {
            if (parse_number(next, 0, 31536000, &o->kill_over) != 0)
                return bad_usage(argv[0], "--kill-idle-over needs a number of seconds", next);
            i++;
        } else if (strcmp(a, "--warn-percent") == 0 || strcmp(a, "--critical-percent") == 0) {
            if (parse_number(next, 1, 100, a[2] == 'w' ? &o->warn_pct : &o->crit_pct) != 0)
                return bad_usage(argv[0], "a percentage from 1 to 100 is needed after", a);
            i++;
        } else {
            return bad_usage(argv[0], "unknown option", a);
        }
    }
    if (o->yes && o->kill_over < 0) /* --yes alone would be a surprise: refuse */
        return bad_usage(argv[0], "--yes only goes with --kill-idle-over SECONDS", NULL);
    if (o->warn_pct > o->crit_pct)
        return bad_usage(argv[0], "--warn-percent is above --critical-percent", NULL);
    return 0;
}

/* ---- gathering -------------------------------------------------------------------------------- */

static int read_server(dbpool_conn *c, struct server *s)
{
    dbpool_result *r;
    int rc = dbpool_conn_query(c, &r,
        "SELECT VERSION(), @@hostname, @@port, USER(), SUBSTRING_INDEX(USER(), '@', 1), "
        "DATABASE(), @@max_connections, @@max_user_connections, @@global.wait_timeout, "
        "@@session.wait_timeout, @@performance_schema, CONNECTION_ID()", NULL, 0);
    if (rc != 0)
        return rc;
    col_text(r, 0, 0, s->version, sizeof s->version);
    col_text(r, 0, 1, s->hostname, sizeof s->hostname);
    s->port = col_ll(r, 0, 2);
    col_text(r, 0, 3, s->account, sizeof s->account);
    copy_clean(s->login, sizeof s->login, dbpool_result_text(r, 0, 4, NULL));
    col_text(r, 0, 5, s->database, sizeof s->database);
    s->max_connections = col_ll(r, 0, 6);
    s->max_user_connections = col_ll(r, 0, 7);
    s->wait_timeout = col_ll(r, 0, 8);
    s->pool_wait_timeout = col_ll(r, 0, 9);
    s->pfs = col_ll(r, 0, 10) != 0;
    s->own_id = (unsigned long long)col_ll(r, 0, 11);
    dbpool_result_free(r);
    return 0;
}

static int read_status(dbpool_conn *c, struct server *s)
{
    static const struct {
        const char *name;
        size_t off;
    } vars[] = {
        {"THREADS_CONNECTED", offsetof(struct server, threads_connected)},
        {"MAX_USED_CONNECTIONS", offsetof(struct server, max_used)},
        {"ABORTED_CLIENTS", offsetof(struct server, aborted_clients)},
        {"ABORTED_CONNECTS", offsetof(struct server, aborted_connects)},
        {"CONNECTION_ERRORS_MAX_CONNECTIONS", offsetof(struct server, errors_max_conn)},
        {"CONNECTIONS", offsetof(struct server, connections)},
        {"UPTIME", offsetof(struct server, uptime)},
    };
    dbpool_result *r;
    int rc = dbpool_conn_query(c, &r,
        "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE "
        "VARIABLE_NAME IN ('THREADS_CONNECTED', 'MAX_USED_CONNECTIONS', 'ABORTED_CLIENTS', "
        "'ABORTED_CONNECTS', 'CONNECTION_ERRORS_MAX_CONNECTIONS', 'CONNECTIONS', 'UPTIME')",
        NULL, 0);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < dbpool_result_rows(r); i++) {
        const char *name = dbpool_result_text(r, i, 0, NULL);
        for (size_t k = 0; name && k < sizeof vars / sizeof vars[0]; k++)
            if (strcasecmp(name, vars[k].name) == 0)
                *(long long *)((char *)s + vars[k].off) = col_ll(r, i, 1);
    }
    dbpool_result_free(r);
    return 0;
}

static int read_sessions(dbpool_conn *c, struct report *R)
{
    dbpool_result *r;
    dbpool_param user = dbpool_param_text(R->srv.user);
    int rc = dbpool_conn_query(c, &r,
        "SELECT ID, COALESCE(HOST, ''), COALESCE(COMMAND, ''), COALESCE(TIME, 0) "
        "FROM information_schema.PROCESSLIST WHERE USER = ? ORDER BY ID", &user, 1);
    if (rc != 0)
        return rc;
    size_t n = dbpool_result_rows(r);
    R->ses = calloc(n ? n : 1, sizeof *R->ses);
    if (!R->ses) {
        dbpool_result_free(r);
        return DBPOOL_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct session *s = &R->ses[i];
        s->id = (unsigned long long)col_ll(r, i, 0);
        col_text(r, i, 1, s->host, sizeof s->host);
        col_text(r, i, 2, s->command, sizeof s->command);
        s->idle_s = strcmp(s->command, "Sleep") == 0 ? col_ll(r, i, 3) : 0;
        s->pid = -1;
        strcpy(s->program, "unknown");
    }
    R->nses = n;
    dbpool_result_free(r);
    return 0;
}

static struct session *find_session(struct report *R, unsigned long long id)
{
    for (size_t i = 0; i < R->nses; i++)
        if (R->ses[i].id == id)
            return &R->ses[i];
    return NULL;
}

static void apply_attr(struct session *s, const char *name, const char *value)
{
    if (!s || !name || !value)
        return;
    if (strcmp(name, "program_name") == 0) {
        copy_clean(s->program, sizeof s->program, value);
    } else if (strcmp(name, "dbpool_pid") == 0) {
        s->pid = atoll(value); /* libdbpool's own: wins over _pid */
        s->dbpool = true;
    } else if (strcmp(name, "_pid") == 0 && !s->dbpool) {
        s->pid = atoll(value);
    }
}

/* Connection attributes: which program and pid holds each session. Not fatal when absent.
 * session_account_connect_attrs is readable by every account but shows only its own
 * account's sessions; session_connect_attrs shows all, to accounts allowed to read it. */
static void read_attrs(dbpool_conn *c, struct report *R)
{
    static const char *const tables[] = {"session_account_connect_attrs", "session_connect_attrs",
                                         "session_account_connect_attrs"};
    bool other_user = strcmp(R->srv.user, R->srv.login) != 0;
    if (!R->srv.pfs)
        return;
    for (size_t t = other_user; t < 3 && !R->attrs_read; t++) {
        char sql[256];
        dbpool_result *r;
        snprintf(sql, sizeof sql, "SELECT PROCESSLIST_ID, ATTR_NAME, ATTR_VALUE FROM "
                 "performance_schema.%s WHERE ATTR_NAME IN ('program_name', 'dbpool_pid', "
                 "'_pid')", tables[t]);
        if (dbpool_conn_query(c, &r, sql, NULL, 0) != 0) {
            copy_clean(R->attrs_error, sizeof R->attrs_error, dbpool_last_error());
            continue;
        }
        for (size_t i = 0; i < dbpool_result_rows(r); i++)
            apply_attr(find_session(R, (unsigned long long)col_ll(r, i, 0)),
                       dbpool_result_text(r, i, 1, NULL), dbpool_result_text(r, i, 2, NULL));
        dbpool_result_free(r);
        R->attrs_read = true;
    }
}

static void read_pool(struct report *R)
{
    dbpool_stats_get(&R->pool);
    if (R->pool.budget_size > 0 &&
        dbpool_budget_holders(R->holders, MAX_HOLDERS, &R->nholders) != 0)
        R->nholders = 0;
    if (R->nholders > MAX_HOLDERS)
        R->nholders = MAX_HOLDERS;
}

/* ---- --kill-idle-over ------------------------------------------------------------------------ */

static bool is_candidate(const struct report *R, const struct session *s)
{
    return s->id != R->srv.own_id && !(s->dbpool && s->pid == (long long)getpid()) &&
           strcmp(s->command, "Sleep") == 0 && s->idle_s > R->opt.kill_over;
}

/* Still idle long enough right now? Sessions change state between the listing and the KILL. */
static int still_idle(dbpool_conn *c, const struct report *R, const struct session *s)
{
    dbpool_result *r;
    dbpool_param p[3] = {dbpool_param_uint64(s->id), dbpool_param_text(R->srv.user),
                         dbpool_param_int64(R->opt.kill_over)};
    if (dbpool_conn_query(c, &r, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE "
                          "ID = ? AND USER = ? AND COMMAND = 'Sleep' AND TIME > ?", p, 3) != 0)
        return -1;
    long long n = col_ll(r, 0, 0);
    dbpool_result_free(r);
    return n > 0;
}

static void kill_one(dbpool_conn *c, struct report *R, struct session *s)
{
    char sql[64];
    int idle = still_idle(c, R, s);
    if (idle == 0) {
        snprintf(s->action, sizeof s->action, "skipped: no longer idle or already gone");
        return;
    }
    snprintf(sql, sizeof sql, "KILL CONNECTION %llu", s->id); /* a number we read: no injection */
    if (idle > 0 && dbpool_conn_exec(c, sql) == 0) {
        snprintf(s->action, sizeof s->action, "killed");
    } else if (dbpool_last_server_errno() == 1094) { /* ER_NO_SUCH_THREAD: ended meanwhile */
        snprintf(s->action, sizeof s->action, "already gone");
    } else {
        char err[128];
        copy_clean(err, sizeof err, dbpool_last_error());
        snprintf(s->action, sizeof s->action, "failed: %s", err);
        R->nkill_failed++;
    }
}

static void kill_idle(dbpool_conn *c, struct report *R)
{
    for (size_t i = 0; i < R->nses; i++) {
        struct session *s = &R->ses[i];
        if (!(s->candidate = is_candidate(R, s)))
            continue;
        R->ncandidates++;
        if (R->opt.yes)
            kill_one(c, R, s);
        else
            snprintf(s->action, sizeof s->action, "dry run: not killed");
    }
}

/* ---- grouping --------------------------------------------------------------------------------- */

struct group {
    char key[80];
    unsigned count;
    long long pids[8];
    unsigned npids;
};

struct groups {
    struct group g[MAX_GROUPS];
    unsigned n, overflow; /* sessions that did not fit in MAX_GROUPS groups */
};

/* "10.0.0.5:41234" -> "10.0.0.5": the port changes with every connection. */
static void host_only(const char *host, char *out, size_t n)
{
    copy_clean(out, n, host);
    char *colon = strrchr(out, ':');
    if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1))
        *colon = '\0';
}

static void group_add(struct groups *G, const char *key, long long pid)
{
    unsigned i = 0;
    while (i < G->n && strcmp(G->g[i].key, key) != 0)
        i++;
    if (i == G->n) {
        if (G->n == MAX_GROUPS) {
            G->overflow++;
            return;
        }
        copy_clean(G->g[G->n++].key, sizeof G->g[0].key, key);
    }
    struct group *g = &G->g[i];
    g->count++;
    bool seen = pid < 0;
    for (unsigned k = 0; k < g->npids && !seen; k++)
        seen = g->pids[k] == pid;
    if (!seen && g->npids < 8)
        g->pids[g->npids++] = pid;
}

static void group_sessions(const struct report *R, struct groups *hosts, struct groups *progs)
{
    memset(hosts, 0, sizeof *hosts);
    memset(progs, 0, sizeof *progs);
    for (size_t i = 0; i < R->nses; i++) {
        char h[80];
        host_only(R->ses[i].host, h, sizeof h);
        group_add(hosts, h, -1);
        group_add(progs, R->ses[i].program, R->ses[i].pid);
    }
}

/* Distinct libdbpool processes (host, pid) of this user, and the other sessions, both without
 * this tool's own session. */
static void count_processes(const struct report *R, unsigned *procs, unsigned *others)
{
    *procs = *others = 0;
    for (size_t i = 0; i < R->nses; i++) {
        const struct session *s = &R->ses[i];
        if (s->id == R->srv.own_id)
            continue;
        if (!s->dbpool) {
            (*others)++;
            continue;
        }
        char h[80], h2[80];
        bool dup = false;
        host_only(s->host, h, sizeof h);
        for (size_t k = 0; k < i && !dup; k++) {
            host_only(R->ses[k].host, h2, sizeof h2);
            dup = R->ses[k].id != R->srv.own_id && R->ses[k].dbpool && R->ses[k].pid == s->pid &&
                  strcmp(h, h2) == 0;
        }
        *procs += !dup;
    }
}

/* ---- recommendations --------------------------------------------------------------------------- */

static void rec_headroom(struct report *R)
{
    const struct server *s = &R->srv;
    double p = pct(s->threads_connected, s->max_connections);
    const char *act = "See which hosts and programs hold them (this tool sees only its own "
                      "user's sessions; an account with the PROCESS privilege sees all), end "
                      "idle ones with --kill-idle-over, lower DB_CONNECTION_LIMIT or set "
                      "DB_HOST_BUDGET on the client hosts";
    if (p >= (double)R->opt.crit_pct)
        add_rec(R, L_CRITICAL, "Threads_connected is %lld of max_connections %lld (%.0f%%): new "
                "connections are about to be refused with error 1040 \"Too many connections\". "
                "%s.", s->threads_connected, s->max_connections, p, act);
    else if (p >= (double)R->opt.warn_pct)
        add_rec(R, L_WARNING, "Threads_connected is %lld of max_connections %lld (%.0f%%, "
                "warning from %lld%%). %s.", s->threads_connected, s->max_connections, p,
                R->opt.warn_pct, act);
    else
        add_rec(R, L_OK, "Threads_connected is %lld of max_connections %lld (%.0f%%): %lld "
                "connections of headroom.", s->threads_connected, s->max_connections, p,
                s->max_connections - s->threads_connected);
}

static void rec_user_limit(struct report *R)
{
    long long mu = R->srv.max_user_connections, n = (long long)R->nses;
    double p = pct(n, mu);
    if (mu <= 0 || strcmp(R->srv.user, R->srv.login) != 0) /* the limit read is our account's */
        return;
    enum level lv = p >= (double)R->opt.crit_pct ? L_CRITICAL
                    : p >= (double)R->opt.warn_pct ? L_WARNING : L_OK;
    add_rec(R, lv, "This account has %lld session(s) of its max_user_connections %lld (%.0f%%)%s",
            n, mu, p, lv == L_OK ? "." : ": beyond it the server refuses its connections with "
            "error 1203/1226; keep DB_CONNECTION_LIMIT x processes (or DB_HOST_BUDGET) below it.");
}

static void rec_history(struct report *R)
{
    const struct server *s = &R->srv;
    double hours = (double)s->uptime / 3600.0;
    if (s->max_used * 100 >= s->max_connections * R->opt.warn_pct)
        add_rec(R, L_ADVICE, "Max_used_connections is %lld of max_connections %lld since the "
                "server started %.1f h ago: it has been near or at its limit.", s->max_used,
                s->max_connections, hours);
    if (s->errors_max_conn > 0)
        add_rec(R, L_ADVICE, "Connection_errors_max_connections is %lld: that many connection "
                "attempts were refused with \"Too many connections\" since the server started "
                "%.1f h ago.", s->errors_max_conn, hours);
}

static void rec_processes(struct report *R)
{
    long long M = R->srv.max_connections, L = R->pool.limit, B = R->pool.budget_size;
    unsigned procs, others;
    if (L <= 0 || M <= 0)
        return;
    count_processes(R, &procs, &others);
    if (B == 0) {
        long long worst = (long long)procs * L + others;
        add_rec(R, worst * 100 >= M * R->opt.warn_pct ? L_ADVICE : L_OK,
                "DB_HOST_BUDGET is off: each process may open DB_CONNECTION_LIMIT=%lld "
                "session(s), so %lld processes at once can take all of max_connections=%lld. "
                "Now %u other libdbpool process(es) of this user are connected (up to %lld "
                "sessions) plus %u other session(s) of this user. To bound a host, set "
                "DB_HOST_BUDGET on it so that the budgets of all client hosts stay below "
                "max_connections.", L, (M + L - 1) / L, M, procs, (long long)procs * L, others);
    } else if (B >= M) {
        add_rec(R, L_ADVICE, "DB_HOST_BUDGET=%lld is not below max_connections=%lld: it cannot "
                "keep this host from exhausting the server; lower it.", B, M);
    } else {
        add_rec(R, L_OK, "DB_HOST_BUDGET=%lld bounds this user's sessions from this host across "
                "processes (%u slot(s) in use now); max_connections is %lld.", B,
                R->pool.budget_used, M);
    }
    if (B > 0 && R->pool.budget_used >= B)
        add_rec(R, L_ADVICE, "The host budget is full (%u of %lld slots): processes on this host "
                "wait for a slot and fail with DBPOOL_EBUDGET after DB_ACQUIRE_TIMEOUT_MS; raise "
                "DB_HOST_BUDGET only if the server has headroom.", R->pool.budget_used, B);
}

static void rec_wait_timeout(struct report *R)
{
    const struct server *s = &R->srv;
    if (s->wait_timeout > LONG_WAIT_TIMEOUT_S)
        add_rec(R, L_ADVICE, "The server's wait_timeout is %lld s (%.1f h): sessions of clients "
                "that vanish without closing (SIGKILL, crash, power loss, a dropped network) "
                "keep their place in max_connections that long. libdbpool sets "
                "DB_SESSION_WAIT_TIMEOUT_S on its own sessions (this tool's session: %lld s); "
                "for other clients consider a lower global wait_timeout.", s->wait_timeout,
                (double)s->wait_timeout / 3600.0, s->pool_wait_timeout);
    if (s->pool_wait_timeout > LONG_WAIT_TIMEOUT_S)
        add_rec(R, L_ADVICE, "This pool's sessions have wait_timeout %lld s: set "
                "DB_SESSION_WAIT_TIMEOUT_S (default 3600) so that the sessions of a killed "
                "process end sooner on the server.", s->pool_wait_timeout);
}

static void rec_aborted(struct report *R)
{
    const struct server *s = &R->srv;
    double hours = (double)s->uptime / 3600.0;
    if (s->aborted_clients > 0)
        add_rec(R, L_ADVICE, "Aborted_clients is %lld (%.1f%% of %lld connections in %.1f h, "
                "%.1f per hour): sessions that ended without a clean close (process killed or "
                "crashed, exit without closing, network loss). libdbpool closes cleanly at exit "
                "and on SIGINT/SIGTERM/SIGHUP. Run this again later: if it keeps rising, the "
                "server's error log names user and host in its \"Aborted connection\" lines "
                "(log_warnings >= 2).", s->aborted_clients,
                pct(s->aborted_clients, s->connections), s->connections, hours,
                hours > 0 ? (double)s->aborted_clients / hours : 0.0);
    if (s->aborted_connects > 0)
        add_rec(R, L_ADVICE, "Aborted_connects is %lld: connection attempts that failed before "
                "or during login (wrong password, unknown database, handshake timeout, refused "
                "at max_connections).", s->aborted_connects);
}

static void rec_idle(struct report *R)
{
    unsigned n = 0;
    long long longest = 0;
    for (size_t i = 0; i < R->nses; i++) {
        const struct session *s = &R->ses[i];
        if (s->id != R->srv.own_id && strcmp(s->command, "Sleep") == 0 && s->idle_s > LONG_IDLE_S) {
            n++;
            longest = s->idle_s > longest ? s->idle_s : longest;
        }
    }
    if (n > 0)
        add_rec(R, L_ADVICE, "%u session(s) of this user have been idle for more than %d s "
                "(longest %lld s): programs holding connections they do not use. libdbpool "
                "closes its idle connections after DB_IDLE_TIMEOUT_MS; list these with "
                "--kill-idle-over %d.", n, LONG_IDLE_S, longest, LONG_IDLE_S);
}

static void rec_attrs(struct report *R)
{
    if (!R->srv.pfs)
        add_rec(R, L_ADVICE, "performance_schema is OFF on the server: sessions cannot be "
                "attributed to programs and pids (shown as unknown). Start the server with "
                "performance_schema=ON to see which program holds each session.");
    else if (!R->attrs_read)
        add_rec(R, L_ADVICE, "Connection attributes are not readable (%s): programs and pids "
                "are shown as unknown.", R->attrs_error);
}

static void recommend(struct report *R)
{
    rec_headroom(R);
    rec_user_limit(R);
    rec_history(R);
    rec_processes(R);
    rec_wait_timeout(R);
    rec_aborted(R);
    rec_idle(R);
    rec_attrs(R);
    if (R->nkill_failed)
        add_rec(R, L_WARNING, "%u idle session(s) could not be ended (see the list).",
                R->nkill_failed);
}

static int exit_status(enum level lv)
{
    return lv == L_CRITICAL ? 2 : lv == L_WARNING ? 1 : 0;
}

/* ---- text output ------------------------------------------------------------------------------- */

static void print_pids(const struct group *g)
{
    for (unsigned k = 0; k < g->npids; k++)
        printf("%s%lld", k ? ", " : "  pid ", g->pids[k]);
    if (g->npids == 8)
        printf(", ...");
}

static void text_server(const struct report *R)
{
    const struct server *s = &R->srv;
    printf("check-connections: %s on %s port %lld (MariaDB %s), database %s\n\n", s->account,
           s->hostname, s->port, s->version, s->database[0] ? s->database : "(none)");
    printf("Server\n");
    printf("  %-36s %8lld\n", "max_connections", s->max_connections);
    printf("  %-36s %8lld  (%.1f%% of max_connections)\n", "Threads_connected",
           s->threads_connected, pct(s->threads_connected, s->max_connections));
    printf("  %-36s %8lld\n", "Max_used_connections", s->max_used);
    printf("  %-36s %8lld\n", "Aborted_clients", s->aborted_clients);
    printf("  %-36s %8lld\n", "Aborted_connects", s->aborted_connects);
    printf("  %-36s %8lld\n", "Connection_errors_max_connections", s->errors_max_conn);
    printf("  %-36s %8lld s  (this pool's sessions: %lld s)\n", "wait_timeout", s->wait_timeout,
           s->pool_wait_timeout);
    printf("  %-36s %8lld  (0: no per-account limit)\n", "max_user_connections",
           s->max_user_connections);
    printf("  %-36s %8s\n\n", "performance_schema", s->pfs ? "ON" : "OFF");
}

static void text_sessions(const struct report *R)
{
    static struct groups hosts, progs; /* large: not on the stack */
    group_sessions(R, &hosts, &progs);
    printf("Sessions of user '%s': %zu (this tool's own: id %llu)\n", R->srv.user, R->nses,
           R->srv.own_id);
    printf("  by host:\n");
    for (unsigned i = 0; i < hosts.n; i++)
        printf("    %-34s %8u\n", hosts.g[i].key, hosts.g[i].count);
    printf("  by program:\n");
    for (unsigned i = 0; i < progs.n; i++) {
        printf("    %-34s %8u", progs.g[i].key, progs.g[i].count);
        print_pids(&progs.g[i]);
        printf("\n");
    }
    if (hosts.overflow || progs.overflow)
        printf("    (more groups not shown)\n");
    printf("\n");
}

/* The holder's program: argv[0] from /proc (comm is cut at 15 characters). */
static void holder_name(long pid, char *out, size_t n)
{
    char path[64], buf[256] = "";
    snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
    FILE *f = fopen(path, "r");
    if (f) {
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        buf[k] = '\0'; /* argv[0] ends at its NUL */
        fclose(f);
    }
    const char *base = strrchr(buf, '/');
    copy_clean(out, n, buf[0] ? (base ? base + 1 : buf) : "?");
}

static void text_pool(const struct report *R)
{
    const dbpool_stats *p = &R->pool;
    printf("This process's pool\n");
    printf("  DB_CONNECTION_LIMIT %u; open %u, in use %u, idle %u, waiting %u, peak %u; gets %llu, "
           "waits %llu, timeouts %llu, created %llu\n", p->limit, p->open, p->in_use, p->idle,
           p->waiting, p->peak_open, (unsigned long long)p->gets, (unsigned long long)p->waits,
           (unsigned long long)p->timeouts, (unsigned long long)p->created);
    if (p->budget_size == 0) {
        printf("Host budget: off (DB_HOST_BUDGET=0)\n\n");
        return;
    }
    printf("Host budget: DB_HOST_BUDGET %u, %u slot(s) in use (%u by this process)\n",
           p->budget_size, p->budget_used, p->budget_held);
    for (size_t i = 0; i < R->nholders; i++) {
        char name[64];
        holder_name(R->holders[i], name, sizeof name);
        printf("  holder pid %ld (%s)\n", R->holders[i], name);
    }
    printf("\n");
}

static void text_idle(const struct report *R)
{
    if (R->opt.kill_over < 0)
        return;
    printf("Sessions of '%s' idle for more than %lld s: %u%s\n", R->srv.user, R->opt.kill_over,
           R->ncandidates, R->opt.yes ? "" : " (dry run: add --yes to end them)");
    for (size_t i = 0; i < R->nses; i++) {
        const struct session *s = &R->ses[i];
        if (!s->candidate)
            continue;
        printf("  id %llu  host %s  idle %lld s  program %s  pid ", s->id, s->host, s->idle_s,
               s->program);
        if (s->pid >= 0)
            printf("%lld", s->pid);
        else
            printf("unknown");
        printf("  -> %s\n", s->action);
    }
    printf("\n");
}

static void print_text(const struct report *R)
{
    static const char *const tag[] = {"[ok]      ", "[advice]  ", "[warning] ", "[critical]"};
    text_server(R);
    text_sessions(R);
    text_pool(R);
    text_idle(R);
    printf("Recommendations\n");
    for (unsigned i = 0; i < R->nrecs; i++)
        printf("  %s %s\n", tag[R->recs[i].level], R->recs[i].text);
    printf("\nStatus: %s (exit %d)\n",
           R->level == L_CRITICAL ? "CRITICAL" : R->level == L_WARNING ? "WARNING" : "OK",
           exit_status(R->level));
}

/* ---- JSON output ------------------------------------------------------------------------------- */

/* Strings were cleaned to printable ASCII by copy_clean(); only " and \ need escaping. */
static void jstr(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            putchar('\\');
        putchar(*s);
    }
    putchar('"');
}

static void jkey(const char *k, bool first)
{
    printf("%s", first ? "" : ",");
    jstr(k);
    putchar(':');
}

static void jsv(const char *k, const char *v, bool first)
{
    jkey(k, first);
    jstr(v);
}

static void jnum(const char *k, long long v, bool first)
{
    jkey(k, first);
    printf("%lld", v);
}

static void json_server(const struct server *s)
{
    jkey("server", false);
    putchar('{');
    jsv("version", s->version, true);
    jsv("hostname", s->hostname, false);
    jnum("port", s->port, false);
    jsv("account", s->account, false);
    jsv("user", s->user, false);
    jsv("login", s->login, false);
    jsv("database", s->database, false);
    jnum("max_connections", s->max_connections, false);
    jnum("threads_connected", s->threads_connected, false);
    jkey("threads_connected_percent", false);
    printf("%.1f", pct(s->threads_connected, s->max_connections));
    jnum("max_used_connections", s->max_used, false);
    jnum("aborted_clients", s->aborted_clients, false);
    jnum("aborted_connects", s->aborted_connects, false);
    jnum("connection_errors_max_connections", s->errors_max_conn, false);
    jnum("connections", s->connections, false);
    jnum("uptime", s->uptime, false);
    jnum("wait_timeout", s->wait_timeout, false);
    jnum("pool_session_wait_timeout", s->pool_wait_timeout, false);
    jnum("max_user_connections", s->max_user_connections, false);
    jkey("performance_schema", false);
    printf("%s", s->pfs ? "true" : "false");
    putchar('}');
}

static void json_groups(const char *name, const char *keyname, const struct groups *G, bool pids)
{
    jkey(name, false);
    putchar('[');
    for (unsigned i = 0; i < G->n; i++) {
        printf("%s{", i ? "," : "");
        jsv(keyname, G->g[i].key, true);
        jnum("count", G->g[i].count, false);
        if (pids) {
            jkey("pids", false);
            putchar('[');
            for (unsigned k = 0; k < G->g[i].npids; k++)
                printf("%s%lld", k ? "," : "", G->g[i].pids[k]);
            putchar(']');
        }
        putchar('}');
    }
    putchar(']');
}

static void json_session(const struct session *s, bool first)
{
    printf("%s{", first ? "" : ",");
    jnum("id", (long long)s->id, true);
    jsv("host", s->host, false);
    jsv("command", s->command, false);
    jnum("idle_s", s->idle_s, false);
    jsv("program", s->program, false);
    jkey("pid", false);
    if (s->pid >= 0)
        printf("%lld", s->pid);
    else
        printf("null");
    if (s->action[0])
        jsv("action", s->action, false);
    putchar('}');
}

static void json_sessions(const struct report *R)
{
    static struct groups hosts, progs;
    group_sessions(R, &hosts, &progs);
    jkey("sessions", false);
    putchar('{');
    jnum("total", (long long)R->nses, true);
    jnum("own_id", (long long)R->srv.own_id, false);
    json_groups("by_host", "host", &hosts, false);
    json_groups("by_program", "program", &progs, true);
    jkey("list", false);
    putchar('[');
    for (size_t i = 0; i < R->nses; i++)
        json_session(&R->ses[i], i == 0);
    printf("]}");
}

static void json_pool(const struct report *R)
{
    const dbpool_stats *p = &R->pool;
    jkey("pool", false);
    putchar('{');
    jnum("limit", p->limit, true);
    jnum("open", p->open, false);
    jnum("in_use", p->in_use, false);
    jnum("idle", p->idle, false);
    jnum("waiting", p->waiting, false);
    jnum("peak_open", p->peak_open, false);
    jnum("gets", (long long)p->gets, false);
    jnum("waits", (long long)p->waits, false);
    jnum("timeouts", (long long)p->timeouts, false);
    jnum("created", (long long)p->created, false);
    printf("}");
    jkey("budget", false);
    putchar('{');
    jnum("size", p->budget_size, true);
    jnum("used", p->budget_used, false);
    jnum("held", p->budget_held, false);
    jkey("holders", false);
    putchar('[');
    for (size_t i = 0; i < R->nholders; i++) {
        char name[64];
        holder_name(R->holders[i], name, sizeof name);
        printf("%s{", i ? "," : "");
        jnum("pid", R->holders[i], true);
        jsv("program", name, false);
        putchar('}');
    }
    printf("]}");
}

static void json_idle(const struct report *R)
{
    if (R->opt.kill_over < 0)
        return;
    jkey("idle_sessions", false);
    putchar('{');
    jnum("threshold_s", R->opt.kill_over, true);
    jkey("dry_run", false);
    printf("%s", R->opt.yes ? "false" : "true");
    jnum("count", R->ncandidates, false);
    jkey("list", false);
    putchar('[');
    bool first = true;
    for (size_t i = 0; i < R->nses; i++)
        if (R->ses[i].candidate) {
            json_session(&R->ses[i], first);
            first = false;
        }
    printf("]}");
}

static void print_json(const struct report *R)
{
    int code = exit_status(R->level);
    putchar('{');
    jsv("status", code == 2 ? "critical" : code == 1 ? "warning" : "ok", true);
    jnum("exit_code", code, false);
    json_server(&R->srv);
    json_sessions(R);
    json_pool(R);
    json_idle(R);
    jkey("recommendations", false);
    putchar('[');
    for (unsigned i = 0; i < R->nrecs; i++) {
        printf("%s{", i ? "," : "");
        jsv("level", level_names[R->recs[i].level], true);
        jsv("text", R->recs[i].text, false);
        putchar('}');
    }
    printf("]}\n");
}

/* ---- main --------------------------------------------------------------------------------------- */

/* Cannot connect or cannot query: CRITICAL, exit 2. */
static int cannot(const struct report *R, const char *what, const char *detail)
{
    char clean[1024];
    copy_clean(clean, sizeof clean, detail);
    if (R->opt.json) {
        printf("{\"status\":\"critical\",\"exit_code\":2,\"error\":");
        char msg[1200];
        snprintf(msg, sizeof msg, "%s: %s", what, clean);
        jstr(msg);
        printf("}\n");
    } else {
        fprintf(stderr, "check-connections: CRITICAL: %s: %s\n", what, clean);
    }
    return 2;
}

static int gather(dbpool_conn *c, struct report *R)
{
    int rc = read_server(c, &R->srv);
    snprintf(R->srv.user, sizeof R->srv.user, "%s", R->opt.user ? R->opt.user : R->srv.login);
    if (rc == 0)
        rc = read_status(c, &R->srv);
    if (rc == 0)
        rc = read_sessions(c, R);
    if (rc == 0)
        read_attrs(c, R);
    return rc;
}

int main(int argc, char **argv)
{
    static struct report R; /* large: not on the stack */
    char err[1024] = "";
    int a = parse_args(argc, argv, &R.opt);
    if (a != 0)
        return a < 0 ? 3 : 0;
    dbpool_conn *c;
    if (dbpool_get(&c) != 0)
        return cannot(&R, "cannot connect", dbpool_last_error());
    int rc = gather(c, &R);
    if (rc != 0)
        snprintf(err, sizeof err, "%s", dbpool_last_error()); /* before the next call resets it */
    else if (R.opt.kill_over >= 0)
        kill_idle(c, &R);
    read_pool(&R); /* while we still hold our connection: "in use 1" is this tool */
    dbpool_release(c);
    /* Explicit here so that the tool's session is gone before the report is read; a plain
     * return would close it at exit just the same. */
    dbpool_close();
    if (rc != 0) {
        free(R.ses);
        return cannot(&R, "query failed", err);
    }
    recommend(&R);
    if (R.opt.json)
        print_json(&R);
    else
        print_text(&R);
    free(R.ses);
    return exit_status(R.level);
}
