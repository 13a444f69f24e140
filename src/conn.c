/*
 * conn.c - every Connector/C lifecycle call: open with options, liveness, ping, reset, close,
 * error classification. Nothing here touches the pool lock: callers own the slot they pass.
 */
#include "dbpool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <errmsg.h>
#include <mysqld_error.h>

/* ---- error classification (RELIABILITY.md) ------------------------------------------------ */

static bool in_list(unsigned e, const unsigned *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == e)
            return true;
    return false;
}

static const unsigned dead_errors[] = {2013, 2006, 2026, 2027, 2014, 5013, 5014, 1927,
                                       1053, 1152, 1156, 1158, 1159, 1160, 1161, 1184};

int dbpool__errclass(unsigned e)
{
    if (e == 0)
        return DBPOOL__ERR_NONE;
    if (in_list(e, dead_errors, sizeof dead_errors / sizeof *dead_errors))
        return DBPOOL__ERR_DEAD;
    return DBPOOL__ERR_STATEMENT;
}

/* At connect time the same numbers mean something else: is it worth retrying? */
static int connect_class(unsigned e, const char *msg)
{
    static const unsigned transient[] = {2002, 2003, 2013, 1040, 1203, 1226, 1053};
    if (in_list(e, transient, sizeof transient / sizeof *transient))
        return DBPOOL__ERR_TRANSIENT;
    /* 2005 (unknown host) is worth retrying only for a temporary resolver failure. */
    if (e == 2005 && msg && strstr(msg, "(-3)"))
        return DBPOOL__ERR_TRANSIENT;
    return DBPOOL__ERR_PERMANENT;
}

static int connect_code(unsigned e)
{
    switch (e) {
    case 1040:
    case 1203:
    case 1226:
        return DBPOOL_ESERVERLIMIT;
    case 1045:
    case 1044:
    case 1698:
        return DBPOOL_EAUTH;
    case 2026:
    case 4151:
        return DBPOOL_ETLS;
    default:
        return DBPOOL_ECONNECT;
    }
}

static const char *connect_hint(unsigned e)
{
    switch (e) {
    case 1040:
        return " (the server's max_connections is reached by all its clients together: see "
               "check-connections; lower DB_CONNECTION_LIMIT or set DB_HOST_BUDGET)";
    case 1203:
    case 1226:
        return " (the account's max_user_connections is below what this host opens: lower "
               "DB_CONNECTION_LIMIT or DB_HOST_BUDGET)";
    case 1045:
        return " (check DB_USER and DB_PASSWORD)";
    case 1049:
        return " (check DB_NAME)";
    case 2002:
    case 2003:
        return " (is the server running and listening on DB_HOST:DB_PORT / DB_SOCKET?)";
    default:
        return "";
    }
}

int dbpool__fail_mysql(int code, MYSQL *m, const char *what)
{
    unsigned e = mysql_errno(m);
    return dbpool__fail_server(code, e, "%s: server error %u (SQLSTATE %s): %s", what, e,
                               mysql_sqlstate(m), mysql_error(m));
}

int dbpool__conn_note_error(struct dbpool_conn *c)
{
    int cls = dbpool__errclass(mysql_errno(c->mysql));
    if (cls == DBPOOL__ERR_DEAD || mysql_get_socket(c->mysql) == MARIADB_INVALID_SOCKET)
        c->discard = true;
    return c->discard ? DBPOOL__ERR_DEAD : cls;
}

/* ---- open ---------------------------------------------------------------------------------- */

static unsigned ms_to_s(unsigned ms) { return ms == 0 ? 0 : (ms + 999) / 1000; }

static void set_timeouts(MYSQL *m, const dbpool__options *o)
{
    unsigned t = ms_to_s(o->connect_timeout_ms);
    if (t)
        mysql_optionsv(m, MYSQL_OPT_CONNECT_TIMEOUT, &t);
    t = ms_to_s(o->read_timeout_ms);
    if (t)
        mysql_optionsv(m, MYSQL_OPT_READ_TIMEOUT, &t);
    t = ms_to_s(o->write_timeout_ms);
    if (t)
        mysql_optionsv(m, MYSQL_OPT_WRITE_TIMEOUT, &t);
}

static void set_attrs(MYSQL *m, const dbpool__options *o)
{
    extern char *program_invocation_short_name;
    char pid[24];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    mysql_optionsv(m, MYSQL_OPT_CONNECT_ATTR_ADD, "program_name", program_invocation_short_name);
    mysql_optionsv(m, MYSQL_OPT_CONNECT_ATTR_ADD, "dbpool_pid", pid);
    mysql_optionsv(m, MYSQL_OPT_CONNECT_ATTR_ADD, "dbpool_pool_id", o->pool_id);
    mysql_optionsv(m, MYSQL_OPT_CONNECT_ATTR_ADD, "dbpool_version", DBPOOL_VERSION_STRING);
}

static void set_tls(MYSQL *m, const dbpool__options *o)
{
    if (o->ssl_mode == DBPOOL__SSL_DISABLED)
        return;
    const char *ca = o->ssl_ca[0] ? o->ssl_ca : NULL;
    const char *cert = o->ssl_cert[0] ? o->ssl_cert : NULL;
    const char *key = o->ssl_key[0] ? o->ssl_key : NULL;
    mysql_ssl_set(m, key, cert, ca, NULL, NULL);
    my_bool on = 1;
    if (o->ssl_mode >= DBPOOL__SSL_REQUIRED)
        mysql_optionsv(m, MYSQL_OPT_SSL_ENFORCE, &on);
    /* Connector/C 3.3 checks the chain and the host name together: VERIFY_CA is as strict as
     * VERIFY_IDENTITY (documented in .env.example). */
    if (o->ssl_mode >= DBPOOL__SSL_VERIFY_CA)
        mysql_optionsv(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &on);
}

static MYSQL *prepare_handle(const dbpool__options *o)
{
    MYSQL *m = mysql_init(NULL);
    if (!m)
        return NULL;
    my_bool off = 0;
    unsigned zero = 0;
    mysql_optionsv(m, MYSQL_OPT_RECONNECT, &off);
    mysql_optionsv(m, MYSQL_OPT_LOCAL_INFILE, &zero);
    if (o->socket[0] && !o->host[0]) {
        enum mysql_protocol_type p = MYSQL_PROTOCOL_SOCKET;
        mysql_optionsv(m, MYSQL_OPT_PROTOCOL, &p);
    }
    set_timeouts(m, o);
    set_attrs(m, o);
    set_tls(m, o);
    if (o->session_wait_timeout_s) {
        char init[64];
        snprintf(init, sizeof init, "SET SESSION wait_timeout=%u", o->session_wait_timeout_s);
        mysql_optionsv(m, MYSQL_INIT_COMMAND, init);
    }
    return m;
}

/* TCP keepalive turns a silent partition of an idle connection into an error in seconds. */
static void tune_socket(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0)
        fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
        return;
    int on = 1, idle = 30, intvl = 5, cnt = 3;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

static int check_tls(struct dbpool_conn *c, const dbpool__options *o)
{
    if (o->ssl_mode < DBPOOL__SSL_REQUIRED || mysql_get_ssl_cipher(c->mysql))
        return 0;
    return dbpool__fail(DBPOOL_ETLS, "DB_SSL_MODE requires TLS but the connection to %s is "
                        "not encrypted (the server has no TLS configured)",
                        o->host[0] ? o->host : o->socket);
}

int dbpool__conn_open(struct dbpool_conn *c, const dbpool__options *o, int *err_class)
{
    *err_class = DBPOOL__ERR_PERMANENT;
    MYSQL *m = prepare_handle(o);
    if (!m)
        return dbpool__fail(DBPOOL_ENOMEM, "mysql_init failed");
    const char *host = o->host[0] ? o->host : "localhost";
    if (!mysql_real_connect(m, host, o->user, o->password, o->database[0] ? o->database : NULL,
                            o->port, o->socket[0] ? o->socket : NULL, 0)) {
        unsigned e = mysql_errno(m);
        *err_class = connect_class(e, mysql_error(m));
        dbpool__fail_server(connect_code(e), e, "connecting to %s as '%s': server error %u (%s): %s%s",
                            o->host[0] ? o->host : o->socket, o->user, e, mysql_sqlstate(m),
                            mysql_error(m), connect_hint(e));
        mysql_close(m);
        return connect_code(e);
    }
    c->mysql = m;
    c->discard = false;
    c->thread_id = mysql_thread_id(m);
    int fd = mysql_get_socket(m);
    tune_socket(fd);
    c->fd_dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    c->tls = mysql_get_ssl_cipher(m) != NULL;
    int rc = check_tls(c, o);
    if (rc != 0) {
        dbpool__conn_close(c);
        return rc;
    }
    *err_class = DBPOOL__ERR_NONE;
    return 0;
}

/* ---- liveness, reset, close -------------------------------------------------------------- */

int dbpool__conn_alive(struct dbpool_conn *c)
{
    /* An idle connection has nothing to read: readable means EOF, an error packet from a KILL
     * or wait_timeout, or a reset. */
    struct pollfd p = {.fd = c->fd_dup, .events = POLLIN};
    if (c->fd_dup < 0 || mysql_get_socket(c->mysql) == MARIADB_INVALID_SOCKET)
        return 0;
    int n = poll(&p, 1, 0);
    return n == 0;
}

int dbpool__conn_ping(struct dbpool_conn *c)
{
    dbpool__sigpipe sp;
    dbpool__sigpipe_block(&sp, c);
    int r = mysql_ping(c->mysql);
    dbpool__sigpipe_restore(&sp);
    if (r == 0)
        return 0;
    c->discard = true;
    return dbpool__fail_mysql(DBPOOL_ECONNLOST, c->mysql, "ping");
}

static int apply_session(struct dbpool_conn *c, const dbpool__options *o)
{
    if (!o->session_wait_timeout_s)
        return 0;
    char sql[64];
    snprintf(sql, sizeof sql, "SET SESSION wait_timeout=%u", o->session_wait_timeout_s);
    if (mysql_query(c->mysql, sql) != 0)
        return dbpool__fail_mysql(DBPOOL_ECONNLOST, c->mysql, "re-applying session settings");
    return 0;
}

static int reset_io(struct dbpool_conn *c, const dbpool__options *o, bool full);

int dbpool__conn_reset(struct dbpool_conn *c, const dbpool__options *o, bool full)
{
    dbpool__sigpipe sp;
    dbpool__sigpipe_block(&sp, c);
    int rc = reset_io(c, o, full);
    dbpool__sigpipe_restore(&sp);
    return rc;
}

static int reset_io(struct dbpool_conn *c, const dbpool__options *o, bool full)
{
    MYSQL *m = c->mysql;
    /* Results left unread leave the protocol mid-stream: no cheap way back. */
    if (m->status != MYSQL_STATUS_READY || mysql_get_socket(m) == MARIADB_INVALID_SOCKET)
        return dbpool__fail(DBPOOL_ECONNLOST, "connection returned with unread results or closed");
    if (full) {
        dbpool__stmt_cache_clear(c, false);
        if (mysql_reset_connection(m) != 0)
            return dbpool__fail_mysql(DBPOOL_ECONNLOST, m, "reset on release");
        return apply_session(c, o);
    }
    unsigned status = 0;
    mariadb_get_infov(m, MARIADB_CONNECTION_SERVER_STATUS, &status);
    if ((status & SERVER_STATUS_IN_TRANS) && mysql_rollback(m) != 0)
        return dbpool__fail_mysql(DBPOOL_ECONNLOST, m, "rollback on release");
    return 0;
}

/* After COM_QUIT, wait (bounded) until the server closes its end: it does so when it has ended
 * the session, so a pool or host-budget slot given back after this is not reused while the
 * server still counts the old session. Our F_DUPFD copy keeps the socket open after mysql_close(). */
static void await_server_close(int fd, int ms)
{
    uint64_t end = dbpool__now_ns() + (uint64_t)ms * 1000000u;
    for (;;) {
        char buf[256];
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return;
        if (r > 0)
            continue;
        uint64_t now = dbpool__now_ns();
        if (now >= end)
            return;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, (int)((end - now) / 1000000u) + 1);
    }
}

void dbpool__conn_close(struct dbpool_conn *c)
{
    /* Detach the handle and the descriptor before freeing or closing them: a fork() in another
     * thread copies this slot at any instant, and the child's atfork handler reads both
     * (dbpool__conn_forget_in_child), which must never see a freed MYSQL or a descriptor number
     * that may already belong to another file. A child forked in between keeps its copies of
     * the socket until it exits; the parent's COM_QUIT ends the session all the same. */
    MYSQL *m = c->mysql;
    int fd = c->fd_dup;
    __atomic_store_n(&c->mysql, NULL, __ATOMIC_RELEASE);
    __atomic_store_n(&c->fd_dup, -1, __ATOMIC_RELEASE);
    if (m) {
        dbpool__sigpipe sp;
        dbpool__sigpipe_block(&sp, c);
        mysql_close(m); /* sends COM_QUIT (and a TLS close_notify) if still open */
        dbpool__sigpipe_restore(&sp);
        /* Statements outlive mysql_close as local objects: free them now. */
        dbpool__stmt_cache_clear(c, true);
    }
    if (fd >= 0) {
        /* Whether or not a budget slot is held: the limit counts sessions until the server
         * has ended them. ~0.1 ms normally; bounded for a frozen server. */
        await_server_close(fd, 100);
        close(fd);
    }
    c->thread_id = 0;
    c->discard = false;
}

void dbpool__conn_forget_in_child(struct dbpool_conn *c, int devnull)
{
    /* Point Connector/C's descriptor at /dev/null: the child's copy of the socket is closed
     * without a byte sent, and a later mysql_close() in the child writes into /dev/null. */
    MYSQL *m = __atomic_load_n(&c->mysql, __ATOMIC_ACQUIRE);
    int dup = __atomic_load_n(&c->fd_dup, __ATOMIC_ACQUIRE);
    if (m) {
        int fd = mysql_get_socket(m);
        if (fd != MARIADB_INVALID_SOCKET && devnull >= 0)
            dup2(devnull, fd);
    }
    if (dup >= 0)
        close(dup);
    c->fd_dup = -1;
}

void dbpool__conn_kill_queries(const dbpool__options *o, const unsigned long *ids, size_t n)
{
    if (n == 0)
        return;
    dbpool__options short_o = *o;
    short_o.session_wait_timeout_s = 0;
    if (short_o.connect_timeout_ms == 0 || short_o.connect_timeout_ms > 2000)
        short_o.connect_timeout_ms = 2000;
    short_o.read_timeout_ms = short_o.write_timeout_ms = 2000;
    struct dbpool_conn k = {.fd_dup = -1, .budget_slot = -1};
    int cls;
    if (dbpool__conn_open(&k, &short_o, &cls) != 0) {
        dbpool__log(DBPOOL_LOG_WARN, "could not stop running statements: %s", dbpool_last_error());
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "KILL QUERY %lu", ids[i]);
        if (mysql_query(k.mysql, sql) != 0 && mysql_errno(k.mysql) != ER_NO_SUCH_THREAD)
            dbpool__log(DBPOOL_LOG_WARN, "KILL QUERY %lu: %s", ids[i], mysql_error(k.mysql));
    }
    dbpool__conn_close(&k);
}
