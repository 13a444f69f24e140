#!/usr/bin/env bash
# tests/install/check_symbols.sh LIBDBPOOL_SO DBPOOL_H
#
# The shared library exports only the public API: every defined dynamic symbol is dbpool_*
# (no dbpool__ internals, nothing of Connector/C, inih or the C runtime), and every function
# the header marks DBPOOL_EXPORT is exported. Version-node names (type A, e.g. DBPOOL_0) are
# not symbols of the API and are listed separately.
set -euo pipefail
lib=$1
header=$2
[ -f "$lib" ] || { echo "FAIL: $lib does not exist"; exit 1; }

syms=$(nm -D --defined-only "$lib" | awk '$2 != "A" { print $3 }' | sed 's/@.*//' | sort -u)
nodes=$(nm -D --defined-only "$lib" | awk '$2 == "A" { print $3 }' | tr '\n' ' ')
bad=$(printf '%s\n' "$syms" | grep -v '^dbpool_' | grep -v '^$' || true)
internal=$(printf '%s\n' "$syms" | grep '^dbpool__' || true)
# Functions declared DBPOOL_EXPORT in the header (name before the first parenthesis),
# preprocessor lines (the macro's own definition) left out.
api=$(grep -v '^[[:space:]]*#' "$header" | tr '\n' ' ' | grep -oE 'DBPOOL_EXPORT [^;(]*\(' |
    sed -E 's/\($//; s/.*[ *]//' | sort -u)
missing=$(comm -23 <(printf '%s\n' "$api") <(printf '%s\n' "$syms") | grep -v '^$' || true)

echo "exported: $(printf '%s\n' "$syms" | grep -c . || true) symbols; version nodes: ${nodes:-none}"
rc=0
if [ -n "$bad" ]; then
    echo "FAIL: symbols outside dbpool_* are exported:"; printf '  %s\n' $bad; rc=1
fi
if [ -n "$internal" ]; then
    echo "FAIL: internal dbpool__* symbols are exported:"; printf '  %s\n' $internal; rc=1
fi
if [ -n "$missing" ]; then
    echo "FAIL: declared DBPOOL_EXPORT in dbpool.h but not exported:"; printf '  %s\n' $missing; rc=1
fi
[ "$rc" = 0 ] && echo "ok: only dbpool_* exported, all $(printf '%s\n' "$api" | grep -c .) API functions present"
exit $rc
