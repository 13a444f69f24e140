#!/usr/bin/env bash
# tests/dbserver.sh - MariaDB servers for the libdbpool test suite.
#
#   dbserver.sh fixture-start DIR   provide the shared server, write DIR/server.env
#   dbserver.sh fixture-stop DIR    stop what fixture-start started (never an external server)
#   dbserver.sh private-start DIR [mariadbd options...]
#                                   a throwaway instance of its own (restart/freeze tests)
#   dbserver.sh private-stop DIR    SIGTERM (SIGKILL after 30 s), keep the data directory
#   dbserver.sh private-restart DIR stop, start again on the same port
#   dbserver.sh private-destroy DIR stop and remove the data directory and DIR's contents
#   dbserver.sh kind                print what fixture-start would provide: external|docker|local
#
# Lanes (parallel integration tests): with DBPOOL_TEST_LANES=N (N > 1) and a local server,
# fixture-start also starts lanes 1..N-1 in DIR/lane-<k>/ (each its own mariadbd and
# server.env). ctest hands each test a lane through its resource allocation (RESOURCE_GROUPS
# "dbserver:1", tests/cmake/zz_server_lanes.cmake; scripts/test.sh writes the resource spec), and
# testutil.c reads that lane's server.env, so tests running at the same time never share a
# server (session counts, global status counters, table names).
#
# fixture-start picks, in this order:
#   1. an external server when DBPOOL_TEST_HOST is set: DBPOOL_TEST_PORT (3306),
#      DBPOOL_TEST_ADMIN_USER (root) / DBPOOL_TEST_ADMIN_PASSWORD, optional DBPOOL_TEST_DB,
#      DBPOOL_TEST_USER / DBPOOL_TEST_PASSWORD (else dbpool_app is created when the admin can),
#      DBPOOL_TEST_ERRLOG (the server's error log, if this machine can read it);
#   2. a container of the official image (DBPOOL_TEST_DOCKER_IMAGE, default mariadb:10.11) when
#      `docker info` answers, unless DBPOOL_TEST_DOCKER=0;
#   3. a throwaway mariadbd from Debian's mariadb-server.
# A server that cannot be provided is an error (exit 1) with the server's own output.
#
# DIR/server.env (mode 600) holds KEY=VALUE lines read by tests/support/testutil.c:
#   DBPOOL_TEST_KIND HOST PORT SOCKET DB USER PASSWORD ADMIN_USER ADMIN_PASSWORD ERRLOG
#   DATADIR PID (all prefixed DBPOOL_TEST_; DATADIR/PID only for local instances).
#
# Environment:
#   DBPOOL_TEST_KEEP=1          keep data directories (and the error log) after stop
#   DBPOOL_TEST_SERVER_ARGS     extra mariadbd options for local instances (split on blanks),
#                               remembered across private-restart
#   DBPOOL_TEST_OWNER_PID       pid whose death stops the instance (default: our parent, i.e.
#                               ctest for the fixture, the test process for private ones);
#                               0 disables this watchdog
#
# Local instances: mariadbd runs as its own session (setsid), detached from the caller's
# stdout/stderr (ctest waits for those to close), with the data directory in DIR/data (or in
# /tmp behind a DIR/data symlink when the socket path would be too long). A pristine
# `mariadb-install-db` data directory is cached per uid and server version under
# ${TMPDIR:-/tmp}/dbpool-template-<uid>/ and copied, so an instance starts in about a second.
#
# Server settings and why:
#   --log-warnings=2        "Aborted connection <id> ... (Got an error reading communication
#                           packets)" is logged for every unclean disconnect (close()/exit/
#                           SIGKILL without COM_QUIT) from level 2 on; level 4 adds "Could not
#                           read packet" noise, so 2 it is (measured on 10.11).
#   --performance-schema    for session_connect_attrs and performance_schema.threads; history,
#                           digest and per-account tables are sized down (its memory 98 -> 57 MB,
#                           RSS ~180 -> ~115 MB, start ~1.0 -> ~0.5 s; OFF would start in 0.4 s).
#   --max-connections=200, --max-connect-errors (no host blocking by fault tests),
#   utf8mb4, small InnoDB buffer pool and redo log, no fsync per commit (test data only).
set -euo pipefail
umask 077

PROG=dbserver.sh
SELF=$(readlink -f "${BASH_SOURCE[0]}")

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
    warn "error: $*"
    exit 1
}

# ---- tools ------------------------------------------------------------------------------
find_bin() {
    local n d
    for n in "$@"; do
        if command -v "$n" 2>/dev/null; then return 0; fi
        for d in /usr/sbin /usr/local/sbin /sbin /usr/libexec /usr/local/bin; do
            if [ -x "$d/$n" ]; then
                echo "$d/$n"
                return 0
            fi
        done
    done
    return 1
}

need_local_tools() {
    MARIADBD=$(find_bin mariadbd mysqld) ||
        die "mariadbd not found (Debian: apt-get install mariadb-server; or run scripts/deps.sh)"
    INSTALL_DB=$(find_bin mariadb-install-db mysql_install_db) ||
        die "mariadb-install-db not found (Debian: apt-get install mariadb-server)"
    need_client
}

need_client() {
    CLIENT=$(find_bin mariadb mysql) ||
        die "mariadb client not found (Debian: apt-get install mariadb-client)"
    ADMIN=$(find_bin mariadb-admin mysqladmin) ||
        die "mariadb-admin not found (Debian: apt-get install mariadb-client)"
}

randhex() { od -An -N"${1:-16}" -tx1 /dev/urandom | tr -d ' \n'; }

# 0 when something accepts connections on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port outside the kernel's ephemeral range (so a later restart on the same port does not
# collide with some client's local port), not listening now.
pick_port() {
    local lo=32768 hi=10000 p i
    if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
        read -r lo _ </proc/sys/net/ipv4/ip_local_port_range || true
    fi
    [ "$lo" -gt 11000 ] || lo=32768
    for i in $(seq 1 50); do
        p=$((hi + (RANDOM * 32768 + RANDOM) % (lo - hi)))
        if ! port_busy "$p"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# ---- process helpers ----------------------------------------------------------------------
# Alive and not a zombie.
alive() {
    local st
    [ -n "${1:-}" ] && [ "$1" -gt 0 ] 2>/dev/null || return 1
    st=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# The pid is a mariadbd serving $2 (guards against a recycled pid).
is_our_server() {
    local pid=$1 datadir=$2
    alive "$pid" || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "--datadir=$datadir"
}

# SIGTERM, SIGCONT (a frozen server cannot act on SIGTERM), wait up to $3 s, then SIGKILL.
stop_pid() {
    local pid=$1 datadir=$2 timeout=${3:-30} i
    is_our_server "$pid" "$datadir" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 20; i++)); do
        alive "$pid" || return 0
        sleep 0.05
    done
    warn "mariadbd $pid did not stop within ${timeout}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || return 0
        sleep 0.05
    done
    warn "mariadbd $pid still alive after SIGKILL"
    return 1
}

# ---- state files --------------------------------------------------------------------------
# DIR/state: shell assignments (printf %q) describing what runs in DIR.
write_state() {
    local dir=$1
    shift
    local tmp="$dir/.state.$$" kv
    : >"$tmp"
    for kv in "$@"; do
        printf '%s=%q\n' "${kv%%=*}" "${kv#*=}" >>"$tmp"
    done
    mv -f "$tmp" "$dir/state"
}

load_state() {
    local dir=$1
    S_KIND= S_PID= S_DATADIR= S_REALDIR= S_PORT= S_SOCKET= S_ARGS= S_CONTAINER= S_VOLDIR=
    [ -f "$dir/state" ] || return 1
    # shellcheck disable=SC1091
    . "$dir/state"
    S_KIND=${KIND:-} S_PID=${PID:-} S_DATADIR=${DATADIR:-} S_REALDIR=${REALDIR:-}
    S_PORT=${PORT:-} S_SOCKET=${SOCKET:-} S_ARGS=${ARGS:-} S_CONTAINER=${CONTAINER:-}
    S_VOLDIR=${VOLDIR:-}
    unset KIND PID DATADIR REALDIR PORT SOCKET ARGS CONTAINER VOLDIR
}

# server.env for testutil.c: plain KEY=VALUE, no quoting (values never contain newlines).
write_env() {
    local dir=$1
    shift
    local tmp="$dir/.server.env.$$" kv
    : >"$tmp"
    chmod 600 "$tmp"
    for kv in "$@"; do
        printf 'DBPOOL_TEST_%s\n' "$kv" >>"$tmp"
    done
    mv -f "$tmp" "$dir/server.env"
}

# ---- local mariadbd -------------------------------------------------------------------------
INSTALL_OPTS=(--innodb-log-file-size=8M --innodb-buffer-pool-size=32M)

# A pristine data directory per uid and server version, built once under a lock.
ensure_template() {
    local base ver lockfd tmp
    base="${TMPDIR:-/tmp}/dbpool-template-$(id -u)"
    mkdir -p -m 700 "$base"
    [ ! -L "$base" ] && [ "$(stat -c %u "$base")" = "$(id -u)" ] ||
        die "$base is not a directory owned by uid $(id -u); remove it"
    chmod 700 "$base"
    # Keyed by the server binary (path, size, mtime) and the install options.
    ver=$({ stat -L -c '%n %s %Y' "$(readlink -f "$MARIADBD")"; echo "${INSTALL_OPTS[*]}"; } |
        md5sum | cut -c1-12)
    TEMPLATE="$base/$ver"
    [ -f "$TEMPLATE/ok" ] && return 0
    exec {lockfd}>"$base/lock"
    flock -w 300 "$lockfd" || die "timed out waiting for the template lock $base/lock"
    if [ ! -f "$TEMPLATE/ok" ]; then
        rm -rf "$TEMPLATE"
        tmp=$(mktemp -d "$base/build.XXXXXX")
        say "creating the template data directory (mariadb-install-db, once per server version)"
        if ! "$INSTALL_DB" --no-defaults --datadir="$tmp/data" "${USER_OPT[@]}" \
            --auth-root-authentication-method=normal --skip-test-db "${INSTALL_OPTS[@]}" \
            >"$tmp/install.log" 2>&1; then
            warn "mariadb-install-db failed; its output:"
            tail -n 40 "$tmp/install.log" >&2
            rm -rf "$tmp"
            exec {lockfd}>&-
            exit 1
        fi
        touch "$tmp/ok"
        mv "$tmp" "$TEMPLATE"
        # Templates of other server versions are stale now.
        find "$base" -mindepth 1 -maxdepth 1 -type d ! -path "$TEMPLATE" -exec rm -rf {} + || true
    fi
    exec {lockfd}>&-
}

server_args() { # datadir socket port -> SERVER_ARGS
    local d=$1 sock=$2 port=$3
    # Its own temporary directory: files of internal temporary tables in a shared /tmp were
    # seen deleted under a running server (which then crashed in ha_maria::drop_table).
    # Beside the data directory, not in it (a folder in it would be listed as a database).
    local t
    t="$(dirname "$d")/tmp"
    mkdir -p "$t"
    SERVER_ARGS=(--no-defaults --datadir="$d" --tmpdir="$t" "${USER_OPT[@]}"
        --bind-address=127.0.0.1 --port="$port" --socket="$sock"
        --log-error="$d/err.log" --pid-file="$d/mariadbd.pid" --skip-name-resolve
        --log-warnings=2 --max-connections=200 --max-connect-errors=1000000
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
        "${INSTALL_OPTS[@]}" --innodb-flush-log-at-trx-commit=2 --innodb-doublewrite=0
        --innodb-buffer-pool-load-at-startup=0 --innodb-buffer-pool-dump-at-shutdown=0
        --innodb-temp-data-file-path=ibtmp1:1M:autoextend
        --performance-schema=ON --performance-schema-max-digest-length=0
        --performance-schema-digests-size=0
        --performance-schema-events-statements-history-long-size=0
        --performance-schema-events-stages-history-long-size=0
        --performance-schema-events-waits-history-long-size=0
        --performance-schema-events-transactions-history-long-size=0
        --performance-schema-events-statements-history-size=0
        --performance-schema-events-stages-history-size=0
        --performance-schema-events-waits-history-size=0
        --performance-schema-max-memory-classes=0 --performance-schema-max-thread-instances=250
        --performance-schema-accounts-size=10 --performance-schema-hosts-size=10
        --performance-schema-users-size=10 --performance-schema-max-file-instances=1000
        --performance-schema-max-table-instances=500 --performance-schema-max-table-handles=500
        --performance-schema-max-index-stat=500)
}

# Start mariadbd detached; sets SERVER_PID. Returns 0 ready, 1 died (2 = port taken), 3 timeout.
launch() { # datadir socket port extra-args...
    local d=$1 sock=$2 port=$3 i pid
    shift 3
    server_args "$d" "$sock" "$port"
    rm -f "$d/mariadbd.pid" "$sock"
    # A subshell so that mariadbd is not our child (no zombie to confuse liveness checks);
    # setsid: its own session, out of the caller's process group; no fd of ours is inherited.
    pid=$(
        setsid "$MARIADBD" "${SERVER_ARGS[@]}" "$@" </dev/null >>"$d/stdout.log" 2>&1 &
        echo $!
    )
    SERVER_PID=$pid
    for ((i = 0; i < 1000; i++)); do # >= 30 s
        if ! alive "$pid"; then
            if grep -qE "Bind on TCP/IP port|Address already in use" "$d/err.log" 2>/dev/null; then
                return 2
            fi
            return 1
        fi
        if [ -S "$sock" ] && "$ADMIN" --no-defaults -uroot --socket="$sock" --connect-timeout=2 \
            ping >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.03
    done
    return 3
}

server_failed() { # datadir why
    warn "mariadbd did not start ($2). Tail of its error log $1/err.log:"
    tail -n 40 "$1/err.log" >&2 2>/dev/null || warn "(no error log)"
    if [ -s "$1/stdout.log" ]; then
        warn "its standard output/error:"
        tail -n 20 "$1/stdout.log" >&2
    fi
}

# Start on $port (or a free one, retrying on collisions). Sets PORT_USED, SERVER_PID.
start_local_server() { # datadir socket port(0=pick) extra-args...
    local d=$1 sock=$2 port=$3 attempt rc fixed=1
    shift 3
    [ "$port" = 0 ] && fixed=0
    for attempt in 1 2 3 4 5 6; do
        if [ "$fixed" = 0 ]; then
            port=$(pick_port) || die "no free loopback port found"
        fi
        rc=0
        launch "$d" "$sock" "$port" "$@" || rc=$?
        case $rc in
        0)
            PORT_USED=$port
            return 0
            ;;
        2)
            if [ "$fixed" = 1 ] && [ "$attempt" -lt 6 ]; then
                sleep 0.5 # same port wanted (restart): give the old socket time to go
            fi
            mv -f "$d/err.log" "$d/err.log.bind-$attempt" 2>/dev/null || true
            continue
            ;;
        3)
            stop_pid "$SERVER_PID" "$d" 5 || true
            server_failed "$d" "not ready after 30 s"
            return 1
            ;;
        *)
            server_failed "$d" "mariadbd exited"
            return 1
            ;;
        esac
    done
    server_failed "$d" "port $port kept being in use"
    return 1
}

# Fresh data directory for DIR: DIR/data, or a short /tmp directory behind that symlink when
# the socket path would exceed sun_path (108 bytes). Sets DATADIR (as seen from DIR) and REALDIR.
make_datadir() {
    local dir=$1
    DATADIR="$dir/data"
    rm -rf "$DATADIR"
    if [ "${#DATADIR}" -gt 90 ]; then
        # A short base of its own holding data/ and (see server_args) tmp/.
        local base
        base=$(mktemp -d "${TMPDIR:-/tmp}/dbpool-srv.XXXXXX")
        if [ "${#base}" -gt 85 ]; then
            rmdir "$base"
            base=$(mktemp -d /tmp/dbpool-srv.XXXXXX)
        fi
        REALDIR="$base/data"
        mkdir -m 700 "$REALDIR"
        ln -s "$REALDIR" "$DATADIR"
    else
        mkdir -m 700 "$DATADIR"
        REALDIR=$(cd "$DATADIR" && pwd -P)
    fi
    cp -a "$TEMPLATE/data/." "$REALDIR/"
}

provision_local() { # socket app_pw admin_pw
    local sock=$1 apw=$2 dpw=$3 h sql=""
    sql="CREATE DATABASE IF NOT EXISTS dbpool_test CHARACTER SET utf8mb4;"
    for h in 127.0.0.1 localhost; do
        sql+="CREATE USER 'dbpool_app'@'$h' IDENTIFIED BY '$apw';"
        sql+="GRANT ALL PRIVILEGES ON dbpool_test.* TO 'dbpool_app'@'$h';"
        sql+="CREATE USER 'dbpool_admin'@'$h' IDENTIFIED BY '$dpw';"
        sql+="GRANT ALL PRIVILEGES ON *.* TO 'dbpool_admin'@'$h' WITH GRANT OPTION;"
    done
    "$CLIENT" --no-defaults -uroot --socket="$sock" -e "$sql"
}

# Kill the server when the owner process dies (ctest, a test process), so that a killed run
# never leaves a mariadbd behind. Detached from every fd of the caller.
start_watchdog() { # dir action
    local dir=$1 action=$2 owner=${DBPOOL_TEST_OWNER_PID:-$PPID} wpid
    [ "$owner" -gt 1 ] 2>/dev/null || return 0
    if [ -f "$dir/watchdog.pid" ] && alive "$(cat "$dir/watchdog.pid")"; then return 0; fi
    wpid=$(
        setsid bash -c '
            owner=$1 dir=$2 self=$3 action=$4
            while kill -0 "$owner" 2>/dev/null && [ -f "$dir/state" ]; do sleep 1; done
            [ -f "$dir/state" ] && DBPOOL_TEST_OWNER_PID=0 bash "$self" "$action" "$dir"
        ' watchdog "$owner" "$dir" "$SELF" "$action" </dev/null >/dev/null 2>&1 &
        echo $!
    )
    echo "$wpid" >"$dir/watchdog.pid"
}

stop_watchdog() {
    local dir=$1 w
    [ -f "$dir/watchdog.pid" ] || return 0
    w=$(cat "$dir/watchdog.pid")
    rm -f "$dir/watchdog.pid"
    # Only if it is still our watchdog (it exits by itself once DIR/state is gone).
    if alive "$w" && tr '\0' ' ' <"/proc/$w/cmdline" 2>/dev/null | grep -qF -- "$dir"; then
        kill "$w" 2>/dev/null || true
    fi
}

local_start() { # dir kind extra-args...
    local dir=$1 kind=$2 t0 app_pw admin_pw sock
    shift 2
    need_local_tools
    t0=$(date +%s%N)
    ensure_template
    make_datadir "$dir"
    sock="$REALDIR/s.sock"
    # Recorded before the start, so that a stop after a failed start still cleans up.
    write_state "$dir" "KIND=$kind" "PID=" "DATADIR=$DATADIR" "REALDIR=$REALDIR"
    local extra=()
    # shellcheck disable=SC2206
    [ -n "${DBPOOL_TEST_SERVER_ARGS:-}" ] && extra=($DBPOOL_TEST_SERVER_ARGS)
    extra+=("$@")
    start_local_server "$REALDIR" "$sock" 0 "${extra[@]}" || exit 1
    app_pw=$(randhex 16)
    admin_pw=$(randhex 16)
    if ! provision_local "$sock" "$app_pw" "$admin_pw"; then
        stop_pid "$SERVER_PID" "$REALDIR" 10 || true
        die "could not create the test database and users"
    fi
    write_state "$dir" "KIND=$kind" "PID=$SERVER_PID" "DATADIR=$DATADIR" "REALDIR=$REALDIR" \
        "PORT=$PORT_USED" "SOCKET=$sock" "ARGS=${extra[*]}"
    write_env "$dir" "KIND=local" "HOST=127.0.0.1" "PORT=$PORT_USED" "SOCKET=$sock" \
        "DB=dbpool_test" "USER=dbpool_app" "PASSWORD=$app_pw" "ADMIN_USER=dbpool_admin" \
        "ADMIN_PASSWORD=$admin_pw" "ERRLOG=$REALDIR/err.log" "DATADIR=$DATADIR" \
        "PID=$SERVER_PID"
    if [ "$kind" = local ]; then
        start_watchdog "$dir" fixture-stop
    else
        start_watchdog "$dir" private-destroy
    fi
    say "mariadbd $SERVER_PID ready on 127.0.0.1:$PORT_USED (socket $sock) in" \
        "$((($(date +%s%N) - t0) / 1000000)) ms; data $DATADIR; coordinates in $dir/server.env"
}

local_stop() { # dir keep-data(0/1)
    local dir=$1 keep=$2
    load_state "$dir" || return 0
    stop_pid "$S_PID" "$S_REALDIR" 30 || true
    if [ -f "$S_REALDIR/err.log" ]; then
        cp -f "$S_REALDIR/err.log" "$dir/server-err.log" 2>/dev/null || true
    fi
    if [ "$keep" = 1 ]; then
        return 0
    fi
    if [ "${DBPOOL_TEST_KEEP:-0}" = 1 ]; then
        say "DBPOOL_TEST_KEEP=1: keeping $S_DATADIR"
        return 0
    fi
    [ -n "$S_REALDIR" ] && [ "$S_REALDIR" != / ] || return 0
    rm -rf "$S_REALDIR" "$(dirname "$S_REALDIR")/tmp" # data and the tmpdir beside it
    if [ -L "$S_DATADIR" ]; then
        rm -f "$S_DATADIR"
        rmdir "$(dirname "$S_REALDIR")" 2>/dev/null || true # the short base in /tmp
    elif [ -n "$S_DATADIR" ] && [ "$S_DATADIR" != / ]; then
        rm -rf "$S_DATADIR"
    fi
}

# ---- external server and container ----------------------------------------------------------
# A client option file so no password appears on a command line.
client_cnf() { # file host port user password
    printf '[client]\nhost=%s\nport=%s\nuser=%s\npassword=%s\nprotocol=tcp\n' "$2" "$3" "$4" "$5" >"$1"
    chmod 600 "$1"
}

sql_quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/\\\\/\\\\\\\\/g; s/'/''/g")"; }

# CREATE (or re-password) user@'%' with `grant`, and give every other existing account of that
# name (user@'127.0.0.1' would shadow user@'%') the same password and grant.
ensure_account() { # cnf user password grant-statement-with-@@ACCOUNT@@
    local cnf=$1 user=$2 pw=$3 grant=$4 hosts h sql=""
    hosts=$("$CLIENT" --defaults-file="$cnf" -N -e \
        "SELECT Host FROM mysql.user WHERE User = '$user'" 2>/dev/null || true)
    for h in '%' $hosts; do
        sql+="CREATE USER IF NOT EXISTS '$user'@'$h' IDENTIFIED BY '$pw';"
        sql+="ALTER USER '$user'@'$h' IDENTIFIED BY '$pw';"
        sql+="${grant//@@ACCOUNT@@/\'$user\'@\'$h\'};"
    done
    "$CLIENT" --defaults-file="$cnf" -e "$sql"
}

# Create db/app user/admin user through an account that may; sets APP_USER/APP_PW/ADM_USER/ADM_PW.
provision_remote() { # cnf db app_user app_pw create_admin(0/1)
    local cnf=$1 db=$2
    APP_USER=$3 APP_PW=$4
    "$CLIENT" --defaults-file="$cnf" -e "CREATE DATABASE IF NOT EXISTS \`$db\`" ||
        "$CLIENT" --defaults-file="$cnf" -e "USE \`$db\`" ||
        die "database $db does not exist and cannot be created"
    if [ -z "$APP_USER" ]; then
        APP_USER=dbpool_app
        APP_PW=$(randhex 16)
        ensure_account "$cnf" dbpool_app "$APP_PW" "GRANT ALL PRIVILEGES ON \`$db\`.* TO @@ACCOUNT@@" ||
            die "DBPOOL_TEST_USER is not set and the admin account cannot create dbpool_app"
    fi
    if [ "$5" = 1 ]; then
        ADM_USER=dbpool_admin
        ADM_PW=$(randhex 16)
        ensure_account "$cnf" dbpool_admin "$ADM_PW" \
            "GRANT ALL PRIVILEGES ON *.* TO @@ACCOUNT@@ WITH GRANT OPTION" ||
            die "cannot create dbpool_admin"
    fi
}

external_start() {
    local dir=$1 host=$DBPOOL_TEST_HOST port=${DBPOOL_TEST_PORT:-3306}
    local auser=${DBPOOL_TEST_ADMIN_USER:-root} apw=${DBPOOL_TEST_ADMIN_PASSWORD:-}
    local db=${DBPOOL_TEST_DB:-dbpool_test} cnf="$dir/.admin.cnf" errlog=${DBPOOL_TEST_ERRLOG:-}
    need_client
    client_cnf "$cnf" "$host" "$port" "$auser" "$apw"
    if ! "$CLIENT" --defaults-file="$cnf" --connect-timeout=10 -e "SELECT 1" >/dev/null; then
        rm -f "$cnf"
        die "cannot connect to the external server $host:$port as $auser (DBPOOL_TEST_HOST is set)"
    fi
    provision_remote "$cnf" "$db" "${DBPOOL_TEST_USER:-}" "${DBPOOL_TEST_PASSWORD:-}" 0
    rm -f "$cnf"
    client_cnf "$cnf" "$host" "$port" "$APP_USER" "$APP_PW"
    if ! "$CLIENT" --defaults-file="$cnf" --connect-timeout=10 -e "SELECT 1" "$db" >/dev/null; then
        rm -f "$cnf"
        die "the application user $APP_USER cannot connect to $host:$port/$db"
    fi
    rm -f "$cnf"
    [ -n "$errlog" ] && [ ! -r "$errlog" ] && { warn "DBPOOL_TEST_ERRLOG $errlog is not readable"; errlog=; }
    write_state "$dir" "KIND=external"
    write_env "$dir" "KIND=external" "HOST=$host" "PORT=$port" "SOCKET=${DBPOOL_TEST_SOCKET:-}" \
        "DB=$db" "USER=$APP_USER" "PASSWORD=$APP_PW" "ADMIN_USER=$auser" \
        "ADMIN_PASSWORD=$apw" "ERRLOG=$errlog"
    say "using the external server $host:$port (admin $auser, app user $APP_USER, db $db)"
}

docker_available() {
    [ "${DBPOOL_TEST_DOCKER:-auto}" != 0 ] || return 1
    command -v docker >/dev/null 2>&1 || return 1
    timeout 15 docker info >/dev/null 2>&1
}

docker_start() {
    local dir=$1 image=${DBPOOL_TEST_DOCKER_IMAGE:-mariadb:10.11} name root_pw cid port i
    local vol="$dir/docker" cnf="$dir/.admin.cnf" errlog running user_opt=()
    need_client
    name="dbpool-test-$(randhex 4)"
    root_pw=$(randhex 16)
    rm -rf "$vol"
    mkdir -p "$vol/data" "$vol/log"
    if [ "$(id -u)" = 0 ]; then
        chmod 777 "$vol/log" # the image's entrypoint drops to its mysql user
    else
        user_opt=(--user "$(id -u):$(id -g)") # files stay readable (and removable) by us
    fi
    say "starting a container of $image"
    timeout 600 docker pull -q "$image" >/dev/null 2>&1 || true
    cid=$(docker run -d --name "$name" -p 127.0.0.1::3306 "${user_opt[@]}" \
        -v "$vol/data:/var/lib/mysql" -v "$vol/log:/var/log/dbpool" \
        -e MARIADB_ROOT_PASSWORD="$root_pw" -e MARIADB_DATABASE=dbpool_test \
        "$image" --log-error=/var/log/dbpool/err.log --log-warnings=2 \
        --max-connections=200 --max-connect-errors=1000000 --skip-name-resolve \
        --performance-schema=ON --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_general_ci) || die "docker run $image failed"
    write_state "$dir" "KIND=docker" "CONTAINER=$cid" "VOLDIR=$vol"
    port=$(docker port "$cid" 3306/tcp | head -n 1)
    port=${port##*:}
    [ -n "$port" ] || die "cannot read the published port of container $cid"
    client_cnf "$cnf" 127.0.0.1 "$port" root "$root_pw"
    for ((i = 0; i < 240; i++)); do # 120 s: first initialisation takes a while
        running=$(docker inspect -f '{{.State.Running}}' "$cid" 2>/dev/null || echo false)
        if [ "$running" != true ]; then
            warn "the container exited; its log:"
            docker logs --tail 60 "$cid" >&2 2>&1 || true
            tail -n 40 "$vol/log/err.log" >&2 2>/dev/null || true
            docker_stop "$dir"
            exit 1
        fi
        if "$CLIENT" --defaults-file="$cnf" --connect-timeout=2 -e "SELECT 1" >/dev/null 2>&1; then
            break
        fi
        sleep 0.5
    done
    if [ "$i" -ge 240 ]; then
        warn "the container is not ready after 120 s; its log:"
        docker logs --tail 60 "$cid" >&2 2>&1 || true
        docker_stop "$dir"
        exit 1
    fi
    provision_remote "$cnf" dbpool_test "" "" 1
    rm -f "$cnf"
    errlog="$vol/log/err.log"
    [ -r "$errlog" ] || errlog=
    write_env "$dir" "KIND=docker" "HOST=127.0.0.1" "PORT=$port" "SOCKET=" "DB=dbpool_test" \
        "USER=$APP_USER" "PASSWORD=$APP_PW" "ADMIN_USER=$ADM_USER" "ADMIN_PASSWORD=$ADM_PW" \
        "ERRLOG=$errlog"
    start_watchdog "$dir" fixture-stop
    say "container $name ($image) ready on 127.0.0.1:$port; coordinates in $dir/server.env"
}

docker_stop() {
    local dir=$1
    rm -f "$dir/.admin.cnf"
    load_state "$dir" || return 0
    [ -n "$S_CONTAINER" ] || return 0
    if [ -f "$S_VOLDIR/log/err.log" ]; then cp -f "$S_VOLDIR/log/err.log" "$dir/server-err.log" || true; fi
    docker stop -t 20 "$S_CONTAINER" >/dev/null 2>&1 || true
    docker rm -f -v "$S_CONTAINER" >/dev/null 2>&1 || true
    if [ "${DBPOOL_TEST_KEEP:-0}" != 1 ] && [ -n "$S_VOLDIR" ]; then
        rm -rf "$S_VOLDIR" 2>/dev/null || warn "could not remove $S_VOLDIR"
    fi
}

# ---- subcommands ------------------------------------------------------------------------------
USER_OPT=()
[ "$(id -u)" = 0 ] && USER_OPT=(--user=root)

cmd_fixture_stop() {
    local dir=$1 lane
    for lane in "$dir"/lane-*; do
        [ -d "$lane" ] || continue
        stop_watchdog "$lane"
        if load_state "$lane"; then local_stop "$lane" 0; fi
        rm -f "$lane/state" "$lane/server.env"
        rmdir "$lane" 2>/dev/null || true
    done
    stop_watchdog "$dir"
    if load_state "$dir"; then
        case $S_KIND in
        local) local_stop "$dir" 0 ;;
        docker) docker_stop "$dir" ;;
        external) ;; # never stop a server we did not start
        esac
        if [ "$S_KIND" = external ]; then
            say "left the external test server running"
        else
            say "stopped the $S_KIND test server"
        fi
    fi
    rm -f "$dir/state" "$dir/server.env"
}

cmd_fixture_start() {
    local dir=$1
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # Leftovers of an interrupted run.
    if [ -f "$dir/state" ]; then cmd_fixture_stop "$dir" >/dev/null 2>&1 || true; fi
    rm -f "$dir/server.env"
    case $(fixture_kind) in
    external) external_start "$dir" ;;
    docker) docker_start "$dir" ;;
    *)
        start_lanes "$dir"
        local_start "$dir" local
        wait_lanes
        ;;
    esac
}

fixture_kind() {
    if [ -n "${DBPOOL_TEST_HOST:-}" ]; then
        echo external
    elif docker_available; then
        echo docker
    else
        echo local
    fi
}

# Lanes 1..N-1 next to the main server, started in the background (wait_lanes collects them).
LANE_PIDS=()
start_lanes() {
    local dir=$1 n=${DBPOOL_TEST_LANES:-1} k
    [ "$n" -gt 1 ] 2>/dev/null || return 0
    [ "$n" -le 16 ] || die "DBPOOL_TEST_LANES=$n: at most 16"
    need_local_tools
    ensure_template # once, before the parallel starts
    for ((k = 1; k < n; k++)); do
        mkdir -p "$dir/lane-$k"
        local_start "$dir/lane-$k" local &
        LANE_PIDS+=($!)
    done
}

wait_lanes() {
    local p rc=0
    for p in "${LANE_PIDS[@]}"; do wait "$p" || rc=1; done
    [ "$rc" = 0 ] || die "a lane server did not start (see above)"
}

cmd_private_start() {
    local dir=$1
    shift
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/state" ]; then cmd_private_destroy "$dir" >/dev/null 2>&1 || true; fi
    local_start "$dir" private "$@"
}

cmd_private_stop() {
    local dir=$1
    load_state "$dir" || die "no private server in $dir"
    stop_pid "$S_PID" "$S_REALDIR" 30 || die "cannot stop mariadbd $S_PID"
}

cmd_private_restart() {
    local dir=$1 extra=()
    need_local_tools
    load_state "$dir" || die "no private server in $dir"
    stop_pid "$S_PID" "$S_REALDIR" 30 || die "cannot stop mariadbd $S_PID"
    # shellcheck disable=SC2206
    [ -n "$S_ARGS" ] && extra=($S_ARGS)
    start_local_server "$S_REALDIR" "$S_SOCKET" "$S_PORT" "${extra[@]}" || exit 1
    write_state "$dir" "KIND=$S_KIND" "PID=$SERVER_PID" "DATADIR=$S_DATADIR" \
        "REALDIR=$S_REALDIR" "PORT=$S_PORT" "SOCKET=$S_SOCKET" "ARGS=$S_ARGS"
    sed -i "s/^DBPOOL_TEST_PID=.*/DBPOOL_TEST_PID=$SERVER_PID/" "$dir/server.env"
    say "mariadbd restarted as $SERVER_PID on 127.0.0.1:$S_PORT"
}

cmd_private_destroy() {
    local dir=$1
    stop_watchdog "$dir"
    load_state "$dir" || return 0
    local_stop "$dir" 0
    if [ "${DBPOOL_TEST_KEEP:-0}" != 1 ]; then
        rm -f "$dir/state" "$dir/server.env" "$dir/server-err.log"
    else
        rm -f "$dir/state"
    fi
}

if [ "${1:-}" = kind ]; then
    fixture_kind
    exit 0
fi
[ $# -ge 2 ] || die "usage: $PROG fixture-start|fixture-stop|private-start|private-stop|private-restart|private-destroy DIR | kind"
cmd=$1
dir=$2
shift 2
case $cmd in
fixture-start) cmd_fixture_start "$dir" ;;
fixture-stop) [ -d "$dir" ] && cmd_fixture_stop "$(cd "$dir" && pwd)" ;;
private-start) cmd_private_start "$dir" "$@" ;;
private-stop) cmd_private_stop "$(cd "$dir" && pwd)" ;;
private-restart) cmd_private_restart "$(cd "$dir" && pwd)" ;;
private-destroy) [ -d "$dir" ] && cmd_private_destroy "$(cd "$dir" && pwd)" ;;
*) die "unknown command $cmd" ;;
esac
exit 0
