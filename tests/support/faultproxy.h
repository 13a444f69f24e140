/*
 * faultproxy.h - a small TCP fault-injection proxy for the libdbpool tests.
 *
 * A proxy runs in one thread of the test process. It listens on 127.0.0.1 (a kernel-chosen
 * port) and forwards every accepted connection to an upstream host:port (the test server).
 * The test tells it, for all connections or for one, what to do with the bytes:
 *
 *   FP_PASS       forward both ways.
 *   FP_BLACKHOLE  keep both sockets open, forward nothing, read nothing (a silent partition:
 *                 the peers' kernels still accept what fits in their buffers). A connection
 *                 whose client closes its end while blackholed is closed on both sides and
 *                 what it had sent is dropped, never delivered later.
 *   FP_DELAY      hold every chunk `arg` ms before forwarding it (both directions; chunks
 *                 are forwarded one at a time, so a burst is slowed down too).
 *   FP_RESET      close both sockets at once with RST (SO_LINGER 0). As the global mode, also
 *                 every newly accepted connection.
 *   FP_CUT        forward client->server normally; of the next server->client chunk forward
 *                 only the first `arg` bytes, then close both sockets (FIN) — a packet cut in
 *                 the middle. As the global mode it applies to each connection once.
 *
 * Connections are numbered 1, 2, ... in accept order and can also be named by the client's
 * local port (the port getsockname() returns for the pool's socket), which is how a test finds
 * the proxy connection behind one pooled connection.
 *
 * Mode changes are synchronous: fp_set_mode() / fp_set_conn_mode() return after the proxy
 * thread applied them (a reset has been sent when they return 0). Everything is bounded: at
 * most FP_MAX_CONNS live connections (more are refused with RST), 16 KiB buffered per
 * direction, a 1 s upstream connect timeout. fp_stop() closes every socket and joins the
 * thread. No cmocka call is made from the proxy thread.
 *
 * Thread safety: every function may be called from any thread, except that fp_stop() must not
 * race with other calls on the same proxy.
 */
#ifndef DBPOOL_FAULTPROXY_H
#define DBPOOL_FAULTPROXY_H

#include <stdint.h>

#define FP_MAX_CONNS 128

enum fp_mode { FP_PASS = 0, FP_BLACKHOLE, FP_DELAY, FP_RESET, FP_CUT };

typedef struct fp_proxy fp_proxy;

typedef struct fp_stats {
    unsigned accepted;      /* connections accepted so far */
    unsigned live;          /* connections open now */
    unsigned refused;       /* refused: upstream unreachable or too many connections */
    unsigned resets;        /* connections closed with RST by FP_RESET */
    unsigned cuts;          /* connections cut by FP_CUT */
    uint64_t bytes_c2s;     /* bytes forwarded client -> server */
    uint64_t bytes_s2c;     /* bytes forwarded server -> client */
} fp_stats;

/* Start a proxy to upstream_host:upstream_port (an IPv4 address) in PASS mode. Returns NULL
 * (with a message on stderr) if it cannot listen or start its thread. */
fp_proxy *fp_start(const char *upstream_host, unsigned upstream_port);

/* The port the proxy listens on (127.0.0.1). */
unsigned fp_port(const fp_proxy *p);

/* Global mode: applies to every open connection and to every connection accepted later
 * (per-connection modes set before are overridden). `arg`: ms for FP_DELAY, bytes for FP_CUT,
 * ignored otherwise. Returns 0 once applied, -1 if the proxy thread did not answer in 2 s. */
int fp_set_mode(fp_proxy *p, int mode, unsigned arg);

/* Mode of one connection, by accept number (`id` >= 1) or, with id 0, by the client's local
 * port. Returns 0 once applied, -1 if no such live connection (or no answer in 2 s). */
int fp_set_conn_mode(fp_proxy *p, unsigned id, unsigned client_port, int mode, unsigned arg);

/* Counters, consistent snapshot. */
void fp_get_stats(fp_proxy *p, fp_stats *out);

/* Stop: close every socket, join the thread, free. NULL is a no-op. */
void fp_stop(fp_proxy *p);

/* The local port of a connected socket (the client side of a pooled connection), 0 on error.
 * A helper for fp_set_conn_mode(p, 0, port, ...). */
unsigned fp_local_port(int fd);

#endif /* DBPOOL_FAULTPROXY_H */
