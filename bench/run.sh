#!/usr/bin/env bash
# bench/run.sh - the benchmark of issue 9: libdbpool side by side with raw dedicated
# Connector/C connections (the ceiling), connect-per-op, libzdb's pool and the mysql2 pool on
# Node.js, on a throwaway MariaDB server; writes bench/RESULTS.md.
#
#   bash bench/run.sh
#
# Steps: install what is missing (libzdb-dev, nodejs/npm: Debian packages, as root), build
# dbpool-bench and dbpool-micro in build-bench/, install mysql2 from npm into a scratch directory
# ($BENCH_NODE_DIR, default /tmp/dbpool-bench-node; nothing is committed), start a server with the
# test fixture (tests/dbserver.sh), create and fill `users` (10,000 rows), run the micro-benchmark,
# then the grid L in {3, 10} x C in {1, 3, 16, 64} x {W1, W2} for every system, alternating the
# systems point by point (the order rotates from point to point and round to round) so that
# drift on this shared machine hits all of them alike, BENCH_ROUNDS times per point; finally
# measure per-op costs that do not depend on the machine's load (syscalls and context switches
# per op with perf, user-space instructions per op with callgrind) and bench/report.awk turns the
# raw lines into RESULTS.md (medians over rounds; every ratio to raw is the median of the
# per-round ratios, each taken between runs made seconds apart).
# A run that fails (exit status not 0, or no RESULT line) is not retried: it becomes a FAIL line,
# RESULTS.md states the count and marks every cell it feeds, and run.sh exits 1 at the end (after
# writing RESULTS.md), in the grid and in the sweep alike.
#
# Systems: raw, dbpool (the get/release API, DB_RESET_ON_RELEASE=0, the default: like raw
# connections, which do not reset either), dbpool-query (the same pool through the one-call API
# dbpool_query(), with its shared turns, DB_QUERY_SHARE_US at the default: dbpool-bench --system
# dbpool --reset 0 --api query), dbpool-reset (get/release with DB_RESET_ON_RELEASE=1, opt-in:
# the cost of the reset as its own row), connect, zdb (when libzdb is found), mysql2 (when node
# and npm work). The pool's tuning variables DB_QUEUE_OVERTAKE_US and DB_QUERY_SHARE_US are
# cleared from the environment: the grid measures the defaults, the sweep sets them per run.
#
# Environment (defaults in brackets): BENCH_ROUNDS [4], BENCH_DURATION seconds measured per
# run [0.9], BENCH_WARMUP [0.4], BENCH_LIMITS ["3 10"], BENCH_THREADS ["1 3 16 64"],
# BENCH_SYSTEMS ["raw dbpool dbpool-query dbpool-reset connect zdb mysql2"], BENCH_BUILD_DIR
# [build-bench], BENCH_NODE_DIR, BENCH_RESULTS [bench/RESULTS.md], BENCH_NO_INSTALL=1 (never
# apt-get/npm); the throughput-against-fairness sweep: BENCH_OVERTAKES ["0 250 1000 4000 16000"]
# (values of DB_QUEUE_OVERTAKE_US for dbpool), BENCH_SHARES ["0 1000 4000"] (values of
# DB_QUERY_SHARE_US for dbpool-query), BENCH_OVT_ROUNDS [2]; both lists empty skip it.
# The defaults take about 13 minutes on 2 CPUs (each run costs its warm-up + duration + about
# 0.15 s; 448 grid runs, 36 sweep runs, then about 80 s of micro-benchmark and per-op costs),
# plus the first build; RESULTS.md shows the time of each step.
# The fixture's own variables (DBPOOL_TEST_HOST, ...) select an external server instead.
set -euo pipefail
umask 022

T0=$(date +%s)
PHASE_T=${EPOCHREALTIME/,/.}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build-bench}
ROUNDS=${BENCH_ROUNDS:-4}
DURATION=${BENCH_DURATION:-0.9}
WARMUP=${BENCH_WARMUP:-0.4}
LIMITS=${BENCH_LIMITS:-"3 10"}
THREADS=${BENCH_THREADS:-"1 3 16 64"}
SYSTEMS=${BENCH_SYSTEMS:-"raw dbpool dbpool-query dbpool-reset connect zdb mysql2"}
OVERTAKES=${BENCH_OVERTAKES-"0 250 1000 4000 16000"}
SHARES=${BENCH_SHARES-"0 1000 4000"}
OVT_ROUNDS=${BENCH_OVT_ROUNDS:-2}
NODE_DIR=${BENCH_NODE_DIR:-/tmp/dbpool-bench-node}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}
WORK=$BUILD/bench-run
SRV=$WORK/server
COMMAND="bash bench/run.sh"
for v in BENCH_ROUNDS BENCH_DURATION BENCH_WARMUP BENCH_LIMITS BENCH_THREADS BENCH_SYSTEMS BENCH_OVERTAKES BENCH_SHARES BENCH_OVT_ROUNDS; do
    if [ -n "${!v+set}" ]; then COMMAND="$v=\"${!v}\" $COMMAND"; fi
done
unset DB_QUEUE_OVERTAKE_US DB_QUERY_SHARE_US # the grid runs the defaults; the sweep sets them

say() { printf 'run.sh: %s\n' "$*"; }
warn() { printf 'run.sh: %s\n' "$*" >&2; }
die() {
    warn "error: $*"
    exit 1
}

# ---- dependencies ----------------------------------------------------------------------------
APT_UPDATED=0
apt_install() { # package...: best effort, as root only
    [ "${BENCH_NO_INSTALL:-0}" = 1 ] && return 1
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

install_deps() {
    local need=()
    command -v cmake >/dev/null || need+=(cmake)
    command -v pkg-config >/dev/null || need+=(pkg-config)
    command -v cc >/dev/null || need+=(gcc)
    pkg-config --exists libmariadb 2>/dev/null || need+=(libmariadb-dev)
    pkg-config --exists inih 2>/dev/null || need+=(libinih-dev)
    command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
    command -v mariadb >/dev/null || need+=(mariadb-client)
    if [ ${#need[@]} -gt 0 ]; then
        say "installing ${need[*]}"
        apt_install "${need[@]}" || die "cannot install ${need[*]} (run as root, or install them)"
    fi
    if ! pkg-config --exists zdb 2>/dev/null; then
        say "installing libzdb-dev"
        apt_install libzdb-dev || warn "libzdb-dev not available: the zdb system is skipped"
    fi
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        say "installing nodejs and npm"
        apt_install nodejs npm || warn "nodejs/npm not available: the mysql2 system is skipped"
    fi
}

HAVE_ZDB=0
HAVE_MYSQL2=0
install_mysql2() {
    command -v node >/dev/null && command -v npm >/dev/null || return 0
    if [ ! -f "$NODE_DIR/node_modules/mysql2/package.json" ]; then
        [ "${BENCH_NO_INSTALL:-0}" = 1 ] && { warn "mysql2 not in $NODE_DIR: skipped"; return 0; }
        say "installing mysql2 from npm into $NODE_DIR"
        mkdir -p "$NODE_DIR"
        [ -f "$NODE_DIR/package.json" ] || printf '{"private":true}\n' >"$NODE_DIR/package.json"
        if ! (cd "$NODE_DIR" && npm install --no-audit --no-fund --silent mysql2@3 >/dev/null 2>&1); then
            warn "npm install mysql2 failed: the mysql2 system is skipped"
            return 0
        fi
    fi
    HAVE_MYSQL2=1
}

build() {
    say "building in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DDBPOOL_BUILD_TESTS=OFF -DDBPOOL_BUILD_EXAMPLES=OFF \
        -DDBPOOL_BUILD_BENCH=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$WORK/cmake.log" 2>&1 ||
        { cat "$WORK/cmake.log" >&2; die "cmake configure failed"; }
    cmake --build "$BUILD" -j2 --target dbpool-bench dbpool-micro >"$WORK/build.log" 2>&1 ||
        { tail -n 40 "$WORK/build.log" >&2; die "build failed"; }
    BENCH=$BUILD/bench/dbpool-bench
    MICRO=$BUILD/bench/dbpool-micro
    if grep -q "zdb variant is built" "$WORK/cmake.log"; then HAVE_ZDB=1; fi
}

# ---- server ----------------------------------------------------------------------------------
stop_server() {
    rm -f "$WORK/client.cnf"
    if [ -f "$SRV/state" ]; then
        bash "$ROOT/tests/dbserver.sh" fixture-stop "$SRV" >/dev/null 2>&1 || true
    fi
}

start_server() {
    say "starting a throwaway server (tests/dbserver.sh)"
    DBPOOL_TEST_OWNER_PID=$$ bash "$ROOT/tests/dbserver.sh" fixture-start "$SRV" >"$WORK/server.log" 2>&1 ||
        { cat "$WORK/server.log" >&2; die "the test fixture could not start a server"; }
    # shellcheck disable=SC1091
    set -a && . "$SRV/server.env" && set +a
    export DB_HOST=$DBPOOL_TEST_HOST DB_PORT=$DBPOOL_TEST_PORT DB_USER=$DBPOOL_TEST_USER
    export DB_PASSWORD=$DBPOOL_TEST_PASSWORD DB_NAME=$DBPOOL_TEST_DB
    CNF=$WORK/client.cnf
    (umask 077 && printf '[client]\nhost=%s\nport=%s\nuser=%s\npassword=%s\nprotocol=tcp\n' \
        "$DB_HOST" "$DB_PORT" "$DB_USER" "$DB_PASSWORD" >"$CNF")
}

sql() { mariadb --defaults-file="$CNF" -N -B "$DB_NAME" -e "$1"; }

fill_users() {
    say "creating users (10,000 rows)"
    sql "DROP TABLE IF EXISTS users; CREATE TABLE users (id INT PRIMARY KEY,
         name VARCHAR(64) NOT NULL, email VARCHAR(128) NOT NULL) ENGINE=InnoDB"
    # The Sequence engine is built into MariaDB; a recursive CTE for servers without it.
    sql "INSERT INTO users SELECT seq, CONCAT('user', seq), CONCAT('user', seq, '@example.com')
         FROM seq_1_to_10000" 2>/dev/null ||
        sql "SET SESSION max_recursive_iterations = 20000; INSERT INTO users
             WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 10000)
             SELECT n, CONCAT('user', n), CONCAT('user', n, '@example.com') FROM s"
    [ "$(sql "SELECT COUNT(*) FROM users")" = 10000 ] || die "users does not hold 10,000 rows"
    sql "ANALYZE TABLE users" >/dev/null
}

# ---- metadata ---------------------------------------------------------------------------------
write_meta() {
    local m=$WORK/meta.txt cpu node_v mysql2_v
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    node_v=$(command -v node >/dev/null && node --version || echo none)
    mysql2_v=none
    if [ "$HAVE_MYSQL2" = 1 ]; then
        mysql2_v=$(node -p "require('$NODE_DIR/node_modules/mysql2/package.json').version")
    fi
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "nproc=$(nproc)"
        echo "cpu=${cpu:-unknown}"
        echo "kernel=$(uname -r)"
        echo "clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo unknown)"
        echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "server=$(sql "SELECT VERSION()")"
        "$BENCH" --version | tr ' ' '\n' | grep '=' | sed 's/^/lib_/'
        echo "git=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src include 2>/dev/null || echo '+uncommitted src changes')"
        echo "node=$node_v"
        echo "mysql2=$mysql2_v"
        echo "rounds=$ROUNDS"
        echo "duration=$DURATION"
        echo "warmup=$WARMUP"
        echo "command=$COMMAND"
    } >"$m"
}

# ---- runs -------------------------------------------------------------------------------------
run_one() { # system workload L C round
    local s=$1 w=$2 l=$3 c=$4 r=$5 out rc=0 cmd res
    case $s in
    dbpool) cmd=("$BENCH" --system dbpool --reset 0) ;;
    dbpool-query) cmd=("$BENCH" --system dbpool --reset 0 --api query) ;;
    dbpool-reset) cmd=("$BENCH" --system dbpool --reset 1) ;;
    raw | connect | zdb) cmd=("$BENCH" --system "$s") ;;
    mysql2) cmd=(env NODE_PATH="$NODE_DIR/node_modules" node "$ROOT/bench/mysql2/bench.js") ;;
    esac
    out=$(cd "$WORK" && timeout 120 "${cmd[@]}" --workload "$w" --limit "$l" --threads "$c" \
        --duration "$DURATION" --warmup "$WARMUP" 2>>"$WORK/stderr.log") || rc=$?
    res=none
    if printf '%s\n' "$out" | grep -q '^RESULT '; then
        res=kept
        printf 'round=%s %s\n' "$r" "$(printf '%s\n' "$out" | grep '^RESULT ')" >>"$WORK/results.txt"
    fi
    if [ "$rc" != 0 ] || [ "$res" = none ]; then
        warn "$s $w L=$l C=$c round $r: failed, exit $rc, result $res (see $WORK/stderr.log)"
        printf 'FAIL round=%s system=%s workload=%s limit=%s threads=%s rc=%s result=%s\n' "$r" "$s" "$w" "$l" "$c" "$rc" "$res" >>"$WORK/results.txt"
    fi
}

active_systems() {
    local s
    for s in $SYSTEMS; do
        case $s in
        zdb) [ "$HAVE_ZDB" = 1 ] || continue ;;
        mysql2) [ "$HAVE_MYSQL2" = 1 ] || continue ;;
        esac
        printf '%s ' "$s"
    done
}

run_grid() {
    local sys=() n p=0 r w l c i k
    read -r -a sys <<<"$(active_systems)"
    n=${#sys[@]}
    say "grid: L in {$LIMITS} x C in {$THREADS} x {w1, w2}, ${ROUNDS} round(s) of ${DURATION} s (+${WARMUP} s warm-up) for: ${sys[*]}"
    for w in w1 w2; do
        for l in $LIMITS; do
            for c in $THREADS; do
                for ((r = 0; r < ROUNDS; r++)); do
                    for ((i = 0; i < n; i++)); do
                        k=$(((i + p + r) % n)) # rotate: no system is always first or last
                        run_one "${sys[$k]}" "$w" "$l" "$c" "$r"
                    done
                done
                p=$((p + 1))
                say "  $w L=$l C=$c done ($(($(date +%s) - T0)) s)"
            done
        done
    done
}

# Costs that do not depend on how busy the machine is: syscalls and context switches per op
# (perf's software tracepoints; the whole process, start-up included, over all ops) at C = L = 3
# and C = 64, and user-space instructions per op (callgrind, counting only inside the op
# function and what it calls: raw_op, dbpool_op, dbpool_query_op, connect_op, zdb_op, named after
# the system) with one thread. Skipped when perf or valgrind is missing.
cost_cmd() { # system -> the command line prefix
    case $1 in
    dbpool) echo "$BENCH --system dbpool --reset 0" ;;
    dbpool-query) echo "$BENCH --system dbpool --reset 0 --api query" ;;
    dbpool-reset) echo "$BENCH --system dbpool --reset 1" ;;
    mysql2) echo "env NODE_PATH=$NODE_DIR/node_modules node $ROOT/bench/mysql2/bench.js" ;;
    *) echo "$BENCH --system $1" ;;
    esac
}

run_costs() {
    local s w c out ops f have_perf=0 have_vg=0 sys=()
    read -r -a sys <<<"$(active_systems)"
    perf stat -x, -o /dev/null -e raw_syscalls:sys_enter,context-switches true >/dev/null 2>&1 && have_perf=1
    command -v valgrind >/dev/null && have_vg=1
    say "per-op costs (perf: $have_perf, callgrind: $have_vg)"
    for w in w1 w2; do
        for s in "${sys[@]}"; do
            for c in 3 64; do
                [ "$have_perf" = 1 ] || continue
                f=$WORK/perf.txt
                # shellcheck disable=SC2046
                out=$(cd "$WORK" && timeout 120 perf stat -x, -o "$f" -e raw_syscalls:sys_enter,context-switches \
                    $(cost_cmd "$s") --workload "$w" --limit 3 --threads "$c" --duration 1 --warmup 0.2 2>>"$WORK/stderr.log") || true
                ops=$(printf '%s\n' "$out" | grep -o ' ops_all=[0-9]*' | cut -d= -f2 || true)
                [ -n "$ops" ] && [ "$ops" -gt 0 ] || continue
                awk -F, -v s="$s" -v w="$w" -v c="$c" -v ops="$ops" '
                    $3 ~ /sys_enter/ {sc = $1} $3 ~ /context-switches/ {cs = $1}
                    END {printf "COST system=%s workload=%s limit=3 threads=%s syscalls_per_op=%.2f csw_per_op=%.2f\n", s, w, c, sc / ops, cs / ops}' "$f" >>"$WORK/costs.txt"
            done
            [ "$have_vg" = 1 ] && [ "$s" != mysql2 ] || continue
            f=$WORK/callgrind.out
            rm -f "$f"
            # shellcheck disable=SC2046
            out=$(cd "$WORK" && timeout 300 valgrind --tool=callgrind --toggle-collect="$(echo "${s%-reset}" | tr - _)_op" \
                --callgrind-out-file="$f" $(cost_cmd "$s") --workload "$w" --limit 3 --threads 1 --duration 1 --warmup 0 2>>"$WORK/stderr.log") || true
            ops=$(printf '%s\n' "$out" | grep -o ' ops_all=[0-9]*' | cut -d= -f2 || true)
            if [ -n "$ops" ] && [ "$ops" -gt 0 ] && [ -f "$f" ]; then
                awk -v s="$s" -v w="$w" -v ops="$ops" '/^totals:/ {printf "INSTR system=%s workload=%s threads=1 instr_per_op=%.0f\n", s, w, $2 / ops}' "$f" >>"$WORK/costs.txt"
            fi
        done
    done
    rm -f "$WORK/perf.txt" "$WORK/callgrind.out"
}

# The throughput/fairness trade, measured: W1, L = 3, C = 16 and 64, raw beside dbpool (the
# get/release API) with DB_QUEUE_OVERTAKE_US in $OVERTAKES and dbpool-query (dbpool_query())
# with DB_QUERY_SHARE_US in $SHARES (DB_QUEUE_OVERTAKE_US at its default there), all in one
# rotation as in the grid. Lines "OVT series=<raw|overtake|share> us=<setting|raw> round=<r>
# k=v ..." (the RESULT line's keys; the default of both settings is 1000); a failed run, as in
# the grid, keeps its RESULT if it printed one and adds "FAIL round=<r> series=... us=... ...".
run_overtake() {
    local c r i k n p=0 v entry series out rc res sets=(raw:raw) cmd
    for v in $OVERTAKES; do sets+=("overtake:$v"); done
    for v in $SHARES; do sets+=("share:$v"); done
    n=${#sets[@]}
    [ "$n" -gt 1 ] || return 0
    say "throughput/fairness sweep: W1 L=3 C in {16, 64}, dbpool with DB_QUEUE_OVERTAKE_US in {$OVERTAKES}, dbpool-query with DB_QUERY_SHARE_US in {$SHARES}"
    for c in 16 64; do
        for ((r = 0; r < OVT_ROUNDS; r++)); do
            for ((i = 0; i < n; i++)); do
                k=$(((i + p + r) % n))
                entry=${sets[$k]}
                series=${entry%%:*}
                v=${entry#*:}
                case $series in
                raw) cmd=("$BENCH" --system raw) ;;
                overtake) cmd=(env DB_QUEUE_OVERTAKE_US="$v" "$BENCH" --system dbpool --reset 0) ;;
                share) cmd=(env DB_QUERY_SHARE_US="$v" "$BENCH" --system dbpool --reset 0 --api query) ;;
                esac
                rc=0
                out=$(cd "$WORK" && timeout 120 "${cmd[@]}" --workload w1 --limit 3 --threads "$c" \
                    --duration "$DURATION" --warmup "$WARMUP" 2>>"$WORK/stderr.log") || rc=$?
                res=none
                if printf '%s\n' "$out" | grep -q '^RESULT '; then
                    res=kept
                    printf 'OVT series=%s us=%s round=%s %s\n' "$series" "$v" "$r" \
                        "$(printf '%s\n' "$out" | grep '^RESULT ' | sed 's/^RESULT //')" >>"$WORK/overtake.txt"
                fi
                if [ "$rc" != 0 ] || [ "$res" = none ]; then
                    warn "sweep $series $v C=$c round $r: failed, exit $rc, result $res (see $WORK/stderr.log)"
                    printf 'FAIL round=%s series=%s us=%s workload=w1 limit=3 threads=%s rc=%s result=%s\n' \
                        "$r" "$series" "$v" "$c" "$rc" "$res" >>"$WORK/overtake.txt"
                fi
            done
        done
        p=$((p + 1))
    done
}

# Wall time of the step that just ended, into meta.txt (RESULTS.md shows where the time goes).
phase_done() { # name
    local t=${EPOCHREALTIME/,/.}
    awk -v n="$1" -v a="$PHASE_T" -v b="$t" 'BEGIN {printf "time_%s_s=%.1f\n", n, b - a}' >>"$WORK/meta.txt"
    PHASE_T=$t
}

run_micro() {
    say "micro-benchmark: get+release pairs, no I/O"
    (cd "$WORK" && "$MICRO" --threads 1,2,8,64 --limits same,3 --runs 5 --ms 300) \
        >"$WORK/micro.txt" 2>>"$WORK/stderr.log" || warn "dbpool-micro failed (see $WORK/stderr.log)"
}

main() {
    local s nfail
    for s in $SYSTEMS; do
        case $s in
        raw | dbpool | dbpool-query | dbpool-reset | connect | zdb | mysql2) ;;
        *) die "unknown system in BENCH_SYSTEMS: $s" ;;
        esac
    done
    mkdir -p "$WORK"
    rm -f "$WORK/results.txt" "$WORK/micro.txt" "$WORK/costs.txt" "$WORK/overtake.txt" "$WORK/stderr.log"
    install_deps
    build
    install_mysql2
    trap stop_server EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_server
    fill_users
    write_meta
    phase_done setup
    run_micro
    phase_done micro
    run_grid
    phase_done grid
    run_overtake
    phase_done sweep
    run_costs
    phase_done costs
    echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/meta.txt"
    echo "runtime_s=$(($(date +%s) - T0))" >>"$WORK/meta.txt"
    touch "$WORK/costs.txt" "$WORK/overtake.txt" "$WORK/results.txt"
    awk -f "$ROOT/bench/report.awk" "$WORK/meta.txt" "$WORK/micro.txt" "$WORK/costs.txt" \
        "$WORK/overtake.txt" "$WORK/results.txt" >"$RESULTS.tmp"
    mv "$RESULTS.tmp" "$RESULTS"
    say "wrote $RESULTS in $(($(date +%s) - T0)) s (raw lines in $WORK)"
    nfail=$(cat "$WORK/results.txt" "$WORK/overtake.txt" | grep -c '^FAIL ' || true)
    if [ "$nfail" -gt 0 ]; then
        die "$nfail run(s) failed (FAIL lines in $WORK/results.txt and overtake.txt; marked in $RESULTS)"
    fi
}

main "$@"
