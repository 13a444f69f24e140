/*
 * config.c - configuration: defaults, the .env file, the environment, dbpool_config_set()
 * overrides, validation.
 *
 * Precedence is decided in one place, dbpool__config_load(): dbpool_config_set() > environment >
 * file > defaults. The environment is read there, once per pool start.
 *
 * Why our reader does the dotenv lexing and libinih only drives the loop: Debian's inih 55 reads
 * into a 200-byte stack buffer and silently splits longer lines (a long DB_PASSWORD could smuggle
 * DB_CONNECTION_LIMIT=1000 in as a "new" line), ends values at " ;", keeps quotes and `export `,
 * accepts ':' and indented continuation lines, and its options are process-wide globals we must
 * not change. So the reader given to ini_parse_stream() takes one physical line at a time (at
 * most ENV_LINE_MAX bytes, else an error), applies the dotenv rules, and hands inih a canonical
 * "KEY=" line; the handler takes the value from the reader's state. inih never sees a byte it
 * could reinterpret, and every line number in a message counts physical lines.
 *
 * Dotenv rules: KEY=value; blank lines and '#' comment lines (also indented); on an unquoted value
 * a '#' after whitespace starts a comment and surrounding whitespace is trimmed; a value in
 * matching '...' or "..." is taken verbatim (spaces and '#' kept; no escapes, no variable
 * expansion); `export ` prefix; CRLF; UTF-8 BOM; the last duplicate wins. Errors (file and line,
 * never the line's text, which may be a password): sections, indented lines (inih would make them
 * continuations), ':' separators, lines without '=', bad key characters, unterminated quotes,
 * text after a closing quote, NUL bytes, overlong lines. Keys not starting with "DB_" belong to
 * the application and are skipped; an unknown DB_* key is a warning with key and line.
 *
 * The password never reaches a message: values of DB_PASSWORD are never formatted, and the
 * buffers that held it (file contents, reader state) are wiped before they are freed.
 */
#include "dbpool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define ENV_LINE_MAX 4095u      /* bytes per physical line, newline excluded */
#define ENV_FILE_MAX (1u << 20) /* a .env is a few hundred bytes: refuse a megabyte */
#define KEY_MAX 127u
#define SHOW_MAX 64u            /* value bytes quoted in a message */
#define WHERE_MAX (DBPOOL__PATH_MAX + 32)

/* ---- the keys ------------------------------------------------------------------------------ */

enum kind { K_STR, K_SECRET, K_UINT, K_BOOL, K_SSL, K_LOG };

struct keydef {
    const char *name;
    enum kind kind;
    size_t off;
    size_t cap;        /* K_STR, K_SECRET: buffer size including the NUL */
    unsigned min, max; /* K_UINT */
};

enum {
    I_HOST, I_PORT, I_SOCKET, I_USER, I_PASSWORD, I_NAME,
    I_LIMIT, I_ACQUIRE, I_QUEUE, I_OVERTAKE, I_SHARE, I_IDLE, I_LIFETIME, I_VALIDATE, I_RESET, I_LEAK,
    I_CONNECT_TO, I_READ_TO, I_WRITE_TO, I_WAIT_TO,
    I_SSL_MODE, I_SSL_CA, I_SSL_CERT, I_SSL_KEY,
    I_SIGNALS, I_GRACE, I_BUDGET, I_BUDGET_DIR, I_LOG_LEVEL,
    NKEYS
};

#define FIELD(f) offsetof(dbpool__options, f)
#define SIZE(f) sizeof(((dbpool__options *)0)->f)
#define STR(n, f) {n, K_STR, FIELD(f), SIZE(f), 0, 0}
#define UINT(n, f, lo, hi) {n, K_UINT, FIELD(f), 0, lo, hi}
#define BOOL(n, f) {n, K_BOOL, FIELD(f), 0, 0, 0}

/* Ranges reject what can only be a mistake (a limit of 0, a 70-year timeout); the 1000 ms
 * minimums exist because Connector/C counts network timeouts in whole seconds. .env.example says
 * why each default is what it is. */
static const struct keydef keys[NKEYS] = {
    [I_HOST] = STR("DB_HOST", host),
    [I_PORT] = UINT("DB_PORT", port, 1, 65535),
    [I_SOCKET] = STR("DB_SOCKET", socket),
    [I_USER] = STR("DB_USER", user),
    [I_PASSWORD] = {"DB_PASSWORD", K_SECRET, FIELD(password), SIZE(password), 0, 0},
    [I_NAME] = STR("DB_NAME", database),
    [I_LIMIT] = UINT("DB_CONNECTION_LIMIT", limit, 1, 1000),
    [I_ACQUIRE] = UINT("DB_ACQUIRE_TIMEOUT_MS", acquire_timeout_ms, 1, 3600000),
    [I_QUEUE] = UINT("DB_QUEUE_LIMIT", queue_limit, 0, 1000000),
    [I_OVERTAKE] = UINT("DB_QUEUE_OVERTAKE_US", queue_overtake_us, 0, 10000000),
    [I_SHARE] = UINT("DB_QUERY_SHARE_US", query_share_us, 0, 10000000),
    [I_IDLE] = UINT("DB_IDLE_TIMEOUT_MS", idle_timeout_ms, 1, 86400000),
    [I_LIFETIME] = UINT("DB_MAX_LIFETIME_MS", max_lifetime_ms, 0, 604800000),
    [I_VALIDATE] = UINT("DB_VALIDATE_AFTER_MS", validate_after_ms, 0, 86400000),
    [I_RESET] = BOOL("DB_RESET_ON_RELEASE", reset_on_release),
    [I_LEAK] = UINT("DB_LEAK_THRESHOLD_MS", leak_threshold_ms, 0, 86400000),
    [I_CONNECT_TO] = UINT("DB_CONNECT_TIMEOUT_MS", connect_timeout_ms, 1000, 3600000),
    [I_READ_TO] = UINT("DB_READ_TIMEOUT_MS", read_timeout_ms, 1000, 86400000),
    [I_WRITE_TO] = UINT("DB_WRITE_TIMEOUT_MS", write_timeout_ms, 1000, 86400000),
    [I_WAIT_TO] = UINT("DB_SESSION_WAIT_TIMEOUT_S", session_wait_timeout_s, 0, 31536000),
    [I_SSL_MODE] = {"DB_SSL_MODE", K_SSL, FIELD(ssl_mode), 0, 0, 0},
    [I_SSL_CA] = STR("DB_SSL_CA", ssl_ca),
    [I_SSL_CERT] = STR("DB_SSL_CERT", ssl_cert),
    [I_SSL_KEY] = STR("DB_SSL_KEY", ssl_key),
    [I_SIGNALS] = BOOL("DB_SIGNAL_HOOKS", signal_hooks),
    [I_GRACE] = UINT("DB_SHUTDOWN_GRACE_MS", shutdown_grace_ms, 0, 300000),
    [I_BUDGET] = UINT("DB_HOST_BUDGET", host_budget, 0, 100000),
    [I_BUDGET_DIR] = STR("DB_HOST_BUDGET_DIR", budget_dir),
    [I_LOG_LEVEL] = {"DB_LOG_LEVEL", K_LOG, FIELD(log_level), 0, 0, 0},
};

/* Indexed by enum dbpool__ssl_mode and enum dbpool_log_level. */
static const char *const ssl_names[] = {"DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA",
                                        "VERIFY_IDENTITY", NULL};
static const char *const log_names[] = {"error", "warn", "info", "debug", NULL};

static int find_key(const char *name)
{
    for (int i = 0; name && i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return i;
    return -1;
}

void dbpool__config_defaults(dbpool__options *o)
{
    memset(o, 0, sizeof *o);
    strcpy(o->host, "127.0.0.1"); /* "localhost" would silently mean the Unix socket */
    o->port = 3306;
    o->limit = 3;
    o->acquire_timeout_ms = 10000;
    o->queue_overtake_us = 1000;
    o->query_share_us = 1000;
    o->idle_timeout_ms = 60000;
    o->max_lifetime_ms = 1800000;
    o->validate_after_ms = 5000;
    o->reset_on_release = false;
    o->leak_threshold_ms = 60000;
    o->connect_timeout_ms = 5000;
    o->read_timeout_ms = 30000;
    o->write_timeout_ms = 30000;
    o->session_wait_timeout_s = 3600;
    o->ssl_mode = DBPOOL__SSL_PREFERRED;
    o->signal_hooks = true;
    o->shutdown_grace_ms = 2000;
    /* Per uid, and independent of the login session ($XDG_RUNTIME_DIR is not set under cron or
     * systemd services), so every process of this user agrees on it. */
    snprintf(o->budget_dir, sizeof o->budget_dir, "/tmp/dbpool-budget-%lu",
             (unsigned long)getuid());
    o->log_level = DBPOOL_LOG_WARN;
}

/* ---- where a value came from, for messages --------------------------------------------------- */

enum { SRC_DEFAULT, SRC_FILE, SRC_ENV, SRC_API };

struct src {
    int kind;
    unsigned line;
};

/* One load: the options being built and, per key, the source of the value in force. */
struct load {
    dbpool__options *o;
    const char *file; /* name for messages */
    struct src src[NKEYS];
};

static void load_init(struct load *ld, dbpool__options *o, const char *file)
{
    memset(ld, 0, sizeof *ld);
    ld->o = o;
    ld->file = file;
}

static const char *src_text(const struct load *ld, struct src s, char *buf, size_t n)
{
    switch (s.kind) {
    case SRC_FILE:
        snprintf(buf, n, "at %s:%u", ld->file, s.line);
        return buf;
    case SRC_ENV:
        return "from the environment";
    case SRC_API:
        return "from dbpool_config_set()";
    case SRC_DEFAULT:
        return "by default";
    default:
        return "in the options";
    }
}

static const char *where(const struct load *ld, int i, char *buf, size_t n)
{
    return src_text(ld, ld->src[i], buf, n);
}

/* A value as it may appear in a message: printable ASCII, at most SHOW_MAX bytes. Never called
 * for DB_PASSWORD. */
static const char *show(const char *v, char *buf, size_t n)
{
    size_t i = 0;
    for (; v[i] && i < SHOW_MAX && i + 4 < n; i++)
        buf[i] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
    strcpy(buf + i, v[i] ? "..." : "");
    return buf;
}

/* ---- converting one value ---------------------------------------------------------------------- */

/* Decimal digits only: strtoul would accept " 8", "+8" and "-1" (as ULONG_MAX). */
static int set_uint(void *field, const struct keydef *k, const char *v, char *why, size_t n)
{
    unsigned long long x = 0;
    const char *p = v;
    for (; *p >= '0' && *p <= '9'; p++)
        if ((x = x * 10 + (unsigned)(*p - '0')) > k->max)
            x = (unsigned long long)k->max + 1; /* saturate: no overflow, still out of range */
    const char *bad = !*v ? "empty value" : *p ? "not a whole number"
                      : (x < k->min || x > k->max) ? "out of range" : NULL;
    if (bad) {
        snprintf(why, n, "%s (allowed %u..%u)", bad, k->min, k->max);
        return -1;
    }
    *(unsigned *)field = (unsigned)x;
    return 0;
}

static int set_str(void *field, const struct keydef *k, const char *v, char *why, size_t n)
{
    size_t len = strlen(v);
    if (len >= k->cap) {
        snprintf(why, n, "value too long (max %zu bytes)", k->cap - 1);
        return -1;
    }
    memcpy(field, v, len + 1);
    return 0;
}

static int set_bool(void *field, const char *v, char *why, size_t n)
{
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
            *(bool *)field = strcasecmp(v, yes[i]) == 0;
            return 0;
        }
    }
    snprintf(why, n, "not a boolean (use 1/0, true/false, yes/no or on/off)");
    return -1;
}

static int set_name(void *field, const char *const *names, const char *v, char *why, size_t n)
{
    for (int i = 0; names[i]; i++) {
        if (strcasecmp(v, names[i]) == 0) {
            *(int *)field = i;
            return 0;
        }
    }
    size_t len = (size_t)snprintf(why, n, "unknown value (use");
    for (int i = 0; names[i] && len < n; i++)
        len += (size_t)snprintf(why + len, n - len, "%s %s", i ? "," : "", names[i]);
    if (len < n)
        snprintf(why + len, n - len, ")");
    return -1;
}

static int bad_value(const struct load *ld, int i, const char *v, struct src s, const char *why)
{
    char wbuf[WHERE_MAX], vbuf[SHOW_MAX + 8];
    const char *w = src_text(ld, s, wbuf, sizeof wbuf);
    if (keys[i].kind == K_SECRET)
        return dbpool__fail(DBPOOL_ECONFIG, "%s %s: %s", keys[i].name, w, why);
    return dbpool__fail(DBPOOL_ECONFIG, "%s=\"%s\" %s: %s", keys[i].name, show(v, vbuf, sizeof vbuf),
                        w, why);
}

/* Convert and store value `v` of key `i`. A present but invalid value is an error, never a
 * fallback to the default. */
static int set_value(struct load *ld, int i, const char *v, struct src s)
{
    const struct keydef *k = &keys[i];
    void *field = (char *)ld->o + k->off;
    char why[160];
    int rc;
    switch (k->kind) {
    case K_UINT: rc = set_uint(field, k, v, why, sizeof why); break;
    case K_BOOL: rc = set_bool(field, v, why, sizeof why); break;
    case K_SSL: rc = set_name(field, ssl_names, v, why, sizeof why); break;
    case K_LOG: rc = set_name(field, log_names, v, why, sizeof why); break;
    default: rc = set_str(field, k, v, why, sizeof why); break;
    }
    if (rc)
        return bad_value(ld, i, v, s, why);
    ld->src[i] = s;
    return 0;
}

/* ---- the .env reader (dotenv lexing, see the top of the file) ------------------------------- */

struct lexer {
    struct load *ld;
    const char *p, *end; /* unread input */
    unsigned line;       /* physical line being handled, 1-based */
    int rc;              /* first error; the reader stops once it is set */
    char key[KEY_MAX + 1];
    char value[ENV_LINE_MAX + 1];
};

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

static size_t skip_blank(const char *s, size_t n, size_t i)
{
    while (i < n && is_blank(s[i]))
        i++;
    return i;
}

/* Errors about a line name the file and line only: the text may be (part of) a password. */
static int lex_fail(struct lexer *lx, const char *what)
{
    lx->rc = dbpool__fail(DBPOOL_ECONFIG, "%s:%u: %s", lx->ld->file, lx->line, what);
    return lx->rc;
}

static bool key_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

static int lex_key(struct lexer *lx, const char *s, size_t n)
{
    while (n > 0 && is_blank(s[n - 1]))
        n--;
    if (n == 0)
        return lex_fail(lx, "no key before '='");
    if (n > KEY_MAX)
        return lex_fail(lx, "key longer than 127 bytes");
    for (size_t i = 0; i < n; i++)
        if (!key_char(s[i]))
            return lex_fail(lx, "invalid key (use letters, digits, '_', '.' and '-'; no spaces)");
    memcpy(lx->key, s, n);
    lx->key[n] = '\0';
    return 0;
}

static void set_lexed(struct lexer *lx, const char *v, size_t n)
{
    memcpy(lx->value, v, n); /* n <= ENV_LINE_MAX: the line was checked */
    lx->value[n] = '\0';
}

/* v[0] is the opening quote. Only blanks, optionally followed by a comment, may follow the
 * closing one. */
static int lex_quoted(struct lexer *lx, const char *v, size_t n)
{
    const char *close = memchr(v + 1, v[0], n - 1);
    if (!close)
        return lex_fail(lx, "unterminated quote (values cannot span lines)");
    size_t after = (size_t)(close - v) + 1, j = skip_blank(v, n, after);
    if (j < n && !(v[j] == '#' && j > after))
        return lex_fail(lx, "unexpected text after the closing quote");
    set_lexed(lx, v + 1, (size_t)(close - v) - 1);
    return 1;
}

/* v..v+n is everything after the '='. */
static int lex_value(struct lexer *lx, const char *v, size_t n)
{
    size_t i = skip_blank(v, n, 0), cut = n;
    if (i < n && (v[i] == '"' || v[i] == '\''))
        return lex_quoted(lx, v + i, n - i);
    for (size_t j = i; j < n && cut == n; j++)
        if (v[j] == '#' && j > 0 && is_blank(v[j - 1]))
            cut = j;
    while (cut > i && is_blank(v[cut - 1]))
        cut--;
    set_lexed(lx, v + i, cut - i);
    return 1;
}

/* One physical line without its newline. Returns 1 for an assignment (key and value set),
 * 0 for a line without one, or an error code. */
static int lex_line(struct lexer *lx, const char *s, size_t n)
{
    size_t i = skip_blank(s, n, 0), sep;
    if (i == n || s[i] == '#')
        return 0;
    if (i > 0)
        return lex_fail(lx, "indented line (continuation lines are not supported; remove the "
                            "leading whitespace)");
    if (s[0] == '[')
        return lex_fail(lx, "sections ([...]) are not supported in a .env file");
    if (n > 7 && memcmp(s, "export", 6) == 0 && is_blank(s[6]))
        i = skip_blank(s, n, 7);
    for (sep = i; sep < n && s[sep] != '=' && s[sep] != ':'; sep++)
        ;
    if (sep == n)
        return lex_fail(lx, "no '=' on the line (expected KEY=value)");
    if (s[sep] == ':')
        return lex_fail(lx, "':' is not a separator (expected KEY=value)");
    int rc = lex_key(lx, s + i, sep - i);
    return rc ? rc : lex_value(lx, s + sep + 1, n - sep - 1);
}

static int lex_next(struct lexer *lx)
{
    const char *s = lx->p, *nl = memchr(s, '\n', (size_t)(lx->end - s));
    size_t n = nl ? (size_t)(nl - s) : (size_t)(lx->end - s);
    lx->p = nl ? nl + 1 : lx->end;
    lx->line++;
    if (lx->line == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
        n -= 3;
    }
    if (n > 0 && s[n - 1] == '\r')
        n--;
    if (n > ENV_LINE_MAX)
        return lex_fail(lx, "line longer than 4095 bytes");
    if (memchr(s, '\0', n))
        return lex_fail(lx, "NUL byte in the line");
    return lex_line(lx, s, n);
}

/* ini_reader: skips to the next assignment and gives inih "KEY=" for it. NULL ends parsing, at
 * the end of the input or after the first error. */
static char *reader(char *str, int num, void *stream)
{
    struct lexer *lx = stream;
    while (lx->rc == 0 && lx->p < lx->end) {
        if (lex_next(lx) != 1)
            continue;
        size_t k = strlen(lx->key);
        if (num < 0 || k + 3 > (size_t)num) {
            lex_fail(lx, "key too long for the INI reader");
            return NULL;
        }
        memcpy(str, lx->key, k);
        memcpy(str + k, "=\n", 3);
        return str;
    }
    return NULL;
}

/* Levenshtein distance, capped: only small distances matter for a "did you mean". */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[KEY_MAX + 2];
    if (la > KEY_MAX || lb > KEY_MAX)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            best = up + 1 < best ? up + 1 : best;
            row[j] = row[j - 1] + 1 < best ? row[j - 1] + 1 : best;
            diag = up;
        }
    }
    return row[lb];
}

static void warn_unknown(const struct lexer *lx, const char *name)
{
    int best = -1;
    size_t bestd = 3; /* suggest only within two edits */
    for (int i = 0; i < NKEYS; i++) {
        size_t d = distance(name, keys[i].name);
        if (d < bestd) {
            bestd = d;
            best = i;
        }
    }
    dbpool__log(DBPOOL_LOG_WARN, "%s:%u: unknown key %s ignored%s%s%s", lx->ld->file, lx->line, name,
                best >= 0 ? " (did you mean " : "", best >= 0 ? keys[best].name : "",
                best >= 0 ? "?)" : "");
}

/* ini_handler. `value` is inih's view of our canonical line (always ""): the real value is in
 * the reader's state. */
static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct lexer *lx = user;
    (void)section;
    (void)value;
    if (strncmp(name, "DB_", 3) != 0) {
        if (strncasecmp(name, "DB_", 3) == 0)
            dbpool__log(DBPOOL_LOG_WARN, "%s:%u: key %s ignored: keys are case-sensitive",
                        lx->ld->file, lx->line, name);
        return 1;
    }
    int i = find_key(name);
    if (i < 0) {
        warn_unknown(lx, name);
        return 1;
    }
    if (set_value(lx->ld, i, lx->value, (struct src){SRC_FILE, lx->line}) != 0) {
        lx->rc = DBPOOL_ECONFIG;
        return 0;
    }
    return 1;
}

static int parse_into(struct load *ld, const char *buf, size_t len)
{
    struct lexer lx;
    memset(&lx, 0, sizeof lx);
    lx.ld = ld;
    lx.p = buf ? buf : "";
    lx.end = lx.p + (buf ? len : 0);
    int r = ini_parse_stream(reader, &lx, handler, &lx);
    explicit_bzero(lx.value, sizeof lx.value);
    if (lx.rc)
        return lx.rc;
    if (r == -2)
        return dbpool__fail(DBPOOL_ENOMEM, "%s: out of memory while parsing", ld->file);
    if (r != 0) /* cannot happen with our canonical lines; never accept it silently */
        return dbpool__fail(DBPOOL_ECONFIG, "%s: rejected by the INI parser", ld->file);
    return 0;
}

int dbpool__config_parse_buffer(dbpool__options *o, const char *buf, size_t len, const char *name)
{
    struct load ld;
    load_init(&ld, o, name ? name : "(buffer)");
    return parse_into(&ld, buf, len);
}

/* ---- the file ---------------------------------------------------------------------------------- */

static const char *errstr(int e, char *buf, size_t n)
{
    return strerror_r(e, buf, n); /* GNU variant (_GNU_SOURCE) */
}

/* Checked on the opened descriptor, so a symlink or a rename cannot swap in another file
 * between the check and the read. */
static int check_file(const char *path, const struct stat *st)
{
    if (!S_ISREG(st->st_mode))
        return dbpool__fail(DBPOOL_ECONFIG, "%s: not a regular file", path);
    if (st->st_mode & S_IWOTH)
        return dbpool__fail(DBPOOL_ECONFIG,
                            "%s: writable by other users (mode %04o): refusing to read it, since "
                            "anyone could change the credentials or the server; run chmod o-w",
                            path, (unsigned)(st->st_mode & 07777));
    if (st->st_size > (off_t)ENV_FILE_MAX)
        return dbpool__fail(DBPOOL_ECONFIG, "%s: larger than %u bytes", path, ENV_FILE_MAX);
    if (st->st_mode & S_IROTH)
        dbpool__log(DBPOOL_LOG_WARN, "%s: readable by other users (mode %04o) but it holds "
                    "credentials; run chmod o-r", path, (unsigned)(st->st_mode & 07777));
    return 0;
}

/* Read all of f, at most ENV_FILE_MAX bytes. `hint` is the size fstat saw (the usual single
 * pass); growing copies are wiped because they may hold the password. */
static int slurp(FILE *f, const char *path, size_t hint, char **out, size_t *len)
{
    size_t cap = hint + 1, n = 0;
    char *buf = malloc(cap), *bigger;
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || cap > ENV_FILE_MAX)
            break;
        if ((bigger = malloc(cap * 2)) != NULL)
            memcpy(bigger, buf, n);
        explicit_bzero(buf, n);
        free(buf);
        buf = bigger;
        cap *= 2;
    }
    if (!buf)
        return dbpool__fail(DBPOOL_ENOMEM, "%s: out of memory reading it", path);
    if (ferror(f) || n > ENV_FILE_MAX) {
        explicit_bzero(buf, n);
        free(buf);
        return dbpool__fail(DBPOOL_ECONFIG, "%s: %s", path,
                            ferror(f) ? "read error" : "file too large");
    }
    *out = buf;
    *len = n;
    return 0;
}

/* *out is NULL (and 0 returned) when an optional file does not exist. */
static int read_file(const char *path, bool required, char **out, size_t *len)
{
    char eb[128];
    struct stat st;
    int rc;
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO must not hang (it is refused as "not a regular file"). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (e == ENOENT && !required)
            return 0;
        return dbpool__fail(DBPOOL_ECONFIG, "%s: cannot open: %s", path, errstr(e, eb, sizeof eb));
    }
    if (fstat(fileno(f), &st) != 0) {
        rc = dbpool__fail(DBPOOL_ECONFIG, "%s: cannot stat: %s", path, errstr(errno, eb, sizeof eb));
        goto fail;
    }
    if ((rc = check_file(path, &st)) != 0 || (rc = slurp(f, path, (size_t)st.st_size, out, len)) != 0)
        goto fail;
    fclose(f);
    return 0;
fail:
    fclose(f);
    return rc;
}

/* explicit path: required; NULL: $DBPOOL_ENV_FILE (required) when set and not empty, else
 * ./.env (optional). */
static int load_file(struct load *ld, const char *explicit_path)
{
    const char *path = explicit_path ? explicit_path : getenv("DBPOOL_ENV_FILE");
    bool required = explicit_path || (path && *path);
    char *buf = NULL;
    size_t len = 0;
    if (!required)
        path = ".env";
    if (!*path || strlen(path) >= sizeof ld->o->env_file)
        return dbpool__fail(DBPOOL_ECONFIG, "the .env file name is %s", *path ? "too long" : "empty");
    int rc = read_file(path, required, &buf, &len);
    if (rc != 0 || !buf)
        return rc;
    strcpy(ld->o->env_file, path);
    ld->file = ld->o->env_file;
    rc = parse_into(ld, buf, len);
    explicit_bzero(buf, len);
    free(buf);
    return rc;
}

static int load_env(struct load *ld)
{
    for (int i = 0; i < NKEYS; i++) {
        const char *v = getenv(keys[i].name);
        int rc = v ? set_value(ld, i, v, (struct src){SRC_ENV, 0}) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- dbpool_config_set() overrides --------------------------------------------------------------- */

/* Guarded by ov_mu; a leaf lock (nothing else is taken while it is held). */
static pthread_mutex_t ov_mu = PTHREAD_MUTEX_INITIALIZER;

/* fork (hooks.c): held across fork(), so a child never inherits it locked. */
void dbpool__config_atfork_prepare(void) { pthread_mutex_lock(&ov_mu); }
void dbpool__config_atfork_release(void) { pthread_mutex_unlock(&ov_mu); }
static char *ov_value[NKEYS];

static void wipe_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

int dbpool_config_set(const char *key, const char *value)
{
    char kbuf[SHOW_MAX + 8];
    dbpool__clear_error();
    int i = find_key(key);
    if (i < 0)
        return dbpool__fail(DBPOOL_EINVAL, "dbpool_config_set: %s%s", key ? "unknown key " : "NULL key",
                            key ? show(key, kbuf, sizeof kbuf) : "");
    /* A start racing with this call reads either value; either way it is the one in force until
     * the next start, as documented. */
    if (dbpool__pool_running())
        return dbpool__fail(DBPOOL_EINVAL, "dbpool_config_set(%s): the pool is running; set keys "
                            "before it starts or after dbpool_close()", keys[i].name);
    char *copy = value ? strdup(value) : NULL;
    if (value && !copy)
        return dbpool__fail(DBPOOL_ENOMEM, "dbpool_config_set(%s): out of memory", keys[i].name);
    pthread_mutex_lock(&ov_mu);
    char *old = ov_value[i];
    ov_value[i] = copy;
    pthread_mutex_unlock(&ov_mu);
    wipe_free(old);
    return 0;
}

void dbpool__config_clear_overrides(void)
{
    for (int i = 0; i < NKEYS; i++) {
        pthread_mutex_lock(&ov_mu);
        char *old = ov_value[i];
        ov_value[i] = NULL;
        pthread_mutex_unlock(&ov_mu);
        wipe_free(old);
    }
}

static int load_overrides(struct load *ld)
{
    int rc = 0;
    pthread_mutex_lock(&ov_mu);
    for (int i = 0; i < NKEYS && rc == 0; i++)
        if (ov_value[i])
            rc = set_value(ld, i, ov_value[i], (struct src){SRC_API, 0});
    pthread_mutex_unlock(&ov_mu);
    return rc;
}

/* ---- validation ------------------------------------------------------------------------------ */

/* "KEY=value (where)" for a numeric or short option, for contradiction messages. */
static const char *said(const struct load *ld, int i, char *buf, size_t n)
{
    char wbuf[WHERE_MAX];
    const void *field = (const char *)ld->o + keys[i].off;
    if (keys[i].kind == K_UINT)
        snprintf(buf, n, "%s=%u (%s)", keys[i].name, *(const unsigned *)field,
                 where(ld, i, wbuf, sizeof wbuf));
    else if (keys[i].kind == K_SSL)
        snprintf(buf, n, "%s=%s (%s)", keys[i].name, ssl_names[*(const int *)field],
                 where(ld, i, wbuf, sizeof wbuf));
    else
        snprintf(buf, n, "%s (%s)", keys[i].name, where(ld, i, wbuf, sizeof wbuf));
    return buf;
}

static int check_endpoint(const struct load *ld)
{
    const dbpool__options *o = ld->o;
    char a[WHERE_MAX + 64], b[WHERE_MAX + 64];
    if (!o->user[0])
        return dbpool__fail(DBPOOL_ECONFIG, "DB_USER is not set (%s): set it in the .env file or "
                            "the environment", where(ld, I_USER, a, sizeof a));
    if (!o->host[0] && !o->socket[0])
        return dbpool__fail(DBPOOL_ECONFIG, "DB_HOST is empty %s and DB_SOCKET is not set: nothing "
                            "to connect to", where(ld, I_HOST, a, sizeof a));
    if (o->socket[0] && o->host[0] && strcmp(o->host, "localhost") != 0)
        return dbpool__fail(DBPOOL_ECONFIG, "%s and %s are both set: a socket only applies to the "
                            "local server; leave DB_HOST empty to use the socket",
                            said(ld, I_HOST, a, sizeof a), said(ld, I_SOCKET, b, sizeof b));
    return 0;
}

/* The server's wait_timeout must outlive every idle stretch the pool allows, or the server
 * ends pooled sessions under us (the pool would then see 2006 on idle connections). */
static int check_wait_timeout(const struct load *ld)
{
    const dbpool__options *o = ld->o;
    unsigned long long wait_ms = (unsigned long long)o->session_wait_timeout_s * 1000u;
    char a[WHERE_MAX + 64], b[WHERE_MAX + 64];
    int other;
    if (wait_ms == 0)
        return 0;
    if (wait_ms <= o->idle_timeout_ms)
        other = I_IDLE;
    else if (o->max_lifetime_ms && wait_ms <= o->max_lifetime_ms)
        other = I_LIFETIME;
    else
        return 0;
    return dbpool__fail(DBPOOL_ECONFIG, "%s must exceed %s: the server would end idle pooled "
                        "sessions first (use 0 to keep the server's wait_timeout)",
                        said(ld, I_WAIT_TO, a, sizeof a), said(ld, other, b, sizeof b));
}

static int check_readable(const struct load *ld, int i)
{
    const char *path = (const char *)ld->o + keys[i].off;
    char a[WHERE_MAX], eb[128];
    if (!path[0] || access(path, R_OK) == 0)
        return 0;
    return dbpool__fail(DBPOOL_ECONFIG, "%s=%s (%s): cannot read it: %s", keys[i].name, path,
                        where(ld, i, a, sizeof a), errstr(errno, eb, sizeof eb));
}

static int check_tls(const struct load *ld)
{
    const dbpool__options *o = ld->o;
    char a[WHERE_MAX + 64], b[WHERE_MAX + 64];
    if (o->ssl_mode >= DBPOOL__SSL_VERIFY_CA && !o->ssl_ca[0])
        return dbpool__fail(DBPOOL_ECONFIG, "%s needs DB_SSL_CA: without a CA the server's "
                            "certificate cannot be verified", said(ld, I_SSL_MODE, a, sizeof a));
    if (!o->ssl_cert[0] != !o->ssl_key[0])
        return dbpool__fail(DBPOOL_ECONFIG, "%s is set without %s: a client certificate needs "
                            "both", said(ld, o->ssl_cert[0] ? I_SSL_CERT : I_SSL_KEY, a, sizeof a),
                            keys[o->ssl_cert[0] ? I_SSL_KEY : I_SSL_CERT].name);
    int file = o->ssl_ca[0] ? I_SSL_CA : o->ssl_cert[0] ? I_SSL_CERT : -1;
    if (o->ssl_mode == DBPOOL__SSL_DISABLED && file >= 0)
        return dbpool__fail(DBPOOL_ECONFIG, "%s is set but %s: enable TLS or remove the file",
                            said(ld, file, a, sizeof a), said(ld, I_SSL_MODE, b, sizeof b));
    int rc = check_readable(ld, I_SSL_CA);
    if (rc == 0)
        rc = check_readable(ld, I_SSL_CERT);
    return rc ? rc : check_readable(ld, I_SSL_KEY);
}

static int check_budget(const struct load *ld)
{
    const dbpool__options *o = ld->o;
    char a[WHERE_MAX + 64];
    if (!o->host_budget)
        return 0;
    if (o->budget_dir[0] != '/')
        return dbpool__fail(DBPOOL_ECONFIG, "%s must be an absolute path: processes started in "
                            "other directories would not share the budget",
                            said(ld, I_BUDGET_DIR, a, sizeof a));
    if (o->host_budget < o->limit)
        dbpool__log(DBPOOL_LOG_WARN, "DB_HOST_BUDGET=%u is below DB_CONNECTION_LIMIT=%u: this "
                    "process can never have more than %u connections", o->host_budget, o->limit,
                    o->host_budget);
    return 0;
}

static int validate(const struct load *ld)
{
    int rc = check_endpoint(ld);
    if (rc == 0)
        rc = check_wait_timeout(ld);
    if (rc == 0)
        rc = check_tls(ld);
    return rc ? rc : check_budget(ld);
}

int dbpool__config_validate(const dbpool__options *o)
{
    struct load ld;
    load_init(&ld, (dbpool__options *)o, NULL); /* validate() only reads through ld.o */
    for (int i = 0; i < NKEYS; i++)
        ld.src[i].kind = -1; /* sources unknown: messages say "in the options" */
    return validate(&ld);
}

/* ---- the whole load -------------------------------------------------------------------------- */

static void log_summary(const dbpool__options *o)
{
    char server[DBPOOL__PATH_MAX + 16];
    if (o->host[0])
        snprintf(server, sizeof server, "%s port %u", o->host, o->port);
    else
        snprintf(server, sizeof server, "socket %s", o->socket);
    dbpool__log(DBPOOL_LOG_DEBUG, "configuration: file %s, %s, user %s, database %s, limit %u, "
                "acquire timeout %u ms, TLS %s", o->env_file[0] ? o->env_file : "(none)", server,
                o->user, o->database[0] ? o->database : "(none)", o->limit, o->acquire_timeout_ms,
                ssl_names[o->ssl_mode]);
}

int dbpool__config_load(dbpool__options *o, const char *env_file)
{
    struct load ld;
    int rc;
    dbpool__config_defaults(o);
    load_init(&ld, o, "");
    if ((rc = load_file(&ld, env_file)) != 0 || (rc = load_env(&ld)) != 0 ||
        (rc = load_overrides(&ld)) != 0)
        goto fail;
    /* DB_SOCKET alone means the socket: the default DB_HOST must not silently win with TCP. */
    if (o->socket[0] && ld.src[I_HOST].kind == SRC_DEFAULT)
        o->host[0] = '\0';
    if ((rc = validate(&ld)) != 0)
        goto fail;
    log_summary(o);
    return 0;
fail:
    explicit_bzero(o->password, sizeof o->password); /* a failed load leaves no secret behind */
    return rc;
}
