/* budget.c - host-wide connection budget. TEMPORARY STUB: replaced by the real implementation. */
#include "dbpool_int.h"

int dbpool__budget_open(dbpool__budget **out, const dbpool__options *o)
{
    *out = NULL;
    return dbpool__fail(DBPOOL_ECONFIG, "DB_HOST_BUDGET is not implemented yet");
}
int dbpool__budget_acquire(dbpool__budget *b, uint64_t deadline_ns, const int *cancel, int *slot)
{
    return DBPOOL_ESYS;
}
void dbpool__budget_release(dbpool__budget *b, int slot) {}
int dbpool__budget_usage(dbpool__budget *b, unsigned *used, unsigned *held, long *pids, size_t cap, size_t *n)
{
    *used = *held = 0;
    *n = 0;
    return 0;
}
void dbpool__budget_close(dbpool__budget *b) {}
void dbpool__budget_forget_in_child(dbpool__budget *b) {}
