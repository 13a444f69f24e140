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
 *   exit_in_signal_close  as exit_midquery, but main sends itself SIGTERM first and calls exit()
 *                 once the pool reports it is closing (the library's thread closes it)
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
 *   hup_in_close  an application SIGHUP handler; a SIGHUP arrives while dbpool_close() stops the
 *                 library's thread (after its stop record is queued); writes "during_close
 *                 handler=<n>", then sends itself SIGHUP with no pool ("after_close
 *                 handler=<n>"), then with a new pool ("restarted handler=<n> open=<n>"),
 *                 and exits 0
 */
#include "dbpool.h"

#include <fcntl.h>
#include <mysql.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
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

/* ---- hup_in_close ----------------------------------------------------------------------------
 * The window: dbpool_close() has queued the stop record for the library's thread and joins
 * it. To hold the window open, the library's thread is kept in our logger (its idle-timeout
 * line, logged outside the pool lock) until the stop record shows up in its self-pipe
 * (FIONREAD on the read end, found as the one pipe the pool opened); only then is SIGHUP sent,
 * and the thread is let go once the signal was either handled or queued behind the stop
 * record. No timing guesses: each step waits for the state it needs. (The first bytes in the
 * pipe are the stop record because nothing else is queued here: no signal yet, and the pool
 * posts no wake-ups. If it ever does, this must tell the records apart.) */

#define FD_SCAN 1024
static pthread_t main_tid;
static atomic_int hups, armed, in_logger;
static int kpipe = -1;

static void app_hup(int sig)
{
    (void)sig;
    atomic_fetch_add(&hups, 1);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void pipe_read_ends(unsigned char *set)
{
    for (int fd = 0; fd < FD_SCAN; fd++) {
        struct stat st;
        int fl = fcntl(fd, F_GETFL);
        set[fd] = fl >= 0 && (fl & O_ACCMODE) == O_RDONLY && fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
    }
}

static int queued(void)
{
    int n = 0;
    return ioctl(kpipe, FIONREAD, &n) == 0 ? n : -1;
}

static void hold_keeper(int level, const char *msg, void *ud)
{
    (void)level;
    (void)ud;
    if (pthread_equal(pthread_self(), main_tid) || !strstr(msg, "closing connection") ||
        !atomic_exchange(&armed, 0))
        return;
    atomic_store(&in_logger, 1);
    uint64_t end = now_ms() + 10000;
    while (queued() == 0 && now_ms() < end)
        usleep(1000); /* the main thread gets into dbpool_close() */
    int stop_rec = queued();
    kill(getpid(), SIGHUP); /* this thread blocks all signals: the main thread takes it */
    while (atomic_load(&hups) == 0 && queued() == stop_rec && now_ms() < end)
        usleep(1000);
}

static int wait_hups(int n)
{
    uint64_t end = now_ms() + 5000;
    while (atomic_load(&hups) < n && now_ms() < end)
        usleep(1000);
    return atomic_load(&hups);
}

static int find_keeper_pipe(const unsigned char *before)
{
    static unsigned char after[FD_SCAN];
    pipe_read_ends(after);
    int found = -1, n = 0;
    for (int fd = 0; fd < FD_SCAN; fd++)
        if (after[fd] && !before[fd]) {
            found = fd;
            n++;
        }
    return n == 1 ? found : -1;
}

static int run_hup_in_close(void)
{
    static unsigned char before[FD_SCAN];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = app_hup;
    sigaction(SIGHUP, &sa, NULL);
    setenv("DB_IDLE_TIMEOUT_MS", "100", 1);
    setenv("DB_SHUTDOWN_GRACE_MS", "0", 1);
    setenv("DB_LOG_LEVEL", "debug", 1);
    main_tid = pthread_self();
    dbpool_set_logger(hold_keeper, NULL);
    pipe_read_ends(before);
    dbpool_conn *c = borrow();
    say("ids %lu\nready\n", dbpool_conn_id(c));
    if ((kpipe = find_keeper_pipe(before)) < 0) {
        say("error: the library's pipe not found\n");
        return 4;
    }
    atomic_store(&armed, 1);
    dbpool_release(c); /* idle: the library's thread closes it after 100 ms, and logs */
    uint64_t end = now_ms() + 10000;
    while (!atomic_load(&in_logger) && now_ms() < end)
        usleep(1000);
    if (!atomic_load(&in_logger)) {
        say("error: no idle-timeout line from the library's thread\n");
        return 4;
    }
    dbpool_close();
    say("during_close handler=%d\n", atomic_load(&hups));
    kill(getpid(), SIGHUP); /* no pool: straight to our handler */
    say("after_close handler=%d\n", wait_hups(2));
    dbpool_release(borrow());
    kill(getpid(), SIGHUP); /* a new pool: closed by the library's thread, then our handler */
    int n = wait_hups(3);
    say("restarted handler=%d open=%u\n", n, stats_now().open);
    dbpool_close();
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
    if (!strcmp(mode, "hup_in_close"))
        return run_hup_in_close();
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
    if (!strcmp(mode, "exit_in_signal_close")) {
        dbpool_conn *busy;
        open_two(&busy);
        pthread_t t;
        pthread_create(&t, NULL, sleeper, busy);
        pthread_detach(t);
        usleep(300000); /* SELECT SLEEP(30) is running */
        say("ready\n");
        kill(getpid(), SIGTERM); /* the library's thread starts closing the pool */
        for (;;) { /* until the pool says it is closing */
            dbpool_conn *c = NULL;
            int rc = dbpool_get(&c);
            if (rc == DBPOOL_ECLOSED)
                break;
            if (rc == 0)
                dbpool_release(c);
            usleep(1000);
        }
        say("closing\n");
        exit(0); /* while that close is in progress */
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
