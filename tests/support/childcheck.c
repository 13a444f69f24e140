/* childcheck.c - see childcheck.h. */
#include "childcheck.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

char *cc_report(const cc_child *ch, char *buf, size_t n)
{
    FILE *f = fopen(ch->report, "r");
    size_t k = f ? fread(buf, 1, n - 1, f) : 0;
    buf[k] = '\0';
    if (f)
        fclose(f);
    return buf;
}

static void parse_ids(cc_child *ch, const char *buf)
{
    const char *p = strstr(buf, "ids ");
    ch->nids = 0;
    if (p) {
        p += 4;
        char *e;
        while (ch->nids < CC_MAX_IDS && (ch->ids[ch->nids] = strtoul(p, &e, 10)) != 0 && e != p) {
            ch->nids++;
            p = e;
        }
    }
    const char *g = strstr(buf, "child ");
    ch->grandchild = g ? atol(g + 6) : 0;
}

static void wait_ready(cc_child *ch)
{
    char buf[4096];
    uint64_t end = tu_now_ms() + 20000;
    ch->reaped = 0;
    while (!strstr(cc_report(ch, buf, sizeof buf), "ready\n")) {
        int st;
        if (!ch->reaped && waitpid(ch->pid, &st, WNOHANG) == ch->pid) {
            /* A fast child may write "ready" and end between our read and waitpid: read once
             * more before calling it an early death. */
            ch->reaped = 1;
            ch->status = st;
            continue;
        }
        if (ch->reaped)
            fail_msg("exit_child died before ready (status 0x%x): %s", ch->status, buf);
        if (tu_now_ms() > end)
            fail_msg("exit_child not ready after 20 s: %s", buf);
        tu_sleep_ms(10);
    }
    parse_ids(ch, buf);
    assert_true(ch->nids > 0);
}

void cc_start(cc_child *ch, const char *mode)
{
    static int seq;
    snprintf(ch->report, sizeof ch->report, "/tmp/dbpool-child-%ld-%d.txt", (long)getpid(), ++seq);
    unlink(ch->report);
    char *argv[] = {"exit_child", (char *)mode, ch->report, NULL};
    ch->pid = tu_spawn("exit_child", argv);
    wait_ready(ch);
}

void cc_assert_sessions_gone(const tu_server *s, cc_child *ch, int clean_from)
{
    MYSQL *admin = tu_admin(s);
    uint64_t end = tu_now_ms() + 1000;
    for (int i = 0; i < ch->nids; i++) {
        while (tu_session_exists(admin, ch->ids[i]) && tu_now_ms() < end)
            tu_sleep_ms(10);
        if (tu_session_exists(admin, ch->ids[i]))
            fail_msg("session %lu still on the server 1 s after the process ended", ch->ids[i]);
    }
    mysql_close(admin);
    tu_sleep_ms(200); /* let the server write its log */
    for (int i = clean_from; i < ch->nids; i++) {
        int n = tu_errlog_aborted(s, ch->ids[i]);
        if (n < 0)
            fail_msg("server error log not readable: cannot prove a clean close");
        if (n > 0)
            fail_msg("session %lu ended without COM_QUIT (Aborted connection in the log)", ch->ids[i]);
    }
    unlink(ch->report);
}

int cc_wait(cc_child *ch, unsigned ms)
{
    if (ch->reaped)
        return ch->status;
    return tu_wait(ch->pid, ms);
}

void cc_expect_killed_by(cc_child *ch, int sig, unsigned ms)
{
    int st = cc_wait(ch, ms);
    if (st == -1)
        fail_msg("child still alive %u ms after signal %d", ms, sig);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != sig)
        fail_msg("child status 0x%x: expected death by signal %d", st, sig);
}
