/*
 * migrate-messaging-schema - bring the demo schema to its latest version: the messaging
 * tables (conversations, messages), a new column and index, and a data backfill, after any
 * earlier migration that is missing (001-003 of run-migration-003).
 *
 * Pattern: ordered, re-runnable schema changes. DDL steps are idempotent statements (MariaDB
 * commits DDL implicitly, so it cannot be rolled back); the data step (007) runs in a real
 * transaction together with its schema_migrations row. The whole run holds one connection
 * and the server-side lock "<database>.schema_migrations", so concurrent runs (two deploys at
 * once) wait for each other instead of racing.
 *
 * Exit status: 0 when the schema is at the latest version, 1 otherwise (reason on stderr).
 */
#include "demo_schema.h"

#include <stdio.h>

int main(void)
{
    demo_migrate_report rep;
    unsigned target = demo_latest_version();
    int rc = demo_migrate(target, 1, &rep);
    dbpool_close(); /* optional here: see run-migration-003.c */
    if (rc != 0) {
        fprintf(stderr, "migrate-messaging-schema: failed (%s)\n", dbpool_strerror(rc));
        return 1;
    }
    printf("migrate-messaging-schema: schema at version %u: %u migration(s) applied, %u "
           "already applied\n", target, rep.napplied, rep.skipped);
    return 0;
}
