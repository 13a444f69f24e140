/*
 * test_query_unit.c - result accessors and number conversions, no server: results are built
 * from literal cells with the library's internal constructor (query.c).
 */
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* query.c; hidden from the shared library, linked here from the static one. */
dbpool_result *dbpool__result_make(size_t rows, unsigned cols, const char *const *names,
                                   const char *const *values, const size_t *lens);

/* One row of one column holding `v` (NULL = SQL NULL). */
static dbpool_result *one(const char *v)
{
    const char *names[] = {"c"};
    const char *values[] = {v};
    dbpool_result *r = dbpool__result_make(1, 1, names, values, NULL);
    assert_non_null(r);
    return r;
}

static int as_i64(const char *v, int64_t *out)
{
    dbpool_result *r = one(v);
    int rc = dbpool_result_int64(r, 0, 0, out);
    dbpool_result_free(r);
    return rc;
}

static int as_u64(const char *v, uint64_t *out)
{
    dbpool_result *r = one(v);
    int rc = dbpool_result_uint64(r, 0, 0, out);
    dbpool_result_free(r);
    return rc;
}

static int as_double(const char *v, double *out)
{
    dbpool_result *r = one(v);
    int rc = dbpool_result_double(r, 0, 0, out);
    dbpool_result_free(r);
    return rc;
}

static void int64_conversions(void **state)
{
    (void)state;
    int64_t x = 0;
    assert_int_equal(as_i64("0", &x), 0);
    assert_true(x == 0);
    assert_int_equal(as_i64("-9223372036854775808", &x), 0);
    assert_true(x == INT64_MIN);
    assert_int_equal(as_i64("9223372036854775807", &x), 0);
    assert_true(x == INT64_MAX);
    assert_int_equal(as_i64("+17", &x), 0);
    assert_true(x == 17);
    assert_int_equal(as_i64("-9223372036854775807", &x), 0);
    assert_true(x == -INT64_MAX);
    assert_int_equal(as_i64("-0", &x), 0);
    assert_true(x == 0);
    assert_int_equal(as_i64("+0", &x), 0);
    assert_true(x == 0);
    assert_int_equal(as_i64("0000000000000000000000000000000000000042", &x), 0);
    assert_true(x == 42);
    assert_int_equal(as_i64("-00000000000000000000009223372036854775808", &x), 0);
    assert_true(x == INT64_MIN);
    static const char *const bad[] = {"", "12x", "x12", " 12", "12 ", "-", "+", "1.0", ".5",
                                      "1e3", "0x10", "9223372036854775808",
                                      "-9223372036854775809", "99999999999999999999", "--1",
                                      "+-1", "\t1", "1-", "12-3", "1+", "9223372036854775810",
                                      "92233720368547758070", "18446744073709551615",
                                      "-18446744073709551616", "1\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        x = 12345;
        if (as_i64(bad[i], &x) != DBPOOL_ECONVERT)
            fail_msg("int64 accepted \"%s\"", bad[i]);
        assert_true(x == 12345); /* untouched on failure */
        assert_non_null(strstr(dbpool_last_error(), "DBPOOL_ECONVERT"));
    }
    assert_int_equal(as_i64(NULL, &x), DBPOOL_ECONVERT);
    assert_non_null(strstr(dbpool_last_error(), "SQL NULL"));
}

static void uint64_conversions(void **state)
{
    (void)state;
    uint64_t x = 0;
    assert_int_equal(as_u64("18446744073709551615", &x), 0);
    assert_true(x == UINT64_MAX);
    assert_int_equal(as_u64("0", &x), 0);
    assert_true(x == 0);
    assert_int_equal(as_u64("+00018446744073709551615", &x), 0);
    assert_true(x == UINT64_MAX);
    assert_int_equal(as_u64("10000000000000000000", &x), 0);
    assert_true(x == 10000000000000000000u);
    static const char *const bad[] = {"-1", "-0", "18446744073709551616", "", "1x", " 1", "1.5",
                                      "18446744073709551620", "99999999999999999999", "+",
                                      "++1", "1e3", ".5", "184467440737095516150"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (as_u64(bad[i], &x) != DBPOOL_ECONVERT)
            fail_msg("uint64 accepted \"%s\"", bad[i]);
    assert_int_equal(as_u64(NULL, &x), DBPOOL_ECONVERT);
}

static void double_conversions(void **state)
{
    (void)state;
    double d = 0;
    assert_int_equal(as_double("1.5", &d), 0);
    assert_true(d == 1.5);
    assert_int_equal(as_double("-2.5e-300", &d), 0);
    assert_true(d == -2.5e-300);
    assert_int_equal(as_double("1.7976931348623157e308", &d), 0);
    assert_true(d == DBL_MAX);
    assert_int_equal(as_double(".25", &d), 0);
    assert_true(d == 0.25);
    assert_int_equal(as_double("42", &d), 0);
    assert_true(d == 42.0);
    assert_int_equal(as_double("4.9e-324", &d), 0); /* subnormal: kept */
    assert_true(d > 0);
    static const char *const bad[] = {"", "1e999", "-1e999", "1e-999", "inf", "-inf", "nan",
                                      "NaN", "0x1p3", " 1", "1 ", "1.5x", "e5", ".", "1,5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (as_double(bad[i], &d) != DBPOOL_ECONVERT)
            fail_msg("double accepted \"%s\"", bad[i]);
    assert_int_equal(as_double(NULL, &d), DBPOOL_ECONVERT);
}

/* Binary values: lengths kept, NUL-terminated, and never a number. */
static void embedded_nul(void **state)
{
    (void)state;
    const char *names[] = {"bin", "num"};
    const char *values[] = {"1\0" "2", "7"};
    size_t lens[] = {3, 1};
    dbpool_result *r = dbpool__result_make(1, 2, names, values, lens);
    assert_non_null(r);
    size_t len = 0;
    const unsigned char *b = dbpool_result_bytes(r, 0, 0, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(b, "1\0" "2", 3);
    assert_int_equal(b[3], 0);
    int64_t x;
    assert_int_equal(dbpool_result_int64(r, 0, 0, &x), DBPOOL_ECONVERT);
    assert_int_equal(dbpool_result_int64(r, 0, 1, &x), 0);
    assert_true(x == 7);
    dbpool_result_free(r);
}

static void shape_and_ranges(void **state)
{
    (void)state;
    const char *names[] = {"a", "b", ""};
    const char *values[] = {"1", NULL, "", "2", "x", NULL};
    dbpool_result *r = dbpool__result_make(2, 3, names, values, NULL);
    assert_non_null(r);
    assert_int_equal(dbpool_result_rows(r), 2);
    assert_int_equal(dbpool_result_columns(r), 3);
    assert_string_equal(dbpool_result_column_name(r, 0), "a");
    assert_string_equal(dbpool_result_column_name(r, 2), "");
    assert_null(dbpool_result_column_name(r, 3));
    assert_int_equal(dbpool_result_is_null(r, 0, 1), 1);
    assert_int_equal(dbpool_result_is_null(r, 0, 2), 0);
    assert_int_equal(dbpool_result_is_null(r, 1, 2), 1);
    assert_int_equal(dbpool_result_is_null(r, 2, 0), DBPOOL_ERANGE);
    assert_int_equal(dbpool_result_is_null(r, 0, 3), DBPOOL_ERANGE);
    size_t len = 99;
    assert_null(dbpool_result_text(r, 0, 1, &len)); /* SQL NULL */
    assert_int_equal(len, 0);
    assert_string_equal(dbpool_result_text(r, 0, 2, &len), ""); /* empty, not NULL */
    assert_int_equal(len, 0);
    assert_null(dbpool_result_text(r, 5, 0, &len));
    assert_non_null(strstr(dbpool_last_error(), "DBPOOL_ERANGE"));
    int64_t x;
    double d;
    uint64_t u;
    assert_int_equal(dbpool_result_int64(r, 2, 0, &x), DBPOOL_ERANGE);
    assert_int_equal(dbpool_result_double(r, 0, 9, &d), DBPOOL_ERANGE);
    assert_int_equal(dbpool_result_uint64(r, SIZE_MAX, 0, &u), DBPOOL_ERANGE);
    assert_int_equal(dbpool_result_int64(r, 1, 0, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_result_int64(r, 1, 0, &x), 0);
    assert_true(x == 2);
    assert_int_equal(dbpool_result_affected_rows(r), 0);
    assert_int_equal(dbpool_result_insert_id(r), 0);
    assert_int_equal(dbpool_result_warnings(r), 0);
    dbpool_result_free(r);
    /* No columns (a statement without a result set). */
    r = dbpool__result_make(0, 0, NULL, NULL, NULL);
    assert_non_null(r);
    assert_int_equal(dbpool_result_rows(r), 0);
    assert_null(dbpool_result_text(r, 0, 0, NULL));
    dbpool_result_free(r);
}

static void null_result(void **state)
{
    (void)state;
    int64_t x;
    size_t len = 5;
    dbpool_result_free(NULL);
    assert_int_equal(dbpool_result_rows(NULL), 0);
    assert_int_equal(dbpool_result_columns(NULL), 0);
    assert_null(dbpool_result_column_name(NULL, 0));
    assert_int_equal(dbpool_result_is_null(NULL, 0, 0), DBPOOL_ERANGE);
    assert_null(dbpool_result_text(NULL, 0, 0, &len));
    assert_int_equal(len, 0);
    assert_null(dbpool_result_bytes(NULL, 0, 0, NULL));
    assert_int_equal(dbpool_result_int64(NULL, 0, 0, &x), DBPOOL_ERANGE);
    assert_int_equal(dbpool_result_affected_rows(NULL), 0);
    assert_int_equal(dbpool_result_insert_id(NULL), 0);
    assert_int_equal(dbpool_result_warnings(NULL), 0);
}

/* A wide, long result: every value at its own place after the arena grew many times. */
static void many_cells(void **state)
{
    (void)state;
    enum { ROWS = 2000, COLS = 7 };
    static char buf[ROWS * COLS][24];
    static const char *values[ROWS * COLS];
    const char *names[COLS] = {"a", "b", "c", "d", "e", "f", "g"};
    for (size_t i = 0; i < ROWS * COLS; i++) {
        snprintf(buf[i], sizeof buf[i], "%zu", i * 7919);
        values[i] = (i % 11 == 0) ? NULL : buf[i];
    }
    dbpool_result *r = dbpool__result_make(ROWS, COLS, names, values, NULL);
    assert_non_null(r);
    for (size_t i = 0; i < ROWS * COLS; i++) {
        int64_t x;
        int rc = dbpool_result_int64(r, i / COLS, (unsigned)(i % COLS), &x);
        if (i % 11 == 0)
            assert_int_equal(rc, DBPOOL_ECONVERT);
        else if (rc != 0 || x != (int64_t)(i * 7919))
            fail_msg("cell %zu", i);
    }
    dbpool_result_free(r);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(int64_conversions),
    cmocka_unit_test(uint64_conversions),
    cmocka_unit_test(double_conversions),
    cmocka_unit_test(embedded_nul),
    cmocka_unit_test(shape_and_ranges),
    cmocka_unit_test(null_result),
    cmocka_unit_test(many_cells),
};

TU_MAIN(tests)
