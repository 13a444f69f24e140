/*
 * test_query.c - dbpool_query and friends against a real server: every parameter and column
 * type, injection safety, conversion errors, statement errors, a connection killed
 * mid-statement, transactions (commit, rollback, a provoked deadlock retried, lock wait
 * timeouts exhausted), and the statement cache (prepared once, bounded LRU, cleared on reset;
 * reused across parameter types, result shapes, altered column types and result sizes).
 *
 * Server-side facts (what was stored, how often a statement was prepared, which sessions exist)
 * are read on the server: through an admin connection, or through the session's own status
 * counters on the raw handle (text protocol, never through the code under test).
 *
 * Tables are prefixed q_ and created fresh by each test. Worker threads never call cmocka
 * assertions: they record what they saw and the main thread asserts.
 */
#include "testutil.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers -------------------------------------------------------------------------------- */

static const char *db(void) { return tu_server_shared()->db; }

/* Environment for the pool (application user on the shared server) and an admin connection. */
static MYSQL *start(unsigned limit)
{
    tu_use_shared();
    tu_setenv_u("DB_CONNECTION_LIMIT", limit);
    return tu_admin(tu_server_shared());
}

/* dbpool_query that must succeed. */
static dbpool_result *must(const char *sql, const dbpool_param *p, size_t n)
{
    dbpool_result *r = NULL;
    int rc = dbpool_query(&r, sql, p, n);
    if (rc != 0)
        fail_msg("%s -> %s: %s", sql, dbpool_errname(rc), dbpool_last_error());
    assert_non_null(r);
    return r;
}

static void must_conn(dbpool_conn *c, dbpool_result **out, const char *sql,
                      const dbpool_param *p, size_t n)
{
    int rc = dbpool_conn_query(c, out, sql, p, n);
    if (rc != 0)
        fail_msg("%s -> %s: %s", sql, dbpool_errname(rc), dbpool_last_error());
}

static int64_t get_i64(const dbpool_result *r, size_t row, unsigned col)
{
    int64_t v = 0;
    int rc = dbpool_result_int64(r, row, col, &v);
    if (rc != 0)
        fail_msg("int64(%zu,%u): %s", row, col, dbpool_last_error());
    return v;
}

/* A session status counter of a borrowed connection, read over its raw handle. */
static long long sess_status(dbpool_conn *c, const char *name)
{
    MYSQL *m = dbpool_mysql(c);
    char sql[160];
    assert_non_null(m);
    snprintf(sql, sizeof sql, "SHOW SESSION STATUS LIKE '%s'", name);
    if (mysql_query(m, sql) != 0)
        fail_msg("%s: %s", sql, mysql_error(m));
    MYSQL_RES *r = mysql_store_result(m);
    MYSQL_ROW row = r ? mysql_fetch_row(r) : NULL;
    long long v = row && row[1] ? atoll(row[1]) : -1;
    mysql_free_result(r);
    assert_true(v >= 0);
    return v;
}

static void hex(char *out, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02X", b[i]);
    out[2 * n] = '\0';
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

/* ---- round trips ---------------------------------------------------------------------------- */

static const unsigned char BIN[] = {0x00, 0x01, 'a', 0x00, 0x00, 0xFF, 0x80, 0x00, '\n'};
/* "héllo wörld € 😀" */
static const char UTF8[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac \xf0\x9f\x98\x80";

static void insert_typed_rows(MYSQL *a)
{
    const char *ins = "INSERT INTO q_types (i, u, d, t, b) VALUES (?, ?, ?, ?, ?)";
    dbpool_param rows[4][5] = {
        {dbpool_param_int64(INT64_MIN), dbpool_param_uint64(UINT64_MAX),
         dbpool_param_double(-1.5e300), dbpool_param_text(UTF8),
         dbpool_param_blob(BIN, sizeof BIN)},
        {dbpool_param_int64(INT64_MAX), dbpool_param_uint64(0), dbpool_param_double(0.1),
         dbpool_param_text(""), dbpool_param_blob(BIN, 0)},
        {dbpool_param_null(), dbpool_param_null(), dbpool_param_null(), dbpool_param_text(NULL),
         dbpool_param_blob(NULL, 5)},
        {dbpool_param_int64(-1), dbpool_param_uint64((uint64_t)INT64_MAX + 1),
         dbpool_param_double(DBL_MAX), dbpool_param_textn("tab\there\0cut", 8),
         dbpool_param_blob("\0", 1)},
    };
    for (int i = 0; i < 4; i++) {
        dbpool_result *r = must(ins, rows[i], 5);
        assert_int_equal(dbpool_result_affected_rows(r), 1);
        assert_int_equal(dbpool_result_columns(r), 0);
        assert_int_equal(dbpool_result_rows(r), 0);
        /* The id the server generated, as the server reports it. */
        assert_int_equal(dbpool_result_insert_id(r),
                         tu_scalar(a, "SELECT MAX(id) FROM %s.q_types", db()));
        dbpool_result_free(r);
    }
}

static void check_stored_on_server(MYSQL *a)
{
    char hb[2 * sizeof BIN + 1], ht[2 * sizeof UTF8 + 1];
    hex(hb, BIN, sizeof BIN);
    hex(ht, UTF8, strlen(UTF8));
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_types WHERE id = 1 AND "
                              "i = -9223372036854775808 AND u = 18446744073709551615 AND "
                              "d = -1.5e300 AND HEX(t) = '%s' AND HEX(b) = '%s' AND "
                              "CHAR_LENGTH(t) = 15", db(), ht, hb), 1);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_types WHERE id = 2 AND "
                              "i = 9223372036854775807 AND u = 0 AND d = 0.1 AND t = '' AND "
                              "LENGTH(b) = 0", db()), 1);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_types WHERE id = 3 AND i IS NULL "
                              "AND u IS NULL AND d IS NULL AND t IS NULL AND b IS NULL", db()), 1);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_types WHERE id = 4 AND i = -1 AND "
                              "u = 9223372036854775808 AND d = 1.7976931348623157e308 AND "
                              "HEX(t) = HEX('tab\\there') AND HEX(b) = '00'", db()), 1);
}

static void check_read_back(void)
{
    dbpool_result *r = must("SELECT id, i, u, d, t, b FROM q_types ORDER BY id", NULL, 0);
    const char *names[] = {"id", "i", "u", "d", "t", "b"};
    uint64_t u;
    double d;
    size_t len;
    assert_int_equal(dbpool_result_rows(r), 4);
    assert_int_equal(dbpool_result_columns(r), 6);
    for (unsigned j = 0; j < 6; j++)
        assert_string_equal(dbpool_result_column_name(r, j), names[j]);
    /* row 0: extremes, UTF-8, binary with NUL bytes */
    assert_true(get_i64(r, 0, 1) == INT64_MIN);
    assert_int_equal(dbpool_result_uint64(r, 0, 2, &u), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(dbpool_result_double(r, 0, 3, &d), 0);
    assert_true(d == -1.5e300);
    assert_string_equal(dbpool_result_text(r, 0, 4, &len), UTF8);
    assert_int_equal(len, strlen(UTF8));
    const unsigned char *b = dbpool_result_bytes(r, 0, 5, &len);
    assert_int_equal(len, sizeof BIN);
    assert_memory_equal(b, BIN, sizeof BIN);
    assert_int_equal(b[len], 0); /* NUL-terminated even when binary */
    /* row 1: the other extremes, empty (not NULL) text and blob */
    assert_true(get_i64(r, 1, 1) == INT64_MAX);
    assert_int_equal(dbpool_result_uint64(r, 1, 2, &u), 0);
    assert_true(u == 0);
    assert_int_equal(dbpool_result_double(r, 1, 3, &d), 0);
    assert_true(d == 0.1);
    assert_int_equal(dbpool_result_is_null(r, 1, 4), 0);
    assert_string_equal(dbpool_result_text(r, 1, 4, &len), "");
    assert_int_equal(len, 0);
    assert_int_equal(dbpool_result_is_null(r, 1, 5), 0);
    assert_non_null(dbpool_result_bytes(r, 1, 5, &len));
    assert_int_equal(len, 0);
    /* row 2: SQL NULL everywhere but the id */
    for (unsigned j = 1; j < 6; j++) {
        assert_int_equal(dbpool_result_is_null(r, 2, j), 1);
        assert_null(dbpool_result_text(r, 2, j, &len));
        assert_int_equal(len, 0);
    }
    /* row 3 */
    assert_true(get_i64(r, 3, 1) == -1);
    assert_int_equal(dbpool_result_uint64(r, 3, 2, &u), 0);
    assert_true(u == (uint64_t)INT64_MAX + 1);
    assert_int_equal(dbpool_result_double(r, 3, 3, &d), 0);
    assert_true(d == DBL_MAX);
    assert_string_equal(dbpool_result_text(r, 3, 4, &len), "tab\there");
    b = dbpool_result_bytes(r, 3, 5, &len);
    assert_int_equal(len, 1);
    assert_int_equal(b[0], 0);
    dbpool_result_free(r);
}

/* Every parameter type into typed columns, checked on the server, and read back. */
static void roundtrip_parameters(void **state)
{
    (void)state;
    MYSQL *a = start(2);
    tu_exec(a, "DROP TABLE IF EXISTS %s.q_types", db());
    tu_exec(a, "CREATE TABLE %s.q_types (id INT AUTO_INCREMENT PRIMARY KEY, i BIGINT NULL, "
               "u BIGINT UNSIGNED NULL, d DOUBLE NULL, t TEXT CHARACTER SET utf8mb4 NULL, "
               "b BLOB NULL) ENGINE=InnoDB", db());
    insert_typed_rows(a);
    check_stored_on_server(a);
    check_read_back();
    mysql_close(a);
    dbpool_close();
}

/* Parameters straight back as result columns (the server types them from the parameter). */
static void roundtrip_select_params(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    dbpool_param p[] = {dbpool_param_int64(INT64_MIN), dbpool_param_uint64(UINT64_MAX),
                        dbpool_param_double(3.141592653589793), dbpool_param_text(UTF8),
                        dbpool_param_blob(BIN, sizeof BIN), dbpool_param_null(),
                        dbpool_param_text(""), dbpool_param_double(-0.000123)};
    dbpool_result *r = must("SELECT ? AS a, ? AS b, ? AS c, ? AS d, ? AS e, ? AS f, ? AS g, ? AS h",
                            p, 8);
    size_t len;
    double d;
    assert_int_equal(dbpool_result_rows(r), 1);
    assert_string_equal(dbpool_result_text(r, 0, 0, NULL), "-9223372036854775808");
    assert_string_equal(dbpool_result_text(r, 0, 1, NULL), "18446744073709551615");
    assert_int_equal(dbpool_result_double(r, 0, 2, &d), 0);
    assert_true(d == 3.141592653589793);
    assert_string_equal(dbpool_result_text(r, 0, 3, NULL), UTF8);
    assert_memory_equal(dbpool_result_bytes(r, 0, 4, &len), BIN, sizeof BIN);
    assert_int_equal(len, sizeof BIN);
    assert_int_equal(dbpool_result_is_null(r, 0, 5), 1);
    assert_int_equal(dbpool_result_is_null(r, 0, 6), 0);
    assert_int_equal(dbpool_result_double(r, 0, 7, &d), 0);
    assert_true(d == -0.000123);
    dbpool_result_free(r);
    mysql_close(a);
    dbpool_close();
}

/* Every column type through the binary protocol gives the same text as the server's own text
 * protocol rendering (read on the admin connection). */
static void column_types_match_text_protocol(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    const char *cols = "ti, si, mi, ii, bi, ub, f, dd, de, dt, tm, dtm, ts, y, ch, vc, bn, vb, "
                       "bl, tx, en, st, bt, zf, nn, js";
    tu_exec(a, "DROP TABLE IF EXISTS %s.q_coltypes", db());
    tu_exec(a, "CREATE TABLE %s.q_coltypes (ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, "
               "ii INT, bi BIGINT, ub BIGINT UNSIGNED, f FLOAT, dd DOUBLE, de DECIMAL(30,10), "
               "dt DATE, tm TIME(3), dtm DATETIME(6), ts TIMESTAMP(2) NULL, y YEAR, ch CHAR(5), "
               "vc VARCHAR(20) CHARACTER SET utf8mb4, bn BINARY(4), vb VARBINARY(10), bl BLOB, "
               "tx TEXT, en ENUM('a','b'), st SET('x','y'), bt BIT(8), zf INT(6) ZEROFILL, "
               "nn INT NULL, js JSON)", db());
    tu_exec(a, "INSERT INTO %s.q_coltypes VALUES (-128, 65535, -8388608, -2147483648, "
               "-9223372036854775808, 18446744073709551615, 1.25, -2.5e-300, "
               "12345678901234567890.0123456789, '2024-02-29', '-838:59:58.5', "
               "'2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.12', 2155, 'ab', "
               "'v\xc3\xa9', 'b\\0c', X'00FF', X'DEADBEEF', 'text', 'b', 'x,y', b'10100101', 42, "
               "NULL, '{\"k\": [1, 2]}')", db());
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT %s FROM %s.q_coltypes", cols, db());
    assert_int_equal(mysql_query(a, sql), 0);
    MYSQL_RES *t = mysql_store_result(a);
    MYSQL_ROW want = mysql_fetch_row(t);
    unsigned long *wlen = mysql_fetch_lengths(t);
    snprintf(sql, sizeof sql, "SELECT %s FROM q_coltypes", cols);
    dbpool_result *r = must(sql, NULL, 0);
    assert_int_equal(dbpool_result_columns(r), mysql_num_fields(t));
    for (unsigned j = 0; j < dbpool_result_columns(r); j++) {
        size_t len;
        const char *got = dbpool_result_text(r, 0, j, &len);
        const char *name = mysql_fetch_field_direct(t, j)->name;
        assert_string_equal(dbpool_result_column_name(r, j), name);
        if (!want[j]) {
            assert_null(got);
            continue;
        }
        if (!got || len != wlen[j] || memcmp(got, want[j], len) != 0)
            fail_msg("column %s: binary protocol gave '%.*s' (%zu bytes), text protocol '%.*s' "
                     "(%lu bytes)", name, (int)len, got ? got : "(null)", len, (int)wlen[j],
                     want[j], wlen[j]);
    }
    mysql_free_result(t);
    dbpool_result_free(r);
    mysql_close(a);
    dbpool_close();
}

/* A 1 MiB blob with NUL bytes in, and 1 MiB values out (longer than any fetch buffer). */
static void blob_one_mebibyte(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    size_t n = 1u << 20;
    unsigned char *blob = malloc(n);
    assert_non_null(blob);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        blob[i] = (i % 7 == 0) ? 0 : (unsigned char)(x >> 16);
    }
    tu_exec(a, "DROP TABLE IF EXISTS %s.q_blob", db());
    tu_exec(a, "CREATE TABLE %s.q_blob (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB", db());
    dbpool_param p[] = {dbpool_param_int64(1), dbpool_param_blob(blob, n)};
    dbpool_result_free(must("INSERT INTO q_blob VALUES (?, ?)", p, 2));
    /* What the server stored. */
    assert_int_equal(tu_scalar(a, "SELECT LENGTH(b) FROM %s.q_blob WHERE id = 1", db()),
                     (long long)n);
    assert_int_equal(tu_scalar(a, "SELECT CRC32(b) FROM %s.q_blob WHERE id = 1", db()),
                     (long long)crc32_of(blob, n));
    /* Read back whole, twice in one result next to a short column. */
    dbpool_result *r = must("SELECT id, b, b AS again FROM q_blob WHERE id = ?", p, 1);
    size_t len;
    const unsigned char *got = dbpool_result_bytes(r, 0, 1, &len);
    assert_int_equal(len, n);
    assert_memory_equal(got, blob, n);
    assert_int_equal(got[n], 0);
    got = dbpool_result_bytes(r, 0, 2, &len);
    assert_int_equal(len, n);
    assert_memory_equal(got, blob, n);
    assert_true(get_i64(r, 0, 0) == 1);
    dbpool_result_free(r);
    /* A long text made by the server. */
    r = must("SELECT REPEAT('ab', 524288) AS t, 7 AS s", NULL, 0);
    const char *t = dbpool_result_text(r, 0, 0, &len);
    assert_int_equal(len, n);
    assert_int_equal(strlen(t), n);
    assert_true(t[0] == 'a' && t[1] == 'b' && t[n - 2] == 'a' && t[n - 1] == 'b');
    assert_true(get_i64(r, 0, 1) == 7);
    dbpool_result_free(r);
    free(blob);
    mysql_close(a);
    dbpool_close();
}

/* ---- injection ------------------------------------------------------------------------------ */

static void injection_stored_verbatim(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    const char *evil = "'; DROP TABLE q_users; --";
    tu_exec(a, "DROP TABLE IF EXISTS %s.q_users", db());
    tu_exec(a, "CREATE TABLE %s.q_users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100)) "
               "ENGINE=InnoDB", db());
    tu_exec(a, "INSERT INTO %s.q_users (name) VALUES ('alice')", db());
    dbpool_param p = dbpool_param_text(evil);
    dbpool_result_free(must("INSERT INTO q_users (name) VALUES (?)", &p, 1));
    dbpool_result *r = must("SELECT id, name FROM q_users WHERE name = ?", &p, 1);
    assert_int_equal(dbpool_result_rows(r), 1);
    assert_string_equal(dbpool_result_text(r, 0, 1, NULL), evil);
    dbpool_result_free(r);
    /* On the server: the table survives with both rows, the value stored byte for byte. */
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                              "TABLE_SCHEMA = '%s' AND TABLE_NAME = 'q_users'", db()), 1);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_users", db()), 2);
    char hx[128];
    hex(hx, evil, strlen(evil));
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_users WHERE HEX(name) = '%s'", db(),
                               hx), 1);
    mysql_close(a);
    dbpool_close();
}

/* ---- conversions and errors ----------------------------------------------------------------- */

static void conversion_errors(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    dbpool_result *r = must("SELECT '12x' AS a, '' AS b, '99999999999999999999' AS c, NULL AS d, "
                            "42 AS e, '-1' AS f, '1.5' AS g, ' 12' AS h, "
                            "'18446744073709551615' AS i, '1e999' AS j, 'inf' AS k, "
                            "CAST(-9223372036854775808 AS SIGNED) AS l, 'NaN' AS m", NULL, 0);
    int64_t i = 0;
    uint64_t u = 0;
    double d = 0;
    assert_int_equal(dbpool_result_int64(r, 0, 0, &i), DBPOOL_ECONVERT);
    assert_non_null(strstr(dbpool_last_error(), "12x"));
    assert_int_equal(dbpool_result_double(r, 0, 0, &d), DBPOOL_ECONVERT);
    assert_int_equal(dbpool_result_int64(r, 0, 1, &i), DBPOOL_ECONVERT);
    assert_int_equal(dbpool_result_uint64(r, 0, 1, &u), DBPOOL_ECONVERT);
    assert_int_equal(dbpool_result_int64(r, 0, 2, &i), DBPOOL_ECONVERT);
    assert_int_equal(dbpool_result_uint64(r, 0, 2, &u), DBPOOL_ECONVERT);
    assert_int_equal(dbpool_result_int64(r, 0, 3, &i), DBPOOL_ECONVERT);
    assert_non_null(strstr(dbpool_last_error(), "NULL"));
    assert_int_equal(dbpool_result_double(r, 0, 3, &d), DBPOOL_ECONVERT);
    assert_int_equal(dbpool_result_int64(r, 0, 4, &i), 0);
    assert_true(i == 42);
    assert_int_equal(dbpool_result_uint64(r, 0, 4, &u), 0);
    assert_true(u == 42);
    assert_int_equal(dbpool_result_double(r, 0, 4, &d), 0);
    assert_true(d == 42.0);
    assert_int_equal(dbpool_result_uint64(r, 0, 5, &u), DBPOOL_ECONVERT); /* "-1" */
    assert_int_equal(dbpool_result_int64(r, 0, 5, &i), 0);
    assert_true(i == -1);
    assert_int_equal(dbpool_result_int64(r, 0, 6, &i), DBPOOL_ECONVERT); /* "1.5" */
    assert_int_equal(dbpool_result_double(r, 0, 6, &d), 0);
    assert_true(d == 1.5);
    assert_int_equal(dbpool_result_int64(r, 0, 7, &i), DBPOOL_ECONVERT); /* " 12" */
    assert_int_equal(dbpool_result_uint64(r, 0, 8, &u), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(dbpool_result_int64(r, 0, 8, &i), DBPOOL_ECONVERT);
    assert_int_equal(dbpool_result_double(r, 0, 9, &d), DBPOOL_ECONVERT);  /* overflow */
    assert_int_equal(dbpool_result_double(r, 0, 10, &d), DBPOOL_ECONVERT); /* "inf" */
    assert_int_equal(dbpool_result_int64(r, 0, 11, &i), 0);
    assert_true(i == INT64_MIN);
    assert_int_equal(dbpool_result_double(r, 0, 12, &d), DBPOOL_ECONVERT); /* "NaN" */
    /* Bad indexes. */
    assert_int_equal(dbpool_result_int64(r, 0, 13, &i), DBPOOL_ERANGE);
    assert_int_equal(dbpool_result_int64(r, 1, 0, &i), DBPOOL_ERANGE);
    assert_int_equal(dbpool_result_is_null(r, 1, 0), DBPOOL_ERANGE);
    assert_int_equal(dbpool_result_is_null(r, 0, 99), DBPOOL_ERANGE);
    assert_null(dbpool_result_text(r, 0, 13, NULL));
    assert_null(dbpool_result_column_name(r, 13));
    assert_string_equal(dbpool_result_column_name(r, 12), "m");
    assert_int_equal(dbpool_result_int64(r, 0, 4, NULL), DBPOOL_EINVAL);
    dbpool_result_free(r);
    mysql_close(a);
    dbpool_close();
}

/* A statement error is reported with errno, SQLSTATE and message; the connection stays. */
static void statement_errors_reported(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    tu_exec(a, "DROP TABLE IF EXISTS %s.q_users", db());
    tu_exec(a, "CREATE TABLE %s.q_users (id INT PRIMARY KEY, name VARCHAR(100))", db());
    tu_exec(a, "INSERT INTO %s.q_users VALUES (1, 'alice')", db());
    dbpool_conn *c;
    assert_int_equal(dbpool_get(&c), 0);
    unsigned long id = dbpool_conn_id(c);
    dbpool_result *r = (dbpool_result *)&r; /* must be reset to NULL on failure */
    assert_int_equal(dbpool_conn_query(c, &r, "SELEC 1", NULL, 0), DBPOOL_EQUERY);
    assert_null(r);
    assert_int_equal(dbpool_last_server_errno(), 1064);
    assert_non_null(strstr(dbpool_last_error(), "1064"));
    assert_non_null(strstr(dbpool_last_error(), "42000"));
    dbpool_param p[] = {dbpool_param_int64(1), dbpool_param_text("dup")};
    assert_int_equal(dbpool_conn_query(c, &r, "INSERT INTO q_users VALUES (?, ?)", p, 2),
                     DBPOOL_EQUERY);
    assert_null(r);
    assert_int_equal(dbpool_last_server_errno(), 1062);
    assert_non_null(strstr(dbpool_last_error(), "23000"));
    assert_non_null(strstr(dbpool_last_error(), "Duplicate"));
    /* Same statement again (it was dropped from the cache or reset: both must work). */
    p[0] = dbpool_param_int64(2);
    must_conn(c, NULL, "INSERT INTO q_users VALUES (?, ?)", p, 2);
    /* Wrong parameter count: refused before anything is sent. */
    assert_int_equal(dbpool_conn_query(c, &r, "SELECT ? + ?", p, 1), DBPOOL_EINVAL);
    assert_non_null(strstr(dbpool_last_error(), "2 placeholders"));
    assert_int_equal(dbpool_conn_exec(c, "SELEC 2"), DBPOOL_EQUERY);
    assert_int_equal(dbpool_last_server_errno(), 1064);
    /* An error in the middle of the row stream (subquery returns 2 rows at id 3). */
    tu_exec(a, "INSERT INTO %s.q_users VALUES (3, 'x'), (4, 'x'), (5, 'y')", db());
    assert_int_equal(dbpool_conn_query(c, &r, "SELECT id, (SELECT u.id FROM q_users u WHERE "
                                               "u.name = q.name) AS s FROM q_users q ORDER BY id",
                                       NULL, 0), DBPOOL_EQUERY);
    assert_null(r);
    assert_int_equal(dbpool_last_server_errno(), 1242);
    /* Still the same healthy session. */
    must_conn(c, &r, "SELECT CONNECTION_ID()", NULL, 0);
    assert_true((unsigned long)get_i64(r, 0, 0) == id);
    dbpool_result_free(r);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_users", db()), 5);
    dbpool_release(c);
    dbpool_stats s = tu_stats();
    assert_int_equal(s.created, 1);
    assert_int_equal(s.closed_broken, 0);
    assert_int_equal(s.closed_reset, 0);
    mysql_close(a);
    dbpool_close();
}

/* A table altered under a cached statement whose result columns change: reported once (the
 * result is lost), the statement is prepared again on the next call, the session is kept. */
static void altered_table_reprepares(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    tu_exec(a, "DROP TABLE IF EXISTS %s.q_alter", db());
    tu_exec(a, "CREATE TABLE %s.q_alter (a INT)", db());
    tu_exec(a, "INSERT INTO %s.q_alter VALUES (1)", db());
    dbpool_conn *c;
    dbpool_result *r;
    assert_int_equal(dbpool_get(&c), 0);
    unsigned long id = dbpool_conn_id(c);
    must_conn(c, &r, "SELECT * FROM q_alter", NULL, 0);
    assert_int_equal(dbpool_result_columns(r), 1);
    dbpool_result_free(r);
    tu_exec(a, "ALTER TABLE %s.q_alter ADD COLUMN b INT DEFAULT 7", db());
    /* Connector/C 3.3 refuses the new column count (2057) after the server ran it. */
    r = (dbpool_result *)&r;
    assert_int_equal(dbpool_conn_query(c, &r, "SELECT * FROM q_alter", NULL, 0), DBPOOL_EQUERY);
    assert_null(r);
    assert_int_equal(dbpool_last_server_errno(), 2057);
    assert_non_null(strstr(dbpool_last_error(), "changed"));
    must_conn(c, &r, "SELECT * FROM q_alter", NULL, 0);
    assert_int_equal(dbpool_result_columns(r), 2);
    assert_true(get_i64(r, 0, 1) == 7);
    dbpool_result_free(r);
    must_conn(c, &r, "SELECT CONNECTION_ID()", NULL, 0);
    assert_true((unsigned long)get_i64(r, 0, 0) == id);
    dbpool_result_free(r);
    dbpool_release(c);
    assert_int_equal(tu_stats().closed_broken, 0);
    mysql_close(a);
    dbpool_close();
}

/* ---- a connection killed mid-statement ------------------------------------------------------ */

struct killer {
    MYSQL *admin;
    unsigned long id;
    unsigned delay_ms;
    unsigned err;
};

static void *kill_later(void *p)
{
    struct killer *k = p;
    char sql[64];
    tu_sleep_ms(k->delay_ms);
    snprintf(sql, sizeof sql, "KILL %lu", k->id);
    k->err = mysql_query(k->admin, sql) != 0 ? mysql_errno(k->admin) : 0;
    return NULL;
}

static void killed_mid_statement_not_replayed(void **state)
{
    (void)state;
    MYSQL *a = start(1), *a2 = tu_admin(tu_server_shared());
    tu_exec(a, "DROP TABLE IF EXISTS %s.q_marker", db());
    tu_exec(a, "CREATE TABLE %s.q_marker (id INT AUTO_INCREMENT PRIMARY KEY) ENGINE=MyISAM", db());
    /* The marker row is written (non-transactional) before the sleep: one run = one row. */
    tu_exec(a, "CREATE OR REPLACE PROCEDURE %s.q_mark_sleep() BEGIN "
               "INSERT INTO q_marker VALUES (NULL); DO SLEEP(5); END", db());
    /* Limit 1: the statement runs on the connection whose id we learn here. */
    dbpool_result *r = must("SELECT CONNECTION_ID()", NULL, 0);
    unsigned long victim = (unsigned long)get_i64(r, 0, 0);
    dbpool_result_free(r);
    struct killer k = {.admin = a2, .id = victim, .delay_ms = 300};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, kill_later, &k), 0);
    uint64_t t0 = tu_now_ms();
    r = (dbpool_result *)&r;
    int rc = dbpool_query(&r, "CALL q_mark_sleep()", NULL, 0);
    uint64_t took = tu_now_ms() - t0;
    unsigned srv = dbpool_last_server_errno();
    pthread_join(t, NULL);
    assert_int_equal(k.err, 0);
    assert_int_equal(rc, DBPOOL_ECONNLOST);
    assert_null(r);
    assert_true(srv == 2013 || srv == 1927 || srv == 2006);
    assert_true(took < 4000); /* interrupted, not waited out */
    /* The session is gone on the server; the pool discarded it on release. */
    for (int i = 0; i < 100 && tu_session_exists(a, victim); i++)
        tu_sleep_ms(10);
    assert_int_equal(tu_session_exists(a, victim), 0);
    dbpool_stats s = tu_stats();
    assert_int_equal(s.closed_broken, 1);
    /* The next call works on a new session, and the statement never ran a second time. */
    r = must("SELECT CONNECTION_ID()", NULL, 0);
    assert_true((unsigned long)get_i64(r, 0, 0) != victim);
    dbpool_result_free(r);
    tu_sleep_ms(500);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_marker", db()), 1);
    assert_int_equal(tu_stats().created, 2);
    mysql_close(a2);
    mysql_close(a);
    dbpool_close();
}

/* ---- plain statements, explicit transactions, procedures ------------------------------------ */

static void exec_and_explicit_transactions(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    tu_exec(a, "DROP TABLE IF EXISTS %s.q_txn", db());
    tu_exec(a, "CREATE OR REPLACE PROCEDURE %s.q_two_results() BEGIN "
               "SELECT 1 AS first_a, 'x' AS first_b; SELECT 2 AS second; END", db());
    dbpool_conn *c;
    dbpool_result *r;
    assert_int_equal(dbpool_get(&c), 0);
    assert_int_equal(dbpool_conn_exec(c, "CREATE TABLE q_txn (id INT PRIMARY KEY, v VARCHAR(20)) "
                                         "ENGINE=InnoDB"), 0);
    dbpool_param p[] = {dbpool_param_int64(1), dbpool_param_text("one")};
    assert_int_equal(dbpool_begin(c), 0);
    must_conn(c, NULL, "INSERT INTO q_txn VALUES (?, ?)", p, 2);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_txn", db()), 0); /* not committed */
    assert_int_equal(dbpool_rollback(c), 0);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_txn", db()), 0);
    assert_int_equal(dbpool_begin(c), 0);
    must_conn(c, NULL, "INSERT INTO q_txn VALUES (?, ?)", p, 2);
    assert_int_equal(dbpool_commit(c), 0);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_txn WHERE v = 'one'", db()), 1);
    /* Results of plain statements and of procedures are consumed: the protocol stays in step. */
    assert_int_equal(dbpool_conn_exec(c, "SELECT * FROM q_txn"), 0);
    assert_int_equal(dbpool_conn_exec(c, "CALL q_two_results()"), 0);
    must_conn(c, &r, "CALL q_two_results()", NULL, 0); /* the first result set is kept */
    assert_int_equal(dbpool_result_columns(r), 2);
    assert_string_equal(dbpool_result_column_name(r, 1), "first_b");
    assert_string_equal(dbpool_result_text(r, 0, 1, NULL), "x");
    dbpool_result_free(r);
    must_conn(c, &r, "CALL q_two_results()", NULL, 0); /* cached CALL, again */
    assert_int_equal(dbpool_result_rows(r), 1);
    dbpool_result_free(r);
    must_conn(c, &r, "SELECT COUNT(*) FROM q_txn", NULL, 0);
    assert_true(get_i64(r, 0, 0) == 1);
    dbpool_result_free(r);
    /* Warnings counted as the server reports them on this session. */
    must_conn(c, &r, "SELECT CAST('12abc' AS SIGNED) AS v", NULL, 0);
    assert_true(get_i64(r, 0, 0) == 12);
    assert_int_equal(dbpool_result_warnings(r), 1);
    dbpool_result_free(r);
    assert_int_equal(mysql_query(dbpool_mysql(c), "SHOW COUNT(*) WARNINGS"), 0);
    MYSQL_RES *w = mysql_store_result(dbpool_mysql(c));
    assert_non_null(w);
    assert_string_equal(mysql_fetch_row(w)[0], "1");
    mysql_free_result(w);
    assert_int_equal(dbpool_conn_exec(c, "INSERT INTO q_txn VALUES (1, 'dup')"), DBPOOL_EQUERY);
    assert_int_equal(dbpool_last_server_errno(), 1062);
    dbpool_release(c);
    assert_int_equal(tu_stats().closed_broken, 0);
    mysql_close(a);
    dbpool_close();
}

/* ---- dbpool_transaction --------------------------------------------------------------------- */

struct body {
    int64_t id;
    int fail_with; /* returned after the insert when non-zero */
    int64_t dup;   /* when non-zero: insert this id too (a duplicate key) */
    int calls;
    int64_t in_trans;
};

static int insert_body(dbpool_conn *c, void *ud)
{
    struct body *b = ud;
    dbpool_result *r;
    b->calls++;
    int rc = dbpool_conn_query(c, &r, "SELECT @@in_transaction", NULL, 0);
    if (rc != 0)
        return rc;
    dbpool_result_int64(r, 0, 0, &b->in_trans);
    dbpool_result_free(r);
    dbpool_param p[] = {dbpool_param_int64(b->id), dbpool_param_text("txn")};
    if ((rc = dbpool_conn_query(c, NULL, "INSERT INTO q_txn VALUES (?, ?)", p, 2)) != 0)
        return rc;
    if (b->dup) {
        p[0] = dbpool_param_int64(b->dup);
        if ((rc = dbpool_conn_query(c, NULL, "INSERT INTO q_txn VALUES (?, ?)", p, 2)) != 0)
            return rc;
    }
    return b->fail_with;
}

static MYSQL *txn_table(unsigned limit)
{
    MYSQL *a = start(limit);
    tu_exec(a, "DROP TABLE IF EXISTS %s.q_txn", db());
    tu_exec(a, "CREATE TABLE %s.q_txn (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB", db());
    return a;
}

static void transaction_commits(void **state)
{
    (void)state;
    MYSQL *a = txn_table(1);
    struct body b = {.id = 1};
    unsigned attempts = 99;
    assert_int_equal(dbpool_transaction(insert_body, &b, 0, &attempts), 0);
    assert_int_equal(attempts, 1);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.in_trans, 1); /* the body ran inside a transaction */
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_txn WHERE id = 1", db()), 1);
    assert_int_equal(tu_stats().in_use, 0); /* released */
    mysql_close(a);
    dbpool_close();
}

static void transaction_rolls_back_on_error(void **state)
{
    (void)state;
    MYSQL *a = txn_table(1);
    tu_exec(a, "INSERT INTO %s.q_txn VALUES (1, 'pre')", db());
    /* The body's own code: rolled back and returned as is. */
    struct body b = {.id = 2, .fail_with = -1000};
    unsigned attempts = 0;
    assert_int_equal(dbpool_transaction(insert_body, &b, 0, &attempts), -1000);
    assert_int_equal(attempts, 1);
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_txn WHERE id = 2", db()), 0);
    /* A failed statement that is not a deadlock: not retried, earlier insert rolled back. */
    struct body d = {.id = 3, .dup = 1};
    assert_int_equal(dbpool_transaction(insert_body, &d, 5, &attempts), DBPOOL_EQUERY);
    assert_int_equal(attempts, 1);
    assert_int_equal(d.calls, 1);
    assert_int_equal(dbpool_last_server_errno(), 1062);
    assert_non_null(strstr(dbpool_last_error(), "Duplicate"));
    assert_int_equal(tu_scalar(a, "SELECT COUNT(*) FROM %s.q_txn", db()), 1);
    assert_int_equal(dbpool_transaction(NULL, NULL, 0, &attempts), DBPOOL_EINVAL);
    assert_int_equal(tu_stats().in_use, 0);
    assert_int_equal(tu_stats().closed_broken, 0);
    mysql_close(a);
    dbpool_close();
}

/* q_locks afresh, with rows (1, 0) .. (rows, 0). */
static void make_locks_table(MYSQL *a, int rows)
{
    tu_exec(a, "DROP TABLE IF EXISTS %s.q_locks", db());
    tu_exec(a, "CREATE TABLE %s.q_locks (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB", db());
    for (int id = 1; id <= rows; id++)
        tu_exec(a, "INSERT INTO %s.q_locks VALUES (%d, 0)", db(), id);
}

struct locker {
    int64_t first, second;
    pthread_barrier_t *barrier;
    int calls;
    int deadlocks_seen;
    int rc;
    unsigned attempts;
};

/* Lock `first`, meet the other thread (first attempt only), then lock `second`. */
static int lock_two(dbpool_conn *c, void *ud)
{
    struct locker *x = ud;
    const char *upd = "UPDATE q_locks SET n = n + 1 WHERE id = ?";
    dbpool_param p1 = dbpool_param_int64(x->first), p2 = dbpool_param_int64(x->second);
    x->calls++;
    int rc = dbpool_conn_exec(c, "SET SESSION innodb_lock_wait_timeout = 20");
    if (rc == 0)
        rc = dbpool_conn_query(c, NULL, upd, &p1, 1);
    if (x->calls == 1)
        pthread_barrier_wait(x->barrier); /* both now hold their first row */
    if (rc != 0)
        return rc;
    rc = dbpool_conn_query(c, NULL, upd, &p2, 1);
    if (rc != 0 && dbpool_last_server_errno() == 1213)
        x->deadlocks_seen++;
    return rc;
}

static void *locker_thread(void *p)
{
    struct locker *x = p;
    x->rc = dbpool_transaction(lock_two, x, 5, &x->attempts);
    return NULL;
}

static void transaction_retries_deadlock(void **state)
{
    (void)state;
    MYSQL *a = start(2);
    make_locks_table(a, 2);
    long long deadlocks0 = tu_global_status(a, "Innodb_deadlocks");
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    struct locker x = {.first = 1, .second = 2, .barrier = &bar};
    struct locker y = {.first = 2, .second = 1, .barrier = &bar};
    pthread_t tx, ty;
    assert_int_equal(pthread_create(&tx, NULL, locker_thread, &x), 0);
    assert_int_equal(pthread_create(&ty, NULL, locker_thread, &y), 0);
    pthread_join(tx, NULL);
    pthread_join(ty, NULL);
    pthread_barrier_destroy(&bar);
    /* Both finally succeed; the victim needed more than one attempt. */
    assert_int_equal(x.rc, 0);
    assert_int_equal(y.rc, 0);
    assert_int_equal(x.deadlocks_seen + y.deadlocks_seen, 1);
    assert_true(x.attempts >= 2 || y.attempts >= 2);
    assert_true(x.attempts + y.attempts >= 3);
    assert_int_equal((int)x.attempts, x.calls);
    assert_int_equal((int)y.attempts, y.calls);
    /* On the server: a deadlock happened, and exactly two transactions committed (the victim's
     * first attempt was rolled back). */
    assert_true(tu_global_status(a, "Innodb_deadlocks") - deadlocks0 >= 1);
    assert_int_equal(tu_scalar(a, "SELECT n FROM %s.q_locks WHERE id = 1", db()), 2);
    assert_int_equal(tu_scalar(a, "SELECT n FROM %s.q_locks WHERE id = 2", db()), 2);
    assert_int_equal(tu_stats().closed_broken, 0);
    mysql_close(a);
    dbpool_close();
}

static int wait_for_lock(dbpool_conn *c, void *ud)
{
    int *calls = ud;
    dbpool_param p = dbpool_param_int64(1);
    (*calls)++;
    int rc = dbpool_conn_exec(c, "SET SESSION innodb_lock_wait_timeout = 1");
    return rc ? rc : dbpool_conn_query(c, NULL, "UPDATE q_locks SET n = n + 1 WHERE id = ?", &p, 1);
}

/* Row 1 of a fresh q_locks held by admin session `a` while `body` (which waits for it) runs in
 * a transaction of at most 2 attempts: both time out, DBPOOL_ERETRIES keeps the cause, and the
 * server's row is untouched. */
static void expect_lock_retries_exhausted(MYSQL *a, dbpool_txn_fn body)
{
    make_locks_table(a, 1);
    tu_exec(a, "START TRANSACTION");
    tu_exec(a, "UPDATE %s.q_locks SET n = 100 WHERE id = 1", db()); /* holds the row */
    int calls = 0;
    unsigned attempts = 0;
    assert_int_equal(dbpool_transaction(body, &calls, 2, &attempts), DBPOOL_ERETRIES);
    assert_int_equal(attempts, 2);
    assert_int_equal(calls, 2);
    assert_int_equal(dbpool_last_server_errno(), 1205);
    assert_non_null(strstr(dbpool_last_error(), "1205"));
    assert_non_null(strstr(dbpool_last_error(), "2 attempts"));
    tu_exec(a, "ROLLBACK");
    assert_int_equal(tu_scalar(a, "SELECT n FROM %s.q_locks WHERE id = 1", db()), 0);
}

/* Lock wait timeouts are retried up to max_attempts, then DBPOOL_ERETRIES keeps the cause. */
static void transaction_retries_exhausted(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    expect_lock_retries_exhausted(a, wait_for_lock);
    assert_int_equal(tu_stats().closed_broken, 0);
    mysql_close(a);
    dbpool_close();
}

/* Like wait_for_lock, but after the failed statement the body calls something else that fails
 * (a result accessor on no result): the thread's last error is no longer the lock wait
 * timeout. The retry must still happen: it is decided from the connection. */
static int wait_for_lock_then_look_elsewhere(dbpool_conn *c, void *ud)
{
    int rc = wait_for_lock(c, ud);
    if (rc != 0) {
        int64_t v;
        assert_int_equal(dbpool_result_int64(NULL, 0, 0, &v), DBPOOL_ERANGE);
        assert_int_equal(dbpool_last_server_errno(), 0);
    }
    return rc;
}

static int bad_syntax(dbpool_conn *c, void *ud)
{
    (void)ud;
    return dbpool_conn_exec(c, "SELEC 1");
}

static void transaction_retry_survives_later_calls(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    expect_lock_retries_exhausted(a, wait_for_lock_then_look_elsewhere);
    unsigned attempts = 0;
    /* The next transaction (the same, only connection) fails otherwise: the lock error of the
     * previous one must not make it retried. */
    assert_int_equal(dbpool_transaction(bad_syntax, NULL, 3, &attempts), DBPOOL_EQUERY);
    assert_int_equal(attempts, 1);
    assert_int_equal(dbpool_last_server_errno(), 1064);
    assert_int_equal(tu_stats().closed_broken, 0);
    mysql_close(a);
    dbpool_close();
}

/* dbpool_query() and dbpool_transaction() record their caller's file and line, as
 * dbpool_get() does: an acquire timeout names them as the holders, not query.c. */
struct holder {
    atomic_int holding, go;
    int line, rc;
};

static int hold_until_go(dbpool_conn *c, void *ud)
{
    (void)c;
    struct holder *h = ud;
    atomic_store(&h->holding, 1);
    while (!atomic_load(&h->go))
        tu_sleep_ms(5);
    return 0;
}

static void *transaction_holder(void *p)
{
    struct holder *h = p;
    h->line = __LINE__ + 1;
    h->rc = dbpool_transaction(hold_until_go, h, 1, NULL);
    return NULL;
}

static void *query_holder(void *p)
{
    struct holder *h = p;
    atomic_store(&h->holding, 1);
    h->line = __LINE__ + 1;
    h->rc = dbpool_query(NULL, "SELECT SLEEP(1.5)", NULL, 0);
    return NULL;
}

static void expect_holder_named(const struct holder *h)
{
    dbpool_conn *c = NULL;
    assert_int_equal(dbpool_get(&c), DBPOOL_ETIMEDOUT);
    char want[64];
    snprintf(want, sizeof want, "test_query.c:%d", h->line);
    if (!strstr(dbpool_last_error(), want))
        fail_msg("expected \"%s\" in: %s", want, dbpool_last_error());
    if (strstr(dbpool_last_error(), "src/query.c:"))
        fail_msg("the library's own source named as the holder: %s", dbpool_last_error());
}

static void query_and_transaction_record_call_site(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    setenv("DB_ACQUIRE_TIMEOUT_MS", "300", 1);
    pthread_t t;
    struct holder h = {0};
    assert_int_equal(pthread_create(&t, NULL, transaction_holder, &h), 0);
    while (!atomic_load(&h.holding))
        tu_sleep_ms(5);
    expect_holder_named(&h);
    atomic_store(&h.go, 1);
    pthread_join(t, NULL);
    assert_int_equal(h.rc, 0);

    struct holder q = {0};
    assert_int_equal(pthread_create(&t, NULL, query_holder, &q), 0);
    while (tu_stats().in_use == 0)
        tu_sleep_ms(5);
    expect_holder_named(&q);
    pthread_join(t, NULL);
    assert_int_equal(q.rc, 0);
    mysql_close(a);
    dbpool_close();
}

/* ---- statement cache ------------------------------------------------------------------------ */

/* One parameterised statement through dbpool_query, 10,000 times: prepared once per connection.
 * The cache lives as long as the session: DB_RESET_ON_RELEASE=1 resets the session on every
 * release, which frees its statements on the server (cache_cleared_on_reset); it is off here
 * (as by default), so the pool keeps sessions across borrows. */
static void cache_prepares_once(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    setenv("DB_RESET_ON_RELEASE", "false", 1);
    unsigned n = tu_scaled(10000);
    long long prep0 = tu_global_status(a, "Com_stmt_prepare");
    long long exec0 = tu_global_status(a, "Com_stmt_execute");
    for (unsigned i = 0; i < n; i++) {
        dbpool_param p = dbpool_param_int64((int64_t)i);
        dbpool_result *r = NULL;
        int rc = dbpool_query(&r, "SELECT ? + 1 AS v", &p, 1);
        if (rc != 0)
            fail_msg("iteration %u: %s", i, dbpool_last_error());
        if (get_i64(r, 0, 0) != (int64_t)i + 1)
            fail_msg("iteration %u: wrong value", i);
        dbpool_result_free(r);
    }
    long long prepared = tu_global_status(a, "Com_stmt_prepare") - prep0;
    long long executed = tu_global_status(a, "Com_stmt_execute") - exec0;
    dbpool_stats s = tu_stats();
    assert_true(s.created >= 1);
    if (prepared < 1 || prepared > (long long)s.created)
        fail_msg("Com_stmt_prepare grew by %lld with %" PRIu64 " connection(s) created",
                 prepared, s.created);
    if (executed < (long long)n) /* every call went through the binary protocol */
        fail_msg("Com_stmt_execute grew by %lld for %u calls (prepared %lld)", executed, n,
                 prepared);
    /* The session's own counters: exactly one prepare, n executions. */
    dbpool_conn *c;
    assert_int_equal(dbpool_get(&c), 0);
    if (s.created == 1) {
        assert_int_equal(sess_status(c, "Com_stmt_prepare"), 1);
        assert_int_equal(sess_status(c, "Com_stmt_execute"), n);
    }
    dbpool_release(c);
    mysql_close(a);
    dbpool_close();
}

/* The same on one held connection with the default settings. */
static void cache_held_connection_prepares_once(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    unsigned n = tu_scaled(10000);
    dbpool_conn *c;
    assert_int_equal(dbpool_get(&c), 0);
    long long p0 = sess_status(c, "Com_stmt_prepare"), e0 = sess_status(c, "Com_stmt_execute");
    long long prep0 = tu_global_status(a, "Com_stmt_prepare");
    for (unsigned i = 0; i < n; i++) {
        dbpool_param p[] = {dbpool_param_int64((int64_t)i), dbpool_param_text("x")};
        dbpool_result *r = NULL;
        int rc = dbpool_conn_query(c, &r, "SELECT ? * 2 AS v, ? AS t", p, 2);
        if (rc != 0)
            fail_msg("iteration %u: %s", i, dbpool_last_error());
        if (get_i64(r, 0, 0) != 2 * (int64_t)i)
            fail_msg("iteration %u: wrong value", i);
        dbpool_result_free(r);
    }
    assert_int_equal(sess_status(c, "Com_stmt_prepare") - p0, 1);
    assert_int_equal(sess_status(c, "Com_stmt_execute") - e0, n);
    assert_int_equal(tu_global_status(a, "Com_stmt_prepare") - prep0, 1);
    dbpool_release(c);
    mysql_close(a);
    dbpool_close();
}

static void run_numbered(dbpool_conn *c, int k)
{
    char sql[64];
    dbpool_result *r;
    snprintf(sql, sizeof sql, "SELECT %d AS k", k);
    must_conn(c, &r, sql, NULL, 0);
    assert_true(get_i64(r, 0, 0) == k);
    dbpool_result_free(r);
}

/* 32 statements are kept per connection; the least recently used one is evicted (and closed on
 * the server). */
static void cache_bounded_lru(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    dbpool_conn *c;
    assert_int_equal(dbpool_get(&c), 0);
    long long open0 = tu_global_status(a, "Prepared_stmt_count");
    long long p0 = sess_status(c, "Com_stmt_prepare");
    for (int k = 0; k < 32; k++)
        run_numbered(c, k);
    assert_int_equal(sess_status(c, "Com_stmt_prepare") - p0, 32);
    assert_int_equal(tu_global_status(a, "Prepared_stmt_count") - open0, 32);
    run_numbered(c, 0); /* hit: statement 0 is now the most recently used */
    assert_int_equal(sess_status(c, "Com_stmt_prepare") - p0, 32);
    run_numbered(c, 32); /* miss: evicts statement 1, the least recently used */
    assert_int_equal(sess_status(c, "Com_stmt_prepare") - p0, 33);
    assert_int_equal(tu_global_status(a, "Prepared_stmt_count") - open0, 32);
    run_numbered(c, 0); /* still cached */
    assert_int_equal(sess_status(c, "Com_stmt_prepare") - p0, 33);
    run_numbered(c, 1); /* was evicted */
    assert_int_equal(sess_status(c, "Com_stmt_prepare") - p0, 34);
    assert_int_equal(sess_status(c, "Com_stmt_close") >= 2, 1);
    dbpool_release(c);
    mysql_close(a);
    dbpool_close();
}

/* With DB_RESET_ON_RELEASE the session is reset on every release: the cache is cleared first
 * (statements closed), and the next call prepares again on the same, healthy session. */
static void cache_cleared_on_reset(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    setenv("DB_RESET_ON_RELEASE", "true", 1);
    long long prep0 = tu_global_status(a, "Com_stmt_prepare");
    long long open0 = tu_global_status(a, "Prepared_stmt_count");
    unsigned long first = 0;
    for (int i = 0; i < 5; i++) {
        dbpool_result *r = must("SELECT CONNECTION_ID() AS id", NULL, 0);
        unsigned long id = (unsigned long)get_i64(r, 0, 0);
        dbpool_result_free(r);
        if (i == 0)
            first = id;
        assert_true(id == first);
        assert_int_equal(tu_global_status(a, "Prepared_stmt_count"), open0);
    }
    assert_true(tu_global_status(a, "Com_stmt_prepare") - prep0 >= 5);
    dbpool_stats s = tu_stats();
    assert_int_equal(s.created, 1);
    assert_int_equal(s.closed_reset, 0);
    assert_int_equal(s.closed_broken, 0);
    mysql_close(a);
    dbpool_close();
}

/* The value of a one-row result's cell as expected: `want` NULL for SQL NULL. */
static void check_cell(const dbpool_result *r, size_t row, unsigned col, const void *want,
                       size_t want_len)
{
    size_t len = 99;
    const char *v = dbpool_result_text(r, row, col, &len);
    if (!want) {
        assert_null(v);
        assert_int_equal(dbpool_result_is_null(r, row, col), 1);
        return;
    }
    assert_non_null(v);
    assert_int_equal(len, want_len);
    assert_memory_equal(v, want, want_len);
    assert_int_equal(v[len], 0);
}

/* One cached statement, its parameter changing type from call to call (numbers are bound once
 * and only their values copied while the types stay; text is bound where the caller has it):
 * NULL, long (past the fetch buffer), binary and empty values in between. */
static void cache_parameters_change_type(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    static char long_text[1000];
    memset(long_text, 'L', sizeof long_text - 1);
    const struct {
        dbpool_param p;
        const void *want;
        size_t len;
    } cases[] = {
        {dbpool_param_int64(5), "5", 1},
        {dbpool_param_int64(-7), "-7", 2},
        {dbpool_param_null(), NULL, 0},
        {dbpool_param_int64(8), "8", 1},
        {dbpool_param_uint64(UINT64_MAX), "18446744073709551615", 20},
        {dbpool_param_text(long_text), long_text, sizeof long_text - 1},
        {dbpool_param_int64(42), "42", 2},
        {dbpool_param_blob(BIN, sizeof BIN), BIN, sizeof BIN},
        {dbpool_param_text(""), "", 0},
        {dbpool_param_null(), NULL, 0},
        {dbpool_param_int64(INT64_MIN), "-9223372036854775808", 20},
        {dbpool_param_int64(43), "43", 2},
    };
    dbpool_conn *c;
    assert_int_equal(dbpool_get(&c), 0);
    long long p0 = sess_status(c, "Com_stmt_prepare");
    for (unsigned round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            dbpool_result *r;
            must_conn(c, &r, "SELECT ? AS v, 1 AS one", &cases[i].p, 1);
            assert_int_equal(dbpool_result_rows(r), 1);
            assert_string_equal(dbpool_result_column_name(r, 0), "v");
            assert_string_equal(dbpool_result_column_name(r, 1), "one");
            check_cell(r, 0, 0, cases[i].want, cases[i].len);
            assert_true(get_i64(r, 0, 1) == 1);
            dbpool_result_free(r);
        }
        /* Two numbers, then the same types again: the values are the new ones. */
        for (int k = 0; k < 3; k++) {
            dbpool_param p[] = {dbpool_param_double(k + 0.5), dbpool_param_int64(k * 10)};
            dbpool_result *r;
            double d;
            must_conn(c, &r, "SELECT ? AS d, ? + 1 AS i", p, 2);
            assert_int_equal(dbpool_result_double(r, 0, 0, &d), 0);
            assert_true(d == k + 0.5);
            assert_true(get_i64(r, 0, 1) == k * 10 + 1);
            dbpool_result_free(r);
        }
    }
    assert_int_equal(sess_status(c, "Com_stmt_prepare") - p0, 2);
    dbpool_release(c);
    assert_int_equal(tu_stats().closed_broken, 0);
    mysql_close(a);
    dbpool_close();
}

/* A procedure whose first result set changes shape with its argument, through one cached
 * statement: every call gets its own columns and values, never those of the call before. */
static void cache_call_result_shapes(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    tu_exec(a, "DROP PROCEDURE IF EXISTS %s.q_shape", db());
    tu_exec(a, "CREATE PROCEDURE %s.q_shape(k INT) BEGIN IF k = 1 THEN SELECT 1 AS one; "
               "ELSE SELECT k AS two, REPEAT('x', k * 100) AS three; END IF; "
               "SELECT 'z' AS z; END", db());
    static const int ks[] = {1, 2, 3, 1, 1, 5, 2, 2};
    dbpool_conn *c;
    assert_int_equal(dbpool_get(&c), 0);
    unsigned long id = dbpool_conn_id(c);
    for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
        dbpool_param p = dbpool_param_int64(ks[i]);
        dbpool_result *r;
        must_conn(c, &r, "CALL q_shape(?)", &p, 1);
        assert_int_equal(dbpool_result_rows(r), 1);
        if (ks[i] == 1) {
            assert_int_equal(dbpool_result_columns(r), 1);
            assert_string_equal(dbpool_result_column_name(r, 0), "one");
            assert_true(get_i64(r, 0, 0) == 1);
        } else {
            size_t len;
            assert_int_equal(dbpool_result_columns(r), 2);
            assert_string_equal(dbpool_result_column_name(r, 0), "two");
            assert_string_equal(dbpool_result_column_name(r, 1), "three");
            assert_true(get_i64(r, 0, 0) == ks[i]);
            const char *t = dbpool_result_text(r, 0, 1, &len);
            assert_int_equal(len, (size_t)ks[i] * 100);
            assert_true(t[0] == 'x' && t[len - 1] == 'x' && t[len] == '\0');
        }
        dbpool_result_free(r);
        must_conn(c, NULL, "CALL q_shape(?)", &p, 1); /* no result wanted: drained all the same */
    }
    dbpool_result *r;
    must_conn(c, &r, "SELECT CONNECTION_ID()", NULL, 0);
    assert_true((unsigned long)get_i64(r, 0, 0) == id);
    dbpool_result_free(r);
    dbpool_release(c);
    assert_int_equal(tu_stats().closed_broken, 0);
    mysql_close(a);
    dbpool_close();
}

/* A table altered under a cached statement without changing its column count: the server
 * prepares it again by itself (Com_stmt_reprepare, counted in Com_stmt_prepare too), the client
 * keeps the same statement and its result binding, and reads each value in its new type. */
static void cache_altered_types_same_columns(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    tu_exec(a, "DROP TABLE IF EXISTS %s.q_alt2", db());
    tu_exec(a, "CREATE TABLE %s.q_alt2 (id INT PRIMARY KEY, v INT NULL)", db());
    tu_exec(a, "INSERT INTO %s.q_alt2 VALUES (1, 10)", db());
    const char *sql = "SELECT id, v FROM q_alt2 WHERE id = ?";
    dbpool_param p = dbpool_param_int64(1);
    dbpool_conn *c;
    dbpool_result *r;
    assert_int_equal(dbpool_get(&c), 0);
    long long p0 = sess_status(c, "Com_stmt_prepare"), rp0 = sess_status(c, "Com_stmt_reprepare");
    must_conn(c, &r, sql, &p, 1);
    check_cell(r, 0, 1, "10", 2);
    dbpool_result_free(r);
    char big[301];
    memset(big, 'y', 300);
    big[300] = '\0';
    tu_exec(a, "ALTER TABLE %s.q_alt2 MODIFY v VARCHAR(400) NULL", db());
    tu_exec(a, "UPDATE %s.q_alt2 SET v = '%s'", db(), big);
    must_conn(c, &r, sql, &p, 1);
    check_cell(r, 0, 1, big, 300);
    assert_true(get_i64(r, 0, 0) == 1);
    dbpool_result_free(r);
    tu_exec(a, "UPDATE %s.q_alt2 SET v = '2024-02-29'", db());
    tu_exec(a, "ALTER TABLE %s.q_alt2 MODIFY v DATE NULL", db());
    must_conn(c, &r, sql, &p, 1);
    check_cell(r, 0, 1, "2024-02-29", 10);
    dbpool_result_free(r);
    tu_exec(a, "UPDATE %s.q_alt2 SET v = NULL", db());
    must_conn(c, &r, sql, &p, 1);
    check_cell(r, 0, 1, NULL, 0);
    assert_string_equal(dbpool_result_column_name(r, 1), "v");
    dbpool_result_free(r);
    long long reprepared = sess_status(c, "Com_stmt_reprepare") - rp0;
    assert_true(reprepared >= 1);
    assert_int_equal(sess_status(c, "Com_stmt_prepare") - p0 - reprepared, 1);
    dbpool_release(c);
    assert_int_equal(tu_stats().closed_broken, 0);
    mysql_close(a);
    dbpool_close();
}

/* One cached statement giving results of very different sizes in turn: no row, one short row,
 * thousands of rows (more text than a result reserves up front), long rows, short again. */
static void cache_result_sizes_vary(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    static const int64_t ranges[][2] = {{1, 0},   {7, 7},       {1, 5000}, {299, 299},
                                        {1, 0},   {3, 3},       {250, 310}, {4000, 5000},
                                        {12, 12}, {4999, 5000}};
    dbpool_conn *c;
    assert_int_equal(dbpool_get(&c), 0);
    for (size_t i = 0; i < sizeof ranges / sizeof *ranges; i++) {
        dbpool_param p[] = {dbpool_param_int64(ranges[i][0]), dbpool_param_int64(ranges[i][1])};
        dbpool_result *r;
        must_conn(c, &r, "SELECT seq, IF(seq % 10 = 0, NULL, REPEAT('w', seq % 300)) AS s "
                         "FROM seq_1_to_5000 WHERE seq BETWEEN ? AND ? ORDER BY seq", p, 2);
        int64_t lo = ranges[i][0], hi = ranges[i][1];
        size_t rows = hi >= lo ? (size_t)(hi - lo + 1) : 0;
        assert_int_equal(dbpool_result_rows(r), rows);
        assert_int_equal(dbpool_result_columns(r), 2);
        assert_string_equal(dbpool_result_column_name(r, 1), "s");
        for (size_t row = 0; row < rows; row++) {
            int64_t seq = lo + (int64_t)row;
            size_t len;
            if (get_i64(r, row, 0) != seq)
                fail_msg("range %zu, row %zu: seq", i, row);
            const char *t = dbpool_result_text(r, row, 1, &len);
            if (seq % 10 == 0) {
                assert_null(t);
                continue;
            }
            if (!t || len != (size_t)(seq % 300) || t[len] != '\0' ||
                (len && (t[0] != 'w' || t[len - 1] != 'w')))
                fail_msg("range %zu, row %zu: %zu bytes", i, row, t ? len : 0);
        }
        dbpool_result_free(r);
    }
    dbpool_release(c);
    mysql_close(a);
    dbpool_close();
}

/* ---- misuse --------------------------------------------------------------------------------- */

static void misuse_and_null_arguments(void **state)
{
    (void)state;
    MYSQL *a = start(1);
    dbpool_result *r = (dbpool_result *)&r;
    int64_t i;
    dbpool_result_free(NULL);
    assert_int_equal(dbpool_query(&r, NULL, NULL, 0), DBPOOL_EINVAL);
    assert_null(r);
    assert_int_equal(dbpool_query(NULL, "SELECT ?", NULL, 1), DBPOOL_EINVAL);
    assert_int_equal(dbpool_conn_query(NULL, NULL, "SELECT 1", NULL, 0), DBPOOL_EINVAL);
    assert_int_equal(dbpool_conn_exec(NULL, "SELECT 1"), DBPOOL_EINVAL);
    assert_int_equal(dbpool_query(NULL, "DO 1", NULL, 0), 0); /* no result wanted */
    /* A failed dbpool_query gives its connection back, healthy. */
    assert_int_equal(dbpool_query(&r, "SELEC 1", NULL, 0), DBPOOL_EQUERY);
    assert_null(r);
    assert_int_equal(dbpool_last_server_errno(), 1064);
    assert_int_equal(tu_stats().in_use, 0);
    assert_int_equal(tu_stats().idle, 1);
    dbpool_conn *c;
    assert_int_equal(dbpool_get(&c), 0);
    assert_int_equal(dbpool_conn_query(c, NULL, NULL, NULL, 0), DBPOOL_EINVAL);
    dbpool_release(c);
    assert_int_equal(dbpool_conn_query(c, &r, "SELECT 1", NULL, 0), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_conn_exec(c, "SELECT 1"), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_begin(c), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_commit(c), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_rollback(c), DBPOOL_EMISUSE);
    assert_int_equal(dbpool_result_rows(NULL), 0);
    assert_int_equal(dbpool_result_columns(NULL), 0);
    assert_null(dbpool_result_text(NULL, 0, 0, NULL));
    assert_null(dbpool_result_column_name(NULL, 0));
    assert_int_equal(dbpool_result_int64(NULL, 0, 0, &i), DBPOOL_ERANGE);
    assert_int_equal(dbpool_result_affected_rows(NULL), 0);
    assert_int_equal(tu_stats().closed_broken, 0);
    mysql_close(a);
    dbpool_close();
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(roundtrip_parameters),
    cmocka_unit_test(roundtrip_select_params),
    cmocka_unit_test(column_types_match_text_protocol),
    cmocka_unit_test(blob_one_mebibyte),
    cmocka_unit_test(injection_stored_verbatim),
    cmocka_unit_test(conversion_errors),
    cmocka_unit_test(statement_errors_reported),
    cmocka_unit_test(altered_table_reprepares),
    cmocka_unit_test(killed_mid_statement_not_replayed),
    cmocka_unit_test(exec_and_explicit_transactions),
    cmocka_unit_test(transaction_commits),
    cmocka_unit_test(transaction_rolls_back_on_error),
    cmocka_unit_test(transaction_retries_deadlock),
    cmocka_unit_test(transaction_retry_survives_later_calls),
    cmocka_unit_test(query_and_transaction_record_call_site),
    cmocka_unit_test(transaction_retries_exhausted),
    cmocka_unit_test(cache_prepares_once),
    cmocka_unit_test(cache_held_connection_prepares_once),
    cmocka_unit_test(cache_bounded_lru),
    cmocka_unit_test(cache_cleared_on_reset),
    cmocka_unit_test(cache_parameters_change_type),
    cmocka_unit_test(cache_call_result_shapes),
    cmocka_unit_test(cache_altered_types_same_columns),
    cmocka_unit_test(cache_result_sizes_vary),
    cmocka_unit_test(misuse_and_null_arguments),
};

TU_MAIN(tests)
