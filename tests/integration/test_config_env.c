/*
 * test_config_env.c - configuration precedence proven on the server (issue 3, RELIABILITY.md
 * item 31): with DB_CONNECTION_LIMIT=8 in the .env file and DB_CONNECTION_LIMIT=2 in the
 * environment, the server never sees more than 2 sessions of the application user under load,
 * and does see 2. The control case (no environment value) shows the file's 8 is really read.
 *
 * The sessions are counted in information_schema.PROCESSLIST from an admin connection, for a
 * user created for this process only, so tests running in parallel on the shared server cannot
 * disturb the count. Its credentials come from the .env file (the environment's are removed),
 * which also proves the file is used.
 *
 * Worker threads never call cmocka assertions (they longjmp into the main thread): they record
 * what they saw and the main thread asserts.
 */
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WORKERS 10
#define HOLD_AFTER_RELEASE_MS 100

static atomic_int held, done, release_now;
static char env_path[64]; /* the temporary .env, removed by teardown even when a check fails */

struct worker {
    pthread_t thread;
    int rc;
};

/* Borrow, hold until the main thread has looked at the server, hold a little longer so the
 * waiters queue behind, release. */
static void *work(void *arg)
{
    struct worker *w = arg;
    dbpool_conn *c = NULL;
    w->rc = dbpool_get(&c);
    if (w->rc == 0) {
        atomic_fetch_add(&held, 1);
        while (!atomic_load(&release_now))
            tu_sleep_ms(5);
        tu_sleep_ms(HOLD_AFTER_RELEASE_MS);
        dbpool_release(c);
    }
    atomic_fetch_add(&done, 1);
    return NULL;
}

struct account {
    char user[64];
    char password[64];
};

static void create_account(MYSQL *admin, const tu_server *s, struct account *a)
{
    snprintf(a->user, sizeof a->user, "dbpool_cfgenv_%ld", (long)getpid());
    snprintf(a->password, sizeof a->password, "Cfg-env-%ld-pw", (long)getpid());
    tu_exec(admin, "DROP USER IF EXISTS '%s'@'%%'", a->user);
    tu_exec(admin, "CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", a->user, a->password);
    tu_exec(admin, "GRANT ALL PRIVILEGES ON `%s`.* TO '%s'@'%%'", s->db, a->user);
}

static void write_env_file(char *path, const struct account *a)
{
    char text[512];
    int fd = mkstemp(path); /* mode 0600: no permission warning */
    assert_true(fd >= 0);
    int n = snprintf(text, sizeof text,
                     "# written by test_config_env\n"
                     "DB_USER=%s\n"
                     "DB_PASSWORD='%s'\n"
                     "DB_CONNECTION_LIMIT=8\n"
                     "DB_ACQUIRE_TIMEOUT_MS=60000\n",
                     a->user, a->password);
    assert_int_equal(write(fd, text, (size_t)n), n);
    close(fd);
}

/* Poll the server while the workers run: until `want` connections are held and seen, then for
 * another second (anything above `want` would show up), then while the rest take their turns.
 * Returns the highest session count seen. */
static long watch(MYSQL *admin, const char *user, long want)
{
    long max_seen = 0, reached_at = -1;
    uint64_t start = tu_now_ms();
    while (atomic_load(&done) < WORKERS && tu_now_ms() - start < 120000) {
        long n = tu_count_sessions(admin, user);
        max_seen = n > max_seen ? n : max_seen;
        if (reached_at < 0 && n == want && atomic_load(&held) >= want)
            reached_at = (long)(tu_now_ms() - start);
        if (reached_at >= 0 && tu_now_ms() - start > (uint64_t)reached_at + 1000)
            atomic_store(&release_now, 1);
        if (tu_now_ms() - start > 30000) /* never reached: let the workers finish anyway */
            atomic_store(&release_now, 1);
        tu_sleep_ms(10);
    }
    return max_seen;
}

static void run_case(const char *env_limit, long want)
{
    const tu_server *s = tu_server_shared();
    struct account a;
    struct worker w[WORKERS];
    atomic_store(&held, 0);
    atomic_store(&done, 0);
    atomic_store(&release_now, 0);
    tu_use_shared();
    MYSQL *admin = tu_admin(s);
    create_account(admin, s, &a);
    snprintf(env_path, sizeof env_path, "/tmp/dbpool-cfgenv-XXXXXX");
    write_env_file(env_path, &a);
    unsetenv("DB_USER"); /* the credentials must come from the file */
    unsetenv("DB_PASSWORD");
    setenv("DBPOOL_ENV_FILE", env_path, 1);
    if (env_limit)
        setenv("DB_CONNECTION_LIMIT", env_limit, 1);
    assert_int_equal(tu_count_sessions(admin, a.user), 0);

    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_create(&w[i].thread, NULL, work, &w[i]), 0);
    long max_seen = watch(admin, a.user, want);
    atomic_store(&release_now, 1);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(w[i].thread, NULL);

    dbpool_stats st;
    assert_int_equal(dbpool_stats_get(&st), 0);
    for (int i = 0; i < WORKERS; i++)
        if (w[i].rc != 0)
            fail_msg("worker %d: dbpool_get returned %s (%s)", i, dbpool_errname(w[i].rc),
                     dbpool_last_error());
    if (max_seen != want)
        fail_msg("the server saw at most %ld sessions of %s, expected exactly %ld", max_seen,
                 a.user, want);
    assert_int_equal(st.limit, (unsigned)want);
    assert_true(st.peak_open <= (unsigned)want);
    assert_int_equal(st.gets, WORKERS);

    dbpool_close();
    assert_int_equal(tu_wait_sessions(admin, a.user, 0, 5000), 0);
    tu_exec(admin, "DROP USER '%s'@'%%'", a.user);
    mysql_close(admin);
}

static int teardown(void **state)
{
    (void)state;
    dbpool_close();
    if (env_path[0])
        unlink(env_path);
    env_path[0] = '\0';
    return 0;
}

static void env_limit_beats_file(void **state)
{
    (void)state;
    run_case("2", 2);
}

static void file_limit_applies_without_env(void **state)
{
    (void)state;
    run_case(NULL, 8);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_teardown(env_limit_beats_file, teardown),
    cmocka_unit_test_teardown(file_limit_applies_without_env, teardown),
};

TU_MAIN(tests)
