/*
 * check-db-schema - verify that the database named by DB_NAME has every table and column of
 * the demo schema, reading information_schema, and say which migration adds what is missing.
 *
 * Pattern: one-shot queries (dbpool_query borrows a connection, runs one statement with bound
 * parameters, reads the whole result into memory and gives the connection back) and a plain
 * return from main.
 *
 * Exit status: 0 all present, 1 something missing (listed on stderr), 2 the check itself
 * failed (cannot connect, query error).
 */
#include "demo_schema.h"

#include <stdio.h>
#include <string.h>

static int fail(const char *what)
{
    fprintf(stderr, "check-db-schema: %s: %s\n", what, dbpool_last_error());
    return 2;
}

static int present(const dbpool_result *r, const char *table, const char *column)
{
    for (size_t i = 0; i < dbpool_result_rows(r); i++) {
        const char *t = dbpool_result_text(r, i, 0, NULL), *c = dbpool_result_text(r, i, 1, NULL);
        if (t && c && strcmp(t, table) == 0 && strcmp(c, column) == 0)
            return 1;
    }
    return 0;
}

/* Highest applied version, 0 when schema_migrations is missing or empty. */
static unsigned applied_version(int have_table)
{
    dbpool_result *r;
    int64_t v = 0;
    if (!have_table || dbpool_query(&r, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                                    NULL, 0) != 0)
        return 0;
    dbpool_result_int64(r, 0, 0, &v);
    dbpool_result_free(r);
    return (unsigned)v;
}

int main(void)
{
    dbpool_result *db, *cols;
    if (dbpool_query(&db, "SELECT DATABASE()", NULL, 0) != 0)
        return fail("cannot query the server");
    const char *name = dbpool_result_text(db, 0, 0, NULL);
    if (!name) {
        fprintf(stderr, "check-db-schema: no database selected: set DB_NAME\n");
        dbpool_result_free(db);
        return 2;
    }
    dbpool_param p = dbpool_param_text(name);
    if (dbpool_query(&cols, "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
                     "WHERE TABLE_SCHEMA = ?", &p, 1) != 0) {
        dbpool_result_free(db);
        return fail("cannot read information_schema.COLUMNS");
    }
    unsigned missing = 0;
    for (unsigned i = 0; i < demo_column_count; i++) {
        const demo_column *c = &demo_columns[i];
        if (present(cols, c->table, c->column))
            continue;
        missing++;
        fprintf(stderr, "check-db-schema: missing %s.%s (added by migration %03u)\n", c->table,
                c->column, c->since);
    }
    unsigned version = applied_version(present(cols, "schema_migrations", "version"));
    if (missing)
        fprintf(stderr, "check-db-schema: database %s: %u of %u columns missing; schema_migrations "
                "says version %u; run migrate-messaging-schema\n", name, missing,
                demo_column_count, version);
    else
        printf("check-db-schema: database %s: all %u expected columns present; schema at "
               "version %u of %u\n", name, demo_column_count, version, demo_latest_version());
    dbpool_result_free(cols);
    dbpool_result_free(db);
    return missing ? 1 : 0;
}
