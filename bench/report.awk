# bench/report.awk - RESULTS.md from the raw lines bench/run.sh collected.
#
#   awk -f bench/report.awk meta.txt micro.txt costs.txt overtake.txt results.txt > RESULTS.md
#
# meta.txt (first argument): key=value lines. micro.txt: "MICRO k=v ..." lines from
# dbpool-micro. costs.txt: "COST ..." and "INSTR ..." lines, may be empty. overtake.txt: "OVT
# series=<raw|overtake|share> us=<setting|raw> round=N k=v ..." lines of the throughput/fairness
# sweep, may be empty (overtake: dbpool with DB_QUEUE_OVERTAKE_US = us; share: dbpool-query with
# DB_QUERY_SHARE_US = us; a line without series= is the older format: overtake, or raw).
# results.txt: "round=N RESULT k=v ..." lines from dbpool-bench and bench/mysql2/bench.js,
# "FAIL round=N system=... rc=..." lines (grid); overtake.txt may hold "FAIL round=N series=...
# us=... threads=... rc=..." lines (sweep). A failed run is never dropped silently: the count is
# stated at the top, every cell that a failed run feeds is marked "(N failed)", a cell without any
# successful run reads "failed", and the runs are listed at the end. Every figure is the median
# over rounds; every ratio (to raw, and the reset cost dbpool-reset / dbpool) is the median over
# rounds of the ratio between the two systems' runs of the same round (seconds apart). The pool is measured through both of its APIs, as two systems: dbpool (get/release)
# and dbpool-query (dbpool_query()); every target about the pool gets a verdict for each.
# Portable awk (no gawk extensions).

function kv_split(line, out,    n, i, a, p) {
    n = split(line, a, " ")
    for (i = 1; i <= n; i++) {
        p = index(a[i], "=")
        if (p > 0)
            out[substr(a[i], 1, p - 1)] = substr(a[i], p + 1)
    }
}

function median(v, n,    i, j, t) {
    if (n == 0)
        return ""
    for (i = 2; i <= n; i++) {
        t = v[i]
        for (j = i - 1; j >= 1 && v[j] > t; j--)
            v[j + 1] = v[j]
        v[j + 1] = t
    }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}

# Median of metric m over the rounds of (s, w, l, c); "" when there is no run.
function med(s, w, l, c, m,    r, n, v) {
    n = 0
    for (r = 0; r < nrounds; r++)
        if ((s, w, l, c, r, m) in V)
            v[++n] = V[s, w, l, c, r, m] + 0
    return median(v, n)
}

# Median over rounds of s's metric divided by base's metric of the same round.
function bmed(s, b, w, l, c, m,    r, n, v, d) {
    n = 0
    for (r = 0; r < nrounds; r++)
        if ((s, w, l, c, r, m) in V && (b, w, l, c, r, m) in V) {
            d = V[b, w, l, c, r, m] + 0
            if (d > 0)
                v[++n] = (V[s, w, l, c, r, m] + 0) / d
        }
    return median(v, n)
}

# Median over rounds of s's metric divided by raw's metric of the same round.
function rmed(s, w, l, c, m) { return bmed(s, "raw", w, l, c, m) }

# Failed grid runs of s (and of base b, unless "") at one point: "" or " (N failed)".
function gfail(s, b, w, l, c,    n) {
    n = ((s, w, l, c) in GF ? GF[s, w, l, c] : 0)
    if (b != "" && b != s && (b, w, l, c) in GF)
        n += GF[b, w, l, c]
    return n ? " (" n " failed)" : ""
}

# " (N failed)" -> " (N runs)", for a cell that reads "**failed**".
function fs(fm) { sub(/ failed\)$/, " runs)", fm); return fm }

# A ratio cell of the key table: x with its failed runs, "**failed**" when nothing is left.
function rcell(x, fm) {
    if (x == "")
        return fm == "" ? "–" : "**failed**" fs(fm)
    return sprintf("%.2f", x) fm
}

# "lo–hi" of the per-round ratios (how much the rounds disagree: the noise of the machine).
function rrange(s, w, l, c, m,    r, n, lo, hi, d, x) {
    n = 0
    for (r = 0; r < nrounds; r++)
        if ((s, w, l, c, r, m) in V && ("raw", w, l, c, r, m) in V) {
            d = V["raw", w, l, c, r, m] + 0
            if (d <= 0) continue
            x = (V[s, w, l, c, r, m] + 0) / d
            if (n == 0 || x < lo) lo = x
            if (n == 0 || x > hi) hi = x
            n++
        }
    return n < 2 ? "" : sprintf("%.2f–%.2f", lo, hi)
}

# Median over rounds of s's metric minus raw's metric of the same round.
function dmed(s, w, l, c, m,    r, n, v) {
    n = 0
    for (r = 0; r < nrounds; r++)
        if ((s, w, l, c, r, m) in V && ("raw", w, l, c, r, m) in V)
            v[++n] = V[s, w, l, c, r, m] - V["raw", w, l, c, r, m]
    return median(v, n)
}

# Median over rounds of s's metric m divided by its own metric d of the same run.
function qmed(s, w, l, c, m, d,    r, n, v) {
    n = 0
    for (r = 0; r < nrounds; r++)
        if ((s, w, l, c, r, m) in V && (s, w, l, c, r, d) in V && V[s, w, l, c, r, d] + 0 > 0)
            v[++n] = (V[s, w, l, c, r, m] + 0) / V[s, w, l, c, r, d]
    return median(v, n)
}

function num(x) {
    if (x == "")
        return "–"
    if (x >= 100)
        return sprintf("%.0f", x)
    if (x >= 10)
        return sprintf("%.1f", x)
    return sprintf("%.2f", x)
}

function rat(x) { return x == "" ? "" : sprintf(" (%.2f)", x) }

function withr(s, w, l, c, m) {
    return num(med(s, w, l, c, m)) (s == "raw" ? "" : rat(rmed(s, w, l, c, m)))
}

function sorted_numeric(set, out,    k, n, i, j, t) {
    n = 0
    for (k in set)
        out[++n] = k + 0
    for (i = 2; i <= n; i++) {
        t = out[i]
        for (j = i - 1; j >= 1 && out[j] > t; j--)
            out[j + 1] = out[j]
        out[j + 1] = t
    }
    return n
}

function metyn(ok) { return ok ? "**met**" : "**not met**" }

FILENAME == ARGV[1] {
    p = index($0, "=")
    if (p > 0)
        meta[substr($0, 1, p - 1)] = substr($0, p + 1)
    next
}

/^MICRO / {
    delete f
    kv_split($0, f)
    nmicro++
    MT[nmicro] = f["threads"]
    ML[nmicro] = f["limit"]
    MNS[nmicro] = f["ns_per_pair"]
    MMIN[nmicro] = f["ns_min"]
    MMAX[nmicro] = f["ns_max"]
    MCPU[nmicro] = f["cpu_ns_per_pair"]
    MCSW[nmicro] = f["csw_per_kpair"]
    next
}

/^COST / {
    delete f
    kv_split($0, f)
    CSC[f["system"], f["workload"], f["threads"]] = f["syscalls_per_op"]
    CCS[f["system"], f["workload"], f["threads"]] = f["csw_per_op"]
    HAVE_COST = 1
    next
}

/^INSTR / {
    delete f
    kv_split($0, f)
    CIN[f["system"], f["workload"]] = f["instr_per_op"]
    HAVE_COST = 1
    next
}

/^OVT / {
    delete f
    kv_split($0, f)
    u = f["us"]; c = f["threads"]; r = f["round"]
    se = ("series" in f) ? f["series"] : (u == "raw" ? "raw" : "overtake")
    if (!((se, u) in OVU)) {
        OVU[se, u] = 1
        if (se != "raw") OVN[se, ++novt[se]] = u
    }
    OVC[c] = 1
    if (r + 1 > ovrounds) ovrounds = r + 1
    for (k in f)
        OV[se, u, c, r, k] = f[k]
    next
}

# A failed run (exit status not 0, or no RESULT line): counted, listed, and its point registered
# so that the point's cells are marked, not missing. "series=" marks a run of the sweep.
/^FAIL / {
    delete f
    kv_split($0, f)
    nfail++
    FAILS[nfail] = substr($0, 6)
    r = f["round"]
    if ("series" in f) {
        nfail_sweep++
        u = f["us"]; c = f["threads"]; se = f["series"]
        if (!((se, u) in OVU)) {
            OVU[se, u] = 1
            if (se != "raw") OVN[se, ++novt[se]] = u
        }
        OVC[c] = 1
        if (r + 1 > ovrounds) ovrounds = r + 1
        OVF[se, u, c]++
    } else {
        nfail_grid++
        s = f["system"]; w = f["workload"]; l = f["limit"]; c = f["threads"]
        if (r + 1 > nrounds) nrounds = r + 1
        SYS[s] = 1
        LIM[l] = 1
        THR[c] = 1
        GF[s, w, l, c]++
    }
    next
}

/^round=[0-9]+ RESULT / {
    delete f
    kv_split($0, f)
    s = f["system"]
    w = f["workload"]
    l = f["limit"]
    c = f["threads"]
    r = f["round"]
    if (r + 1 > nrounds)
        nrounds = r + 1
    SYS[s] = 1
    LIM[l] = 1
    THR[c] = 1
    for (k in f)
        V[s, w, l, c, r, k] = f[k]
    if (f["errors"] + 0 > 0)
        errors_total += f["errors"]
    next
}

END {
    nl = sorted_numeric(LIM, Ls)
    nc = sorted_numeric(THR, Cs)
    order = "raw dbpool dbpool-query dbpool-reset connect zdb mysql2"
    nsys = 0
    no = split(order, O, " ")
    for (i = 1; i <= no; i++)
        if (O[i] in SYS)
            S[++nsys] = O[i]
    split("w1 w2", Ws, " ")

    print "# libdbpool benchmark results"
    print ""
    print "Generated by `bench/run.sh` (issue 9); do not edit by hand: run it again."
    print ""
    print "| | |"
    print "|---|---|"
    print "| date | " meta["date"] " |"
    print "| machine | " meta["nproc"] " CPUs (" meta["cpu"] "), kernel " meta["kernel"] ", clock source " meta["clocksource"] "; shared with other work: load average " meta["loadavg_start"] " at the start, " meta["loadavg_end"] " at the end |"
    print "| server | MariaDB " meta["server"] " (throwaway instance from `tests/dbserver.sh`, loopback TCP, no TLS) |"
    print "| client libraries | libdbpool " meta["lib_dbpool"] " (git " meta["git"] "), MariaDB Connector/C " meta["lib_connector_c_runtime"] ", " meta["lib_zdb"] ", Node.js " meta["node"] " with mysql2 " meta["mysql2"] " |"
    print "| command | `" meta["command"] "` |"
    print "| runs | " nrounds " round(s) per point, " meta["duration"] " s measured after " meta["warmup"] " s of warm-up per run; systems alternate point by point in rotating order |"
    print "| failed runs | " (nfail == 0 ? "none" : "**" nfail "** (grid " (nfail_grid + 0) ", sweep " (nfail_sweep + 0) "): see below") " |"
    print "| total runtime | " meta["runtime_s"] " s" (("time_grid_s" in meta) ? sprintf(" (set-up %s, micro-benchmark %s, grid %s, sweep %s, per-op costs %s)", meta["time_setup_s"], meta["time_micro_s"], meta["time_grid_s"], meta["time_sweep_s"], meta["time_costs_s"]) : "") " |"
    print ""
    if (nfail > 0) {
        print "**Warning: " nfail " run(s) failed** (" (nfail_grid + 0) " in the grid, " (nfail_sweep + 0) " in the sweep; exit status not 0, or no result; listed under \"Failed runs\" at the end). Every cell that a failed run feeds is marked **(N failed)**: its median is over the remaining rounds, or includes a run that had failed ops (result=kept); a cell with no successful run reads **failed**. The targets below are judged on what is left."
        print ""
    }
    print "## Systems"
    print ""
    print "- **raw**: min(C, L) threads, each with its own dedicated Connector/C connection and its own statement prepared once: the ceiling no pool can beat. With C > L the ceiling is L threads."
    print "- **dbpool**: C threads share one libdbpool pool of limit L through the get/release API, `DB_RESET_ON_RELEASE=0` (the default, and apples to apples: raw connections are not reset either). W1 runs on `dbpool_mysql()` (text protocol); W2 through `dbpool_conn_query()` (the per-connection statement cache) between `dbpool_get()` and `dbpool_release()`."
    print "- **dbpool-query**: the same pool through the one-call API: every op is one `dbpool_query()`, `DB_QUERY_SHARE_US` at its default (1000 µs). Shared turns: when every connection is in use, a caller waits in the queue with its statement, and a caller whose own statement just finished runs the queued statements on its connection (in arrival order, for up to `DB_QUERY_SHARE_US`) instead of handing the connection to another thread. `dbpool_query()` has no text protocol: W1's `SELECT 1` goes through the prepared-statement protocol and the statement cache too (prep = one per connection) and builds an owned result."
    print "- **dbpool-reset**: get/release with `DB_RESET_ON_RELEASE=1` (opt-in): every release runs COM_RESET_CONNECTION and re-applies `SET SESSION wait_timeout` (2 round trips), and the reset drops the connection's prepared statements."
    print "- **connect**: C threads, each op connects, runs, closes (no pool)."
    print "- **zdb**: libzdb's ConnectionPool, max L, C threads. `ConnectionPool_getConnection()` returns NULL when all L are in use, so the caller retries (50 us doubling to 1 ms). libzdb pings every connection it hands out and prepares every statement, W1 included (it has no text-protocol query)."
    print "- **mysql2**: the mysql2 pool on Node.js, connectionLimit L, C concurrent async loops on the one event loop; W1 `query()`, W2 `execute()` (statement cache per connection)."
    print ""
    print "One op = obtain a connection, run one statement, read the whole result, give the connection back. W1 = `SELECT 1`; W2 = `SELECT id, name, email FROM users WHERE id = ?`, random id over 10,000 rows, bound parameter."
    print ""
    print "Columns: **ops/s** over the measured window; **(x)** = ratio to raw from the same round (median over rounds); latencies of whole ops in µs; **wait** = time to obtain a connection (dbpool: inside `dbpool_get()`; dbpool-query: `dbpool_last_wait_ns()`, the wait for a connection or for another caller to start the statement; zdb: `getConnection()` with its retries; mysql2: `getConnection()`; connect: connect + handshake; raw: none); **CPU** = client process user+sys CPU per op (`getrusage`), the server's not included; **RSS** = peak RSS (`ru_maxrss`) of the benchmark process, MiB, with the difference to raw (the harness allocates and touches its per-thread records for C threads in every system, raw included, so its own memory is the same on both sides); **TTFQ** = time from before the first connection or pool exists to the first completed op; **fair** = per-thread op counts max/min; **csw** = context switches of the process per op; **prep** = server `Com_stmt_prepare` during the whole run (warm-up included); **served** = dbpool-query: share of all its statements (warm-up included) that another caller ran on its connection (shared turns)."
    print ""

    # ---- key ratios --------------------------------------------------------------------------
    print "## Key ratios to raw (throughput; CPU per op for dbpool and dbpool-query)"
    print ""
    print "Each ratio is the median over rounds of (system / raw in the same round); the reset cost likewise is the median over rounds of (dbpool-reset / dbpool in the same round). The last columns show how far the rounds disagree: on this machine, shared with other work, that spread is the noise floor of every throughput and CPU ratio here. The per-op counts further down do not depend on the load. Why the targets that are not met are not met, with profiles and measured fixes: `bench/PROFILE.md`."
    print ""
    hdr = "| W | L | C |"
    sep = "|---|---|---|"
    for (i = 1; i <= nsys; i++)
        if (S[i] != "raw") {
            hdr = hdr " " S[i] " ops |"
            sep = sep "---|"
        }
    np = 0
    if ("dbpool" in SYS) PS[++np] = "dbpool"
    if ("dbpool-query" in SYS) PS[++np] = "dbpool-query"
    for (i = 1; i <= np; i++) {
        hdr = hdr " " PS[i] " CPU |"
        sep = sep "---|"
    }
    hdr = hdr " reset cost (dbpool-reset / dbpool ops) |"
    sep = sep "---|"
    for (i = 1; i <= np; i++) {
        hdr = hdr " " PS[i] " ops, range over rounds |"
        sep = sep "---|"
    }
    print hdr
    print sep
    for (wi = 1; wi <= 2; wi++)
        for (li = 1; li <= nl; li++)
            for (ci = 1; ci <= nc; ci++) {
                w = Ws[wi]; l = Ls[li]; c = Cs[ci]
                row = "| " toupper(w) " | " l " | " c " |"
                for (i = 1; i <= nsys; i++)
                    if (S[i] != "raw")
                        row = row " " rcell(rmed(S[i], w, l, c, "ops_per_s"), gfail(S[i], "raw", w, l, c)) " |"
                for (i = 1; i <= np; i++)
                    row = row " " rcell(rmed(PS[i], w, l, c, "cpu_us_per_op"), gfail(PS[i], "raw", w, l, c)) " |"
                row = row " " rcell(bmed("dbpool-reset", "dbpool", w, l, c, "ops_per_s"), gfail("dbpool-reset", "dbpool", w, l, c)) " |"
                for (i = 1; i <= np; i++) {
                    x = rrange(PS[i], w, l, c, "ops_per_s")
                    row = row " " (x == "" ? "–" : x) " |"
                }
                print row
            }
    print ""

    # ---- targets -------------------------------------------------------------------------------
    print "## Targets of issue 9"
    print ""
    if (nfail_grid > 0) {
        print "**" nfail_grid " grid run(s) failed**: the figures below are medians over the rounds that are left (see \"Failed runs\")."
        print ""
    }
    targets()
    print ""

    # ---- throughput/fairness sweep ----------------------------------------------------------------
    if (novt["overtake"] > 0 || novt["share"] > 0) {
        print "## Throughput against fairness: `DB_QUEUE_OVERTAKE_US` (get/release) and `DB_QUERY_SHARE_US` (`dbpool_query()`)"
        print ""
        print "W1, L = 3, the same binary with one setting changed per run (the default of both is 1000), raw beside it in the same rounds (" ovrounds " round(s) per setting, all settings of both series in one rotating order). **bound** = the fairness target's 2 × C/L × raw op time (raw op time from raw's throughput in the same round, Little's law); **meets fairness** = max/min ≤ 1.5 and wait p99 ≤ bound. Ratios are medians over rounds of the pool / raw of the same round."
        print ""
    }
    if (novt["overtake"] > 0) {
        print "**dbpool (get/release), `DB_QUEUE_OVERTAKE_US`.** While the oldest waiter has waited less than this, a releasing thread may take its connection straight back (no thread switch); after it, every release hands the connection to the oldest waiter (one thread switch per op)."
        print ""
        sweep_table("overtake", "DB_QUEUE_OVERTAKE_US")
    }
    if (novt["share"] > 0) {
        print "**dbpool-query (`dbpool_query()`), `DB_QUERY_SHARE_US`** (`DB_QUEUE_OVERTAKE_US` at its default). A caller whose statement just finished runs the statements of the callers queued behind it on its connection for up to this long (0 = off: every waiting caller gets a connection of its own, as with get/release). **served** = share of all statements (warm-up included) that another caller ran; **wait** = `dbpool_last_wait_ns()`, for a connection or for another caller to start the statement."
        print ""
        sweep_table("share", "DB_QUERY_SHARE_US")
    }

    # ---- micro ----------------------------------------------------------------------------------
    print "## Micro-benchmark: the pool's own cost"
    print ""
    print "`dbpool-micro`: `dbpool_get()` + `dbpool_release()` pairs back to back on a warm pool, `DB_RESET_ON_RELEASE=0`, every connection reused inside the 250 ms liveness bypass window (no reset, ping or poll: no network I/O). ns/pair = wall time / pairs completed by all threads together (with more threads than CPUs this is the aggregate cost, not one thread's latency); median of 5 runs of 300 ms. `limit = threads`: every thread can hold a connection, only the lock is shared; `limit = 3`: threads also wait for each other (hand-offs)."
    print ""
    print "| threads | limit | ns/pair (median) | min – max | CPU ns/pair | context switches per 1000 pairs |"
    print "|---|---|---|---|---|---|"
    for (i = 1; i <= nmicro; i++)
        printf "| %s | %s | %s | %s – %s | %s | %s |\n", MT[i], ML[i], MNS[i], MMIN[i], MMAX[i], MCPU[i], MCSW[i]
    if (nmicro == 0)
        print "| – | – | dbpool-micro produced no result | | | |"
    print ""

    # ---- load-independent costs ---------------------------------------------------------------------
    print "## Per-op costs that do not depend on the machine's load"
    print ""
    if (!HAVE_COST) {
        print "Not measured (perf or valgrind missing)."
        print ""
    } else {
        print "Throughput on this shared 2-CPU machine moves with what the other work on it does; these counts do not. **instr** = user-space instructions per op inside the op function and everything it calls (callgrind, one thread, L = 3); **syscalls** and **csw** = system calls and context switches of the whole benchmark process per op (perf software tracepoints, start-up included) at C = L = 3 and at C = 64, L = 3. A connection moved from one thread to another costs at least one futex wake, one futex wait and one context switch more than raw's dedicated threads ever do. dbpool-query's instructions are those of `dbpool_query()` with the benchmark's reading of the result; in W1 that is the prepared-statement protocol and an owned result against raw's text-protocol `SELECT 1`."
        print ""
        print "| W | system | instr/op (x raw) | syscalls/op C=3 | csw/op C=3 | syscalls/op C=64 | csw/op C=64 |"
        print "|---|---|---|---|---|---|---|"
        for (wi = 1; wi <= 2; wi++)
            for (i = 1; i <= nsys; i++) {
                s = S[i]; w = Ws[wi]
                x = (s, w) in CIN ? CIN[s, w] : ""
                y = ("raw", w) in CIN ? CIN["raw", w] : ""
                printf "| %s | %s | %s%s | %s | %s | %s | %s |\n", toupper(w), s, x == "" ? "–" : x,
                    (x != "" && y != "" && y > 0 && s != "raw") ? sprintf(" (%.2f)", x / y) : "",
                    (s, w, 3) in CSC ? CSC[s, w, 3] : "–", (s, w, 3) in CCS ? CCS[s, w, 3] : "–",
                    (s, w, 64) in CSC ? CSC[s, w, 64] : "–", (s, w, 64) in CCS ? CCS[s, w, 64] : "–"
            }
        print ""
    }

    # ---- full table -------------------------------------------------------------------------------
    print "## Full table"
    print ""
    print "| W | L | C | system | ops/s (x) | p50 µs (x) | p99 µs (x) | p99.9 µs (x) | wait p50 µs | wait p99 µs | CPU µs/op (x) | RSS MiB (Δ raw) | TTFQ ms (x) | fair | csw/op | prep | served |"
    print "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for (wi = 1; wi <= 2; wi++)
        for (li = 1; li <= nl; li++)
            for (ci = 1; ci <= nc; ci++)
                for (i = 1; i <= nsys; i++) {
                    s = S[i]; w = Ws[wi]; l = Ls[li]; c = Cs[ci]
                    if (med(s, w, l, c, "ops_per_s") == "") {
                        if ((s, w, l, c) in GF)
                            printf "| %s | %s | %s | %s%s | **failed** | – | – | – | – | – | – | – | – | – | – | – | – |\n", toupper(w), l, c, s, gfail(s, "", w, l, c)
                        continue
                    }
                    rss = med(s, w, l, c, "rss_kib") / 1024
                    d = s == "raw" ? "" : dmed(s, w, l, c, "rss_kib")
                    sv = s == "dbpool-query" ? qmed(s, w, l, c, "pool_served", "ops_all") : ""
                    printf "| %s | %s | %s | %s%s | %s | %s | %s | %s | %s | %s | %s | %.1f%s | %s | %s | %s | %s | %s |\n",
                        toupper(w), l, c, s, gfail(s, "", w, l, c), withr(s, w, l, c, "ops_per_s"), withr(s, w, l, c, "lat_p50_us"),
                        withr(s, w, l, c, "lat_p99_us"), withr(s, w, l, c, "lat_p999_us"),
                        num(med(s, w, l, c, "wait_p50_us")), num(med(s, w, l, c, "wait_p99_us")),
                        withr(s, w, l, c, "cpu_us_per_op"), rss, d == "" ? "" : sprintf(" (%+.1f)", d / 1024),
                        withr(s, w, l, c, "ttfq_ms"), num(med(s, w, l, c, "fairness")),
                        num(med(s, w, l, c, "csw_per_op")), med(s, w, l, c, "server_prepares"),
                        sv == "" ? "–" : sprintf("%.0f %%", 100 * sv)
                }
    print ""
    if (nfail > 0 || errors_total > 0) {
        print "## Failed runs"
        print ""
        if (nfail > 0)
            print nfail " run(s) failed (grid " (nfail_grid + 0) ", sweep " (nfail_sweep + 0) "; sweep runs carry series=; result=kept: the run printed its figures, which are in the medians; result=none: it did not):"
        print ""
        for (i = 1; i <= nfail; i++)
            print "- " FAILS[i]
        if (errors_total > 0)
            print "- " errors_total " failed ops in total (see stderr.log of the run)"
        print ""
    }
}

# One table of the sweep: series se ("overtake" or "share"), rows C x setting.
function sweep_table(se, col,    nco, OCs, ci, i, u, c, r, x, y, va, vb, vw, vf, vs, vq, vv, na, nb, nw, nf, ns, nq, nv, a, b, wp, fr, cs, bq, sv, share, nk, fm) {
    share = se == "share"
    print "| C | " col " | ops (x raw) | CPU/op (x raw) | csw/op | wait p99 µs | bound µs | max/min |" (share ? " served |" : "") " meets fairness | ≥ 0.90 x raw |"
    print "|---|---|---|---|---|---|---|---|" (share ? "---|" : "") "---|---|"
    nco = sorted_numeric(OVC, OCs)
    for (ci = 1; ci <= nco; ci++)
        for (i = 1; i <= novt[se]; i++) {
            u = OVN[se, i]; c = OCs[ci]
            delete va; delete vb; delete vw; delete vf; delete vs; delete vq; delete vv
            na = nb = nw = nf = ns = nq = nv = 0
            for (r = 0; r < ovrounds; r++) {
                if (!((se, u, c, r, "ops_per_s") in OV) || !(("raw", "raw", c, r, "ops_per_s") in OV)) continue
                x = OV["raw", "raw", c, r, "ops_per_s"] + 0
                y = OV["raw", "raw", c, r, "cpu_us_per_op"] + 0
                if (x <= 0) continue
                va[++na] = OV[se, u, c, r, "ops_per_s"] / x
                if (y > 0) vb[++nb] = OV[se, u, c, r, "cpu_us_per_op"] / y
                vw[++nw] = OV[se, u, c, r, "wait_p99_us"] + 0
                vf[++nf] = OV[se, u, c, r, "fairness"] + 0
                vs[++ns] = OV[se, u, c, r, "csw_per_op"] + 0
                vq[++nq] = 2 * c / 3 * (OV["raw", "raw", c, r, "workers"] / x * 1e6)
                if (OV[se, u, c, r, "ops_all"] + 0 > 0)
                    vv[++nv] = OV[se, u, c, r, "pool_served"] / OV[se, u, c, r, "ops_all"]
            }
            # failed runs of this setting and of raw at this C: every such round feeds the row
            nk = ((se, u, c) in OVF ? OVF[se, u, c] : 0) + (("raw", "raw", c) in OVF ? OVF["raw", "raw", c] : 0)
            fm = nk ? " (" nk " failed)" : ""
            if (na == 0) {
                if (nk)
                    printf "| %s | %s%s | **failed**%s | – | – | – | – | – |%s – | – |\n", c, u, u == 1000 ? " (default)" : "", fs(fm), share ? " – |" : ""
                continue
            }
            a = median(va, na); b = median(vb, nb); wp = median(vw, nw); fr = median(vf, nf)
            cs = median(vs, ns); bq = median(vq, nq); sv = median(vv, nv)
            printf "| %s | %s%s | %.2f%s | %s | %.2f | %.0f | %.0f | %.2f |%s %s | %s |\n", c, u, u == 1000 ? " (default)" : "",
                a, fm, nb ? sprintf("%.2f", b) : "–", cs, wp, bq, fr,
                share ? " " (sv == "" ? "–" : sprintf("%.0f %%", 100 * sv)) " |" : "",
                (fr <= 1.5 && wp <= bq) ? "yes" : "no", (a >= 0.90 ? "yes" : "no")
        }
    print ""
}

# ---- targets ------------------------------------------------------------------------------------
# Every target about the pool is judged for each API on its own, the same way: dbpool-query
# (dbpool_query()) and dbpool (get/release). A t_* function returns the figures of one system and
# sets TS: 1 met, 0 not met, -1 not measured. The verdict names the API that meets a target.

function trim(t) { sub(/[;,] *$/, "", t); return t }

function ifnone(t) { return t == "" ? "–" : t }

function stat(ok) { return ok == 1 ? "met" : ok == 0 ? "not met" : "not measured" }

function verdict(okq, okg) {
    if (okq == 1 && okg == 1) return "**met** with both APIs"
    if (okq == 0 && okg == 0) return "**not met** with either API"
    if (okq == 1 && okg == 0) return "**met with dbpool_query()**, not met with get/release"
    if (okq == 0 && okg == 1) return "**met with get/release**, not met with dbpool_query()"
    if (okq == -1 && okg == -1) return "**not measured**"
    if (okq == -1) return (okg == 1 ? "**met with get/release**" : "**not met** with get/release") ", dbpool_query() not measured"
    return (okq == 1 ? "**met with dbpool_query()**" : "**not met** with dbpool_query()") ", get/release not measured"
}

# "dbpool_query(): met, <figures>; get/release: not met, <figures>"
function both(okq, tq, okg, tg) {
    return "dbpool_query(): " stat(okq) (tq == "" ? "" : ", " trim(tq)) "; get/release: " stat(okg) (tg == "" ? "" : ", " trim(tg))
}

# Target 1: throughput at C = L (info = 1: the points with C < L, no verdict).
function t_cl(s, info,    li, ci, wi, x, ok, txt) {
    ok = 1; txt = ""
    for (li = 1; li <= nl; li++)
        for (ci = 1; ci <= nc; ci++)
            if (info ? Cs[ci] < Ls[li] : Cs[ci] == Ls[li])
                for (wi = 1; wi <= 2; wi++) {
                    x = rmed(s, Ws[wi], Ls[li], Cs[ci], "ops_per_s")
                    if (x == "") continue
                    ok = ok && x >= 0.95
                    txt = txt sprintf("%s L=%d C=%d %.2f; ", toupper(Ws[wi]), Ls[li], Cs[ci], x)
                }
    TS = txt == "" ? -1 : ok
    return txt
}

# Target 2: throughput at C = 16 and 64 with L = 3.
function t_many(s,    ci, wi, x, ok, txt) {
    ok = 1; txt = ""
    for (ci = 1; ci <= nc; ci++)
        if (Cs[ci] == 16 || Cs[ci] == 64)
            for (wi = 1; wi <= 2; wi++) {
                x = rmed(s, Ws[wi], 3, Cs[ci], "ops_per_s")
                if (x == "") continue
                ok = ok && x >= 0.90
                txt = txt sprintf("%s C=%d %.2f; ", toupper(Ws[wi]), Cs[ci], x)
            }
    TS = txt == "" ? -1 : ok
    return txt
}

# Target 3: client CPU per op at every point.
function t_cpu(s,    wi, li, ci, x, ok, n, worst, wc, y, m) {
    ok = 1; n = 0; worst = 0; wc = ""; y = 0; m = ""
    for (wi = 1; wi <= 2; wi++)
        for (li = 1; li <= nl; li++)
            for (ci = 1; ci <= nc; ci++) {
                x = rmed(s, Ws[wi], Ls[li], Cs[ci], "cpu_us_per_op")
                if (x == "") continue
                n++
                ok = ok && x <= 1.15
                if (Cs[ci] <= Ls[li] && (wc == "" || x > worst)) { worst = x; wc = toupper(Ws[wi]) " L=" Ls[li] " C=" Cs[ci] }
                if (Cs[ci] > Ls[li] && (m == "" || x > y)) { y = x; m = toupper(Ws[wi]) " L=" Ls[li] " C=" Cs[ci] }
            }
    TS = n == 0 ? -1 : ok
    return n == 0 ? "" : "worst at C ≤ L " (wc == "" ? "–" : sprintf("%.2f (%s)", worst, wc)) ", worst at C > L " (m == "" ? "–" : sprintf("%.2f (%s)", y, m))
}

# Target 5: fairness at C = 64, L = 3.
function t_fair(s,    wi, ok, txt, fr, wp, x, n, raw_op, fq) {
    ok = 1; txt = ""
    for (wi = 1; wi <= 2; wi++) {
        fr = med(s, Ws[wi], 3, 64, "fairness")
        wp = med(s, Ws[wi], 3, 64, "wait_p99_us")
        x = med("raw", Ws[wi], 3, 64, "ops_per_s")
        n = med("raw", Ws[wi], 3, 64, "workers")
        if (fr == "" || wp == "" || x == "" || x == 0) continue
        raw_op = n / x * 1e6           # mean raw op time per connection, µs (Little's law)
        fq = 64 / 3 * raw_op           # fair-queue expectation
        ok = ok && fr <= 1.5 && wp <= 2 * fq
        txt = txt sprintf("%s max/min %.2f, wait p99 %.0f µs vs bound 2 x %.0f = %.0f µs (raw op %.0f µs); ", toupper(Ws[wi]), fr, wp, fq, 2 * fq, raw_op)
    }
    TS = txt == "" ? -1 : ok
    return txt
}

# Target 6: peak RSS with L = 3 within 2 MiB of raw.
function t_rss(s,    wi, ci, d, ok, worst, wc, y) {
    ok = 1; worst = 0; wc = ""
    for (wi = 1; wi <= 2; wi++)
        for (ci = 1; ci <= nc; ci++) {
            d = dmed(s, Ws[wi], 3, Cs[ci], "rss_kib")
            if (d == "") continue
            d = d / 1024
            ok = ok && d <= 2
            if (wc == "" || d > worst) { worst = d; wc = toupper(Ws[wi]) " C=" Cs[ci] }
        }
    TS = wc == "" ? -1 : ok
    y = dmed(s, "w1", 3, 3, "rss_kib")
    return wc == "" ? "" : "at C = L = 3 (same thread count) " (y == "" ? "–" : sprintf("%+.1f", y / 1024)) " MiB (W1), largest difference " sprintf("%+.1f MiB (%s)", worst, wc)
}

# Targets 7 and 8: ahead of another system on every point (throughput, p99, CPU, RSS).
function t_ahead(s, o,    wi, li, ci, w, l, c, cnt, wins, lost, better, m, d) {
    cnt = 0; wins = 0; lost = ""
    for (wi = 1; wi <= 2; wi++)
        for (li = 1; li <= nl; li++)
            for (ci = 1; ci <= nc; ci++) {
                w = Ws[wi]; l = Ls[li]; c = Cs[ci]
                if (med(o, w, l, c, "ops_per_s") == "" || med(s, w, l, c, "ops_per_s") == "") continue
                cnt++
                better = 1; m = ""
                if (med(s, w, l, c, "ops_per_s") <= med(o, w, l, c, "ops_per_s")) { better = 0; m = m " ops/s" }
                if (med(s, w, l, c, "lat_p99_us") >= med(o, w, l, c, "lat_p99_us")) { better = 0; m = m " p99" }
                if (med(s, w, l, c, "cpu_us_per_op") >= med(o, w, l, c, "cpu_us_per_op")) { better = 0; m = m " CPU" }
                d = med(s, w, l, c, "rss_kib") - med(o, w, l, c, "rss_kib")
                if (d >= 0) { better = 0; m = m sprintf(" RSS %+.1f MiB", d / 1024) }
                if (better) wins++
                else lost = lost sprintf("%s L=%d C=%d (%s); ", toupper(w), l, c, substr(m, 2))
            }
    TS = cnt == 0 ? -1 : wins == cnt
    return cnt == 0 ? "" : "ahead on all four at " wins " of " cnt " points" (lost == "" ? "" : "; behind on: " trim(lost))
}

# Target 9: at most one prepare per connection (L) for every workload that goes through the
# statement cache: W2 with both APIs, W1 with dbpool_query() (get/release runs W1 as text).
function t_cache(s,    nw, ws, wi, li, ci, l, c, x, y, ok, txt) {
    nw = split(s == "dbpool-query" ? "w1 w2" : "w2", ws, " ")
    ok = 1; txt = ""
    for (wi = 1; wi <= nw; wi++)
        for (li = 1; li <= nl; li++)
            for (ci = 1; ci <= nc; ci++) {
                l = Ls[li]; c = Cs[ci]
                x = med(s, ws[wi], l, c, "server_prepares")
                y = med(s, ws[wi], l, c, "server_executes")
                if (x == "") continue
                ok = ok && x <= l
                txt = txt sprintf("%s L=%d C=%d %d / %d; ", toupper(ws[wi]), l, c, x, y)
            }
    TS = txt == "" ? -1 : ok
    return txt == "" ? "" : "prepares / executions: " txt
}

# One sentence per target, with the measured figures.
function targets(    tq, tg, oq, og, thr1, thr1cpu, thr64, thr64c, i, oi, sysname, opt, m, li, ci, x, y) {
    tq = t_cl("dbpool-query", 0); oq = TS
    tg = t_cl("dbpool", 0); og = TS
    print "1. **Throughput at C = L ≥ 0.95 × raw**: " verdict(oq, og) ". " both(oq, tq, og, tg) " (for information, C < L, where raw also runs C dedicated threads: dbpool_query(): " ifnone(trim(t_cl("dbpool-query", 1))) "; get/release: " ifnone(trim(t_cl("dbpool", 1))) ")."
    tq = t_many("dbpool-query"); oq = TS
    tg = t_many("dbpool"); og = TS
    print "2. **Throughput at C = 16 and 64 with L = 3 ≥ 0.90 × raw (L threads)**: " verdict(oq, og) ". Pool / raw: " both(oq, tq, og, tg) "."
    tq = t_cpu("dbpool-query"); oq = TS
    tg = t_cpu("dbpool"); og = TS
    print "3. **Client CPU per op ≤ 1.15 × raw**: " verdict(oq, og) ". Pool / raw: " both(oq, tq, og, tg) ". At C > L a queued caller costs a futex wake and a park per op that raw's L threads never pay (get/release: to hand it the connection; dbpool_query(): to hand it the connection or its result)."
    # Values taken from fields are strings: compare them with +0, or awk compares text.
    thr1 = ""; thr64 = ""; thr64c = ""
    for (i = 1; i <= nmicro; i++) {
        if (MT[i] == 1 && ML[i] == 1) { thr1 = MNS[i]; thr1cpu = MCPU[i] }
        if (MT[i] == 64 && ML[i] == 64) thr64 = MNS[i]
        if (MT[i] == 64 && ML[i] == 3) thr64c = MNS[i]
    }
    if (thr1 == "")
        print "4. **get+release ≤ 100 ns median for one thread, no collapse at 64 threads**: **not measured** (dbpool-micro failed)."
    else
        print "4. **get+release ≤ 100 ns median for one thread, no collapse at 64 threads** (the get/release pair itself; `dbpool_query()` is not measured without I/O): " metyn(thr1 + 0 <= 100 && thr64 != "" && thr64 + 0 <= 4 * thr1) ". One thread: " thr1  " ns per pair (CPU " thr1cpu " ns); 64 threads, limit 64: " thr64 " ns per pair aggregate (" (thr64 == "" ? "–" : sprintf("%.1f", thr64 / thr1)) " x one thread; \"no collapse\" taken as ≤ 4 x); 64 threads, limit 3 (every pair waits for a hand-off): " thr64c " ns."
    tq = t_fair("dbpool-query"); oq = TS
    tg = t_fair("dbpool"); og = TS
    print "5. **Fairness at C = 64, L = 3 (max/min ≤ 1.5, wait p99 ≤ 2 × C/L × raw op time)**: " verdict(oq, og) ". " both(oq, tq, og, tg) "."
    tq = t_rss("dbpool-query"); oq = TS
    tg = t_rss("dbpool"); og = TS
    print "6. **Peak RSS with L = 3 within 2 MiB of raw**: " verdict(oq, og) ". Pool − raw: " both(oq, tq, og, tg) "; the largest difference includes the C − L extra application threads (stacks, malloc arenas) that the raw program does not have."
    split("zdb mysql2", opt, " ")
    for (oi = 1; oi <= 2; oi++) {
        sysname = opt[oi]
        if (!(sysname in SYS)) {
            print (6 + oi) ". **Ahead of " sysname " on every point**: **not measured** (" sysname " was not available)."
            continue
        }
        tq = t_ahead("dbpool-query", sysname); oq = TS
        tg = t_ahead("dbpool", sysname); og = TS
        print (6 + oi) ". **Ahead of " sysname " on every point (throughput, p99, CPU per op, RSS)**: " verdict(oq, og) ". " both(oq, tq, og, tg) "."
    }
    tq = t_cache("dbpool-query"); oq = TS
    tg = t_cache("dbpool"); og = TS
    m = ""
    for (li = 1; li <= nl && m == ""; li++)
        for (ci = nc; ci >= 1 && m == ""; ci--) {
            x = med("dbpool-reset", "w2", Ls[li], Cs[ci], "server_prepares")
            y = med("dbpool-reset", "w2", Ls[li], Cs[ci], "server_executes")
            if (x != "")
                m = sprintf("%d prepares for %d executions (L=%d C=%d)", x, y, Ls[li], Cs[ci])
        }
    print "9. **The statement cache shows up (prepared once per connection: prepares ≤ L)** with `DB_RESET_ON_RELEASE=0`, in every workload that goes through it (W2 with both APIs; W1 with `dbpool_query()`, which prepares `SELECT 1` too, while get/release runs W1 as text): " verdict(oq, og) ". " both(oq, tq, og, tg) ". With `DB_RESET_ON_RELEASE=1` the reset drops the cache, so every op prepares again: " (m == "" ? "–" : m) "."
}
