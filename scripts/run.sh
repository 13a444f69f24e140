#!/usr/bin/env bash
# scripts/run.sh - THE main job: install what is missing, build, provide a MariaDB server, run
# every example program against it, stop the server it started, and say what it did.
#
# The server: DB_HOST in the environment, else a DB_HOST in ./.env of the repository, names an
# existing server; otherwise a throwaway mariadbd is started with tests/dbserver.sh (the test
# fixture) and the examples get its coordinates through a generated .env file.
#
# The examples come from the build: <build>/examples/examples.list (one command line per line,
# in order), else every executable in <build>/examples. Each must exit 0.
#
# Environment: DBPOOL_BUILD_PREFIX (default "build"), DBPOOL_JOBS (2), DBPOOL_SKIP_DEPS=1,
# DBPOOL_EXAMPLE_TIMEOUT (seconds per example, default 120).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${DBPOOL_BUILD_PREFIX:-build}
jobs=${DBPOOL_JOBS:-2}
ex_timeout=${DBPOOL_EXAMPLE_TIMEOUT:-120}
did=()
t_start=$SECONDS

note() { printf 'run.sh: %s\n' "$*"; }

# ---- 1. dependencies ----
if [ "${DBPOOL_SKIP_DEPS:-0}" != 1 ]; then
    bash scripts/deps.sh
    did+=("checked/installed the Debian packages (scripts/deps.sh)")
fi

# ---- 2. build ----
note "configuring and building in $build/"
mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; note "cmake configure failed"; exit 1; }
if ! cmake --build "$build" -j "$jobs" 2>&1 |
    { grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built)|^Consolidate compiler' || true; }; then
    note "the build failed (output above)"
    exit 1
fi
did+=("built libdbpool and the examples in $build/ (RelWithDebInfo, -j$jobs)")

# ---- 3. server ----
server_dir="$root/$build/run-server"
started=0
stop_server() {
    if [ "$started" = 1 ]; then
        bash "$root/tests/dbserver.sh" fixture-stop "$server_dir" >/dev/null 2>&1 || true
        started=0
        return 0
    fi
    return 1
}
trap 'stop_server || true' EXIT
trap 'stop_server || true; exit 130' INT
trap 'stop_server || true; exit 143' TERM

dotenv_host() { # value of DB_HOST in ./.env (dotenv: optional export, quotes)
    [ -f "$root/.env" ] || return 1
    sed -nE 's/^[[:space:]]*(export[[:space:]]+)?DB_HOST[[:space:]]*=[[:space:]]*["'\'']?([^"'\''#[:space:]]*).*/\2/p' \
        "$root/.env" | tail -n 1 | grep .
}

if [ -n "${DB_HOST:-}" ]; then
    server_desc="the server named by DB_HOST in the environment ($DB_HOST)"
elif host=$(dotenv_host); then
    export DBPOOL_ENV_FILE="$root/.env"
    server_desc="the server named by $root/.env ($host)"
else
    note "no server configured (DB_HOST, ./.env): starting a throwaway one"
    # Owned by this script: it goes away if this script dies.
    DBPOOL_TEST_OWNER_PID=$$ bash tests/dbserver.sh fixture-start "$server_dir"
    started=1
    # shellcheck disable=SC1090
    . <(sed -n 's/^\(DBPOOL_TEST_[A-Z_]*\)=\(.*\)$/\1='\''\2'\''/p' "$server_dir/server.env")
    # The examples read a .env file like any application; the environment must not override it.
    for v in $(compgen -e | grep -E '^DB_' || true); do unset "$v"; done
    umask 077
    cat >"$server_dir/app.env" <<EOF
# Written by scripts/run.sh for the throwaway server it started.
DB_HOST=127.0.0.1
DB_PORT=$DBPOOL_TEST_PORT
DB_USER=$DBPOOL_TEST_USER
DB_PASSWORD=$DBPOOL_TEST_PASSWORD
DB_NAME=$DBPOOL_TEST_DB
EOF
    export DBPOOL_ENV_FILE="$server_dir/app.env"
    version=$(MYSQL_PWD=$DBPOOL_TEST_PASSWORD mariadb --no-defaults -h127.0.0.1 -P"$DBPOOL_TEST_PORT" \
        -u"$DBPOOL_TEST_USER" -N -e 'SELECT VERSION()' "$DBPOOL_TEST_DB" 2>/dev/null || echo '?')
    server_desc="a throwaway $DBPOOL_TEST_KIND server (MariaDB $version) on 127.0.0.1:$DBPOOL_TEST_PORT, user $DBPOOL_TEST_USER, database $DBPOOL_TEST_DB"
    did+=("started $server_desc")
fi
note "server: $server_desc"

# ---- 4. examples ----
commands=()
list="$build/examples/examples.list"
if [ -f "$list" ]; then
    while IFS= read -r line; do
        [ -n "${line// /}" ] && [ "${line:0:1}" != "#" ] && commands+=("$line")
    done <"$list"
    source_desc="$list"
elif [ -d "$build/examples" ]; then
    while IFS= read -r f; do commands+=("$f"); done < <(find "$build/examples" -maxdepth 1 \
        -type f -perm -u+x ! -name '*.so*' ! -name '*.a' | sort)
    source_desc="the executables in $build/examples/"
else
    source_desc="(no $build/examples/)"
fi

passed=0 failed=0 results=()
if [ "${#commands[@]}" -eq 0 ]; then
    note "no example programs built yet ($source_desc): nothing to run"
fi
for cmdline in "${commands[@]}"; do
    read -r -a argv <<<"$cmdline"
    name=$(basename "${argv[0]}")
    echo
    echo "==== $name ${argv[*]:1}"
    t0=$SECONDS
    rc=0
    timeout --kill-after=10 "$ex_timeout" "${argv[@]}" || rc=$?
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1))
        results+=("$(printf '  ok     %-45s %3ds' "$name" $((SECONDS - t0)))")
    else
        failed=$((failed + 1))
        why="exit status $rc"
        [ "$rc" = 124 ] && why="timed out after ${ex_timeout}s"
        results+=("$(printf '  FAILED %-45s %3ds  (%s)' "$name" $((SECONDS - t0)) "$why")")
    fi
done
[ "${#commands[@]}" -gt 0 ] && did+=("ran ${#commands[@]} example program(s) from $source_desc: $passed ok, $failed failed")

# ---- 5. stop ----
if stop_server; then
    did+=("stopped the throwaway server and removed its data")
fi

echo
echo "==== run.sh: what it did ($((SECONDS - t_start)) s)"
for d in "${did[@]}"; do echo "  - $d"; done
if [ "${#results[@]}" -gt 0 ]; then
    echo "examples:"
    printf '%s\n' "${results[@]}"
fi
if [ "$failed" -gt 0 ]; then
    echo "run.sh: $failed example(s) failed"
    exit 1
fi
echo "run.sh: ok"
