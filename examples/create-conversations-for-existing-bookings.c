/*
 * create-conversations-for-existing-bookings - a batch job: give every booking that has no
 * conversation yet its conversation (and a first system message), in batches, each batch one
 * transaction. Seeds a few demo users and bookings when the bookings table is empty.
 *
 * Patterns shown:
 *  - dbpool_transaction(): borrow one connection, BEGIN, run the body, COMMIT (ROLLBACK when
 *    the body fails), give the connection back. On a deadlock (1213) or lock wait timeout
 *    (1205) the whole body runs again, so the body starts from scratch each time: it re-reads
 *    its batch and resets its counters.
 *  - Bound parameters for every value (dbpool_param_*), never text pasted into SQL.
 *  - Re-runnable: the UNIQUE key on conversations.booking_id plus INSERT IGNORE make two jobs
 *    running at once, or a job re-run after a crash, create each conversation exactly once.
 *
 * Ending the program: this one never calls dbpool_close(). Returning from main() (or exit())
 * runs the library's exit hook, which closes every pooled connection cleanly (COM_QUIT). And
 * Ctrl-C (SIGINT), SIGTERM or SIGHUP in the middle of a batch is handled by the library's
 * signal hooks: the pool is closed, the server rolls back the open transaction of the batch
 * when its session ends, and the process then dies by that signal as usual (status 130 for
 * Ctrl-C). Committed batches stay; running the job again carries on with what is left.
 *
 * Usage: create-conversations-for-existing-bookings [BATCH_SIZE]   (default 100)
 * Exit status: 0 every booking has a conversation, 1 failure (reason on stderr).
 */
#include <dbpool.h>

#include <stdio.h>
#include <stdlib.h>

struct batch {
    uint64_t limit;     /* bookings per transaction */
    unsigned seen;      /* bookings without conversation read by this attempt */
    unsigned created;   /* conversations this attempt created */
};

static int fail(const char *what)
{
    fprintf(stderr, "create-conversations-for-existing-bookings: %s: %s\n", what,
            dbpool_last_error());
    return 1;
}

/* Insert one user (or find the existing one with that e-mail) and return its id. */
static int upsert_user(dbpool_conn *c, const char *email, const char *name, uint64_t *id)
{
    dbpool_result *r;
    dbpool_param p[2] = {dbpool_param_text(email), dbpool_param_text(name)};
    /* LAST_INSERT_ID(id) makes insert_id report the existing row's id on a duplicate. */
    int rc = dbpool_conn_query(c, &r, "INSERT INTO users (email, name) VALUES (?, ?) "
                               "ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)", p, 2);
    if (rc != 0)
        return rc;
    *id = dbpool_result_insert_id(r);
    dbpool_result_free(r);
    return 0;
}

/* Transaction body: three users and five bookings with fixed ids, so that two seeders
 * racing on an empty table insert them once. */
static int seed(dbpool_conn *c, void *unused)
{
    static const char *const people[3][2] = {{"ada@example.invalid", "Ada"},
                                             {"grace@example.invalid", "Grace"},
                                             {"linus@example.invalid", "Linus"}};
    uint64_t ids[3];
    (void)unused;
    for (int i = 0; i < 3; i++) {
        int rc = upsert_user(c, people[i][0], people[i][1], &ids[i]);
        if (rc != 0)
            return rc;
    }
    for (int b = 1; b <= 5; b++) {
        dbpool_param p[3] = {dbpool_param_int64(b), dbpool_param_uint64(ids[b % 3]),
                             dbpool_param_int64(b)};
        int rc = dbpool_conn_query(c, NULL, "INSERT IGNORE INTO bookings (id, user_id, starts_at) "
                                   "VALUES (?, ?, NOW() + INTERVAL ? DAY)", p, 3);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* One conversation and its first message for booking `id`. */
static int open_conversation(dbpool_conn *c, uint64_t booking, struct batch *b)
{
    dbpool_result *r;
    dbpool_param p = dbpool_param_uint64(booking);
    int rc = dbpool_conn_query(c, &r, "INSERT IGNORE INTO conversations (booking_id, "
                               "last_message_at) VALUES (?, NOW())", &p, 1);
    if (rc != 0)
        return rc;
    uint64_t inserted = dbpool_result_affected_rows(r), conv = dbpool_result_insert_id(r);
    dbpool_result_free(r);
    if (inserted == 0)
        return 0; /* another job created it since we read the batch */
    char body[96];
    snprintf(body, sizeof body, "Conversation opened for booking #%llu", (unsigned long long)booking);
    dbpool_param m[2] = {dbpool_param_uint64(conv), dbpool_param_text(body)};
    rc = dbpool_conn_query(c, NULL, "INSERT INTO messages (conversation_id, sender_id, body) "
                           "VALUES (?, NULL, ?)", m, 2);
    if (rc == 0)
        b->created++;
    return rc;
}

/* Transaction body: one batch. Runs again from the top after a deadlock. */
static int one_batch(dbpool_conn *c, void *arg)
{
    struct batch *b = arg;
    dbpool_result *r;
    b->seen = b->created = 0;
    dbpool_param lim = dbpool_param_uint64(b->limit);
    int rc = dbpool_conn_query(c, &r, "SELECT b.id FROM bookings b LEFT JOIN conversations c "
                               "ON c.booking_id = b.id WHERE c.id IS NULL ORDER BY b.id LIMIT ?",
                               &lim, 1);
    if (rc != 0)
        return rc;
    b->seen = (unsigned)dbpool_result_rows(r);
    for (size_t i = 0; i < dbpool_result_rows(r) && rc == 0; i++) {
        uint64_t id = 0;
        if ((rc = dbpool_result_uint64(r, i, 0, &id)) == 0)
            rc = open_conversation(c, id, b);
    }
    dbpool_result_free(r);
    return rc; /* 0 commits; anything else rolls the whole batch back */
}

static int count(const char *sql, int64_t *n)
{
    dbpool_result *r;
    int rc = dbpool_query(&r, sql, NULL, 0);
    if (rc == 0) {
        rc = dbpool_result_int64(r, 0, 0, n);
        dbpool_result_free(r);
    }
    return rc;
}

int main(int argc, char **argv)
{
    struct batch b = {.limit = 100};
    if (argc > 1 && (b.limit = strtoull(argv[1], NULL, 10)) == 0) {
        fprintf(stderr, "usage: %s [BATCH_SIZE]   (a positive number, default 100)\n", argv[0]);
        return 1;
    }
    int64_t bookings = 0, left = 0;
    if (count("SELECT COUNT(*) FROM bookings", &bookings) != 0)
        return fail("reading bookings (has migrate-messaging-schema run?)");
    if (bookings == 0 && dbpool_transaction(seed, NULL, 0, NULL) != 0)
        return fail("seeding demo users and bookings");
    unsigned total = 0, batches = 0, attempts = 0, tries;
    do {
        if (dbpool_transaction(one_batch, &b, 0, &tries) != 0)
            return fail("batch failed and was rolled back");
        total += b.created;
        attempts += tries;
        batches += b.seen > 0;
    } while (b.seen == b.limit && b.created > 0);
    if (count("SELECT COUNT(*) FROM bookings b LEFT JOIN conversations c ON c.booking_id = b.id "
              "WHERE c.id IS NULL", &left) != 0)
        return fail("counting bookings without a conversation");
    printf("create-conversations-for-existing-bookings: %u conversation(s) created in %u "
           "batch(es) (%u transaction attempt(s)); %lld booking(s) left without one\n", total,
           batches, attempts, (long long)left);
    return left == 0 ? 0 : 1; /* no dbpool_close(): the exit hook closes the pool */
}
