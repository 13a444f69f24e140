/*
 * query.c - statements with bound parameters through the prepared-statement protocol, results
 * owned by the caller, the per-connection statement cache, transactions.
 *
 * Ownership: c->stmt_cache belongs to whoever holds the slot (the borrower, or the pool thread
 * resetting or closing it); nothing here takes the pool lock.
 *
 * Never re-run: the only statement sent twice is one the server refused with ER_NEED_REPREPARE
 * (1615), which it reports before executing anything. A connection that fails mid-statement is
 * marked for discard and the statement is not retried.
 *
 * After an error on a dead connection nothing more is sent on it: its cached statements are
 * freed at once only when Connector/C has already closed the socket (mysql_stmt_close is then
 * local); otherwise they are freed after mysql_close() when the pool closes the connection.
 *
 * A cached statement also keeps what a call would otherwise redo: its result columns (names
 * and fetch buffers, bound once) and copies of its numeric parameters (bound once, values
 * copied per call); all of it goes with the statement.
 */
#include "dbpool_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errmsg.h>
#include <mysqld_error.h>

#define CACHE_MAX 32       /* prepared statements kept per connection */
#define SCRATCH 256        /* first-try fetch buffer per column; longer values are fetched again */
#define SQL_SHOWN 100      /* bytes of SQL quoted in error messages */
#define ROW_TEXT_MAX 65536 /* row text a result reserves up front at most; more grows */
#define NULL_OFF SIZE_MAX

_Static_assert(sizeof(unsigned long) >= sizeof(size_t), "MYSQL_BIND lengths hold a size_t");

/* Test hook (tests/unit/test_query_unit.c): a result from literal cells, values[i] NULL for SQL
 * NULL, lens NULL for NUL-terminated values. */
DBPOOL__HIDDEN dbpool_result *dbpool__result_make(size_t rows, unsigned cols,
                                                  const char *const *names,
                                                  const char *const *values, const size_t *lens);

/* ---- errors ------------------------------------------------------------------------------ */

static int sql_shown(const char *sql) { return (int)strnlen(sql, SQL_SHOWN); }
static const char *sql_more(const char *sql)
{
    return strnlen(sql, SQL_SHOWN + 1) > SQL_SHOWN ? "..." : "";
}

/* dbpool__fail_mysql for a statement handle: errno, SQLSTATE and message of the statement. */
static int fail_stmt(int code, MYSQL_STMT *st, const char *what, const char *sql)
{
    unsigned e = mysql_stmt_errno(st);
    return dbpool__fail_server(code, e, "%s \"%.*s%s\": server error %u (SQLSTATE %s): %s", what,
                               sql_shown(sql), sql, sql_more(sql), e, mysql_stmt_sqlstate(st),
                               mysql_stmt_error(st));
}

/* A copy of the thread's error, to survive calls (rollback, release) that may overwrite it. */
typedef dbpool__saved_err saved_err;

static void err_save(saved_err *s, int code)
{
    s->code = code;
    s->server_errno = dbpool_last_server_errno();
    snprintf(s->text, sizeof s->text, "%s", dbpool_last_error());
}

/* The saved text without its "DBPOOL_EXXX: " prefix (dbpool__fail adds one). */
static const char *err_detail(const saved_err *s)
{
    const char *name = dbpool_errname(s->code);
    size_t n = strlen(name);
    if (strncmp(s->text, name, n) == 0 && s->text[n] == ':' && s->text[n + 1] == ' ')
        return s->text + n + 2;
    return s->text;
}

static int err_restore(const saved_err *s)
{
    return dbpool__fail_server(s->code, s->server_errno, "%s", err_detail(s));
}

/* After an error on c's handle: is the session gone? The rule of dbpool__conn_note_error (dead
 * errno class, or Connector/C already closed the socket) applied to this error alone (that
 * function also answers "dead" for an earlier discard), plus the statement's own errno, which
 * Connector/C does not always copy to the handle. Marks the connection for discard. */
static bool conn_lost(struct dbpool_conn *c, unsigned stmt_errno)
{
    bool dead = dbpool__errclass(stmt_errno) == DBPOOL__ERR_DEAD ||
                dbpool__errclass(mysql_errno(c->mysql)) == DBPOOL__ERR_DEAD ||
                mysql_get_socket(c->mysql) == MARIADB_INVALID_SOCKET;
    if (dead)
        c->discard = true;
    return dead;
}

static void after_lost(struct dbpool_conn *c)
{
    if (mysql_get_socket(c->mysql) == MARIADB_INVALID_SOCKET)
        dbpool__stmt_cache_clear(c, true);
}

/* ---- results ----------------------------------------------------------------------------- */

struct cell {
    size_t off; /* into data; NULL_OFF for SQL NULL */
    size_t len;
};

/* One allocation holds this header, the cells and the text reserved up front; text that
 * outgrows it moves to an allocation of its own (data_own). */
struct dbpool_result {
    size_t rows;
    unsigned cols;
    unsigned warnings;
    uint64_t affected;
    uint64_t insert_id;
    struct cell *cells; /* cols column names, then rows * cols values, row-major */
    char *data;         /* every name and value, each followed by a NUL */
    size_t used, cap;
    bool data_own;
};

/* A result of rows x cols cells with room for `text` bytes of text; NULL if out of memory.
 * The cells are left for the caller to write, every one of them. */
static dbpool_result *result_alloc(size_t rows, unsigned cols, size_t text)
{
    if (cols && rows >= (SIZE_MAX - sizeof(dbpool_result)) / sizeof(struct cell) / cols)
        return NULL;
    size_t ncells = (rows + 1) * cols, head = sizeof(dbpool_result) + ncells * sizeof(struct cell);
    if (text > SIZE_MAX - head)
        return NULL;
    dbpool_result *r = malloc(head + text);
    if (!r)
        return NULL;
    *r = (dbpool_result){.rows = rows, .cols = cols, .cap = text};
    r->cells = (struct cell *)(r + 1);
    r->data = (char *)(r->cells + ncells);
    return r;
}

/* Room for `need` bytes of text. The text reserved in the block cannot grow in place: the
 * first growth copies it out. */
static bool arena_grow(dbpool_result *r, size_t need)
{
    size_t cap = r->cap > 512 ? r->cap : 512;
    while (cap < need)
        cap *= 2;
    char *d = r->data_own ? realloc(r->data, cap) : malloc(cap);
    if (!d)
        return false;
    if (!r->data_own)
        memcpy(d, r->data, r->used);
    r->data = d;
    r->cap = cap;
    r->data_own = true;
    return true;
}

/* Room for len bytes and a NUL at the end of the arena; the offset, or NULL_OFF. */
static inline size_t arena_reserve(dbpool_result *r, size_t len)
{
    if (len > SIZE_MAX / 2 - r->used)
        return NULL_OFF;
    size_t need = r->used + len + 1;
    if (need > r->cap && !arena_grow(r, need))
        return NULL_OFF;
    size_t off = r->used;
    r->data[off + len] = '\0';
    r->used = need;
    return off;
}

/* Store a copy of p[0..len) (p NULL: SQL NULL) as cell idx. */
static inline int put_cell(dbpool_result *r, size_t idx, const void *p, size_t len)
{
    struct cell *x = &r->cells[idx];
    x->off = NULL_OFF;
    x->len = 0;
    if (!p)
        return 0;
    size_t off = arena_reserve(r, len);
    if (off == NULL_OFF)
        return dbpool__fail(DBPOOL_ENOMEM, "result: no memory for a value of %zu bytes", len);
    memcpy(r->data + off, p, len);
    x->off = off;
    x->len = len;
    return 0;
}

void dbpool_result_free(dbpool_result *r)
{
    if (!r)
        return;
    if (r->data_own)
        free(r->data);
    free(r);
}

dbpool_result *dbpool__result_make(size_t rows, unsigned cols, const char *const *names,
                                   const char *const *values, const size_t *lens)
{
    dbpool_result *r = result_alloc(rows, cols, 64); /* small results fit, larger ones grow */
    if (!r)
        return NULL;
    for (unsigned j = 0; j < cols; j++)
        if (put_cell(r, j, names[j], strlen(names[j])) != 0)
            goto fail;
    for (size_t i = 0; i < rows * cols; i++) {
        const char *v = values[i];
        if (put_cell(r, cols + i, v, v ? (lens ? lens[i] : strlen(v)) : 0) != 0)
            goto fail;
    }
    return r;
fail:
    dbpool_result_free(r);
    return NULL;
}

/* ---- accessors ----------------------------------------------------------------------------- */

static const struct cell *cell_at(const dbpool_result *r, size_t row, unsigned col)
{
    if (!r || row >= r->rows || col >= r->cols)
        return NULL;
    return &r->cells[(row + 1) * r->cols + col];
}

static int range_fail(const dbpool_result *r, size_t row, unsigned col)
{
    if (!r)
        return dbpool__fail(DBPOOL_ERANGE, "result is NULL");
    return dbpool__fail(DBPOOL_ERANGE, "row %zu, column %u out of range (%zu rows, %u columns)",
                        row, col, r->rows, r->cols);
}

size_t dbpool_result_rows(const dbpool_result *r) { return r ? r->rows : 0; }
unsigned dbpool_result_columns(const dbpool_result *r) { return r ? r->cols : 0; }
uint64_t dbpool_result_affected_rows(const dbpool_result *r) { return r ? r->affected : 0; }
uint64_t dbpool_result_insert_id(const dbpool_result *r) { return r ? r->insert_id : 0; }
unsigned dbpool_result_warnings(const dbpool_result *r) { return r ? r->warnings : 0; }

const char *dbpool_result_column_name(const dbpool_result *r, unsigned col)
{
    if (!r || col >= r->cols) {
        dbpool__fail(DBPOOL_ERANGE, "column %u out of range (%u columns)", col, r ? r->cols : 0);
        return NULL;
    }
    return r->data + r->cells[col].off;
}

int dbpool_result_is_null(const dbpool_result *r, size_t row, unsigned col)
{
    dbpool__clear_error();
    const struct cell *x = cell_at(r, row, col);
    if (!x)
        return range_fail(r, row, col);
    return x->off == NULL_OFF;
}

const char *dbpool_result_text(const dbpool_result *r, size_t row, unsigned col, size_t *len)
{
    const struct cell *x = cell_at(r, row, col);
    if (len)
        *len = 0;
    if (!x) {
        range_fail(r, row, col);
        return NULL;
    }
    if (x->off == NULL_OFF)
        return NULL;
    if (len)
        *len = x->len;
    return r->data + x->off;
}

const void *dbpool_result_bytes(const dbpool_result *r, size_t row, unsigned col, size_t *len)
{
    return dbpool_result_text(r, row, col, len);
}

static int convert_fail(const char *v, size_t row, unsigned col, const char *what)
{
    return dbpool__fail(DBPOOL_ECONVERT, "row %zu, column %u: \"%.40s%s\" is not %s", row, col, v,
                        strnlen(v, 41) > 40 ? "..." : "", what);
}

/* The cell as a candidate number: present, not NULL, no embedded NUL, and starting with a
 * digit or '.', after an optional sign ('-' only when `minus`): strto* would skip leading
 * blanks, and accept "-1" as an unsigned number, neither of which is "entirely a number".
 * *v is set on success only (callers initialise it: GCC -O3 warns otherwise). */
static int number_text(const dbpool_result *r, size_t row, unsigned col, const void *out,
                       bool minus, const char *what, const char **v)
{
    dbpool__clear_error();
    const struct cell *x = cell_at(r, row, col);
    if (!x)
        return range_fail(r, row, col);
    if (!out)
        return dbpool__fail(DBPOOL_EINVAL, "out is NULL");
    if (x->off == NULL_OFF)
        return dbpool__fail(DBPOOL_ECONVERT, "row %zu, column %u is SQL NULL, not %s", row, col,
                            what);
    const char *s = r->data + x->off, *p = s;
    if (*p == '+' || (minus && *p == '-'))
        p++;
    if (x->len == 0 || strlen(s) != x->len || !((*p >= '0' && *p <= '9') || *p == '.'))
        return convert_fail(s, row, col, what);
    *v = s;
    return 0;
}

/* The value of the decimal digits at s (one or more, and nothing else up to the NUL) when it
 * is at most max. */
static bool digits_value(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t x = 0;
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (d > 9 || x > (max - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

int dbpool_result_int64(const dbpool_result *r, size_t row, unsigned col, int64_t *out)
{
    const char *v = NULL;
    int rc = number_text(r, row, col, out, true, "a 64-bit integer", &v);
    if (rc != 0)
        return rc;
    bool neg = *v == '-';
    uint64_t x;
    if (!digits_value(v + (neg || *v == '+'), neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX, &x))
        return convert_fail(v, row, col, "a 64-bit integer (or out of range)");
    *out = !neg ? (int64_t)x : x == 0 ? 0 : -(int64_t)(x - 1) - 1;
    return 0;
}

int dbpool_result_uint64(const dbpool_result *r, size_t row, unsigned col, uint64_t *out)
{
    const char *v = NULL;
    int rc = number_text(r, row, col, out, false, "an unsigned 64-bit integer", &v);
    if (rc != 0)
        return rc;
    uint64_t x;
    if (!digits_value(v + (*v == '+'), UINT64_MAX, &x))
        return convert_fail(v, row, col, "an unsigned 64-bit integer (or out of range)");
    *out = x;
    return 0;
}

int dbpool_result_double(const dbpool_result *r, size_t row, unsigned col, double *out)
{
    const char *v = NULL;
    int rc = number_text(r, row, col, out, true, "a number", &v);
    if (rc != 0)
        return rc;
    /* Decimal notation only: strtod would also take "inf", "nan" and hex. */
    if (v[strspn(v, "0123456789+-.eE")] != '\0')
        return convert_fail(v, row, col, "a decimal number");
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    /* ERANGE with a subnormal result keeps a usable value; overflow and underflow to 0 do not. */
    if (*end != '\0' || !isfinite(x) || (errno == ERANGE && x == 0.0))
        return convert_fail(v, row, col, "a double (or out of range)");
    *out = x;
    return 0;
}

/* ---- statement cache ---------------------------------------------------------------------- */

/* A statement's result columns as Connector/C last described them, and the buffers bound to
 * them, one block: names, fetch binding (binds, lengths, flags, SCRATCH bytes per column). */
struct shape {
    unsigned cols;
    size_t names_len;        /* bytes of `names`: each name followed by a NUL */
    size_t row_text;         /* text to reserve per row in the next result (learned) */
    struct cell *name_cells; /* where each name is in `names` */
    char *names;
    MYSQL_BIND *b;
    unsigned long *len;
    my_bool *nul, *err;
    char *scratch;
};

/* shape and pvals are allocations of their own: Connector/C holds pointers into them, and
 * entries move within the cache's array. */
struct centry {
    MYSQL_STMT *st;
    char *sql;
    size_t len;
    uint64_t hash;
    uint64_t used;       /* tick of the last use: the smallest is evicted */
    struct shape *shape; /* bound to st's results; NULL until a result set is read */
    bool multi;          /* has returned several result sets: shape is redone every time */
    dbpool_param *pvals; /* copies of the parameters, where they are bound when pbound */
    bool pbound;
};

struct scache {
    unsigned n;
    uint64_t tick;
    struct centry e[CACHE_MAX];
};

/* A filter for cache_find, 8 bytes per step (a partial last step reads the 8 bytes that end
 * the text); a match is confirmed with memcmp. */
static uint64_t sql_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ n, w = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    if (n >= 8 && i < n)
        memcpy(&w, s + n - 8, 8);
    else
        for (w = 0; i < n; i++)
            w = w << 8 | (unsigned char)s[i];
    h = (h ^ w) * 0x100000001b3ull;
    return h ^ (h >> 32);
}

static void entry_free(struct centry *e)
{
    if (e->st)
        mysql_stmt_close(e->st); /* COM_STMT_CLOSE, or only local once the handle is gone */
    free(e->sql);
    free(e->shape);
    free(e->pvals);
    memset(e, 0, sizeof *e);
}

static void cache_remove(struct scache *k, struct centry *e)
{
    entry_free(e);
    *e = k->e[--k->n];
}

void dbpool__stmt_cache_clear(struct dbpool_conn *c, bool handle_dead)
{
    /* With handle_dead, c->mysql may already be freed: it is not touched, and mysql_close() has
     * detached every statement (stmt->mysql == NULL), so closing them frees memory only. */
    (void)handle_dead;
    struct scache *k = c->stmt_cache;
    if (!k)
        return;
    for (unsigned i = 0; i < k->n; i++)
        entry_free(&k->e[i]);
    free(k);
    c->stmt_cache = NULL;
}

static struct centry *cache_find(struct scache *k, const char *sql, size_t len, uint64_t h)
{
    for (unsigned i = 0; i < k->n; i++) {
        struct centry *e = &k->e[i];
        if (e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0)
            return e;
    }
    return NULL;
}

/* A free entry, evicting the least recently used one when full. */
static struct centry *cache_slot(struct scache *k)
{
    if (k->n < CACHE_MAX)
        return &k->e[k->n++];
    struct centry *lru = &k->e[0];
    for (unsigned i = 1; i < k->n; i++)
        if (k->e[i].used < lru->used)
            lru = &k->e[i];
    entry_free(lru);
    return lru;
}

/* Close a statement, removing it from the cache if it is there. */
static void stmt_drop(struct dbpool_conn *c, MYSQL_STMT *st)
{
    struct scache *k = c->stmt_cache;
    for (unsigned i = 0; k && i < k->n; i++)
        if (k->e[i].st == st) {
            cache_remove(k, &k->e[i]);
            return;
        }
    mysql_stmt_close(st);
}

/* Record a failed statement call; the statement is dropped (closing it also discards whatever
 * the server still had to send), or on a dead connection nothing more is sent. */
/* A deadlock or lock wait timeout on c, for dbpool_transaction's retry decision: kept on the
 * connection, because the thread's last error is whatever the body did last. */
static void note_lock_error(struct dbpool_conn *c, unsigned e)
{
    if (e == ER_LOCK_DEADLOCK || e == ER_LOCK_WAIT_TIMEOUT)
        c->lock_errno = e;
}

static int stmt_failed(struct dbpool_conn *c, MYSQL_STMT *st, const char *what, const char *sql)
{
    note_lock_error(c, mysql_stmt_errno(st));
    int code = conn_lost(c, mysql_stmt_errno(st)) ? DBPOOL_ECONNLOST : DBPOOL_EQUERY;
    if (mysql_stmt_errno(st) == CR_NEW_STMT_METADATA) {
        dbpool__fail_server(code, CR_NEW_STMT_METADATA, "%s \"%.*s%s\": the result columns "
                            "changed since the statement was prepared (table altered?); it ran "
                            "but its result is lost, and it was dropped from the cache: run it "
                            "again", what, sql_shown(sql), sql, sql_more(sql));
    } else {
        fail_stmt(code, st, what, sql);
    }
    if (code == DBPOOL_ECONNLOST)
        after_lost(c); /* `st` is cached: freed with the cache */
    else
        stmt_drop(c, st);
    return code;
}

static int prepare(struct dbpool_conn *c, const char *sql, size_t len, MYSQL_STMT **out)
{
    MYSQL_STMT *st = mysql_stmt_init(c->mysql);
    if (!st)
        return dbpool__fail_mysql(DBPOOL_ENOMEM, c->mysql, "allocating a statement");
    if (mysql_stmt_prepare(st, sql, (unsigned long)len) != 0) {
        int code = conn_lost(c, mysql_stmt_errno(st)) ? DBPOOL_ECONNLOST : DBPOOL_EQUERY;
        fail_stmt(code, st, "preparing", sql);
        mysql_stmt_close(st); /* never prepared: nothing is sent */
        if (code == DBPOOL_ECONNLOST)
            after_lost(c);
        return code;
    }
    *out = st;
    return 0;
}

/* The cache entry of the prepared statement for `sql` on c: found, or prepared and added. The
 * pointer is valid until the cache changes (an entry removed or added). */
static int stmt_for(struct dbpool_conn *c, const char *sql, struct centry **out)
{
    struct scache *k = c->stmt_cache;
    if (!k && !(k = c->stmt_cache = calloc(1, sizeof *k)))
        return dbpool__fail(DBPOOL_ENOMEM, "allocating the statement cache");
    size_t len = strlen(sql);
    uint64_t h = sql_hash(sql, len);
    struct centry *e = cache_find(k, sql, len, h);
    if (e && e->st->mysql == c->mysql) {
        e->used = ++k->tick;
        *out = e;
        return 0;
    }
    if (e) /* detached by a reset or change_user on the raw handle: only freed locally */
        cache_remove(k, e);
    MYSQL_STMT *st = NULL;
    char *copy = malloc(len + 1);
    if (!copy)
        return dbpool__fail(DBPOOL_ENOMEM, "copying a statement of %zu bytes", len);
    int rc = prepare(c, sql, len, &st);
    if (rc != 0) {
        free(copy);
        return rc;
    }
    memcpy(copy, sql, len + 1);
    e = cache_slot(k);
    *e = (struct centry){.st = st, .sql = copy, .len = len, .hash = h, .used = ++k->tick};
    *out = e;
    return 0;
}

/* ---- parameters ---------------------------------------------------------------------------- */

static int bind_one(MYSQL_BIND *b, const dbpool_param *p, size_t i)
{
    switch (p->type) {
    case DBPOOL_TYPE_NULL:
        b->buffer_type = MYSQL_TYPE_NULL;
        return 0;
    case DBPOOL_TYPE_INT64:
    case DBPOOL_TYPE_UINT64:
        b->buffer_type = MYSQL_TYPE_LONGLONG;
        b->buffer = (void *)&p->v.i;
        b->is_unsigned = p->type == DBPOOL_TYPE_UINT64;
        return 0;
    case DBPOOL_TYPE_DOUBLE:
        b->buffer_type = MYSQL_TYPE_DOUBLE;
        b->buffer = (void *)&p->v.d;
        return 0;
    case DBPOOL_TYPE_TEXT:
    case DBPOOL_TYPE_BLOB:
        /* A NULL pointer is sent as SQL NULL by Connector/C. */
        b->buffer_type = p->type == DBPOOL_TYPE_TEXT ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
        b->buffer = (void *)p->v.s.ptr;
        b->buffer_length = (unsigned long)p->v.s.len;
        return 0;
    default:
        return dbpool__fail(DBPOOL_EINVAL, "parameter %zu has an unknown type (%d)", i + 1,
                            (int)p->type);
    }
}

/* Numbers and NULLs are bound where e->pvals holds copies of them: while later calls pass the
 * same types, only the values are copied (Connector/C reads them at each execution). Text and
 * blobs are bound where the caller has them, on every call. */
static bool params_copyable(const dbpool_param *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i].type != DBPOOL_TYPE_NULL && p[i].type != DBPOOL_TYPE_INT64 &&
            p[i].type != DBPOOL_TYPE_UINT64 && p[i].type != DBPOOL_TYPE_DOUBLE)
            return false;
    return true;
}

static bool params_reuse(struct centry *e, const dbpool_param *p, size_t n)
{
    if (!e->pbound)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i].type != e->pvals[i].type)
            return false;
    memcpy(e->pvals, p, n * sizeof *p);
    return true;
}

static int bind_params(struct centry *e, const dbpool_param *p, size_t n, const char *sql)
{
    unsigned long want = mysql_stmt_param_count(e->st);
    if (want != n)
        return dbpool__fail(DBPOOL_EINVAL, "\"%.*s%s\" has %lu placeholders but %zu parameters "
                            "were given", sql_shown(sql), sql, sql_more(sql), want, n);
    if (n == 0 || params_reuse(e, p, n))
        return 0;
    e->pbound = false;
    if (params_copyable(p, n) && (e->pvals || (e->pvals = malloc(n * sizeof *p)))) {
        memcpy(e->pvals, p, n * sizeof *p);
        p = e->pvals;
    }
    MYSQL_BIND local[16], *b = n <= 16 ? local : calloc(n, sizeof *b);
    if (!b)
        return dbpool__fail(DBPOOL_ENOMEM, "binding %zu parameters", n);
    memset(b, 0, n * sizeof *b);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = bind_one(&b[i], &p[i], i);
    /* Connector/C copies the binds; the values are read from p during mysql_stmt_execute. */
    if (rc == 0 && mysql_stmt_bind_param(e->st, b))
        rc = fail_stmt(DBPOOL_EINVAL, e->st, "binding the parameters of", sql);
    e->pbound = rc == 0 && p == e->pvals;
    if (b != local)
        free(b);
    return rc;
}

/* Prepare (or find) and execute; *out is the cache entry of the executed statement. */
static int execute(struct dbpool_conn *c, const char *sql, const dbpool_param *p, size_t n,
                   struct centry **out)
{
    for (int attempt = 0;; attempt++) {
        struct centry *e = NULL;
        int rc = stmt_for(c, sql, &e);
        if (rc == 0)
            rc = bind_params(e, p, n, sql);
        if (rc != 0)
            return rc;
        if (mysql_stmt_execute(e->st) == 0) {
            *out = e;
            return 0;
        }
        /* 1615: the server did not execute; prepare again, once. */
        if (mysql_stmt_errno(e->st) == ER_NEED_REPREPARE && attempt == 0) {
            stmt_drop(c, e->st);
            continue;
        }
        return stmt_failed(c, e->st, "executing", sql);
    }
}

/* ---- reading results ------------------------------------------------------------------------ */

static unsigned name_len(const MYSQL_FIELD *f) { return f->name ? f->name_length : 0; }

/* A zeroed shape of n columns with room for names_len bytes of names, its buffers laid out for
 * binding (every type as text: Connector/C converts numbers, dates and decimals). */
static struct shape *shape_alloc(unsigned n, size_t names_len)
{
    size_t per = sizeof(MYSQL_BIND) + sizeof(struct cell) + sizeof(unsigned long) +
                 2 * sizeof(my_bool) + SCRATCH;
    struct shape *s = calloc(1, sizeof *s + n * per + names_len);
    if (!s)
        return NULL;
    *s = (struct shape){.cols = n, .names_len = names_len, .row_text = 32 * (size_t)n};
    s->b = (MYSQL_BIND *)(s + 1);
    s->name_cells = (struct cell *)(s->b + n);
    s->len = (unsigned long *)(s->name_cells + n);
    s->nul = (my_bool *)(s->len + n);
    s->err = s->nul + n;
    s->scratch = (char *)(s->err + n);
    s->names = s->scratch + (size_t)n * SCRATCH;
    for (unsigned j = 0; j < n; j++) {
        s->b[j].buffer_type = MYSQL_TYPE_STRING;
        s->b[j].buffer = s->scratch + (size_t)j * SCRATCH;
        s->b[j].buffer_length = SCRATCH;
        s->b[j].length = &s->len[j];
        s->b[j].is_null = &s->nul[j];
        s->b[j].error = &s->err[j];
    }
    return s;
}

/* The shape of st's current result set: its column names read, its buffers bound. */
static int shape_new(MYSQL_STMT *st, unsigned n, const char *sql, struct shape **out)
{
    MYSQL_RES *meta = mysql_stmt_result_metadata(st);
    if (!meta)
        return fail_stmt(DBPOOL_EQUERY, st, "reading the column names of", sql);
    size_t names_len = 0;
    for (unsigned j = 0; j < n; j++)
        names_len += name_len(mysql_fetch_field_direct(meta, j)) + 1;
    struct shape *s = shape_alloc(n, names_len);
    if (!s) {
        mysql_free_result(meta);
        return dbpool__fail(DBPOOL_ENOMEM, "fetch buffers for %u columns", n);
    }
    size_t off = 0;
    for (unsigned j = 0; j < n; j++) {
        const MYSQL_FIELD *f = mysql_fetch_field_direct(meta, j);
        unsigned len = name_len(f);
        memcpy(s->names + off, f->name ? f->name : "", len); /* the NUL is there (calloc) */
        s->name_cells[j] = (struct cell){.off = off, .len = len};
        off += len + 1;
    }
    mysql_free_result(meta);
    if (mysql_stmt_bind_result(st, s->b)) {
        free(s);
        return fail_stmt(DBPOOL_EQUERY, st, "binding the result of", sql);
    }
    *out = s;
    return 0;
}

/* The shape of e's current result set. Connector/C keeps a statement's result binding across
 * executions while it returns one result set of the same columns (the names it reports do not
 * change then either, types may: every column is fetched as text); it replaces the binding for
 * each set of a statement that returns several, and says so in bind_result_done. */
static int shape_for(struct centry *e, unsigned ncols, const char *sql, struct shape **out)
{
    struct shape *s = e->shape;
    if (s && s->cols == ncols && !e->multi && e->st->bind_result_done) {
        *out = s;
        return 0;
    }
    free(s);
    e->shape = NULL;
    int rc = shape_new(e->st, ncols, sql, &e->shape);
    *out = e->shape;
    return rc;
}

/* Text to reserve for a result of `rows` rows: the names, and rows as wide as the widest of
 * the previous result (a little more), up to ROW_TEXT_MAX. */
static size_t text_guess(const struct shape *s, size_t rows)
{
    size_t t = rows > ROW_TEXT_MAX / s->row_text ? ROW_TEXT_MAX : rows * s->row_text;
    return s->names_len + t;
}

/* A value longer than its scratch buffer: fetch it whole, straight into the arena. */
static int fetch_long(MYSQL_STMT *st, dbpool_result *r, unsigned col, size_t len, size_t *off,
                      const char *sql)
{
    if ((*off = arena_reserve(r, len)) == NULL_OFF)
        return dbpool__fail(DBPOOL_ENOMEM, "result: no memory for a value of %zu bytes", len);
    unsigned long got = 0;
    my_bool nul = 0, err = 0;
    MYSQL_BIND b;
    memset(&b, 0, sizeof b);
    b.buffer_type = MYSQL_TYPE_STRING;
    b.buffer = r->data + *off;
    b.buffer_length = (unsigned long)len + 1;
    b.length = &got;
    b.is_null = &nul;
    b.error = &err;
    if (mysql_stmt_fetch_column(st, &b, col, 0) != 0)
        return fail_stmt(DBPOOL_EQUERY, st, "fetching a long value of", sql);
    if (got != len || err || nul)
        return dbpool__fail(DBPOOL_EQUERY, "fetching a long value of \"%.*s%s\": length changed "
                            "from %zu to %lu", sql_shown(sql), sql, sql_more(sql), len, got);
    r->data[*off + len] = '\0';
    return 0;
}

static int store_row(MYSQL_STMT *st, dbpool_result *r, const struct shape *s, size_t row,
                     const char *sql)
{
    for (unsigned j = 0; j < r->cols; j++) {
        size_t idx = (row + 1) * r->cols + j, len = s->len[j], off;
        int rc;
        if (s->nul[j])
            rc = put_cell(r, idx, NULL, 0);
        else if (len <= SCRATCH && !s->err[j])
            rc = put_cell(r, idx, s->b[j].buffer, len);
        else if ((rc = fetch_long(st, r, j, len, &off, sql)) == 0)
            r->cells[idx] = (struct cell){.off = off, .len = len};
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Fetch every stored row into r (names already in), through s's buffers. */
static int fill_rows(MYSQL_STMT *st, dbpool_result *r, struct shape *s, const char *sql)
{
    size_t row = 0, widest = 0;
    int rc = 0;
    while (rc == 0) {
        int x = mysql_stmt_fetch(st);
        if (x == MYSQL_NO_DATA)
            break;
        size_t before = r->used;
        if (x != 0 && x != MYSQL_DATA_TRUNCATED)
            rc = fail_stmt(DBPOOL_EQUERY, st, "fetching a row of", sql);
        else if (row >= r->rows)
            rc = dbpool__fail(DBPOOL_EQUERY, "\"%.*s%s\": more rows than stored", sql_shown(sql),
                              sql, sql_more(sql));
        else
            rc = store_row(st, r, s, row++, sql);
        if (r->used - before > widest)
            widest = r->used - before;
    }
    r->rows = row; /* equal to the stored count unless an error stopped early */
    if (rc == 0 && row > 0)
        s->row_text = widest + widest / 4 + 8;
    return rc;
}

/* Copy the stored result set (if any) and the statement's counters into a new result. */
static int build_result(struct centry *e, unsigned ncols, const char *sql, dbpool_result **out)
{
    MYSQL_STMT *st = e->st;
    struct shape *s = NULL;
    int rc = ncols ? shape_for(e, ncols, sql, &s) : 0;
    if (rc != 0)
        return rc;
    size_t nrows = ncols ? (size_t)mysql_stmt_num_rows(st) : 0;
    dbpool_result *r = result_alloc(nrows, ncols, s ? text_guess(s, nrows) : 0);
    if (!r)
        return dbpool__fail(DBPOOL_ENOMEM, "allocating a result of %zu rows x %u columns", nrows,
                            ncols);
    r->affected = mysql_stmt_affected_rows(st);
    r->insert_id = mysql_stmt_insert_id(st);
    r->warnings = (unsigned)mysql_stmt_warning_count(st);
    if (s) {
        memcpy(r->cells, s->name_cells, ncols * sizeof *r->cells);
        memcpy(r->data, s->names, s->names_len);
        r->used = s->names_len;
        rc = fill_rows(st, r, s, sql);
    }
    if (rc != 0) {
        dbpool_result_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* Free the rows Connector/C stored for this statement now, not at its next execution. */
static void free_stored(MYSQL_STMT *st)
{
    if (mysql_stmt_num_rows(st) > 0)
        mysql_stmt_data_seek(st, 0); /* free_result frees stored rows only with a cursor set */
    mysql_stmt_free_result(st);
}

/* Later result sets (CALL): read and discarded, so the protocol is back in step. */
static int drain_more(MYSQL_STMT *st)
{
    while (mysql_stmt_more_results(st)) {
        int x = mysql_stmt_next_result(st);
        if (x < 0)
            break;
        if (x > 0)
            return 1;
        if (mysql_stmt_field_count(st) > 0 && mysql_stmt_store_result(st) != 0)
            return 1;
        free_stored(st);
    }
    return 0;
}

static int read_result(struct dbpool_conn *c, struct centry *e, const char *sql,
                       dbpool_result **out)
{
    MYSQL_STMT *st = e->st;
    unsigned ncols = mysql_stmt_field_count(st);
    if (ncols && mysql_stmt_store_result(st) != 0)
        return stmt_failed(c, st, "reading the result of", sql);
    if (mysql_stmt_more_results(st))
        e->multi = true; /* several result sets (CALL): see shape_for */
    dbpool_result *r = NULL;
    int rc = out ? build_result(e, ncols, sql, &r) : 0;
    if (rc != 0) {
        stmt_drop(c, st); /* discards what the server still has to send */
        return rc;
    }
    free_stored(st);
    if (drain_more(st) != 0) {
        dbpool_result_free(r);
        return stmt_failed(c, st, "reading a further result of", sql);
    }
    if (out)
        *out = r;
    return 0;
}

/* ---- public: statements ------------------------------------------------------------------- */

/* Validate a handle as every call on a held connection does. */
static struct dbpool_conn *held(dbpool_conn *conn, const char *op, int *rc)
{
    dbpool__clear_error();
    struct dbpool_conn *c = dbpool__conn_check(conn, op);
    *rc = c ? 0 : conn ? DBPOOL_EMISUSE : DBPOOL_EINVAL;
    return c;
}

int dbpool_conn_query(dbpool_conn *conn, dbpool_result **out, const char *sql,
                      const dbpool_param *params, size_t nparams)
{
    int rc;
    if (out)
        *out = NULL;
    struct dbpool_conn *c = held(conn, "dbpool_conn_query", &rc);
    if (!c)
        return rc;
    if (!sql || (nparams && !params))
        return dbpool__fail(DBPOOL_EINVAL, "dbpool_conn_query: %s is NULL", sql ? "params" : "sql");
    struct centry *e = NULL;
    dbpool__sigpipe sp;
    dbpool__sigpipe_block(&sp, c);
    if ((rc = execute(c, sql, params, nparams, &e)) == 0)
        rc = read_result(c, e, sql, out);
    dbpool__sigpipe_restore(&sp);
    return rc;
}

/* Run the dbpool_query() calls queued behind this one on its connection, in arrival order, for
 * up to DB_QUERY_SHARE_US (dbpool__claim_request decides). Each waiter gets exactly what its own
 * call would have produced: the result, or the error code, text and server errno. The
 * connection never idles between two statements, where a hand-off to the next thread would
 * leave it idle until that thread runs: on a busy machine that wake-up costs more than the
 * statement. */
static void serve_queued(dbpool_conn *conn)
{
    struct dbpool__req *r;
    struct wcell *cell;
    uint64_t since = 0;
    while ((cell = dbpool__claim_request(conn, &since, &r)) != NULL) {
        int rc = dbpool_conn_query(conn, r->out, r->sql, r->params, r->nparams);
        r->err.code = rc;
        if (rc != 0)
            err_save(&r->err, rc);
        dbpool__request_done(cell);
    }
    if (since)
        dbpool__clear_error(); /* this thread's own statement succeeded */
}

int dbpool_query_at(dbpool_result **out, const char *sql, const dbpool_param *params,
                    size_t nparams, const char *file, int line)
{
    dbpool__clear_error();
    dbpool__last_wait_clear();
    if (out)
        *out = NULL;
    if (!sql || (nparams && !params))
        return dbpool__fail(DBPOOL_EINVAL, "dbpool_query: %s is NULL", sql ? "params" : "sql");
    dbpool_conn *conn;
    struct dbpool__req req = {.sql = sql, .params = params, .nparams = nparams, .out = out};
    int rc = dbpool__get_or_serve(&conn, &req, file, line);
    if (rc == DBPOOL__SERVED)
        return req.err.code ? err_restore(&req.err) : 0;
    if (rc != 0)
        return rc;
    rc = dbpool_conn_query(conn, out, sql, params, nparams);
    saved_err s;
    if (rc != 0)
        err_save(&s, rc);
    else
        serve_queued(conn);
    dbpool_release(conn); /* closes the connection if the statement lost it */
    if (rc != 0)
        err_restore(&s);
    return rc;
}

/* ---- public: plain statements and transactions ---------------------------------------------- */

static int plain_failed(struct dbpool_conn *c, const char *sql)
{
    note_lock_error(c, mysql_errno(c->mysql));
    int code = conn_lost(c, mysql_errno(c->mysql)) ? DBPOOL_ECONNLOST : DBPOOL_EQUERY;
    char what[SQL_SHOWN + 32];
    snprintf(what, sizeof what, "running \"%.*s%s\"", sql_shown(sql), sql, sql_more(sql));
    dbpool__fail_mysql(code, c->mysql, what);
    if (code == DBPOOL_ECONNLOST)
        after_lost(c);
    return code;
}

/* Run sql as text; read and free every result it produces. */
static int plain_query(struct dbpool_conn *c, const char *sql)
{
    MYSQL *m = c->mysql;
    if (mysql_real_query(m, sql, (unsigned long)strlen(sql)) != 0)
        return plain_failed(c, sql);
    for (;;) {
        MYSQL_RES *res = mysql_store_result(m);
        if (res)
            mysql_free_result(res);
        else if (mysql_field_count(m) != 0)
            return plain_failed(c, sql);
        int more = mysql_next_result(m);
        if (more < 0)
            return 0;
        if (more > 0)
            return plain_failed(c, sql);
    }
}

enum txn_cmd { T_BEGIN, T_COMMIT, T_ROLLBACK };

static int txn_io(struct dbpool_conn *c, enum txn_cmd cmd)
{
    switch (cmd) {
    case T_BEGIN:
        return plain_query(c, "START TRANSACTION");
    case T_COMMIT:
        return mysql_commit(c->mysql) ? plain_failed(c, "COMMIT") : 0;
    default:
        return mysql_rollback(c->mysql) ? plain_failed(c, "ROLLBACK") : 0;
    }
}

/* Every network call on a held connection goes through here or dbpool_conn_query: a write
 * into a killed TLS session must not raise a fatal SIGPIPE. */
static int txn(struct dbpool_conn *c, enum txn_cmd cmd)
{
    dbpool__sigpipe sp;
    dbpool__sigpipe_block(&sp, c);
    int rc = txn_io(c, cmd);
    dbpool__sigpipe_restore(&sp);
    return rc;
}

int dbpool_conn_exec(dbpool_conn *conn, const char *sql)
{
    int rc;
    struct dbpool_conn *c = held(conn, "dbpool_conn_exec", &rc);
    if (!c)
        return rc;
    if (!sql)
        return dbpool__fail(DBPOOL_EINVAL, "dbpool_conn_exec: sql is NULL");
    dbpool__sigpipe sp;
    dbpool__sigpipe_block(&sp, c);
    rc = plain_query(c, sql);
    dbpool__sigpipe_restore(&sp);
    return rc;
}

int dbpool_begin(dbpool_conn *conn)
{
    int rc;
    struct dbpool_conn *c = held(conn, "dbpool_begin", &rc);
    return c ? txn(c, T_BEGIN) : rc;
}

int dbpool_commit(dbpool_conn *conn)
{
    int rc;
    struct dbpool_conn *c = held(conn, "dbpool_commit", &rc);
    return c ? txn(c, T_COMMIT) : rc;
}

int dbpool_rollback(dbpool_conn *conn)
{
    int rc;
    struct dbpool_conn *c = held(conn, "dbpool_rollback", &rc);
    return c ? txn(c, T_ROLLBACK) : rc;
}

/* Roll back after a failed body or commit, keeping that failure as the thread's error. A
 * connection whose rollback fails is not trusted again. */
static void rollback_keep_error(struct dbpool_conn *c, int code)
{
    if (c->discard)
        return; /* closed on release; the server rolls back when the session ends */
    saved_err s;
    err_save(&s, code);
    if (txn(c, T_ROLLBACK) != 0)
        c->discard = true;
    err_restore(&s);
}

static int txn_attempt(dbpool_conn *conn, dbpool_txn_fn fn, void *ud)
{
    struct dbpool_conn *c = conn;
    c->lock_errno = 0;
    int rc = txn(c, T_BEGIN);
    if (rc != 0)
        return rc;
    rc = fn(conn, ud);
    if (rc == 0 && (rc = txn(c, T_COMMIT)) == 0)
        return 0;
    rollback_keep_error(c, rc);
    return rc;
}

/* A statement of this attempt met a deadlock or lock wait timeout, the body (or the commit)
 * failed with DBPOOL_EQUERY, and the connection is alive: the whole transaction may run again.
 * Decided from the connection, not from the thread's last error, which a body that calls
 * anything after the failed statement (a log call, a result accessor) has replaced. */
static bool retryable(const struct dbpool_conn *c, int rc)
{
    return rc == DBPOOL_EQUERY && !c->discard && c->lock_errno != 0;
}

static void retry_pause(void)
{
    unsigned ms = 5 + dbpool__rand(46); /* 5-50 ms: the competing transaction gets ahead */
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ms * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int dbpool_transaction_at(dbpool_txn_fn fn, void *userdata, unsigned max_attempts,
                          unsigned *attempts, const char *file, int line)
{
    dbpool__clear_error();
    if (attempts)
        *attempts = 0;
    if (!fn)
        return dbpool__fail(DBPOOL_EINVAL, "dbpool_transaction: fn is NULL");
    dbpool_conn *conn;
    int rc = dbpool_get_at(&conn, file, line);
    if (rc != 0)
        return rc;
    unsigned max = max_attempts ? max_attempts : 3, n = 0;
    for (;;) {
        n++;
        if (attempts)
            *attempts = n;
        rc = txn_attempt(conn, fn, userdata);
        if (rc == 0 || !retryable(conn, rc) || n >= max)
            break;
        retry_pause();
    }
    saved_err s;
    if (rc != 0 && retryable(conn, rc)) {
        unsigned e = conn->lock_errno;
        err_save(&s, rc);
        rc = dbpool__fail_server(DBPOOL_ERETRIES, e, "transaction gave up after %u attempts; last "
                                 "failure: %s", n, s.server_errno == e ? err_detail(&s)
                                 : e == ER_LOCK_DEADLOCK ? "deadlock (server error 1213)"
                                 : "lock wait timeout (server error 1205)");
    }
    if (rc != 0)
        err_save(&s, rc);
    dbpool_release(conn);
    if (rc != 0)
        err_restore(&s);
    return rc;
}

/* The plain functions, for callers that cannot use the macros (bindings from other languages,
 * function pointers): no call site is recorded. */
#undef dbpool_query
int dbpool_query(dbpool_result **out, const char *sql, const dbpool_param *params, size_t nparams)
{
    return dbpool_query_at(out, sql, params, nparams, NULL, 0);
}

#undef dbpool_transaction
int dbpool_transaction(dbpool_txn_fn fn, void *userdata, unsigned max_attempts, unsigned *attempts)
{
    return dbpool_transaction_at(fn, userdata, max_attempts, attempts, NULL, 0);
}
