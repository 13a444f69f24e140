/* consumer.c - a program built against the INSTALLED libdbpool (pkg-config or find_package).
 * Needs no server: it only uses calls that work before the pool starts. */
#include <dbpool.h>

#include <stdio.h>
#include <string.h>

#ifndef EXPECTED_VERSION
#error "build with -DEXPECTED_VERSION=\"x.y.z\""
#endif

int main(void)
{
    dbpool_stats st;
    int rc;
    if (strcmp(DBPOOL_VERSION_STRING, EXPECTED_VERSION) != 0) {
        fprintf(stderr, "header version %s, expected %s\n", DBPOOL_VERSION_STRING,
                EXPECTED_VERSION);
        return 1;
    }
    const char *text = dbpool_strerror(DBPOOL_ETIMEDOUT);
    if (!text || !*text || !dbpool_strerror(-9999) || !dbpool_last_error()) {
        fprintf(stderr, "dbpool_strerror/dbpool_last_error returned NULL or empty\n");
        return 1;
    }
    memset(&st, 0xff, sizeof st);
    rc = dbpool_stats_get(&st);
    if (rc != 0) {
        fprintf(stderr, "dbpool_stats_get: %d %s (%s)\n", rc, dbpool_strerror(rc),
                dbpool_last_error());
        return 1;
    }
    if (st.open != 0 || st.in_use != 0) {
        fprintf(stderr, "stats before the pool started: open %u in_use %u\n", st.open, st.in_use);
        return 1;
    }
    dbpool_close(); /* idempotent, nothing to close */
    printf("libdbpool %s (0x%06x): DBPOOL_ETIMEDOUT = \"%s\", limit %u\n", DBPOOL_VERSION_STRING,
           (unsigned)DBPOOL_VERSION_NUM, text, st.limit);
    return 0;
}
