/*
 * demo_schema.c - the demo schema as ordered migrations, and the runner.
 *
 * Why each migration is idempotent, not just transactional: in MariaDB every DDL statement
 * (CREATE TABLE, ALTER TABLE, CREATE INDEX, ...) commits the open transaction implicitly and
 * cannot be rolled back. "DDL + record the version" can therefore never be atomic: a process
 * killed between the two leaves the change made but not recorded. So every DDL statement
 * here is written to be safe to run again (CREATE TABLE IF NOT EXISTS, ADD COLUMN IF NOT
 * EXISTS), and a re-run simply repeats it and then records the version. Data migrations
 * (DEMO_DML) do get a real transaction: the change and its schema_migrations row commit
 * together or not at all.
 *
 * The runner holds ONE pooled connection for the whole run (the "held connection" pattern):
 * the named lock GET_LOCK() belongs to a session, so it must be taken, used and released on
 * the same connection.
 */
#include "demo_schema.h"

#include <stdio.h>
#include <string.h>

#define TABLE_OPTS " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"

const demo_migration demo_migrations[] = {
    {1, "create users", DEMO_DDL,
     {"CREATE TABLE IF NOT EXISTS users ("
      " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
      " email VARCHAR(255) NOT NULL,"
      " name VARCHAR(255) NOT NULL,"
      " created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,"
      " UNIQUE KEY uq_users_email (email))" TABLE_OPTS}},
    {2, "create bookings", DEMO_DDL,
     {"CREATE TABLE IF NOT EXISTS bookings ("
      " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
      " user_id BIGINT UNSIGNED NOT NULL,"
      " starts_at DATETIME NOT NULL,"
      " status VARCHAR(32) NOT NULL DEFAULT 'confirmed',"
      " created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,"
      " KEY ix_bookings_user (user_id),"
      " CONSTRAINT fk_bookings_user FOREIGN KEY (user_id) REFERENCES users (id))" TABLE_OPTS}},
    /* Migration 003 of the original project: profile images stored in the database. */
    {3, "users: profile image", DEMO_DDL,
     {"ALTER TABLE users"
      " ADD COLUMN IF NOT EXISTS profile_image MEDIUMBLOB NULL,"
      " ADD COLUMN IF NOT EXISTS profile_image_type VARCHAR(64) NULL"}},
    /* The messaging schema. */
    {4, "create conversations", DEMO_DDL,
     {"CREATE TABLE IF NOT EXISTS conversations ("
      " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
      " booking_id BIGINT UNSIGNED NOT NULL,"
      " created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,"
      " UNIQUE KEY uq_conversations_booking (booking_id),"
      " CONSTRAINT fk_conversations_booking FOREIGN KEY (booking_id)"
      "   REFERENCES bookings (id))" TABLE_OPTS}},
    {5, "create messages", DEMO_DDL,
     {"CREATE TABLE IF NOT EXISTS messages ("
      " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
      " conversation_id BIGINT UNSIGNED NOT NULL,"
      " sender_id BIGINT UNSIGNED NULL," /* NULL: a message from the system */
      " body TEXT NOT NULL,"
      " created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,"
      " KEY ix_messages_conversation (conversation_id, id),"
      " CONSTRAINT fk_messages_conversation FOREIGN KEY (conversation_id)"
      "   REFERENCES conversations (id),"
      " CONSTRAINT fk_messages_sender FOREIGN KEY (sender_id) REFERENCES users (id))" TABLE_OPTS}},
    {6, "conversations: last_message_at", DEMO_DDL,
     {"ALTER TABLE conversations ADD COLUMN IF NOT EXISTS last_message_at DATETIME NULL",
      "CREATE INDEX IF NOT EXISTS ix_conversations_last_message"
      " ON conversations (last_message_at)"}},
    {7, "backfill conversations.last_message_at", DEMO_DML,
     {"UPDATE conversations c SET c.last_message_at ="
      " (SELECT MAX(m.created_at) FROM messages m WHERE m.conversation_id = c.id)"
      " WHERE c.last_message_at IS NULL"}},
};
const unsigned demo_migration_count = sizeof demo_migrations / sizeof demo_migrations[0];

const demo_column demo_columns[] = {
    {"schema_migrations", "version", 0},  {"schema_migrations", "name", 0},
    {"schema_migrations", "applied_at", 0},
    {"users", "id", 1},                   {"users", "email", 1},
    {"users", "name", 1},                 {"users", "created_at", 1},
    {"bookings", "id", 2},                {"bookings", "user_id", 2},
    {"bookings", "starts_at", 2},         {"bookings", "status", 2},
    {"bookings", "created_at", 2},
    {"users", "profile_image", 3},        {"users", "profile_image_type", 3},
    {"conversations", "id", 4},           {"conversations", "booking_id", 4},
    {"conversations", "created_at", 4},
    {"messages", "id", 5},                {"messages", "conversation_id", 5},
    {"messages", "sender_id", 5},         {"messages", "body", 5},
    {"messages", "created_at", 5},
    {"conversations", "last_message_at", 6},
};
const unsigned demo_column_count = sizeof demo_columns / sizeof demo_columns[0];

unsigned demo_latest_version(void)
{
    return demo_migrations[demo_migration_count - 1].version;
}

/* ---- the runner --------------------------------------------------------------------------- */

static const char *const create_bookkeeping =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INT UNSIGNED NOT NULL PRIMARY KEY,"
    " name VARCHAR(255) NOT NULL,"
    " applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)" TABLE_OPTS;

/* Print what failed, with the library's detail, and return the code unchanged. */
static int report(int rc, const char *what, const demo_migration *m)
{
    if (m)
        fprintf(stderr, "migration %u (%s): %s: %s\n", m->version, m->name, what,
                dbpool_last_error());
    else
        fprintf(stderr, "migrations: %s: %s\n", what, dbpool_last_error());
    return rc;
}

static int is_applied(dbpool_conn *c, unsigned version, int *applied)
{
    dbpool_result *r;
    dbpool_param p = dbpool_param_uint64(version);
    int rc = dbpool_conn_query(c, &r, "SELECT 1 FROM schema_migrations WHERE version = ?", &p, 1);
    if (rc != 0)
        return rc;
    *applied = dbpool_result_rows(r) > 0;
    dbpool_result_free(r);
    return 0;
}

static int record(dbpool_conn *c, const demo_migration *m)
{
    dbpool_param p[2] = {dbpool_param_uint64(m->version), dbpool_param_text(m->name)};
    /* IGNORE: a row left by an earlier, interrupted run is not an error. */
    return dbpool_conn_query(c, NULL, "INSERT IGNORE INTO schema_migrations (version, name) "
                             "VALUES (?, ?)", p, 2);
}

static int run_statements(dbpool_conn *c, const demo_migration *m)
{
    for (unsigned i = 0; i < DEMO_MAX_SQL && m->sql[i]; i++) {
        /* Plain text protocol: one-off DDL gains nothing from being prepared and cached. */
        int rc = dbpool_conn_exec(c, m->sql[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int apply_one(dbpool_conn *c, const demo_migration *m)
{
    int rc;
    if (m->kind == DEMO_DDL) {
        /* Each statement commits by itself; the record follows. If we die in between, the
         * next run repeats the (idempotent) statements and records the version then. */
        if ((rc = run_statements(c, m)) != 0)
            return report(rc, "statement failed", m);
        if ((rc = record(c, m)) != 0)
            return report(rc, "recording the version failed", m);
        return 0;
    }
    /* Data migration: change and record commit together. */
    if ((rc = dbpool_begin(c)) != 0)
        return report(rc, "BEGIN failed", m);
    if ((rc = run_statements(c, m)) != 0 || (rc = record(c, m)) != 0) {
        report(rc, "statement failed, rolled back", m);
        dbpool_rollback(c);
        return rc;
    }
    if ((rc = dbpool_commit(c)) != 0)
        return report(rc, "COMMIT failed", m);
    return 0;
}

/* GET_LOCK waits up to 60 s for another process's migration run to finish. */
static int take_lock(dbpool_conn *c)
{
    dbpool_result *r;
    int64_t got = 0;
    int rc = dbpool_conn_query(c, &r, "SELECT DATABASE() IS NULL", NULL, 0);
    if (rc != 0)
        return report(rc, "SELECT DATABASE() failed", NULL);
    dbpool_result_int64(r, 0, 0, &got);
    dbpool_result_free(r);
    if (got) {
        fprintf(stderr, "migrations: no database selected: set DB_NAME\n");
        return DBPOOL_ECONFIG;
    }
    rc = dbpool_conn_query(c, &r, "SELECT GET_LOCK(CONCAT(DATABASE(), '.schema_migrations'), 60)",
                           NULL, 0);
    if (rc != 0)
        return report(rc, "GET_LOCK failed", NULL);
    got = 0;
    dbpool_result_int64(r, 0, 0, &got);
    dbpool_result_free(r);
    if (got != 1) {
        fprintf(stderr, "migrations: another process has been migrating this database for "
                        "60 s; try again later\n");
        return DBPOOL_ETIMEDOUT;
    }
    return 0;
}

static int migrate_locked(dbpool_conn *c, unsigned target, int verbose, demo_migrate_report *out)
{
    int rc = dbpool_conn_exec(c, create_bookkeeping);
    if (rc != 0)
        return report(rc, "creating schema_migrations failed", NULL);
    for (unsigned i = 0; i < demo_migration_count && demo_migrations[i].version <= target; i++) {
        const demo_migration *m = &demo_migrations[i];
        int applied = 0;
        if ((rc = is_applied(c, m->version, &applied)) != 0)
            return report(rc, "reading schema_migrations failed", m);
        if (applied) {
            out->skipped++;
            continue;
        }
        if ((rc = apply_one(c, m)) != 0)
            return rc;
        if (out->napplied < sizeof out->applied / sizeof out->applied[0])
            out->applied[out->napplied++] = m->version;
        if (verbose)
            printf("  applied %03u %s\n", m->version, m->name);
    }
    return 0;
}

int demo_migrate(unsigned target, int verbose, demo_migrate_report *out)
{
    dbpool_conn *c;
    memset(out, 0, sizeof *out);
    int rc = dbpool_get(&c);
    if (rc != 0)
        return report(rc, "no connection", NULL);
    if ((rc = take_lock(c)) == 0) {
        rc = migrate_locked(c, target, verbose, out);
        /* Released explicitly; dbpool_release() with DB_RESET_ON_RELEASE=1 (the default)
         * would also free it, since a reset ends every named lock of the session. */
        dbpool_conn_exec(c, "DO RELEASE_LOCK(CONCAT(DATABASE(), '.schema_migrations'))");
    }
    dbpool_release(c);
    return rc;
}
