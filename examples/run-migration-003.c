/*
 * run-migration-003 - bring the demo schema up to migration 003 (users, bookings, and the
 * profile image columns of users), applying in order whatever is missing.
 *
 * Pattern: a short administrative program. Configuration comes only from .env / the
 * environment (DB_HOST, DB_USER, DB_PASSWORD, DB_NAME, ...), as in any program using the
 * library. Safe to run again: migrations already recorded in schema_migrations are skipped,
 * and each DDL statement is idempotent (see demo_schema.c for why DDL cannot simply be put in
 * a transaction in MariaDB).
 *
 * Exit status: 0 when the schema is at version 3 or later, 1 otherwise (the reason on stderr).
 */
#include "demo_schema.h"

#include <stdio.h>

#define TARGET 3u

int main(void)
{
    demo_migrate_report rep;
    int rc = demo_migrate(TARGET, 1, &rep);
    /* Optional in a program that ends here: the exit hook would close the pool anyway.
     * Call dbpool_close() yourself when the process goes on without the database (a long
     * computation, waiting for the next job), so its sessions do not sit idle on the
     * server until DB_IDLE_TIMEOUT_MS. */
    dbpool_close();
    if (rc != 0) {
        fprintf(stderr, "run-migration-003: failed (%s)\n", dbpool_strerror(rc));
        return 1;
    }
    printf("run-migration-003: schema at version %u or later: %u migration(s) applied, %u "
           "already applied\n", TARGET, rep.napplied, rep.skipped);
    return 0;
}
