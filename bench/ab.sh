#!/usr/bin/env bash
# bench/ab.sh - two builds of libdbpool side by side: the same dbpool-bench binary, run against
# library A and library B alternately (LD_LIBRARY_PATH), point by point and round by round,
# with the order flipped every round, on one throwaway server. For judging a change to the pool
# or the query path on a shared machine, where two runs minutes apart are not comparable.
#
#   bash bench/ab.sh LIBDIR_A LIBDIR_B [POINT ...]
#
# LIBDIR_*: directories holding a libdbpool.so.0 (e.g. two build trees: one of `git worktree add
# /tmp/base HEAD~1`, one of the working tree). POINT = workload:limit:threads[:env], default
# "w1:3:3 w1:3:16 w1:3:64 w2:3:3 w2:3:16"; env is an optional VAR=value for both sides, e.g.
# w1:3:16:DB_QUEUE_OVERTAKE_US=0.
# Environment: AB_ROUNDS [5], AB_DURATION [1], AB_WARMUP [0.3], AB_BENCH [build-bench's
# dbpool-bench, built by bench/run.sh or `cmake --build build-bench`], AB_PERF=1 adds syscalls,
# futex calls and context switches per op (perf software tracepoints).
# Output: one line per run, then per point the medians over rounds of B/A (throughput, CPU per
# op, wait p99) from runs of the same round, and each side's median per-op counts.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 2 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
A=$(cd "$1" && pwd)
B=$(cd "$2" && pwd)
shift 2
POINTS=${*:-"w1:3:3 w1:3:16 w1:3:64 w2:3:3 w2:3:16"}
ROUNDS=${AB_ROUNDS:-5}
BENCH=${AB_BENCH:-$ROOT/build-bench/bench/dbpool-bench}
for d in "$A" "$B"; do
    [ -e "$d/libdbpool.so.0" ] || { echo "ab.sh: no libdbpool.so.0 in $d" >&2; exit 2; }
done
[ -x "$BENCH" ] || { echo "ab.sh: $BENCH not built (cmake --build build-bench)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dbpool-ab.XXXXXX")
SRV=$WORK/server
cleanup() {
    bash "$ROOT/tests/dbserver.sh" fixture-stop "$SRV" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
DBPOOL_TEST_OWNER_PID=$$ bash "$ROOT/tests/dbserver.sh" fixture-start "$SRV" >"$WORK/server.log" 2>&1 ||
    { cat "$WORK/server.log" >&2; echo "ab.sh: the test fixture could not start a server" >&2; exit 1; }
set -a && . "$SRV/server.env" && set +a
export DB_HOST=$DBPOOL_TEST_HOST DB_PORT=$DBPOOL_TEST_PORT DB_USER=$DBPOOL_TEST_USER
export DB_PASSWORD=$DBPOOL_TEST_PASSWORD DB_NAME=$DBPOOL_TEST_DB
(umask 077 && printf '[client]\nhost=%s\nport=%s\nuser=%s\npassword=%s\nprotocol=tcp\n' \
    "$DB_HOST" "$DB_PORT" "$DB_USER" "$DB_PASSWORD" >"$WORK/client.cnf")
mariadb --defaults-file="$WORK/client.cnf" -N -B "$DB_NAME" -e "
    CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL,
                        email VARCHAR(128) NOT NULL) ENGINE=InnoDB;
    INSERT INTO users SELECT seq, CONCAT('user', seq), CONCAT('user', seq, '@example.com')
    FROM seq_1_to_10000; ANALYZE TABLE users" >/dev/null

have_perf=0
if [ "${AB_PERF:-0}" = 1 ] && perf stat -x, -o /dev/null -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
    have_perf=1
fi

run() { # side libdir point round
    local side=$1 lib=$2 p=$3 r=$4 w l c env out extra=""
    IFS=: read -r w l c env <<<"$p"
    local cmd=(env LD_LIBRARY_PATH="$lib" ${env:+"$env"} "$BENCH" --system dbpool --workload "$w"
        --limit "$l" --threads "$c" --duration "${AB_DURATION:-1}" --warmup "${AB_WARMUP:-0.3}")
    if [ "$have_perf" = 1 ]; then
        out=$(perf stat -x, -o "$WORK/perf.txt" -e raw_syscalls:sys_enter,syscalls:sys_enter_futex,context-switches \
            "${cmd[@]}" 2>>"$WORK/stderr.log" | grep '^RESULT ') || true
        local ops
        ops=$(printf '%s\n' "$out" | grep -o ' ops_all=[0-9]*' | cut -d= -f2 || true)
        if [ -n "$ops" ] && [ "$ops" -gt 0 ]; then
            extra=$(awk -F, -v ops="$ops" '$3 ~ /raw_syscalls/ {s = $1} $3 ~ /futex/ {f = $1}
                $3 ~ /context-switches/ {c = $1}
                END {printf " perf_syscalls=%.2f perf_futex=%.2f perf_csw=%.2f", s / ops, f / ops, c / ops}' "$WORK/perf.txt")
        fi
    else
        out=$("${cmd[@]}" 2>>"$WORK/stderr.log" | grep '^RESULT ') || true
    fi
    [ -n "$out" ] || out="RESULT failed=1"
    echo "AB side=$side point=$p round=$r ${out#RESULT }$extra"
}

for ((r = 0; r < ROUNDS; r++)); do
    for p in $POINTS; do
        if ((r % 2 == 0)); then
            run A "$A" "$p" "$r"
            run B "$B" "$p" "$r"
        else
            run B "$B" "$p" "$r"
            run A "$A" "$p" "$r"
        fi
    done
done | tee "$WORK/ab.txt"

echo
echo "A = $A"
echo "B = $B"
awk '
function kv(line, out,    n, i, a, p) {
    n = split(line, a, " ")
    for (i = 1; i <= n; i++) if ((p = index(a[i], "=")) > 0) out[substr(a[i], 1, p - 1)] = substr(a[i], p + 1)
}
function median(v, n,    i, j, t) {
    if (n == 0) return ""
    for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
/^AB / {
    delete f; kv($0, f)
    p = f["point"]; if (!(p in seen)) { seen[p] = 1; P[++np] = p }
    if (f["round"] + 1 > nr) nr = f["round"] + 1
    for (k in f) V[f["side"], p, f["round"], k] = f[k]
}
function ratio(p, k,    r, n, v) {
    n = 0
    for (r = 0; r < nr; r++)
        if (("A", p, r, k) in V && ("B", p, r, k) in V && V["A", p, r, k] > 0)
            v[++n] = V["B", p, r, k] / V["A", p, r, k]
    return n ? sprintf("%.2f", median(v, n)) : "-"
}
function mside(s, p, k,    r, n, v) {
    n = 0
    for (r = 0; r < nr; r++) if ((s, p, r, k) in V) v[++n] = V[s, p, r, k] + 0
    return n ? sprintf("%.2f", median(v, n)) : "-"
}
END {
    printf "%-28s %9s %9s %11s %17s %17s %17s\n", "point", "ops B/A", "CPU B/A", "wait99 B/A", "syscalls/op A|B", "futex/op A|B", "csw/op A|B"
    for (i = 1; i <= np; i++) {
        p = P[i]
        printf "%-28s %9s %9s %11s %17s %17s %17s\n", p, ratio(p, "ops_per_s"), ratio(p, "cpu_us_per_op"),
            ratio(p, "wait_p99_us"), mside("A", p, "perf_syscalls") "|" mside("B", p, "perf_syscalls"),
            mside("A", p, "perf_futex") "|" mside("B", p, "perf_futex"),
            mside("A", p, "csw_per_op") "|" mside("B", p, "csw_per_op")
    }
}' "$WORK/ab.txt"
