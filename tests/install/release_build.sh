#!/usr/bin/env bash
# tests/install/release_build.sh SOURCE_DIR C_COMPILER CMAKE
#
# Configures the source tree as a packager would (-DCMAKE_BUILD_TYPE=Release, nothing but the
# library) with DBPOOL_WERROR=ON in a temporary directory and builds it: any warning at -O3
# fails the test. DBPOOL_TEST_KEEP=1 keeps the directory.
set -euo pipefail

src=$(cd "$1" && pwd)
cc=$2
cmake=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/dbpool-release.XXXXXX")
cleanup() {
    if [ "${DBPOOL_TEST_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

"$cmake" -S "$src" -B "$work" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Release \
    -DDBPOOL_WERROR=ON -DDBPOOL_BUILD_TESTS=OFF -DDBPOOL_BUILD_EXAMPLES=OFF \
    -DDBPOOL_BUILD_BENCH=OFF >"$work/configure.log" 2>&1 ||
    { cat "$work/configure.log" >&2; echo "FAIL: configure (Release)" >&2; exit 1; }
if ! "$cmake" --build "$work" --target dbpool dbpool_static -j 2 >"$work/build.log" 2>&1; then
    grep -E 'error|warning' "$work/build.log" >&2 || cat "$work/build.log" >&2
    echo "FAIL: the Release (-O3) build has warnings or errors" >&2
    exit 1
fi
echo "Release build clean (-O3 -Werror, $("$cc" --version | head -n 1))"
