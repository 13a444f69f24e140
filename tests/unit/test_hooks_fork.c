/*
 * test_hooks_fork.c - fork() never leaves the child a lock of hooks.c that another thread of
 * the parent held at that instant (pthread_atfork in src/hooks.c). No server needed.
 *
 * The library's thread takes the signal-hook lock on its own, outside the pool's locks (to
 * restore a default action before re-raising a signal), so the pool's prepare handler, which
 * takes init_mu, does not keep it out. Here a thread stands in for it: it takes and releases
 * the lock in a tight loop (dbpool__hooks_install_signals() with every hook already
 * installed), holding it a large share of the time, while the main thread forks. Each child
 * takes the lock once and exits; a child that inherited it locked hangs and is caught by its
 * deadline. Without the lock in the prepare handler, a child hangs within the first few forks.
 * The logger's lock is checked the same way, through dbpool_set_logger(), which takes it.
 */
#include "testutil.h"
#include "dbpool_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;

static void *take_sig_lock(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        dbpool__hooks_install_signals();
    return NULL;
}

static void *take_log_lock(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        dbpool_set_logger(NULL, NULL);
    return NULL;
}

/* Fork while `hold` takes a lock in a loop on another thread; each child runs `child` once. */
static void fork_while_locked(void *(*hold)(void *), void (*child)(void))
{
    assert_int_equal(dbpool__hooks_init(), 0); /* registers the pthread_atfork handlers */
    assert_int_equal(dbpool__hooks_install_signals(), 0);
    pthread_t t;
    atomic_store(&stop, 0);
    assert_int_equal(pthread_create(&t, NULL, hold, NULL), 0);
    unsigned forks = tu_scaled(50), hung = 0, i;
    for (i = 0; i < forks && !hung; i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            child();
            _exit(0);
        }
        int st = tu_wait(pid, tu_slack_ms(1000));
        hung = st == -1;
        if (!hung)
            assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    if (hung)
        fail_msg("fork %u of %u: the child hung on an inherited locked mutex", i, forks);
    dbpool_close();
}

/* What the child's first pool start and first log line do. */
static void child_installs_hooks(void) { dbpool__hooks_install_signals(); }
static void child_logs(void) { dbpool_set_logger(NULL, NULL); }

static void fork_while_signal_lock_taken(void **state)
{
    (void)state;
    fork_while_locked(take_sig_lock, child_installs_hooks);
}

static void fork_while_log_lock_taken(void **state)
{
    (void)state;
    fork_while_locked(take_log_lock, child_logs);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fork_while_signal_lock_taken),
        cmocka_unit_test(fork_while_log_lock_taken),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
