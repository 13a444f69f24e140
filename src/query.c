/* query.c - TEMPORARY STUB: replaced by the real implementation. */
#include "dbpool_int.h"

void dbpool__stmt_cache_clear(struct dbpool_conn *c, bool handle_dead) {}
