#include <dbpool.h>
#include <stdio.h>

int main(void)
{
    dbpool_result *r;
    int rc = dbpool_query(&r, "SELECT CONCAT('hello from MariaDB ', VERSION())", NULL, 0);
    if (rc != 0) {
        fprintf(stderr, "hello: %s\n", dbpool_last_error());
        return 1;
    }
    printf("%s\n", dbpool_result_text(r, 0, 0, NULL));
    dbpool_result_free(r);
    return 0; /* the pool closes its connections at exit */
}
