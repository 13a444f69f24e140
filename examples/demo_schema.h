/*
 * demo_schema.h - the small schema the examples share (users, bookings, conversations,
 * messages) as an ordered list of migrations, and the runner that applies them.
 *
 * Used by run-migration-003, migrate-messaging-schema (apply) and check-db-schema (verify).
 */
#ifndef DEMO_SCHEMA_H
#define DEMO_SCHEMA_H

#include <dbpool.h>

enum demo_step_kind {
    DEMO_DDL, /* CREATE/ALTER: MariaDB commits implicitly; each statement is idempotent */
    DEMO_DML  /* data changes: applied and recorded in one transaction */
};

#define DEMO_MAX_SQL 4

typedef struct demo_migration {
    unsigned version;
    const char *name;
    enum demo_step_kind kind;
    const char *sql[DEMO_MAX_SQL]; /* run in order; NULL-terminated when shorter */
} demo_migration;

typedef struct demo_column {
    const char *table;
    const char *column;
    unsigned since; /* the migration that adds it (0: the bookkeeping table itself) */
} demo_column;

extern const demo_migration demo_migrations[];
extern const unsigned demo_migration_count;
extern const demo_column demo_columns[];
extern const unsigned demo_column_count;
/* The highest version in demo_migrations. */
unsigned demo_latest_version(void);

/* What a run did. */
typedef struct demo_migrate_report {
    unsigned applied[32]; /* versions applied by this run, in order */
    unsigned napplied;
    unsigned skipped;     /* already recorded in schema_migrations */
} demo_migrate_report;

/* Bring the schema of the database in DB_NAME up to `target` (every migration with
 * version <= target not yet recorded in schema_migrations, in order). Holds one pooled
 * connection and the server lock "<database>.schema_migrations" for the whole run, so two
 * processes never migrate at the same time. Prints one line per migration applied to stdout
 * when `verbose`. On failure prints to stderr which migration failed and why (from
 * dbpool_last_error()) and returns the DBPOOL_E* code; 0 on success. */
int demo_migrate(unsigned target, int verbose, demo_migrate_report *out);

#endif /* DEMO_SCHEMA_H */
