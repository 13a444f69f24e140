/*
 * fuzz_config.c - libFuzzer target for the .env parser (dbpool__config_parse_buffer), built with
 * ASan+UBSan by tests/cmake/fuzz.cmake and run for a bounded time by ctest (fuzz.config).
 *
 * Besides "no crash, no leak, no undefined behaviour" it checks what the parser promises for
 * every input: only 0 or DBPOOL_ECONFIG, an error text whenever it fails, every string option
 * NUL-terminated inside its buffer, every number inside its documented range.
 */
#include "dbpool_int.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* config.c asks the pool whether it runs (dbpool_config_set); the pool is not linked here. */
bool dbpool__pool_running(void) { return false; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void quiet(int level, const char *msg, void *ud)
{
    (void)level;
    (void)ud;
    /* Touch the text so a bad format or pointer shows up under ASan. */
    volatile size_t n = strlen(msg);
    (void)n;
}

#define CHECK(cond)             \
    do {                        \
        if (!(cond))            \
            __builtin_trap();   \
    } while (0)

static void check_strings(const dbpool__options *o)
{
    CHECK(memchr(o->host, 0, sizeof o->host));
    CHECK(memchr(o->socket, 0, sizeof o->socket));
    CHECK(memchr(o->user, 0, sizeof o->user));
    CHECK(memchr(o->password, 0, sizeof o->password));
    CHECK(memchr(o->database, 0, sizeof o->database));
    CHECK(memchr(o->ssl_ca, 0, sizeof o->ssl_ca));
    CHECK(memchr(o->ssl_cert, 0, sizeof o->ssl_cert));
    CHECK(memchr(o->ssl_key, 0, sizeof o->ssl_key));
    CHECK(memchr(o->budget_dir, 0, sizeof o->budget_dir));
}

static void check_ranges(const dbpool__options *o)
{
    CHECK(o->limit >= 1 && o->limit <= 1000);
    CHECK(o->port >= 1 && o->port <= 65535);
    CHECK(o->acquire_timeout_ms >= 1);
    CHECK(o->idle_timeout_ms >= 1);
    CHECK(o->connect_timeout_ms >= 1000 && o->read_timeout_ms >= 1000 &&
          o->write_timeout_ms >= 1000);
    CHECK(o->ssl_mode >= DBPOOL__SSL_DISABLED && o->ssl_mode <= DBPOOL__SSL_VERIFY_IDENTITY);
    CHECK(o->log_level >= DBPOOL_LOG_ERROR && o->log_level <= DBPOOL_LOG_DEBUG);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once;
    if (!once) {
        dbpool_set_logger(quiet, NULL);
        dbpool__set_log_level(DBPOOL_LOG_DEBUG); /* format every warning path too */
        once = 1;
    }
    dbpool__options o;
    dbpool__config_defaults(&o);
    dbpool__clear_error();
    int rc = dbpool__config_parse_buffer(&o, (const char *)data, size, "fuzz.env");
    CHECK(rc == 0 || rc == DBPOOL_ECONFIG);
    CHECK(rc == 0 || dbpool_last_error()[0] != '\0');
    check_strings(&o);
    check_ranges(&o);
    if (rc == 0)
        (void)dbpool__config_validate(&o); /* cross-field checks on whatever parsed */
    return 0;
}
