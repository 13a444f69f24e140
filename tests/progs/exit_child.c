/*
 * exit_child.c - a process that uses the pool and then ends in the way its mode says, for the
 * exit-guarantee tests. Usage: exit_child MODE REPORT_FILE
 *
 * It writes "ids <id> <id> ...\n" (server connection ids it opened) and then "ready\n" to
 * REPORT_FILE, so the test knows which sessions to look for on the server.
 *
 * Modes:
 *   idle          two idle pooled connections, then wait for signals forever
 *   busy          one connection running SELECT SLEEP(60) (killed or signalled by the test)
 *   exit | return | quick_exit | _exit    two connections (one idle, one borrowed), then end so
 *   exit_midquery another thread runs SELECT SLEEP(30) while main calls exit()
 *   app_handler   an application SIGTERM handler installed before the pool; after the signal,
 *                 checks the pool was closed, writes "alive open=<n>" and exits 0
 *   fork_exec     one idle connection, then fork+exec of `sleep 30`, then waits forever
 *   share_claimed with DB_CONNECTION_LIMIT=1: one thread's dbpool_query() waits for the named
 *                 lock `exit_gate` (held by the test), a second thread's SELECT SLEEP(60)
 *                 queues behind it; "ready" once it is queued, "claimed" once the first
 *                 thread runs it for the second (after the test released the lock); then
 *                 waits for signals forever
 *   tls_sigpipe   SIGPIPE set to SIG_DFL; borrows a TLS connection, writes "ready", waits for
 *                 SIGUSR1 (after the test KILLed the session), sends a large query and writes
 *                 "survived rc=<code>"
 */
#include "dbpool.h"

#include <mysql.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static FILE *report;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(report, fmt, ap);
    va_end(ap);
    fflush(report);
}

static dbpool_conn *borrow(void)
{
    dbpool_conn *c;
    int rc = dbpool_get(&c);
    if (rc != 0) {
        fprintf(stderr, "exit_child: get: %s\n", dbpool_last_error());
        exit(3);
    }
    return c;
}

static void forever(void)
{
    for (;;)
        pause();
}

/* Two connections: ids reported; `keep` (may be NULL) receives the second, still borrowed. */
static void open_two(dbpool_conn **keep)
{
    dbpool_conn *a = borrow(), *b = borrow();
    say("ids %lu %lu\n", dbpool_conn_id(a), dbpool_conn_id(b));
    dbpool_release(a);
    if (keep)
        *keep = b;
    else
        dbpool_release(b);
}

static void *sleeper(void *p)
{
    dbpool_conn *c = p;
    mysql_query(dbpool_mysql(c), "SELECT SLEEP(30)");
    return NULL;
}

static volatile sig_atomic_t got_term;
static void app_term(int sig)
{
    (void)sig;
    got_term = 1;
}

static int run_app_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = app_term;
    sigaction(SIGTERM, &sa, NULL);
    open_two(NULL);
    say("ready\n");
    while (!got_term)
        usleep(10000);
    dbpool_stats s;
    dbpool_stats_get(&s);
    say("alive open=%u\n", s.open);
    return 0;
}

static int run_fork_exec(void)
{
    dbpool_conn *c = borrow();
    say("ids %lu\n", dbpool_conn_id(c));
    dbpool_release(c);
    pid_t pid = fork();
    if (pid == 0) {
        execlp("sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    say("child %ld\nready\n", (long)pid);
    forever();
    return 0;
}

static void *query_thread(void *p)
{
    dbpool_result *r = NULL;
    int rc = dbpool_query(&r, (const char *)p, NULL, 0);
    dbpool_result_free(r);
    say("returned rc=%d\n", rc);
    return NULL;
}

static dbpool_stats stats_now(void)
{
    dbpool_stats s;
    dbpool_stats_get(&s);
    return s;
}

static int run_share_claimed(void)
{
    dbpool_conn *c = borrow(); /* the one connection: its id, for the test */
    say("ids %lu\n", dbpool_conn_id(c));
    dbpool_release(c);
    pthread_t holder, waiter;
    pthread_create(&holder, NULL, query_thread,
                   "SELECT GET_LOCK('exit_gate', 60) + RELEASE_LOCK('exit_gate')");
    while (stats_now().in_use != 1)
        usleep(2000);
    pthread_create(&waiter, NULL, query_thread, "SELECT SLEEP(60)");
    while (stats_now().waiting != 1)
        usleep(2000);
    say("ready\n");
    while (stats_now().served != 1)
        usleep(2000);
    say("claimed\n");
    forever();
    return 0;
}

static volatile sig_atomic_t go;
static void on_usr1(int sig)
{
    (void)sig;
    go = 1;
}

static int run_tls_sigpipe(void)
{
    signal(SIGUSR1, on_usr1);
    dbpool_conn *c = borrow();
    signal(SIGPIPE, SIG_DFL); /* after mysql_library_init, which set SIG_IGN */
    MYSQL *m = dbpool_mysql(c);
    say("ids %lu\ncipher %s\nready\n", dbpool_conn_id(c), mysql_get_ssl_cipher(m) ? mysql_get_ssl_cipher(m) : "none");
    while (!go)
        usleep(10000);
    size_t n = 8u << 20;
    char *sql = malloc(n + 64);
    strcpy(sql, "SELECT '");
    memset(sql + 8, 'x', n);
    strcpy(sql + 8 + n, "'");
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = dbpool_conn_exec(c, sql);
    free(sql);
    say("survived rc=%d\n", rc);
    dbpool_release(c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    const char *mode = argv[1];
    report = fopen(argv[2], "w");
    if (!report)
        return 2;
    if (!strcmp(mode, "app_handler"))
        return run_app_handler();
    if (!strcmp(mode, "fork_exec"))
        return run_fork_exec();
    if (!strcmp(mode, "share_claimed"))
        return run_share_claimed();
    if (!strcmp(mode, "tls_sigpipe"))
        return run_tls_sigpipe();
    if (!strcmp(mode, "idle")) {
        open_two(NULL);
        say("ready\n");
        forever();
    }
    if (!strcmp(mode, "busy")) {
        dbpool_conn *c = borrow();
        say("ids %lu\nready\n", dbpool_conn_id(c));
        mysql_query(dbpool_mysql(c), "SELECT SLEEP(60)");
        say("query ended: %s\n", mysql_error(dbpool_mysql(c)));
        forever();
    }
    if (!strcmp(mode, "exit_midquery")) {
        dbpool_conn *busy;
        open_two(&busy);
        pthread_t t;
        pthread_create(&t, NULL, sleeper, busy);
        pthread_detach(t); /* never joined: exit() happens while it runs */
        usleep(300000);
        say("ready\n");
        exit(0);
    }
    dbpool_conn *held;
    open_two(&held);
    say("ready\n");
    if (!strcmp(mode, "exit"))
        exit(0);
    if (!strcmp(mode, "quick_exit"))
        quick_exit(0);
    if (!strcmp(mode, "_exit"))
        _exit(0);
    return 0; /* "return": from main, with a connection still borrowed */
}
