#!/usr/bin/env bash
# tests/install/install_test.sh BUILD_DIR C_COMPILER CMAKE VERSION
#
# Installs the current build into a temporary prefix (cmake --install --prefix), checks the
# layout, then builds and runs tests/install/consumer.c against the installed package four
# ways: pkg-config shared, pkg-config --static, find_package dbpool::dbpool, dbpool::static.
# Needs no server. DBPOOL_TEST_KEEP=1 keeps the temporary directory.
set -euo pipefail

build=$(cd "$1" && pwd)
cc=$2
cmake=$3
version=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/dbpool-install.XXXXXX")
prefix="$work/prefix"
cleanup() {
    if [ "${DBPOOL_TEST_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
step() { echo "--- $*"; }

step "cmake --install $build --prefix $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log" >&2; fail "cmake --install failed"; }

# ---- layout ----
pc=$(find "$prefix" -name dbpool.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || fail "no dbpool.pc installed"
libdir=$(dirname "$(dirname "$pc")")
for f in "$prefix/include/dbpool.h" "$libdir/libdbpool.a" "$libdir/libdbpool.so" \
    "$libdir/cmake/dbpool/dbpoolConfig.cmake" "$libdir/cmake/dbpool/dbpoolConfigVersion.cmake"; do
    [ -e "$f" ] || fail "not installed: ${f#"$prefix"/}"
done
[ -L "$libdir/libdbpool.so" ] || fail "libdbpool.so is not the development symlink"
soname=$(readelf -d "$libdir/libdbpool.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libdbpool.so.${version%%.*}" ] || fail "SONAME is '$soname', want libdbpool.so.${version%%.*}"
[ -e "$libdir/$soname" ] || fail "$soname not installed"
[ -e "$libdir/libdbpool.so.$version" ] || fail "libdbpool.so.$version not installed"
if [ "$(find "$prefix/include" -type f | wc -l)" != 1 ]; then
    fail "more than one header installed: $(cd "$prefix" && find include -type f | tr '\n' ' ')"
fi
if grep -qE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](mysql|mariadb)' "$prefix/include/dbpool.h"; then
    fail "dbpool.h includes a Connector/C header"
fi
# Nothing installed may point back into the build or source tree.
if grep -rlF -e "$build" "$prefix" --include='*.pc' --include='*.cmake' >"$work/leaks" 2>/dev/null; then
    fail "installed files refer to the build tree: $(cat "$work/leaks")"
fi
echo "layout ok: $(cd "$prefix" && find . -type f -o -type l | sort | tr '\n' ' ')"

# ---- pkg-config ----
export PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
step "pkg-config"
pkg-config --print-errors --exists dbpool || fail "pkg-config cannot use dbpool.pc"
[ "$(pkg-config --modversion dbpool)" = "$version" ] ||
    fail "pkg-config --modversion: $(pkg-config --modversion dbpool), want $version"
[ "$(pkg-config --variable=libdir dbpool)" = "$libdir" ] ||
    fail "dbpool.pc libdir is $(pkg-config --variable=libdir dbpool), want $libdir"
[ "$(pkg-config --variable=includedir dbpool)" = "$prefix/include" ] ||
    fail "dbpool.pc includedir is $(pkg-config --variable=includedir dbpool), want $prefix/include"
cflags=$(pkg-config --cflags dbpool)
libs=$(pkg-config --libs dbpool)
slibs=$(pkg-config --static --libs dbpool)
echo "cflags: $cflags"
echo "libs: $libs"
echo "static libs: $slibs"
warn=(-Wall -Wextra -Werror -DEXPECTED_VERSION="\"$version\"")

run_consumer() { # binary kind
    local out
    if readelf -d "$1" | grep -q "NEEDED.*libdbpool"; then
        [ "$2" = shared ] || fail "$1 should not need libdbpool.so (static link)"
    else
        [ "$2" = static ] || fail "$1 does not need libdbpool.so (shared link)"
    fi
    out=$("$1") || fail "$1 exited with status $?"
    echo "$(basename "$1"): $out"
}

step "pkg-config, shared"
# shellcheck disable=SC2086
"$cc" "${warn[@]}" $cflags "$here/consumer.c" -o "$work/consumer_pc_shared" $libs \
    -Wl,-rpath,"$libdir" || fail "build through pkg-config --libs dbpool"
run_consumer "$work/consumer_pc_shared" shared

step "pkg-config, the README's 15-line example (examples/hello.c), compiled as a user would"
# It needs a server to run; building it is what the README promises here.
# shellcheck disable=SC2086
"$cc" -Wall -Wextra -Werror $cflags "$here/../../examples/hello.c" -o "$work/hello" $libs ||
    fail "examples/hello.c does not build with: cc \$(pkg-config --cflags --libs dbpool)"

step "pkg-config --static"
# The usual way to pick the archive when both are installed side by side: -l:libdbpool.a.
# shellcheck disable=SC2086
"$cc" "${warn[@]}" $(pkg-config --static --cflags dbpool) "$here/consumer.c" \
    -o "$work/consumer_pc_static" ${slibs/-ldbpool/-l:libdbpool.a} ||
    fail "build through pkg-config --static --libs dbpool"
run_consumer "$work/consumer_pc_static" static

step "find_package(dbpool)"
# Only the install prefix: no trace of the build tree (no package registry either).
"$cmake" -S "$here" -B "$work/cmake-build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix" -DEXPECTED_VERSION="$version" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON \
    >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; fail "configuring the consumer project"; }
"$cmake" --build "$work/cmake-build" >"$work/cmake-build.log" 2>&1 ||
    { cat "$work/cmake-build.log" >&2; fail "building the consumer project"; }
run_consumer "$work/cmake-build/consumer_shared" shared
run_consumer "$work/cmake-build/consumer_static" static

echo "install test passed"
