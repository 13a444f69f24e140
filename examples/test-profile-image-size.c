/*
 * test-profile-image-size - store a large binary value (a 2 MiB "profile image" by default)
 * in users.profile_image through a bound BLOB parameter, read it back, and check its size on
 * the server (LENGTH()) and every byte on the client.
 *
 * Patterns shown:
 *  - Large values: a dbpool_param_blob() is sent as binary data, NUL bytes included; the
 *    result hands back the bytes and their length (dbpool_result_bytes), owned by the result
 *    until dbpool_result_free().
 *  - The server's max_allowed_packet bounds one statement: checked first, with a clear
 *    message, instead of failing with "packet too large" halfway.
 *  - A held connection for a read-your-write sequence: the same connection for the UPDATE
 *    and the SELECT, released on every path.
 *
 * Needs migration 003 (run-migration-003).
 * Usage: test-profile-image-size [BYTES]   (default 2097152; at most 16 MiB - 1, MEDIUMBLOB)
 * Exit status: 0 the value came back intact, 1 otherwise (reason on stderr).
 */
#include <dbpool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BYTES (2u * 1024u * 1024u)
#define MEDIUMBLOB_MAX ((1u << 24) - 1u)

static int fail(const char *what)
{
    fprintf(stderr, "test-profile-image-size: %s: %s\n", what, dbpool_last_error());
    return 1;
}

/* A pattern with NUL bytes and every byte value, so truncation or text conversion shows. */
static unsigned char *make_image(size_t n)
{
    unsigned char *p = malloc(n ? n : 1);
    for (size_t i = 0; p && i < n; i++)
        p[i] = (unsigned char)((i * 31u + i / 251u) & 0xffu);
    return p;
}

static int demo_user(dbpool_conn *c, uint64_t *id)
{
    dbpool_result *r;
    dbpool_param p[2] = {dbpool_param_text("profile-image@example.invalid"),
                         dbpool_param_text("Profile Image Demo")};
    int rc = dbpool_conn_query(c, &r, "INSERT INTO users (email, name) VALUES (?, ?) "
                               "ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)", p, 2);
    if (rc == 0) {
        *id = dbpool_result_insert_id(r);
        dbpool_result_free(r);
    }
    return rc;
}

static int check_packet_limit(dbpool_conn *c, size_t n)
{
    dbpool_result *r;
    int64_t max = 0;
    if (dbpool_conn_query(c, &r, "SELECT @@max_allowed_packet", NULL, 0) != 0)
        return fail("reading max_allowed_packet");
    dbpool_result_int64(r, 0, 0, &max);
    dbpool_result_free(r);
    if ((uint64_t)max < n + 1024u) {
        fprintf(stderr, "test-profile-image-size: the server's max_allowed_packet (%lld bytes) "
                "is too small for a %zu-byte value: raise it on the server or store less\n",
                (long long)max, n);
        return 1;
    }
    return 0;
}

/* Write, then read back and compare. Returns 0 when intact. */
static int round_trip(dbpool_conn *c, uint64_t user, const unsigned char *img, size_t n)
{
    dbpool_result *r;
    dbpool_param w[3] = {dbpool_param_blob(img, n), dbpool_param_text("application/octet-stream"),
                         dbpool_param_uint64(user)};
    if (dbpool_conn_query(c, NULL, "UPDATE users SET profile_image = ?, profile_image_type = ? "
                          "WHERE id = ?", w, 3) != 0)
        return fail("storing the image (has run-migration-003 run?)");
    dbpool_param id = dbpool_param_uint64(user);
    if (dbpool_conn_query(c, &r, "SELECT LENGTH(profile_image), profile_image FROM users "
                          "WHERE id = ?", &id, 1) != 0)
        return fail("reading the image back");
    int64_t server_len = -1;
    size_t len = 0;
    const void *back = dbpool_result_rows(r) == 1 ? dbpool_result_bytes(r, 0, 1, &len) : NULL;
    dbpool_result_int64(r, 0, 0, &server_len);
    int ok = back && server_len == (int64_t)n && len == n && memcmp(back, img, n) == 0;
    if (!ok)
        fprintf(stderr, "test-profile-image-size: sent %zu bytes; the server stores %lld, the "
                "client read back %zu%s\n", n, (long long)server_len, len,
                back && len == n ? " with different content" : "");
    dbpool_result_free(r);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    size_t n = DEFAULT_BYTES;
    if (argc > 1) {
        char *end;
        unsigned long long v = strtoull(argv[1], &end, 10);
        if (*end || end == argv[1] || v > MEDIUMBLOB_MAX) {
            fprintf(stderr, "usage: %s [BYTES]   (0..%u, default %u)\n", argv[0],
                    MEDIUMBLOB_MAX, DEFAULT_BYTES);
            return 1;
        }
        n = (size_t)v;
    }
    unsigned char *img = make_image(n);
    if (!img) {
        fprintf(stderr, "test-profile-image-size: out of memory\n");
        return 1;
    }
    dbpool_conn *c;
    uint64_t user = 0;
    int rc = 1;
    if (dbpool_get(&c) != 0) {
        free(img);
        return fail("no connection");
    }
    if (demo_user(c, &user) != 0)
        fail("creating the demo user (has run-migration-003 run?)");
    else if (check_packet_limit(c, n) == 0)
        rc = round_trip(c, user, img, n);
    dbpool_release(c); /* on every path: a held connection is the caller's to give back */
    free(img);
    if (rc == 0)
        printf("test-profile-image-size: stored and read back %zu bytes (%.1f MiB) for user "
               "%llu: size and content match\n", n, (double)n / (1024.0 * 1024.0),
               (unsigned long long)user);
    return rc;
}
