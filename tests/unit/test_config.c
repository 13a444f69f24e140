/*
 * test_config.c - configuration (issue 3, RELIABILITY.md item 30): the dotenv rules, every key,
 * value validation, precedence (dbpool_config_set > environment > file > default), file lookup
 * and permissions, contradictions, and a canary password that must never reach any output.
 * No server. Each test runs in a fresh temporary directory with no DB_* environment.
 */
#include "dbpool_int.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

/* ---- fixtures: clean environment, temporary directory, captured log -------------------------- */

static char logbuf[64 * 1024];
static size_t loglen;
static int nwarn;
static char tmpdir[64];
static char olddir[4096];

static void capture(int level, const char *msg, void *ud)
{
    (void)ud;
    int n = snprintf(logbuf + loglen, sizeof logbuf - loglen, "[%d] %s\n", level, msg);
    if (n > 0)
        loglen = loglen + (size_t)n < sizeof logbuf ? loglen + (size_t)n : sizeof logbuf - 1;
    nwarn += level == DBPOOL_LOG_WARN;
}

static void clear_db_env(void)
{
    char names[256][128];
    size_t n = 0;
    for (char **e = environ; *e && n < 256; e++) {
        size_t len = strcspn(*e, "=");
        if ((strncmp(*e, "DB_", 3) == 0 || strncmp(*e, "DBPOOL_", 7) == 0) && len < 128) {
            memcpy(names[n], *e, len);
            names[n++][len] = '\0';
        }
    }
    for (size_t i = 0; i < n; i++)
        unsetenv(names[i]);
}

static int setup(void **state)
{
    (void)state;
    clear_db_env();
    dbpool__config_clear_overrides();
    loglen = 0;
    logbuf[0] = '\0';
    nwarn = 0;
    dbpool_set_logger(capture, NULL);
    dbpool__set_log_level(DBPOOL_LOG_DEBUG); /* capture every level the code can produce */
    if (!getcwd(olddir, sizeof olddir))
        return -1;
    strcpy(tmpdir, "/tmp/dbpool-cfgtest-XXXXXX");
    if (!mkdtemp(tmpdir) || chdir(tmpdir) != 0)
        return -1;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    (void)state;
    dbpool_close();
    dbpool__config_clear_overrides();
    dbpool_set_logger(NULL, NULL);
    dbpool__set_log_level(DBPOOL_LOG_WARN);
    if (chdir(olddir) != 0)
        return -1;
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    clear_db_env();
    return 0;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0); /* umask-independent */
    close(fd);
}

/* ---- helpers ---------------------------------------------------------------------------------- */

static int parse_n(dbpool__options *o, const char *text, size_t len)
{
    dbpool__config_defaults(o);
    dbpool__clear_error();
    return dbpool__config_parse_buffer(o, text, len, "t.env");
}

static int parse(dbpool__options *o, const char *text) { return parse_n(o, text, strlen(text)); }

static void expect_in(const char *haystack, const char *needle, const char *what)
{
    if (!strstr(haystack, needle))
        fail_msg("%s: expected \"%s\" in \"%s\"", what, needle, haystack);
}

/* Every key, as the tests know them independently of config.c's table. */
static const char *const all_keys[] = {
    "DB_HOST", "DB_PORT", "DB_SOCKET", "DB_USER", "DB_PASSWORD", "DB_NAME",
    "DB_CONNECTION_LIMIT", "DB_ACQUIRE_TIMEOUT_MS", "DB_QUEUE_LIMIT", "DB_QUEUE_OVERTAKE_US",
    "DB_QUERY_SHARE_US", "DB_IDLE_TIMEOUT_MS",
    "DB_MAX_LIFETIME_MS", "DB_VALIDATE_AFTER_MS", "DB_RESET_ON_RELEASE", "DB_LEAK_THRESHOLD_MS",
    "DB_CONNECT_TIMEOUT_MS", "DB_READ_TIMEOUT_MS", "DB_WRITE_TIMEOUT_MS",
    "DB_SESSION_WAIT_TIMEOUT_S", "DB_SSL_MODE", "DB_SSL_CA", "DB_SSL_CERT", "DB_SSL_KEY",
    "DB_SIGNAL_HOOKS", "DB_SHUTDOWN_GRACE_MS", "DB_HOST_BUDGET", "DB_HOST_BUDGET_DIR",
    "DB_LOG_LEVEL"};
#define NALL (sizeof all_keys / sizeof all_keys[0])

/* The field behind `key`, as text ("" for an unknown key). A separate map from config.c's, so a
 * key wired to the wrong field is caught. */
static const char *render(const dbpool__options *o, const char *key, char *buf, size_t n)
{
    static const char *const ssl[] = {"DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA",
                                      "VERIFY_IDENTITY"};
    static const char *const lvl[] = {"error", "warn", "info", "debug"};
    struct { const char *k; const char *s; unsigned u; int kind; } m[] = {
        {"DB_HOST", o->host, 0, 0}, {"DB_SOCKET", o->socket, 0, 0}, {"DB_USER", o->user, 0, 0},
        {"DB_PASSWORD", o->password, 0, 0}, {"DB_NAME", o->database, 0, 0},
        {"DB_SSL_CA", o->ssl_ca, 0, 0}, {"DB_SSL_CERT", o->ssl_cert, 0, 0},
        {"DB_SSL_KEY", o->ssl_key, 0, 0}, {"DB_HOST_BUDGET_DIR", o->budget_dir, 0, 0},
        {"DB_PORT", NULL, o->port, 1}, {"DB_CONNECTION_LIMIT", NULL, o->limit, 1},
        {"DB_ACQUIRE_TIMEOUT_MS", NULL, o->acquire_timeout_ms, 1},
        {"DB_QUEUE_LIMIT", NULL, o->queue_limit, 1}, {"DB_IDLE_TIMEOUT_MS", NULL, o->idle_timeout_ms, 1},
        {"DB_QUEUE_OVERTAKE_US", NULL, o->queue_overtake_us, 1},
        {"DB_QUERY_SHARE_US", NULL, o->query_share_us, 1},
        {"DB_MAX_LIFETIME_MS", NULL, o->max_lifetime_ms, 1},
        {"DB_VALIDATE_AFTER_MS", NULL, o->validate_after_ms, 1},
        {"DB_RESET_ON_RELEASE", NULL, o->reset_on_release, 1},
        {"DB_LEAK_THRESHOLD_MS", NULL, o->leak_threshold_ms, 1},
        {"DB_CONNECT_TIMEOUT_MS", NULL, o->connect_timeout_ms, 1},
        {"DB_READ_TIMEOUT_MS", NULL, o->read_timeout_ms, 1},
        {"DB_WRITE_TIMEOUT_MS", NULL, o->write_timeout_ms, 1},
        {"DB_SESSION_WAIT_TIMEOUT_S", NULL, o->session_wait_timeout_s, 1},
        {"DB_SIGNAL_HOOKS", NULL, o->signal_hooks, 1},
        {"DB_SHUTDOWN_GRACE_MS", NULL, o->shutdown_grace_ms, 1},
        {"DB_HOST_BUDGET", NULL, o->host_budget, 1},
        {"DB_SSL_MODE", ssl[o->ssl_mode], 0, 0}, {"DB_LOG_LEVEL", lvl[o->log_level], 0, 0},
    };
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        if (strcmp(m[i].k, key) != 0)
            continue;
        if (m[i].kind)
            snprintf(buf, n, "%u", m[i].u);
        else
            snprintf(buf, n, "%s", m[i].s);
        return buf;
    }
    fail_msg("render: unknown key %s", key);
    return buf;
}

static void check_option(const dbpool__options *o, const char *key, const char *want,
                         const char *what)
{
    char buf[DBPOOL__PATH_MAX];
    render(o, key, buf, sizeof buf);
    if (strcmp(buf, want) != 0)
        fail_msg("%s: %s is \"%s\", expected \"%s\"", what, key, buf, want);
}

/* ---- defaults and .env.example ----------------------------------------------------------------- */

static void defaults_are_the_documented_ones(void **state)
{
    (void)state;
    dbpool__options o;
    char dir[64];
    dbpool__config_defaults(&o);
    static const char *const want[][2] = {
        {"DB_HOST", "127.0.0.1"}, {"DB_PORT", "3306"}, {"DB_SOCKET", ""}, {"DB_USER", ""},
        {"DB_PASSWORD", ""}, {"DB_NAME", ""}, {"DB_CONNECTION_LIMIT", "3"},
        {"DB_ACQUIRE_TIMEOUT_MS", "10000"}, {"DB_QUEUE_LIMIT", "0"}, {"DB_QUEUE_OVERTAKE_US", "1000"},
        {"DB_QUERY_SHARE_US", "1000"},
        {"DB_IDLE_TIMEOUT_MS", "60000"}, {"DB_MAX_LIFETIME_MS", "1800000"},
        {"DB_VALIDATE_AFTER_MS", "5000"}, {"DB_RESET_ON_RELEASE", "0"},
        {"DB_LEAK_THRESHOLD_MS", "60000"}, {"DB_CONNECT_TIMEOUT_MS", "5000"},
        {"DB_READ_TIMEOUT_MS", "30000"}, {"DB_WRITE_TIMEOUT_MS", "30000"},
        {"DB_SESSION_WAIT_TIMEOUT_S", "3600"}, {"DB_SSL_MODE", "PREFERRED"}, {"DB_SSL_CA", ""},
        {"DB_SSL_CERT", ""}, {"DB_SSL_KEY", ""}, {"DB_SIGNAL_HOOKS", "1"},
        {"DB_SHUTDOWN_GRACE_MS", "2000"}, {"DB_HOST_BUDGET", "0"}, {"DB_LOG_LEVEL", "warn"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        check_option(&o, want[i][0], want[i][1], "defaults");
    snprintf(dir, sizeof dir, "/tmp/dbpool-budget-%lu", (unsigned long)getuid());
    check_option(&o, "DB_HOST_BUDGET_DIR", dir, "defaults");
    /* The defaults themselves pass validation once a user is given. */
    strcpy(o.user, "app");
    assert_int_equal(dbpool__config_validate(&o), 0);
    o.user[0] = '\0';
    assert_int_equal(dbpool__config_validate(&o), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "DB_USER", "empty user");
}

/* .env.example (found from this file's path) names every key and, where it assigns one, gives
 * exactly the default, so the documentation cannot drift from the code. */
static void env_example_documents_every_key_with_its_default(void **state)
{
    (void)state;
    char path[4096], line[64];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *cut = strstr(path, "tests/unit/test_config.c");
    assert_non_null(cut);
    strcpy(cut, ".env.example");
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    static char text[64 * 1024];
    size_t len = fread(text + 1, 1, sizeof text - 2, f);
    fclose(f);
    text[0] = '\n';
    text[len + 1] = '\0';
    for (size_t i = 0; i < NALL; i++) {
        char assigned[64];
        snprintf(assigned, sizeof assigned, "\n%s=", all_keys[i]);
        snprintf(line, sizeof line, "\n# %s=", all_keys[i]);
        if (!strstr(text, assigned) && !strstr(text, line))
            fail_msg(".env.example does not document %s", all_keys[i]);
    }
    dbpool__options o, d;
    assert_int_equal(parse_n(&o, text + 1, len), 0);
    assert_int_equal(nwarn, 0);
    dbpool__config_defaults(&d);
    for (size_t i = 0; i < NALL; i++) {
        char want[DBPOOL__PATH_MAX];
        if (strcmp(all_keys[i], "DB_USER") && strcmp(all_keys[i], "DB_PASSWORD") &&
            strcmp(all_keys[i], "DB_NAME"))
            check_option(&o, all_keys[i], render(&d, all_keys[i], want, sizeof want), ".env.example");
    }
}

/* ---- dotenv forms that are accepted ----------------------------------------------------------- */

struct accepted {
    const char *what, *text;
    size_t len; /* 0: strlen */
    const char *key, *want;
};

static const struct accepted accepted_cases[] = {
    {"plain", "DB_USER=app\n", 0, "DB_USER", "app"},
    {"no final newline", "DB_USER=app", 0, "DB_USER", "app"},
    {"export prefix", "export DB_USER=app\n", 0, "DB_USER", "app"},
    {"export and tabs", "export \t DB_USER=app\n", 0, "DB_USER", "app"},
    {"blanks around =", "DB_USER = app \t\n", 0, "DB_USER", "app"},
    {"inline comment", "DB_USER=app # the app user\n", 0, "DB_USER", "app"},
    {"inline comment after tab", "DB_USER=app\t#c\n", 0, "DB_USER", "app"},
    {"# inside a word", "DB_PASSWORD=pa#ss\n", 0, "DB_PASSWORD", "pa#ss"},
    {"# right after =", "DB_PASSWORD=#hash\n", 0, "DB_PASSWORD", "#hash"},
    {"only a comment", "DB_USER= # nothing\n", 0, "DB_USER", ""},
    {"empty", "DB_USER=\n", 0, "DB_USER", ""},
    {"empty at EOF", "DB_USER=", 0, "DB_USER", ""},
    {"double quotes keep blanks and #", "DB_PASSWORD=\" a # b \"\n", 0, "DB_PASSWORD", " a # b "},
    {"single quotes", "DB_PASSWORD=' x '\n", 0, "DB_PASSWORD", " x "},
    {"quoted then comment", "DB_PASSWORD=\"x\"  # c\n", 0, "DB_PASSWORD", "x"},
    {"blanks before quote", "DB_PASSWORD=  'x'\n", 0, "DB_PASSWORD", "x"},
    {"empty quotes", "DB_USER=\"\"\n", 0, "DB_USER", ""},
    {"other quote inside", "DB_PASSWORD=\"it's\"\n", 0, "DB_PASSWORD", "it's"},
    {"quote inside unquoted", "DB_PASSWORD=it's\n", 0, "DB_PASSWORD", "it's"},
    {"semicolons (inih's comment char)", "DB_PASSWORD=a;b ;c\n", 0, "DB_PASSWORD", "a;b ;c"},
    {"semicolon in quotes", "DB_PASSWORD=\"q ;x\"\n", 0, "DB_PASSWORD", "q ;x"},
    {"= in value", "DB_PASSWORD=x=y==\n", 0, "DB_PASSWORD", "x=y=="},
    {": in value", "DB_PASSWORD=a:b\n", 0, "DB_PASSWORD", "a:b"},
    {"no variable expansion", "DB_PASSWORD=$HOME${USER}\n", 0, "DB_PASSWORD", "$HOME${USER}"},
    {"no escapes", "DB_PASSWORD=\"a\\nb\"\n", 0, "DB_PASSWORD", "a\\nb"},
    {"CRLF", "DB_USER=app\r\nDB_NAME=d\r\n", 0, "DB_USER", "app"},
    {"CRLF value", "DB_USER=app\r\nDB_NAME=d\r\n", 0, "DB_NAME", "d"},
    {"UTF-8 BOM", "\xEF\xBB\xBF" "DB_USER=app\n", 0, "DB_USER", "app"},
    {"BOM, CRLF, comment first", "\xEF\xBB\xBF# c\r\nDB_USER=app\r\n", 0, "DB_USER", "app"},
    {"UTF-8 value", "DB_PASSWORD=p\xC3\xA4ss\n", 0, "DB_PASSWORD", "p\xC3\xA4ss"},
    {"last duplicate wins", "DB_USER=a\nDB_USER=b\n", 0, "DB_USER", "b"},
    {"comments and blank lines", "# c\n\n \t\n   # indented comment\nDB_USER=app\n", 0, "DB_USER", "app"},
    {"non-DB lines around", "APP_URL=http://x:1/y\nNODE_ENV=production\nDB_USER=app\nmy.key-1=v\n", 0,
     "DB_USER", "app"},
    {"empty input", "", 0, "DB_CONNECTION_LIMIT", "3"},
    {"number", "DB_CONNECTION_LIMIT=8\n", 0, "DB_CONNECTION_LIMIT", "8"},
    {"number and comment", "DB_CONNECTION_LIMIT=8 # eight\n", 0, "DB_CONNECTION_LIMIT", "8"},
    {"quoted number", "DB_CONNECTION_LIMIT=\"8\"\n", 0, "DB_CONNECTION_LIMIT", "8"},
    {"leading zeros", "DB_CONNECTION_LIMIT=007\n", 0, "DB_CONNECTION_LIMIT", "7"},
    {"lowest limit", "DB_CONNECTION_LIMIT=1\n", 0, "DB_CONNECTION_LIMIT", "1"},
    {"highest limit", "DB_CONNECTION_LIMIT=1000\n", 0, "DB_CONNECTION_LIMIT", "1000"},
    {"bool off", "DB_RESET_ON_RELEASE=off\n", 0, "DB_RESET_ON_RELEASE", "0"},
    {"bool False", "DB_RESET_ON_RELEASE=False\n", 0, "DB_RESET_ON_RELEASE", "0"},
    {"bool no", "DB_SIGNAL_HOOKS=no\n", 0, "DB_SIGNAL_HOOKS", "0"},
    {"bool 0", "DB_SIGNAL_HOOKS=0\n", 0, "DB_SIGNAL_HOOKS", "0"},
    {"bool YES", "DB_RESET_ON_RELEASE=0\nDB_RESET_ON_RELEASE=YES\n", 0, "DB_RESET_ON_RELEASE", "1"},
    {"bool On", "DB_SIGNAL_HOOKS=0\nDB_SIGNAL_HOOKS=On\n", 0, "DB_SIGNAL_HOOKS", "1"},
    {"bool true", "DB_SIGNAL_HOOKS=0\nDB_SIGNAL_HOOKS=true\n", 0, "DB_SIGNAL_HOOKS", "1"},
    {"bool 1", "DB_SIGNAL_HOOKS=0\nDB_SIGNAL_HOOKS=1\n", 0, "DB_SIGNAL_HOOKS", "1"},
    {"ssl mode any case", "DB_SSL_MODE=verify_identity\n", 0, "DB_SSL_MODE", "VERIFY_IDENTITY"},
    {"ssl disabled", "DB_SSL_MODE=DISABLED\n", 0, "DB_SSL_MODE", "DISABLED"},
    {"log level any case", "DB_LOG_LEVEL=DEBUG\n", 0, "DB_LOG_LEVEL", "debug"},
    {"log level error", "DB_LOG_LEVEL=error\n", 0, "DB_LOG_LEVEL", "error"},
    {"wait timeout 0 (keep the server's)", "DB_SESSION_WAIT_TIMEOUT_S=0\n", 0,
     "DB_SESSION_WAIT_TIMEOUT_S", "0"},
    {"lifetime 0 (no limit)", "DB_MAX_LIFETIME_MS=0\n", 0, "DB_MAX_LIFETIME_MS", "0"},
};

static void accepted_dotenv_forms(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof accepted_cases / sizeof accepted_cases[0]; i++) {
        const struct accepted *c = &accepted_cases[i];
        dbpool__options o;
        int rc = parse_n(&o, c->text, c->len ? c->len : strlen(c->text));
        if (rc != 0)
            fail_msg("%s: rc %d (%s)", c->what, rc, dbpool_last_error());
        check_option(&o, c->key, c->want, c->what);
    }
    assert_int_equal(nwarn, 0);
}

/* Every key reaches its own field, from the file and from the environment, through the whole
 * load (so the values also pass validation together). */
static const char *const every_key[][2] = {
    {"DB_HOST", "localhost"}, {"DB_PORT", "3307"}, {"DB_SOCKET", "/tmp/x.sock"},
    {"DB_USER", "u1"}, {"DB_PASSWORD", "p1"}, {"DB_NAME", "d1"}, {"DB_CONNECTION_LIMIT", "7"},
    {"DB_ACQUIRE_TIMEOUT_MS", "1234"}, {"DB_QUEUE_LIMIT", "55"}, {"DB_QUEUE_OVERTAKE_US", "250"},
    {"DB_QUERY_SHARE_US", "333"},
    {"DB_IDLE_TIMEOUT_MS", "4321"},
    {"DB_MAX_LIFETIME_MS", "600000"}, {"DB_VALIDATE_AFTER_MS", "77"},
    {"DB_RESET_ON_RELEASE", "0"}, {"DB_LEAK_THRESHOLD_MS", "9999"},
    {"DB_CONNECT_TIMEOUT_MS", "2000"}, {"DB_READ_TIMEOUT_MS", "3000"},
    {"DB_WRITE_TIMEOUT_MS", "4000"}, {"DB_SESSION_WAIT_TIMEOUT_S", "7200"},
    {"DB_SSL_MODE", "VERIFY_IDENTITY"}, {"DB_SSL_CA", "ca.pem"}, {"DB_SSL_CERT", "cert.pem"},
    {"DB_SSL_KEY", "key.pem"}, {"DB_SIGNAL_HOOKS", "0"}, {"DB_SHUTDOWN_GRACE_MS", "1500"},
    {"DB_HOST_BUDGET", "9"}, {"DB_HOST_BUDGET_DIR", "/tmp/budget-x"}, {"DB_LOG_LEVEL", "info"},
};

static void every_key_reaches_its_field(void **state)
{
    (void)state;
    char text[4096] = "";
    assert_int_equal(sizeof every_key / sizeof every_key[0], NALL);
    write_file("ca.pem", "x", 0600);
    write_file("cert.pem", "x", 0600);
    write_file("key.pem", "x", 0600);
    for (size_t i = 0; i < NALL; i++) {
        size_t len = strlen(text);
        snprintf(text + len, sizeof text - len, "%s=%s\n", every_key[i][0], every_key[i][1]);
    }
    write_file("all.env", text, 0600);
    write_file("empty.env", "", 0600);
    for (int pass = 0; pass < 2; pass++) {
        dbpool__options o;
        if (pass == 1) /* the same values from the environment, over an empty file */
            for (size_t i = 0; i < NALL; i++)
                setenv(every_key[i][0], every_key[i][1], 1);
        if (dbpool__config_load(&o, pass ? "empty.env" : "all.env") != 0)
            fail_msg("%s: %s", pass ? "environment" : "file", dbpool_last_error());
        for (size_t i = 0; i < NALL; i++)
            check_option(&o, every_key[i][0], every_key[i][1], pass ? "environment" : "file");
    }
}

/* ---- lines that are rejected -------------------------------------------------------------------- */

struct rejected {
    const char *what, *text;
    size_t len;
    unsigned line;
    const char *msg;
};

static const struct rejected rejected_cases[] = {
    {"section", "DB_USER=a\n[db]\nDB_NAME=b\n", 0, 2, "section"},
    {"indented assignment (inih: continuation)", "DB_USER=a\n  DB_NAME=b\n", 0, 2, "indented"},
    {"tab-indented continuation", "DB_USER=a\n\tmore\n", 0, 2, "indented"},
    {"':' separator", "DB_USER: app\n", 0, 1, "':'"},
    {"A:B=C", "A:B=C\n", 0, 1, "':'"},
    {"line without =", "NOEQUALS\n", 0, 1, "no '='"},
    {"export without =", "export DB_USER\n", 0, 1, "no '='"},
    {"empty key", "=value\n", 0, 1, "no key"},
    {"export of nothing", "export =x\n", 0, 1, "no key"},
    {"blank inside key", "DB USER=x\n", 0, 1, "invalid key"},
    {"odd key character", "DB_USER;x=1\n", 0, 1, "invalid key"},
    {"unterminated double quote", "DB_USER=\"app\n", 0, 1, "unterminated"},
    {"unterminated single quote", "DB_USER='app\n", 0, 1, "unterminated"},
    {"mismatched quotes", "DB_USER='app\"\n", 0, 1, "unterminated"},
    {"value over two lines", "DB_PASSWORD=\"a\nb\"\n", 0, 1, "unterminated"},
    {"text after the closing quote", "DB_USER=\"a\"b\n", 0, 1, "after the closing quote"},
    {"# glued to the closing quote", "DB_USER=\"a\"#c\n", 0, 1, "after the closing quote"},
    {"NUL byte", "DB_USER=a\0b\n", 12, 1, "NUL"},
    {"line numbers count comments, blanks and CRLF", "# c\r\n\r\nDB_USER=a\r\nBAD\r\n", 0, 4, "no '='"},
    {"the first error is reported", "DB_USER=a\nBAD\n[s]\n", 0, 2, "no '='"},
    {"errors in application lines too", "APP_X=\"open\n", 0, 1, "unterminated"},
};

static void rejected_lines_name_file_and_line(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rejected_cases / sizeof rejected_cases[0]; i++) {
        const struct rejected *c = &rejected_cases[i];
        dbpool__options o;
        char where[32];
        int rc = parse_n(&o, c->text, c->len ? c->len : strlen(c->text));
        if (rc != DBPOOL_ECONFIG)
            fail_msg("%s: rc %d, expected DBPOOL_ECONFIG", c->what, rc);
        snprintf(where, sizeof where, "t.env:%u:", c->line);
        expect_in(dbpool_last_error(), where, c->what);
        expect_in(dbpool_last_error(), c->msg, c->what);
    }
}

/* RELIABILITY.md item 30: each bad DB_CONNECTION_LIMIT is rejected, naming key, value, file,
 * line and the range, and never falls back to the default. */
static void connection_limit_rejects_bad_numbers(void **state)
{
    (void)state;
    static const char *const bad[][2] = {
        {"0", "0"}, {"-1", "-1"}, {"abc", "abc"}, {"8x", "8x"}, {"99999999999", "99999999999"},
        {"", ""}, {"1001", "1001"}, {"+5", "+5"}, {"5.0", "5.0"}, {"0x10", "0x10"},
        {"1e3", "1e3"}, {"\" 5\"", " 5"}, {"'5 '", "5 "}, {"18446744073709551617", "18446744073709551617"},
        {"4294967299", "4294967299"}, {"8 8", "8 8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128], shown[64];
        dbpool__options o;
        snprintf(text, sizeof text, "# pool\nDB_CONNECTION_LIMIT=%s\n", bad[i][0]);
        int rc = parse(&o, text);
        if (rc != DBPOOL_ECONFIG)
            fail_msg("DB_CONNECTION_LIMIT=%s: rc %d, limit %u", bad[i][0], rc, o.limit);
        snprintf(shown, sizeof shown, "DB_CONNECTION_LIMIT=\"%s\"", bad[i][1]);
        expect_in(dbpool_last_error(), shown, bad[i][0]);
        expect_in(dbpool_last_error(), "t.env:2", bad[i][0]);
        expect_in(dbpool_last_error(), "allowed 1..1000", bad[i][0]);
    }
}

static void other_bad_values_are_rejected(void **state)
{
    (void)state;
    static const char *const bad[][2] = {
        {"DB_PORT=0", "DB_PORT=\"0\" at t.env:1: out of range (allowed 1..65535)"},
        {"DB_PORT=65536", "allowed 1..65535"},
        {"DB_PORT=", "DB_PORT=\"\" at t.env:1: empty value"},
        {"DB_IDLE_TIMEOUT_MS=0", "allowed 1..86400000"},
        {"DB_CONNECT_TIMEOUT_MS=999", "allowed 1000..3600000"},
        {"DB_READ_TIMEOUT_MS=10", "allowed 1000..86400000"},
        {"DB_ACQUIRE_TIMEOUT_MS=0", "allowed 1..3600000"},
        {"DB_SESSION_WAIT_TIMEOUT_S=31536001", "allowed 0..31536000"},
        {"DB_QUERY_SHARE_US=10000001", "DB_QUERY_SHARE_US=\"10000001\" at t.env:1: out of range (allowed 0..10000000)"},
        {"DB_HOST_BUDGET=-2", "not a whole number"},
        {"DB_RESET_ON_RELEASE=maybe", "DB_RESET_ON_RELEASE=\"maybe\" at t.env:1: not a boolean"},
        {"DB_SIGNAL_HOOKS=", "not a boolean"},
        {"DB_SIGNAL_HOOKS=enabled", "not a boolean"},
        {"DB_SSL_MODE=verify", "DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"},
        {"DB_SSL_MODE=", "DB_SSL_MODE=\"\""},
        {"DB_LOG_LEVEL=trace", "error, warn, info, debug"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dbpool__options o;
        if (parse(&o, bad[i][0]) != DBPOOL_ECONFIG)
            fail_msg("%s accepted", bad[i][0]);
        expect_in(dbpool_last_error(), bad[i][1], bad[i][0]);
    }
    /* String lengths: one byte under the buffer is fine, the buffer size is not. */
    char text[1024];
    dbpool__options o;
    snprintf(text, sizeof text, "DB_USER=%0255d", 0);
    assert_int_equal(parse(&o, text), 0);
    assert_int_equal(strlen(o.user), 255);
    snprintf(text, sizeof text, "DB_USER=%0256d", 0);
    assert_int_equal(parse(&o, text), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "value too long (max 255 bytes)", "long user");
    snprintf(text, sizeof text, "DB_PASSWORD=%0511d", 0);
    assert_int_equal(parse(&o, text), 0);
    snprintf(text, sizeof text, "DB_PASSWORD=%0512d", 0);
    assert_int_equal(parse(&o, text), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "DB_PASSWORD at t.env:1: value too long (max 511 bytes)", "pw");
}

/* ---- overlong lines ----------------------------------------------------------------------------- */

/* inih alone splits a line longer than its 200-byte buffer and accepts the tail as a new key:
 * the reason for our reader. Shown here so the smuggling input below is known to be real. */
static int inih_handler(void *user, const char *section, const char *name, const char *value)
{
    (void)section;
    if (strcmp(name, "DB_CONNECTION_LIMIT") == 0)
        *(int *)user = atoi(value);
    return 1;
}

static void overlong_line_cannot_smuggle_a_key(void **state)
{
    (void)state;
    static char text[8192];
    dbpool__options o;
    /* 223 bytes, the tail starting exactly where inih cuts (199 bytes in): within our limit, so
     * it is one value, tail included. */
    snprintf(text, sizeof text, "DB_PASSWORD=%0187dDB_CONNECTION_LIMIT=1000\n", 7);
    int smuggled = 0;
    assert_int_equal(ini_parse_string(text, inih_handler, &smuggled), 0);
    assert_int_equal(smuggled, 1000); /* raw inih falls for it */
    assert_int_equal(parse(&o, text), 0);
    assert_int_equal(o.limit, 3);
    assert_int_equal(strlen(o.password), 187 + strlen("DB_CONNECTION_LIMIT=1000"));
    expect_in(o.password, "DB_CONNECTION_LIMIT=1000", "password keeps its tail");
    /* Over 4095 bytes: the whole file is refused, naming the line, not echoing it. */
    memset(text, 0, sizeof text);
    strcpy(text, "DB_USER=app\nDB_PASSWORD=");
    memset(text + strlen(text), 'S', 4200);
    strcat(text, "DB_CONNECTION_LIMIT=1000\n");
    assert_int_equal(parse(&o, text), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "t.env:2: line longer than 4095 bytes", "overlong");
    assert_null(strstr(dbpool_last_error(), "SSSS"));
    assert_int_equal(o.limit, 3);
}

static void line_length_limit_is_exact(void **state)
{
    (void)state;
    static char text[8192];
    dbpool__options o;
    for (size_t total = 4094; total <= 4096; total++) {
        for (int crlf = 0; crlf < 2; crlf++) {
            memset(text, 0, sizeof text);
            strcpy(text, "APP_X=");
            memset(text + 6, 'v', total - 6);
            strcat(text, crlf ? "\r\n" : "\n");
            int rc = parse(&o, text);
            if (rc != (total <= 4095 ? 0 : DBPOOL_ECONFIG))
                fail_msg("%zu-byte line (crlf %d): rc %d", total, crlf, rc);
        }
    }
}

/* ---- keys that are not ours, or unknown ----------------------------------------------------- */

static void unknown_db_key_warns_with_key_and_line(void **state)
{
    (void)state;
    dbpool__options o;
    assert_int_equal(parse(&o, "# pool size\nDB_CONECTION_LIMIT=5\nDB_FOO=1\n"), 0);
    assert_int_equal(o.limit, 3); /* the typo changed nothing */
    assert_int_equal(nwarn, 2);
    expect_in(logbuf, "t.env:2: unknown key DB_CONECTION_LIMIT ignored (did you mean "
                      "DB_CONNECTION_LIMIT?)", "typo");
    expect_in(logbuf, "t.env:3: unknown key DB_FOO ignored", "unknown");
    assert_null(strstr(logbuf, "DB_FOO ignored (did you mean"));
}

static void non_db_keys_are_ignored(void **state)
{
    (void)state;
    dbpool__options o, d;
    assert_int_equal(parse(&o, "APP_SECRET=x y z\nNODE_ENV=production\nDATABASE_URL=mysql://u:p@h/d\n"
                               "DBX=1\nmy.key-2='quoted'\nD=1\n"), 0);
    assert_int_equal(nwarn, 0);
    dbpool__config_defaults(&d);
    assert_memory_equal(&o, &d, sizeof o);
    /* A lower-case db_ key is most likely one of ours mistyped: warned, still ignored. */
    assert_int_equal(parse(&o, "db_connection_limit=9\n"), 0);
    assert_int_equal(o.limit, 3);
    expect_in(logbuf, "t.env:1: key db_connection_limit ignored: keys are case-sensitive", "case");
}

/* ---- the password canary --------------------------------------------------------------------- */

#define CANARY "Canary-Pw-7f3a9e"

static void expect_no_canary(const char *what)
{
    if (strstr(dbpool_last_error(), CANARY) || strstr(logbuf, CANARY))
        fail_msg("%s: the password reached an output: error \"%s\", log \"%s\"", what,
                 dbpool_last_error(), logbuf);
}

/* One long canary: many copies, so any partial echo is caught too. */
static const char *canary_repeated(size_t copies)
{
    static char buf[6000];
    buf[0] = '\0';
    for (size_t i = 0; i < copies && strlen(buf) + sizeof CANARY < sizeof buf; i++)
        strcat(buf, CANARY);
    return buf;
}

static void password_never_in_parse_errors_or_warnings(void **state)
{
    (void)state;
    static char text[8192];
    const char *lines[] = {
        "DB_PASSWORD: " CANARY "\n",             /* ':' separator */
        "DB_USER=x\n  " CANARY "\n",             /* continuation */
        "DB_PASSWORD=\"" CANARY "\n",            /* unterminated quote */
        "DB_PASSWORD=\"" CANARY "\"junk\n",      /* text after quote */
        CANARY "\n",                             /* the password alone on a line */
        "[" CANARY "]\n",                        /* section */
        "DB_PASSWORD " CANARY "=x\n",            /* bad key */
        "DB_PASSWORD=" CANARY "\0x\n",           /* NUL */
        "DB_PASSWORD=" CANARY "\nDB_CONNECTION_LIMIT=abc\n", /* a later error */
        "DB_PASSWORD=" CANARY "\nDB_SSL_MODE=bogus\n",
    };
    size_t lens[] = {0, 0, 0, 0, 0, 0, 0, sizeof("DB_PASSWORD=" CANARY "\0x\n") - 1, 0, 0};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        dbpool__options o;
        assert_int_equal(parse_n(&o, lines[i], lens[i] ? lens[i] : strlen(lines[i])), DBPOOL_ECONFIG);
        assert_true(dbpool_last_error()[0] != '\0');
        expect_no_canary(lines[i]);
    }
    dbpool__options o;
    snprintf(text, sizeof text, "DB_PASSWORD=%s\n", canary_repeated(40)); /* 640 > 511 bytes */
    assert_int_equal(parse(&o, text), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "DB_PASSWORD at t.env:1: value too long (max 511 bytes)", "long");
    expect_no_canary("too long");
    snprintf(text, sizeof text, "DB_PASSWORD=%s\n", canary_repeated(300)); /* 4800: overlong */
    assert_int_equal(parse(&o, text), DBPOOL_ECONFIG);
    expect_no_canary("overlong");
    /* A typo of the key must not print the value either. */
    assert_int_equal(parse(&o, "DB_PASWORD=" CANARY "\n"), 0);
    expect_in(logbuf, "DB_PASWORD", "typo warning");
    expect_no_canary("typo");
}

static void password_never_in_load_errors_or_logs(void **state)
{
    (void)state;
    dbpool__options o;
    /* From the environment and from dbpool_config_set(): too long. */
    setenv("DB_USER", "app", 1);
    setenv("DB_PASSWORD", canary_repeated(40), 1);
    assert_int_equal(dbpool__config_load(&o, NULL), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "DB_PASSWORD from the environment: value too long", "env");
    expect_no_canary("environment");
    unsetenv("DB_PASSWORD");
    assert_int_equal(dbpool_config_set("DB_PASSWORD", canary_repeated(40)), 0);
    assert_int_equal(dbpool__config_load(&o, NULL), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "DB_PASSWORD from dbpool_config_set(): value too long", "api");
    expect_no_canary("dbpool_config_set");
    /* A valid canary in a world-readable file, a contradiction, then a good load with every
     * level logged (the debug summary included). */
    assert_int_equal(dbpool_config_set("DB_PASSWORD", NULL), 0);
    write_file("c.env", "DB_PASSWORD=" CANARY "\nDB_SSL_MODE=VERIFY_CA\n", 0644);
    assert_int_equal(dbpool__config_load(&o, "c.env"), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "needs DB_SSL_CA", "contradiction");
    expect_in(logbuf, "readable by other users", "mode warning");
    expect_no_canary("contradiction");
    assert_true(o.password[0] == '\0'); /* a failed load leaves no secret behind */
    write_file("c.env", "DB_PASSWORD=" CANARY "\nDB_HOST_BUDGET=1\n", 0644);
    assert_int_equal(dbpool__config_load(&o, "c.env"), 0);
    assert_string_equal(o.password, CANARY);
    expect_in(logbuf, "configuration: file c.env", "debug summary");
    expect_no_canary("good load");
}

/* The default logger writes to stderr: check that path too. */
static void password_never_on_stderr(void **state)
{
    (void)state;
    dbpool__options o;
    char out[8192] = "";
    write_file("c.env", "DB_USER=app\nDB_PASSWORD=" CANARY "\nDB_PASWORD=" CANARY "\n", 0644);
    write_file("stderr.txt", "", 0600);
    int saved = dup(2), fd = open("stderr.txt", O_WRONLY);
    assert_true(saved >= 0 && fd >= 0);
    dbpool_set_logger(NULL, NULL);
    dup2(fd, 2);
    int rc = dbpool__config_load(&o, "c.env");
    dbpool_config_set("DB_PASSWORD", CANARY "-too-long-" CANARY);
    dbpool_config_set("DB_NOPE", CANARY);
    dup2(saved, 2);
    close(saved);
    close(fd);
    assert_int_equal(rc, 0);
    FILE *f = fopen("stderr.txt", "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    fclose(f);
    out[n] = '\0';
    expect_in(out, "readable by other users", "stderr");
    expect_in(out, "DB_PASWORD", "stderr");
    assert_null(strstr(out, CANARY));
    assert_null(strstr(dbpool_last_error(), CANARY));
}

/* ---- where the file comes from ---------------------------------------------------------------- */

static void missing_explicit_file_is_an_error(void **state)
{
    (void)state;
    dbpool__options o;
    setenv("DB_USER", "app", 1);
    assert_int_equal(dbpool__config_load(&o, "nope.env"), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "nope.env: cannot open: No such file", "explicit");
    assert_int_equal(dbpool__config_load(&o, ""), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "empty", "empty name");
}

static void missing_env_file_variable_target_is_an_error(void **state)
{
    (void)state;
    dbpool__options o;
    setenv("DB_USER", "app", 1);
    write_file(".env", "DB_NAME=fromdotenv\n", 0600);
    setenv("DBPOOL_ENV_FILE", "gone.env", 1);
    assert_int_equal(dbpool__config_load(&o, NULL), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "gone.env: cannot open", "DBPOOL_ENV_FILE");
}

static void missing_dot_env_is_fine(void **state)
{
    (void)state;
    dbpool__options o;
    setenv("DB_USER", "app", 1);
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_string_equal(o.env_file, "");
    assert_string_equal(o.user, "app");
    setenv("DBPOOL_ENV_FILE", "", 1); /* empty counts as unset */
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
}

static void env_file_lookup_order(void **state)
{
    (void)state;
    dbpool__options o;
    write_file(".env", "DB_USER=dot\n", 0600);
    write_file("named.env", "DB_USER=named\n", 0600);
    write_file("explicit.env", "DB_USER=explicit\n", 0600);
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_string_equal(o.user, "dot");
    assert_string_equal(o.env_file, ".env");
    setenv("DBPOOL_ENV_FILE", "named.env", 1);
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_string_equal(o.user, "named");
    assert_int_equal(dbpool__config_load(&o, "explicit.env"), 0);
    assert_string_equal(o.user, "explicit");
    assert_string_equal(o.env_file, "explicit.env");
}

static void world_writable_env_is_refused(void **state)
{
    (void)state;
    dbpool__options o;
    static const mode_t modes[] = {0666, 0602, 0622, 0646};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        write_file(".env", "DB_USER=app\n", modes[i]);
        assert_int_equal(dbpool__config_load(&o, NULL), DBPOOL_ECONFIG);
        expect_in(dbpool_last_error(), ".env: writable by other users", "o+w");
    }
    /* Checked on the opened file: a symlink (always mode 0777 itself) to a safe file is fine, a
     * symlink to an unsafe one is not. */
    write_file("safe.env", "DB_USER=app\n", 0600);
    assert_int_equal(symlink("safe.env", "link.env"), 0);
    assert_int_equal(dbpool__config_load(&o, "link.env"), 0);
    assert_int_equal(symlink(".env", "badlink.env"), 0);
    assert_int_equal(dbpool__config_load(&o, "badlink.env"), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "writable by other users", "symlink");
}

static void world_readable_env_warns(void **state)
{
    (void)state;
    dbpool__options o;
    write_file(".env", "DB_USER=app\n", 0600);
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_int_equal(nwarn, 0);
    write_file(".env", "DB_USER=app\n", 0660); /* group access is the operator's choice */
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_int_equal(nwarn, 0);
    write_file(".env", "DB_USER=app\n", 0644);
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_int_equal(nwarn, 1);
    expect_in(logbuf, ".env: readable by other users (mode 0644)", "o+r");
}

static void env_file_must_be_a_regular_file(void **state)
{
    (void)state;
    dbpool__options o;
    setenv("DB_USER", "app", 1);
    assert_int_equal(mkdir("dir.env", 0700), 0);
    assert_int_equal(dbpool__config_load(&o, "dir.env"), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "dir.env: not a regular file", "directory");
    assert_int_equal(mkfifo("fifo.env", 0600), 0); /* must not hang waiting for a writer */
    assert_int_equal(dbpool__config_load(&o, "fifo.env"), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "fifo.env: not a regular file", "fifo");
}

/* ---- precedence ------------------------------------------------------------------------------- */

static void environment_beats_file(void **state)
{
    (void)state;
    dbpool__options o;
    write_file(".env", "DB_USER=app\nDB_CONNECTION_LIMIT=8\nDB_NAME=filedb\n", 0600);
    setenv("DB_CONNECTION_LIMIT", "2", 1);
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_int_equal(o.limit, 2);
    assert_string_equal(o.database, "filedb"); /* the file still applies to other keys */
    setenv("DB_NAME", "", 1);                  /* set but empty still wins */
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_string_equal(o.database, "");
}

static void api_override_beats_environment(void **state)
{
    (void)state;
    dbpool__options o;
    write_file(".env", "DB_USER=app\nDB_CONNECTION_LIMIT=8\n", 0600);
    setenv("DB_CONNECTION_LIMIT", "2", 1);
    assert_int_equal(dbpool_config_set("DB_CONNECTION_LIMIT", "5"), 0);
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_int_equal(o.limit, 5);
    assert_int_equal(dbpool_config_set("DB_CONNECTION_LIMIT", "6"), 0); /* replaced */
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_int_equal(o.limit, 6);
    assert_int_equal(dbpool_config_set("DB_CONNECTION_LIMIT", NULL), 0); /* removed */
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_int_equal(o.limit, 2);
    unsetenv("DB_CONNECTION_LIMIT");
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_int_equal(o.limit, 8);
    assert_int_equal(dbpool_config_set("DB_CONNECTION_LIMIT", "4"), 0);
    dbpool__config_clear_overrides();
    assert_int_equal(dbpool__config_load(&o, NULL), 0);
    assert_int_equal(o.limit, 8);
}

static void bad_values_name_their_source(void **state)
{
    (void)state;
    dbpool__options o;
    write_file(".env", "DB_USER=app\n", 0600);
    setenv("DB_CONNECTION_LIMIT", "abc", 1);
    assert_int_equal(dbpool__config_load(&o, NULL), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "DB_CONNECTION_LIMIT=\"abc\" from the environment: not a whole "
                                   "number (allowed 1..1000)", "env");
    setenv("DB_CONNECTION_LIMIT", "4", 1);
    assert_int_equal(dbpool_config_set("DB_CONNECTION_LIMIT", "0"), 0); /* checked at start */
    assert_int_equal(dbpool__config_load(&o, NULL), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "DB_CONNECTION_LIMIT=\"0\" from dbpool_config_set(): out of "
                                   "range (allowed 1..1000)", "api");
}

static void config_set_rejects_bad_keys(void **state)
{
    (void)state;
    assert_int_equal(dbpool_config_set(NULL, "1"), DBPOOL_EINVAL);
    expect_in(dbpool_last_error(), "NULL key", "null");
    assert_int_equal(dbpool_config_set("DB_CONECTION_LIMIT", "1"), DBPOOL_EINVAL);
    expect_in(dbpool_last_error(), "unknown key DB_CONECTION_LIMIT", "typo");
    assert_int_equal(dbpool_config_set("db_user", "x"), DBPOOL_EINVAL);
    assert_int_equal(dbpool_config_set("APP_KEY", "x"), DBPOOL_EINVAL);
    assert_int_equal(dbpool_config_set("", "x"), DBPOOL_EINVAL);
    assert_int_equal(dbpool_config_set("DB_USER", NULL), 0); /* removing nothing is fine */
    assert_int_equal(dbpool_config_set("DB_USER", "x"), 0);
    assert_string_equal(dbpool_last_error(), "");
}

/* The pool reads its options once at start: dbpool_config_set() is refused while it runs, and a
 * configuration error leaves it not started. */
static void config_set_refused_while_the_pool_runs(void **state)
{
    (void)state;
    write_file("p.env", "DB_USER=app\nDB_SIGNAL_HOOKS=off\nDB_CONNECTION_LIMIT=x\n", 0600);
    assert_int_equal(dbpool_init("p.env"), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "DB_CONNECTION_LIMIT=\"x\"", "init error");
    assert_int_equal(dbpool_config_set("DB_CONNECTION_LIMIT", "2"), 0); /* not running */
    /* An invalid file value is an error even under an override: the file is broken. */
    assert_int_equal(dbpool_init("p.env"), DBPOOL_ECONFIG);
    write_file("p.env", "DB_USER=app\nDB_SIGNAL_HOOKS=off\nDB_CONNECTION_LIMIT=8\n", 0600);
    assert_int_equal(dbpool_init("p.env"), 0);                          /* opens no connection */
    assert_int_equal(dbpool_config_set("DB_CONNECTION_LIMIT", "4"), DBPOOL_EINVAL);
    expect_in(dbpool_last_error(), "the pool is running", "running");
    dbpool_stats st;
    assert_int_equal(dbpool_stats_get(&st), 0);
    assert_int_equal(st.limit, 2); /* the override, not the file */
    dbpool_close();
    assert_int_equal(dbpool_config_set("DB_CONNECTION_LIMIT", "4"), 0);
}

/* ---- contradictions and endpoint rules ------------------------------------------------------------ */

struct contradiction {
    const char *text; /* after DB_USER=app on line 1 */
    int rc;
    const char *msg1, *msg2;
};

static const struct contradiction contradictions[] = {
    {"DB_SESSION_WAIT_TIMEOUT_S=60\nDB_IDLE_TIMEOUT_MS=60000\n", DBPOOL_ECONFIG,
     "DB_SESSION_WAIT_TIMEOUT_S=60 (at v.env:2) must exceed DB_IDLE_TIMEOUT_MS=60000 (at v.env:3)",
     "server would end idle pooled sessions"},
    {"DB_SESSION_WAIT_TIMEOUT_S=61\nDB_IDLE_TIMEOUT_MS=60000\nDB_MAX_LIFETIME_MS=0\n", 0, NULL, NULL},
    {"DB_SESSION_WAIT_TIMEOUT_S=1800\n", DBPOOL_ECONFIG,
     "must exceed DB_MAX_LIFETIME_MS=1800000 (by default)", NULL},
    {"DB_SESSION_WAIT_TIMEOUT_S=1801\n", 0, NULL, NULL},
    {"DB_SESSION_WAIT_TIMEOUT_S=0\nDB_MAX_LIFETIME_MS=604800000\nDB_IDLE_TIMEOUT_MS=86400000\n", 0,
     NULL, NULL},
    {"DB_SSL_MODE=VERIFY_CA\n", DBPOOL_ECONFIG, "DB_SSL_MODE=VERIFY_CA (at v.env:2) needs DB_SSL_CA",
     NULL},
    {"DB_SSL_MODE=VERIFY_IDENTITY\n", DBPOOL_ECONFIG, "needs DB_SSL_CA", NULL},
    {"DB_SSL_MODE=REQUIRED\n", 0, NULL, NULL},
    {"DB_SSL_MODE=VERIFY_IDENTITY\nDB_SSL_CA=ca.pem\n", 0, NULL, NULL},
    {"DB_SSL_MODE=VERIFY_CA\nDB_SSL_CA=/nonexistent/ca.pem\n", DBPOOL_ECONFIG,
     "DB_SSL_CA=/nonexistent/ca.pem (at v.env:3): cannot read it", NULL},
    {"DB_SSL_CERT=cert.pem\n", DBPOOL_ECONFIG, "DB_SSL_CERT (at v.env:2) is set without DB_SSL_KEY",
     NULL},
    {"DB_SSL_KEY=key.pem\n", DBPOOL_ECONFIG, "DB_SSL_KEY (at v.env:2) is set without DB_SSL_CERT",
     NULL},
    {"DB_SSL_CERT=cert.pem\nDB_SSL_KEY=key.pem\n", 0, NULL, NULL},
    {"DB_SSL_CERT=cert.pem\nDB_SSL_KEY=missing.pem\n", DBPOOL_ECONFIG, "DB_SSL_KEY=missing.pem",
     "cannot read"},
    {"DB_SSL_MODE=DISABLED\nDB_SSL_CA=ca.pem\n", DBPOOL_ECONFIG,
     "DB_SSL_CA (at v.env:3) is set but DB_SSL_MODE=DISABLED (at v.env:2)", NULL},
    {"DB_USER=\n", DBPOOL_ECONFIG, "DB_USER is not set (at v.env:2)", NULL},
    {"DB_HOST=\n", DBPOOL_ECONFIG, "DB_HOST is empty", "nothing to connect to"},
    {"DB_HOST=db.example.com\nDB_SOCKET=/run/mysqld/mysqld.sock\n", DBPOOL_ECONFIG,
     "DB_HOST (at v.env:2) and DB_SOCKET (at v.env:3) are both set", NULL},
    {"DB_HOST_BUDGET=4\nDB_HOST_BUDGET_DIR=budget\n", DBPOOL_ECONFIG,
     "DB_HOST_BUDGET_DIR (at v.env:3) must be an absolute path", NULL},
    {"DB_HOST_BUDGET=0\nDB_HOST_BUDGET_DIR=budget\n", 0, NULL, NULL}, /* unused when off */
};

static void contradictions_are_rejected(void **state)
{
    (void)state;
    char text[512];
    write_file("ca.pem", "x", 0600);
    write_file("cert.pem", "x", 0600);
    write_file("key.pem", "x", 0600);
    for (size_t i = 0; i < sizeof contradictions / sizeof contradictions[0]; i++) {
        const struct contradiction *c = &contradictions[i];
        dbpool__options o;
        snprintf(text, sizeof text, "DB_USER=app\n%s", c->text);
        write_file("v.env", text, 0600);
        int rc = dbpool__config_load(&o, "v.env");
        if (rc != c->rc)
            fail_msg("%s: rc %d (%s), expected %d", c->text, rc, dbpool_last_error(), c->rc);
        if (c->msg1)
            expect_in(dbpool_last_error(), c->msg1, c->text);
        if (c->msg2)
            expect_in(dbpool_last_error(), c->msg2, c->text);
    }
    /* Sources other than the file are named too. */
    dbpool__options o;
    write_file("v.env", "DB_USER=app\n", 0600);
    setenv("DB_SSL_MODE", "VERIFY_CA", 1);
    assert_int_equal(dbpool__config_load(&o, "v.env"), DBPOOL_ECONFIG);
    expect_in(dbpool_last_error(), "DB_SSL_MODE=VERIFY_CA (from the environment) needs", "env");
}

static void budget_below_limit_warns(void **state)
{
    (void)state;
    dbpool__options o;
    write_file("v.env", "DB_USER=app\nDB_HOST_BUDGET=2\n", 0600);
    assert_int_equal(dbpool__config_load(&o, "v.env"), 0);
    expect_in(logbuf, "DB_HOST_BUDGET=2 is below DB_CONNECTION_LIMIT=3", "budget");
}

static void socket_alone_means_the_socket(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"DB_SOCKET=/run/s.sock\n", ""},               /* default host does not win */
        {"DB_HOST=\nDB_SOCKET=/run/s.sock\n", ""},     /* explicit empty host */
        {"DB_HOST=localhost\nDB_SOCKET=/run/s.sock\n", "localhost"},
        {"DB_HOST=127.0.0.1\n", "127.0.0.1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        dbpool__options o;
        snprintf(text, sizeof text, "DB_USER=app\n%s", cases[i][0]);
        write_file("s.env", text, 0600);
        if (dbpool__config_load(&o, "s.env") != 0)
            fail_msg("%s: %s", cases[i][0], dbpool_last_error());
        assert_string_equal(o.host, cases[i][1]);
    }
    /* The same from the environment. */
    dbpool__options o;
    write_file("s.env", "DB_USER=app\n", 0600);
    setenv("DB_SOCKET", "/run/s.sock", 1);
    assert_int_equal(dbpool__config_load(&o, "s.env"), 0);
    assert_string_equal(o.host, "");
    assert_string_equal(o.socket, "/run/s.sock");
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(defaults_are_the_documented_ones, setup, teardown),
    cmocka_unit_test_setup_teardown(env_example_documents_every_key_with_its_default, setup, teardown),
    cmocka_unit_test_setup_teardown(accepted_dotenv_forms, setup, teardown),
    cmocka_unit_test_setup_teardown(every_key_reaches_its_field, setup, teardown),
    cmocka_unit_test_setup_teardown(rejected_lines_name_file_and_line, setup, teardown),
    cmocka_unit_test_setup_teardown(connection_limit_rejects_bad_numbers, setup, teardown),
    cmocka_unit_test_setup_teardown(other_bad_values_are_rejected, setup, teardown),
    cmocka_unit_test_setup_teardown(overlong_line_cannot_smuggle_a_key, setup, teardown),
    cmocka_unit_test_setup_teardown(line_length_limit_is_exact, setup, teardown),
    cmocka_unit_test_setup_teardown(unknown_db_key_warns_with_key_and_line, setup, teardown),
    cmocka_unit_test_setup_teardown(non_db_keys_are_ignored, setup, teardown),
    cmocka_unit_test_setup_teardown(password_never_in_parse_errors_or_warnings, setup, teardown),
    cmocka_unit_test_setup_teardown(password_never_in_load_errors_or_logs, setup, teardown),
    cmocka_unit_test_setup_teardown(password_never_on_stderr, setup, teardown),
    cmocka_unit_test_setup_teardown(missing_explicit_file_is_an_error, setup, teardown),
    cmocka_unit_test_setup_teardown(missing_env_file_variable_target_is_an_error, setup, teardown),
    cmocka_unit_test_setup_teardown(missing_dot_env_is_fine, setup, teardown),
    cmocka_unit_test_setup_teardown(env_file_lookup_order, setup, teardown),
    cmocka_unit_test_setup_teardown(world_writable_env_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(world_readable_env_warns, setup, teardown),
    cmocka_unit_test_setup_teardown(env_file_must_be_a_regular_file, setup, teardown),
    cmocka_unit_test_setup_teardown(environment_beats_file, setup, teardown),
    cmocka_unit_test_setup_teardown(api_override_beats_environment, setup, teardown),
    cmocka_unit_test_setup_teardown(bad_values_name_their_source, setup, teardown),
    cmocka_unit_test_setup_teardown(config_set_rejects_bad_keys, setup, teardown),
    cmocka_unit_test_setup_teardown(config_set_refused_while_the_pool_runs, setup, teardown),
    cmocka_unit_test_setup_teardown(contradictions_are_rejected, setup, teardown),
    cmocka_unit_test_setup_teardown(budget_below_limit_warns, setup, teardown),
    cmocka_unit_test_setup_teardown(socket_alone_means_the_socket, setup, teardown),
};

TU_MAIN(tests)
