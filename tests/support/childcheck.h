/*
 * childcheck.h - run tests/progs/exit_child in a mode and check the server afterwards: every
 * session it opened gone within 1 s, and (from `clean_from` on) none ended without COM_QUIT.
 */
#ifndef DBPOOL_CHILDCHECK_H
#define DBPOOL_CHILDCHECK_H

#include "testutil.h"

#define CC_MAX_IDS 8

typedef struct cc_child {
    pid_t pid;
    char report[256];
    unsigned long ids[CC_MAX_IDS];
    int nids;
    long grandchild;
    int reaped;  /* the child already ended (seen while waiting for "ready") */
    int status;  /* its wait status then */
} cc_child;

/* Start exit_child MODE with the current environment; wait until it reports "ready". */
void cc_start(cc_child *ch, const char *mode);
/* The child's report file contents. */
char *cc_report(const cc_child *ch, char *buf, size_t n);
/* Sessions ch->ids[*] gone from `s` within 1 s; no "Aborted connection" for ids[clean_from..]. */
void cc_assert_sessions_gone(const tu_server *s, cc_child *ch, int clean_from);
/* Wait up to `ms` for the child's end (also when it ended before "ready" was read); returns
 * the wait status or -1 on timeout. Use this, not tu_wait, on a started child. */
int cc_wait(cc_child *ch, unsigned ms);
/* The child died by `sig` within `ms`. */
void cc_expect_killed_by(cc_child *ch, int sig, unsigned ms);

#endif
