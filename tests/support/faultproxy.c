/*
 * faultproxy.c - the fault-injection TCP proxy of the tests (see faultproxy.h).
 *
 * One thread per proxy runs a poll() loop over the listening socket, a wake-up pipe and both
 * sockets of every connection. All sockets are non-blocking except the upstream connect (to a
 * loopback server: bounded by SO_SNDTIMEO). Only the proxy thread touches the connection
 * table; other threads talk to it through one command slot (cmd_mu serialises callers, mu
 * guards the slot and the counters) and wait for the acknowledgement.
 *
 * Per direction there is one buffer: a chunk is read only when the previous one has been
 * written out, which is what makes DELAY "per chunk" and CUT "the next chunk".
 */
#include "faultproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FP_BUF 16384
#define FP_CMD_WAIT_MS 2000
#define FP_CONNECT_TIMEOUT_MS 1000

struct dirbuf {
    char buf[FP_BUF];
    size_t len, off;   /* pending bytes: buf[off..len) */
    uint64_t ready_ns; /* DELAY: not to be written before */
    bool eof;          /* the source sent FIN */
    bool shut;         /* FIN passed on to the destination */
};

struct conn {
    unsigned id;
    unsigned cport; /* client's local port */
    int cfd, sfd;
    int mode;
    unsigned arg;
    bool cut_now; /* the chunk in s2c was truncated: close once it is written */
    struct dirbuf c2s, s2c;
};

enum cmd_kind { CMD_NONE = 0, CMD_GLOBAL, CMD_CONN };

struct fp_proxy {
    pthread_t th;
    void *ps; /* the proxy thread's pollset, also reachable from here: a fork child (which has
               * no proxy thread) does not count it as leaked */
    int lfd;
    int wake[2];
    unsigned port;
    struct sockaddr_in up;

    pthread_mutex_t cmd_mu; /* one caller at a time */
    pthread_mutex_t mu;     /* the command slot, stop, stats */
    pthread_cond_t cv;
    struct {
        int kind;
        unsigned id, cport;
        int mode;
        unsigned arg;
    } cmd;
    uint64_t cmd_seq, done_seq;
    int cmd_result;
    bool stop;
    fp_stats st;

    /* proxy thread only */
    int gmode;
    unsigned garg;
    unsigned next_id;
    struct conn *conns[FP_MAX_CONNS];
};

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void close_rst(int fd)
{
    if (fd < 0)
        return;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void stat_add(fp_proxy *p, unsigned *field, unsigned n)
{
    pthread_mutex_lock(&p->mu);
    *field += n;
    pthread_mutex_unlock(&p->mu);
}

static void stat_bytes(fp_proxy *p, bool s2c, size_t n)
{
    pthread_mutex_lock(&p->mu);
    if (s2c)
        p->st.bytes_s2c += n;
    else
        p->st.bytes_c2s += n;
    pthread_mutex_unlock(&p->mu);
}

unsigned fp_local_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&sa, &len) != 0 || sa.sin_family != AF_INET)
        return 0;
    return ntohs(sa.sin_port);
}

/* ---- connections (proxy thread) ------------------------------------------------------------ */

static void conn_free(fp_proxy *p, int slot, bool rst)
{
    struct conn *c = p->conns[slot];
    if (rst) {
        close_rst(c->cfd);
        close_rst(c->sfd);
    } else {
        close(c->cfd);
        close(c->sfd);
    }
    free(c);
    p->conns[slot] = NULL;
    pthread_mutex_lock(&p->mu);
    p->st.live--;
    pthread_mutex_unlock(&p->mu);
}

static void conn_reset(fp_proxy *p, int slot)
{
    conn_free(p, slot, true);
    stat_add(p, &p->st.resets, 1);
}

static void conn_set_mode(fp_proxy *p, int slot, int mode, unsigned arg)
{
    struct conn *c = p->conns[slot];
    if (mode == FP_RESET) {
        conn_reset(p, slot);
        return;
    }
    c->mode = mode;
    c->arg = arg;
}

/* Blocking connect with a timeout (SO_SNDTIMEO bounds connect() on Linux), then non-blocking. */
static int connect_upstream(fp_proxy *p)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = FP_CONNECT_TIMEOUT_MS / 1000,
                         .tv_usec = (FP_CONNECT_TIMEOUT_MS % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&p->up, sizeof p->up) != 0) {
        close(fd);
        return -1;
    }
    struct timeval zero = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero);
    set_nonblock(fd);
    return fd;
}

static int free_slot(fp_proxy *p)
{
    for (int i = 0; i < FP_MAX_CONNS; i++)
        if (!p->conns[i])
            return i;
    return -1;
}

static void accept_one(fp_proxy *p, int cfd, unsigned cport)
{
    int slot = free_slot(p);
    if (p->gmode == FP_RESET) {
        close_rst(cfd);
        stat_add(p, &p->st.resets, 1);
        return;
    }
    int sfd = slot >= 0 ? connect_upstream(p) : -1;
    if (sfd < 0) {
        close_rst(cfd); /* like a refused connection */
        stat_add(p, &p->st.refused, 1);
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close_rst(cfd);
        close_rst(sfd);
        stat_add(p, &p->st.refused, 1);
        return;
    }
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->id = ++p->next_id;
    c->cport = cport;
    c->cfd = cfd;
    c->sfd = sfd;
    c->mode = p->gmode;
    c->arg = p->garg;
    p->conns[slot] = c;
    stat_add(p, &p->st.live, 1);
}

static void accept_all(fp_proxy *p)
{
    for (int i = 0; i < 16; i++) {
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        int cfd = accept4(p->lfd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return;
        stat_add(p, &p->st.accepted, 1);
        accept_one(p, cfd, ntohs(sa.sin_port));
    }
}

/* ---- forwarding (proxy thread) --------------------------------------------------------------- */

enum { PUMP_IDLE = 0, PUMP_PROGRESS = 1, PUMP_ERROR = -1, PUMP_CUT = -2 };

/* Write what is pending and ready from b to dst. */
static int flush_dir(fp_proxy *p, struct conn *c, struct dirbuf *b, int dst, bool s2c, uint64_t now)
{
    if (b->len <= b->off || now < b->ready_ns)
        return PUMP_IDLE;
    ssize_t n = send(dst, b->buf + b->off, b->len - b->off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? PUMP_IDLE : PUMP_ERROR;
    b->off += (size_t)n;
    stat_bytes(p, s2c, (size_t)n);
    if (b->off < b->len)
        return PUMP_PROGRESS;
    b->off = b->len = 0;
    return (s2c && c->cut_now) ? PUMP_CUT : PUMP_PROGRESS;
}

/* Read the next chunk from src into the (empty) buffer b. */
static int fill_dir(struct conn *c, struct dirbuf *b, int src, bool s2c, uint64_t now)
{
    if (b->len > 0 || b->eof)
        return PUMP_IDLE;
    ssize_t n = recv(src, b->buf, sizeof b->buf, MSG_DONTWAIT);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? PUMP_IDLE : PUMP_ERROR;
    if (n == 0) {
        b->eof = true;
        return PUMP_PROGRESS;
    }
    b->len = (size_t)n;
    b->off = 0;
    b->ready_ns = c->mode == FP_DELAY ? now + (uint64_t)c->arg * 1000000u : 0;
    if (s2c && c->mode == FP_CUT) {
        if (b->len > c->arg)
            b->len = c->arg;
        c->cut_now = true;
        if (b->len == 0)
            return PUMP_CUT;
    }
    return PUMP_PROGRESS;
}

static int pump(fp_proxy *p, struct conn *c, bool s2c, uint64_t now)
{
    struct dirbuf *b = s2c ? &c->s2c : &c->c2s;
    int src = s2c ? c->sfd : c->cfd, dst = s2c ? c->cfd : c->sfd;
    int r = flush_dir(p, c, b, dst, s2c, now);
    if (r < 0)
        return r;
    if (b->len == 0 && b->eof && !b->shut) {
        shutdown(dst, SHUT_WR);
        b->shut = true;
        r = PUMP_PROGRESS;
    }
    int f = fill_dir(c, b, src, s2c, now);
    if (f < 0)
        return f;
    return r | f;
}

/* Move bytes on one connection until nothing more can be done now. */
static void service(fp_proxy *p, int slot)
{
    struct conn *c = p->conns[slot];
    if (c->mode == FP_BLACKHOLE)
        return;
    for (int round = 0; round < 8; round++) {
        uint64_t now = now_ns();
        int a = pump(p, c, false, now);
        int b = a < 0 ? a : pump(p, c, true, now);
        if (a == PUMP_CUT || b == PUMP_CUT) {
            conn_free(p, slot, false);
            stat_add(p, &p->st.cuts, 1);
            return;
        }
        if (a == PUMP_ERROR || b == PUMP_ERROR) {
            conn_free(p, slot, true); /* pass the reset on */
            return;
        }
        if (c->c2s.shut && c->s2c.shut) {
            conn_free(p, slot, false);
            return;
        }
        if (a == PUMP_IDLE && b == PUMP_IDLE)
            return;
    }
}

/* ---- commands ----------------------------------------------------------------------------------- */

static int apply_cmd(fp_proxy *p, int kind, unsigned id, unsigned cport, int mode, unsigned arg)
{
    if (kind == CMD_GLOBAL) {
        p->gmode = mode;
        p->garg = arg;
        for (int i = 0; i < FP_MAX_CONNS; i++)
            if (p->conns[i])
                conn_set_mode(p, i, mode, arg);
        return 0;
    }
    for (int i = 0; i < FP_MAX_CONNS; i++) {
        struct conn *c = p->conns[i];
        if (c && ((id && c->id == id) || (!id && c->cport == cport))) {
            conn_set_mode(p, i, mode, arg);
            return 0;
        }
    }
    return -1;
}

static void run_cmd(fp_proxy *p)
{
    char junk[64];
    while (read(p->wake[0], junk, sizeof junk) > 0)
        ;
    pthread_mutex_lock(&p->mu);
    if (p->cmd_seq == p->done_seq) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    int kind = p->cmd.kind, mode = p->cmd.mode;
    unsigned id = p->cmd.id, cport = p->cmd.cport, arg = p->cmd.arg;
    pthread_mutex_unlock(&p->mu);
    int r = apply_cmd(p, kind, id, cport, mode, arg);
    pthread_mutex_lock(&p->mu);
    p->cmd_result = r;
    p->done_seq = p->cmd_seq;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- the loop ------------------------------------------------------------------------------------ */

struct pollset {
    struct pollfd fds[2 + 2 * FP_MAX_CONNS];
    int slot[2 + 2 * FP_MAX_CONNS];     /* connection slot of each entry, -1 for wake/listen */
    unsigned id[2 + 2 * FP_MAX_CONNS];  /* and its id: a slot may be reused meanwhile */
    int n;
};

/* An entry with no events is left out (fd -1): poll() would otherwise report POLLHUP/POLLERR
 * on a finished socket again and again. */
static void add_fd(struct pollset *ps, int fd, short events, int slot, unsigned id)
{
    ps->fds[ps->n] = (struct pollfd){.fd = events ? fd : -1, .events = events};
    ps->slot[ps->n] = slot;
    ps->id[ps->n++] = id;
}

static short dir_events(const struct dirbuf *in, const struct dirbuf *out, uint64_t now)
{
    short ev = 0;
    if (in->len == 0 && !in->eof)
        ev |= POLLIN;
    if (out->len > out->off && now >= out->ready_ns)
        ev |= POLLOUT;
    return ev;
}

/* Build the poll set; returns the poll timeout in ms (the next DELAY deadline, at most 200). */
static int build_pollset(fp_proxy *p, struct pollset *ps)
{
    uint64_t now = now_ns(), next = now + 200000000u;
    ps->n = 0;
    add_fd(ps, p->wake[0], POLLIN, -1, 0);
    add_fd(ps, p->lfd, POLLIN, -1, 0);
    for (int i = 0; i < FP_MAX_CONNS; i++) {
        struct conn *c = p->conns[i];
        if (!c)
            continue;
        if (c->mode == FP_BLACKHOLE) {
            /* Only notice the client going away; the server side is not looked at. */
            add_fd(ps, c->cfd, POLLRDHUP, i, c->id);
            continue;
        }
        add_fd(ps, c->cfd, dir_events(&c->c2s, &c->s2c, now), i, c->id);
        add_fd(ps, c->sfd, dir_events(&c->s2c, &c->c2s, now), i, c->id);
        const struct dirbuf *b[2] = {&c->c2s, &c->s2c};
        for (int k = 0; k < 2; k++)
            if (b[k]->len > b[k]->off && b[k]->ready_ns > now && b[k]->ready_ns < next)
                next = b[k]->ready_ns;
    }
    return (int)((next - now + 999999u) / 1000000u);
}

static void handle_events(fp_proxy *p, const struct pollset *ps)
{
    for (int k = 2; k < ps->n; k++) {
        struct conn *c = p->conns[ps->slot[k]];
        if (!c || c->id != ps->id[k] || c->mode != FP_BLACKHOLE || ps->fds[k].fd != c->cfd)
            continue;
        if (ps->fds[k].revents & (POLLRDHUP | POLLHUP | POLLERR))
            conn_free(p, ps->slot[k], false); /* the client left: drop what it sent */
    }
    /* Everything not blackholed gets a chance: non-blocking I/O tells what is possible, and
     * DELAY deadlines expire without any poll event. */
    for (int i = 0; i < FP_MAX_CONNS; i++)
        if (p->conns[i] && p->conns[i]->mode != FP_BLACKHOLE)
            service(p, i);
}

static bool stopping(fp_proxy *p)
{
    pthread_mutex_lock(&p->mu);
    bool s = p->stop;
    pthread_mutex_unlock(&p->mu);
    return s;
}

static void *proxy_main(void *arg)
{
    fp_proxy *p = arg;
    struct pollset *ps = malloc(sizeof *ps);
    if (!ps)
        return NULL; /* fp_start checked; cannot happen in practice */
    p->ps = ps;
    while (!stopping(p)) {
        int timeout = build_pollset(p, ps);
        int n = poll(ps->fds, (nfds_t)ps->n, timeout);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && (ps->fds[0].revents & POLLIN))
            run_cmd(p);
        if (n > 0 && (ps->fds[1].revents & POLLIN))
            accept_all(p);
        handle_events(p, ps);
    }
    for (int i = 0; i < FP_MAX_CONNS; i++)
        if (p->conns[i])
            conn_free(p, i, true);
    free(ps);
    return NULL;
}

/* ---- public ------------------------------------------------------------------------------------ */

static int listen_loopback(unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 64) != 0) {
        close(fd);
        return -1;
    }
    *port = fp_local_port(fd);
    return fd;
}

fp_proxy *fp_start(const char *upstream_host, unsigned upstream_port)
{
    fp_proxy *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->lfd = -1;
    p->wake[0] = p->wake[1] = -1;
    p->up.sin_family = AF_INET;
    p->up.sin_port = htons((uint16_t)upstream_port);
    if (inet_pton(AF_INET, upstream_host, &p->up.sin_addr) != 1) {
        fprintf(stderr, "faultproxy: upstream '%s' is not an IPv4 address\n", upstream_host);
        goto fail;
    }
    if ((p->lfd = listen_loopback(&p->port)) < 0 || pipe2(p->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        fprintf(stderr, "faultproxy: cannot listen: %s\n", strerror(errno));
        goto fail;
    }
    pthread_mutex_init(&p->cmd_mu, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&p->th, NULL, proxy_main, p) != 0) {
        fprintf(stderr, "faultproxy: cannot start its thread\n");
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        pthread_mutex_destroy(&p->cmd_mu);
        goto fail;
    }
    return p;
fail:
    if (p->lfd >= 0)
        close(p->lfd);
    if (p->wake[0] >= 0) {
        close(p->wake[0]);
        close(p->wake[1]);
    }
    free(p);
    return NULL;
}

unsigned fp_port(const fp_proxy *p) { return p->port; }

static void wake(fp_proxy *p)
{
    char b = 1;
    ssize_t r = write(p->wake[1], &b, 1); /* a full pipe already means "wake up" */
    (void)r;
}

static int send_cmd(fp_proxy *p, int kind, unsigned id, unsigned cport, int mode, unsigned arg)
{
    pthread_mutex_lock(&p->cmd_mu);
    pthread_mutex_lock(&p->mu);
    p->cmd.kind = kind;
    p->cmd.id = id;
    p->cmd.cport = cport;
    p->cmd.mode = mode;
    p->cmd.arg = arg;
    uint64_t seq = ++p->cmd_seq;
    pthread_mutex_unlock(&p->mu);
    wake(p);
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += FP_CMD_WAIT_MS / 1000;
    int r = -1;
    pthread_mutex_lock(&p->mu);
    while (p->done_seq < seq)
        if (pthread_cond_timedwait(&p->cv, &p->mu, &dl) == ETIMEDOUT)
            break;
    if (p->done_seq >= seq)
        r = p->cmd_result;
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->cmd_mu);
    return r;
}

int fp_set_mode(fp_proxy *p, int mode, unsigned arg)
{
    return send_cmd(p, CMD_GLOBAL, 0, 0, mode, arg);
}

int fp_set_conn_mode(fp_proxy *p, unsigned id, unsigned client_port, int mode, unsigned arg)
{
    if (id == 0 && client_port == 0)
        return -1;
    return send_cmd(p, CMD_CONN, id, client_port, mode, arg);
}

void fp_get_stats(fp_proxy *p, fp_stats *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->st;
    pthread_mutex_unlock(&p->mu);
}

void fp_stop(fp_proxy *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_mutex_unlock(&p->mu);
    wake(p);
    pthread_join(p->th, NULL);
    close(p->lfd);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->cmd_mu);
    free(p);
}
