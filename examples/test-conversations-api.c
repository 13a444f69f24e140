/*
 * test-conversations-api - exercise the read paths of a small messaging API with bound
 * parameters, the way a web handler would: "list my conversations", "post a message",
 * "read the messages after id N", "unknown conversation", and check every answer.
 *
 * Patterns shown:
 *  - One-shot queries (dbpool_query): each call borrows a connection, runs one prepared
 *    statement with its parameters bound (never pasted into the SQL), reads the result into
 *    memory the caller owns, and gives the connection back before returning. Nothing to
 *    release; only the result is freed.
 *  - A write that must touch two tables atomically in dbpool_transaction().
 *  - Values that would break string-built SQL (quotes, a semicolon, a backslash, non-ASCII
 *    UTF-8) travel unchanged because they are parameters.
 *
 * Needs the demo data: run migrate-messaging-schema and
 * create-conversations-for-existing-bookings first.
 * Exit status: 0 all checks passed, 1 a check failed or a query failed (reason on stderr).
 */
#include <dbpool.h>

#include <stdio.h>
#include <string.h>

static const char message_text[] =
    "It's \"fine\"; DROP TABLE messages; -- \\ caf\xc3\xa9 \xe2\x9c\x93"; /* café ✓ */

static int fail(const char *what)
{
    fprintf(stderr, "test-conversations-api: %s: %s\n", what, dbpool_last_error());
    return 1;
}

static int check_failed(const char *what)
{
    fprintf(stderr, "test-conversations-api: check failed: %s\n", what);
    return 1;
}

/* GET /users/:id/conversations */
static int list_conversations(uint64_t user, dbpool_result **out)
{
    dbpool_param p[2] = {dbpool_param_uint64(user), dbpool_param_int64(50)};
    return dbpool_query(out,
                        "SELECT c.id, c.booking_id, b.user_id, COUNT(m.id) AS messages "
                        "FROM conversations c JOIN bookings b ON b.id = c.booking_id "
                        "LEFT JOIN messages m ON m.conversation_id = c.id "
                        "WHERE b.user_id = ? GROUP BY c.id, c.booking_id, b.user_id "
                        "ORDER BY c.id LIMIT ?", p, 2);
}

struct post {
    uint64_t conversation, sender, message_id;
};

/* POST /conversations/:id/messages: the message and the conversation's last_message_at. */
static int post_message(dbpool_conn *c, void *arg)
{
    struct post *p = arg;
    dbpool_result *r;
    dbpool_param ins[3] = {dbpool_param_uint64(p->conversation), dbpool_param_uint64(p->sender),
                           dbpool_param_text(message_text)};
    int rc = dbpool_conn_query(c, &r, "INSERT INTO messages (conversation_id, sender_id, body) "
                               "VALUES (?, ?, ?)", ins, 3);
    if (rc != 0)
        return rc;
    p->message_id = dbpool_result_insert_id(r);
    dbpool_result_free(r);
    dbpool_param upd = dbpool_param_uint64(p->conversation);
    return dbpool_conn_query(c, NULL, "UPDATE conversations SET last_message_at = NOW() "
                             "WHERE id = ?", &upd, 1);
}

/* GET /conversations/:id/messages?after=N&limit=M */
static int read_messages(uint64_t conversation, uint64_t after, dbpool_result **out)
{
    dbpool_param p[3] = {dbpool_param_uint64(conversation), dbpool_param_uint64(after),
                         dbpool_param_int64(20)};
    return dbpool_query(out, "SELECT id, sender_id, body FROM messages WHERE conversation_id = ? "
                        "AND id > ? ORDER BY id LIMIT ?", p, 3);
}

/* The first user that has a conversation. */
static int find_user(uint64_t *user)
{
    dbpool_result *r;
    int rc = dbpool_query(&r, "SELECT MIN(b.user_id) FROM bookings b JOIN conversations c "
                          "ON c.booking_id = b.id", NULL, 0);
    if (rc != 0)
        return fail("looking for a user with conversations");
    rc = dbpool_result_uint64(r, 0, 0, user);
    dbpool_result_free(r);
    if (rc != 0) {
        fprintf(stderr, "test-conversations-api: no conversations yet: run "
                        "create-conversations-for-existing-bookings first\n");
        return 1;
    }
    return 0;
}

/* Every row belongs to the user; returns the first conversation id. */
static int check_list(const dbpool_result *r, uint64_t user, uint64_t *first)
{
    if (dbpool_result_rows(r) == 0)
        return check_failed("the user's conversation list is empty");
    for (size_t i = 0; i < dbpool_result_rows(r); i++) {
        uint64_t owner = 0;
        if (dbpool_result_uint64(r, i, 2, &owner) != 0 || owner != user)
            return check_failed("a conversation of another user was listed");
    }
    return dbpool_result_uint64(r, 0, 0, first) == 0 ? 0 : check_failed("bad conversation id");
}

/* The posted message comes back byte for byte, with its sender; nothing after it. */
static int check_read_back(const struct post *p)
{
    dbpool_result *r;
    if (read_messages(p->conversation, p->message_id - 1, &r) != 0)
        return fail("reading messages");
    size_t len = 0;
    uint64_t id = 0, sender = 0;
    const char *body = dbpool_result_rows(r) == 1 ? dbpool_result_text(r, 0, 2, &len) : NULL;
    int ok = body && len == strlen(message_text) && memcmp(body, message_text, len) == 0 &&
             dbpool_result_uint64(r, 0, 0, &id) == 0 && id == p->message_id &&
             dbpool_result_uint64(r, 0, 1, &sender) == 0 && sender == p->sender;
    dbpool_result_free(r);
    return ok ? 0 : check_failed("the posted message did not come back unchanged");
}

static int check_unknown(void)
{
    dbpool_result *r;
    /* An id no AUTO_INCREMENT reaches: a "404" is an empty result, not an error. */
    if (read_messages(UINT64_MAX - 1, 0, &r) != 0)
        return fail("reading an unknown conversation");
    size_t n = dbpool_result_rows(r);
    dbpool_result_free(r);
    return n == 0 ? 0 : check_failed("an unknown conversation returned messages");
}

int main(void)
{
    uint64_t user = 0;
    dbpool_result *list;
    struct post post = {0};
    if (find_user(&user) != 0)
        return 1;
    if (list_conversations(user, &list) != 0)
        return fail("listing conversations");
    size_t nconv = dbpool_result_rows(list);
    int bad = check_list(list, user, &post.conversation);
    dbpool_result_free(list);
    if (bad)
        return 1;
    post.sender = user;
    if (dbpool_transaction(post_message, &post, 0, NULL) != 0)
        return fail("posting a message");
    if (check_read_back(&post) != 0 || check_unknown() != 0)
        return 1;
    /* Keep the demo data stable across runs. */
    dbpool_param del = dbpool_param_uint64(post.message_id);
    if (dbpool_query(NULL, "DELETE FROM messages WHERE id = ?", &del, 1) != 0)
        return fail("deleting the test message");
    printf("test-conversations-api: user %llu has %zu conversation(s); message %llu (%zu bytes) "
           "posted and read back unchanged; unknown conversation is empty: ok\n",
           (unsigned long long)user, nconv, (unsigned long long)post.message_id,
           strlen(message_text));
    return 0;
}
