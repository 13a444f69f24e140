# bench/report.awk - RESULTS.md from the raw lines bench/run.sh collected.
#
#   awk -f bench/report.awk meta.txt micro.txt results.txt > RESULTS.md
#
#   (costs.txt, between micro.txt and results.txt: "COST ..." and "INSTR ..." lines, may be empty;
#   overtake.txt, after costs.txt: "OVT us=<DB_QUEUE_OVERTAKE_US|raw> round=N k=v ..." lines)
# meta.txt: key=value lines. micro.txt: "MICRO k=v ..." lines from dbpool-micro. results.txt:
# "round=N RESULT k=v ..." lines from dbpool-bench and bench/mysql2/bench.js, "FAIL ..." lines.
# Every figure is the median over rounds; every ratio to raw is the median over rounds of the
# ratio between the system's run and the raw run of the same round (seconds apart).
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

# Median over rounds of s's metric divided by raw's metric of the same round.
function rmed(s, w, l, c, m,    r, n, v, d) {
    n = 0
    for (r = 0; r < nrounds; r++)
        if ((s, w, l, c, r, m) in V && ("raw", w, l, c, r, m) in V) {
            d = V["raw", w, l, c, r, m] + 0
            if (d > 0)
                v[++n] = (V[s, w, l, c, r, m] + 0) / d
        }
    return median(v, n)
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
    if (!(u in OVU)) {
        OVU[u] = 1
        if (u != "raw") OVN[++novt] = u
    }
    OVC[c] = 1
    if (r + 1 > ovrounds) ovrounds = r + 1
    for (k in f)
        OV[u, c, r, k] = f[k]
    next
}

/^FAIL / {
    nfail++
    FAILS[nfail] = substr($0, 6)
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
    order = "raw dbpool dbpool-reset connect zdb mysql2"
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
    print "| total runtime | " meta["runtime_s"] " s |"
    print ""
    print "## Systems"
    print ""
    print "- **raw**: min(C, L) threads, each with its own dedicated Connector/C connection and its own statement prepared once: the ceiling no pool can beat. With C > L the ceiling is L threads."
    print "- **dbpool**: C threads share one libdbpool pool of limit L, `DB_RESET_ON_RELEASE=0` (the default, and apples to apples: raw connections are not reset either). W1 runs on `dbpool_mysql()`; W2 through `dbpool_conn_query()` (the per-connection statement cache) between `dbpool_get()` and `dbpool_release()`, which is what `dbpool_query()` does."
    print "- **dbpool-reset**: the same with `DB_RESET_ON_RELEASE=1` (opt-in): every release runs COM_RESET_CONNECTION and re-applies `SET SESSION wait_timeout` (2 round trips), and the reset drops the connection's prepared statements."
    print "- **connect**: C threads, each op connects, runs, closes (no pool)."
    print "- **zdb**: libzdb's ConnectionPool, max L, C threads. `ConnectionPool_getConnection()` returns NULL when all L are in use, so the caller retries (50 us doubling to 1 ms). libzdb pings every connection it hands out and prepares every statement, W1 included (it has no text-protocol query)."
    print "- **mysql2**: the mysql2 pool on Node.js, connectionLimit L, C concurrent async loops on the one event loop; W1 `query()`, W2 `execute()` (statement cache per connection)."
    print ""
    print "One op = obtain a connection, run one statement, read the whole result, give the connection back. W1 = `SELECT 1`; W2 = `SELECT id, name, email FROM users WHERE id = ?`, random id over 10,000 rows, bound parameter."
    print ""
    print "Columns: **ops/s** over the measured window; **(x)** = ratio to raw from the same round (median over rounds); latencies of whole ops in µs; **wait** = time to obtain a connection (dbpool: inside `dbpool_get()`; zdb: `getConnection()` with its retries; mysql2: `getConnection()`; connect: connect + handshake; raw: none); **CPU** = client process user+sys CPU per op (`getrusage`), the server's not included; **RSS** = peak RSS (`ru_maxrss`) of the benchmark process, MiB, with the difference to raw (the harness allocates and touches its per-thread records for C threads in every system, raw included, so its own memory is the same on both sides); **TTFQ** = time from before the first connection or pool exists to the first completed op; **fair** = per-thread op counts max/min; **csw** = context switches of the process per op; **prep** = server `Com_stmt_prepare` during the whole run (warm-up included)."
    print ""

    # ---- key ratios --------------------------------------------------------------------------
    print "## Key ratios to raw (throughput; CPU per op for dbpool)"
    print ""
    print "Each ratio is the median over rounds of (system / raw in the same round). The last column shows how far the rounds disagree: on this machine, shared with other work, that spread is the noise floor of every throughput and CPU ratio here. The per-op counts further down do not depend on the load. Why the targets that are not met are not met, with profiles and measured fixes: `bench/PROFILE.md`."
    print ""
    hdr = "| W | L | C |"
    sep = "|---|---|---|"
    for (i = 1; i <= nsys; i++)
        if (S[i] != "raw") {
            hdr = hdr " " S[i] " ops |"
            sep = sep "---|"
        }
    hdr = hdr " dbpool CPU | reset cost (dbpool-reset / dbpool ops) | dbpool ops, range over rounds |"
    sep = sep "---|---|---|"
    print hdr
    print sep
    for (wi = 1; wi <= 2; wi++)
        for (li = 1; li <= nl; li++)
            for (ci = 1; ci <= nc; ci++) {
                w = Ws[wi]; l = Ls[li]; c = Cs[ci]
                row = "| " toupper(w) " | " l " | " c " |"
                for (i = 1; i <= nsys; i++)
                    if (S[i] != "raw") {
                        x = rmed(S[i], w, l, c, "ops_per_s")
                        row = row " " (x == "" ? "–" : sprintf("%.2f", x)) " |"
                    }
                x = rmed("dbpool", w, l, c, "cpu_us_per_op")
                row = row " " (x == "" ? "–" : sprintf("%.2f", x)) " |"
                a = med("dbpool-reset", w, l, c, "ops_per_s")
                b = med("dbpool", w, l, c, "ops_per_s")
                row = row " " (a == "" || b == "" || b == 0 ? "–" : sprintf("%.2f", a / b)) " |"
                row = row " " rrange("dbpool", w, l, c, "ops_per_s") " |"
                print row
            }
    print ""

    # ---- targets -------------------------------------------------------------------------------
    print "## Targets of issue 9"
    print ""
    targets()
    print ""

    # ---- overtake sweep ---------------------------------------------------------------------------
    if (novt > 0) {
        print "## Throughput against fairness: `DB_QUEUE_OVERTAKE_US`"
        print ""
        print "W1, L = 3, the same binary with `DB_QUEUE_OVERTAKE_US` set per run (the default is 1000), raw beside it in the same rounds (" ovrounds " round(s) per setting, rotating order). While the oldest waiter has waited less than this, a releasing thread may take its connection straight back (no thread switch); after it, every release hands the connection to the oldest waiter (one thread switch per op). **bound** = the fairness target's 2 × C/L × raw op time (raw op time from raw's throughput in the same round, Little's law); **meets fairness** = max/min ≤ 1.5 and wait p99 ≤ bound. Ratios are medians over rounds of dbpool / raw of the same round."
        print ""
        print "| C | DB_QUEUE_OVERTAKE_US | ops (x raw) | CPU/op (x raw) | csw/op | wait p99 µs | bound µs | max/min | meets fairness | ≥ 0.90 x raw |"
        print "|---|---|---|---|---|---|---|---|---|---|"
        nco = sorted_numeric(OVC, OCs)
        for (ci = 1; ci <= nco; ci++)
            for (i = 1; i <= novt; i++) {
                u = OVN[i]; c = OCs[ci]
                delete va; delete vb; delete vw; delete vf; delete vs; delete vq
                na = nb = nw = nf = ns = nq = 0
                for (r = 0; r < ovrounds; r++) {
                    if (!((u, c, r, "ops_per_s") in OV) || !(("raw", c, r, "ops_per_s") in OV)) continue
                    x = OV["raw", c, r, "ops_per_s"] + 0
                    y = OV["raw", c, r, "cpu_us_per_op"] + 0
                    if (x <= 0) continue
                    va[++na] = OV[u, c, r, "ops_per_s"] / x
                    if (y > 0) vb[++nb] = OV[u, c, r, "cpu_us_per_op"] / y
                    vw[++nw] = OV[u, c, r, "wait_p99_us"] + 0
                    vf[++nf] = OV[u, c, r, "fairness"] + 0
                    vs[++ns] = OV[u, c, r, "csw_per_op"] + 0
                    vq[++nq] = 2 * c / 3 * (OV["raw", c, r, "workers"] / x * 1e6)
                }
                if (na == 0) continue
                a = median(va, na); b = median(vb, nb); wp = median(vw, nw); fr = median(vf, nf)
                cs = median(vs, ns); bq = median(vq, nq)
                printf "| %s | %s%s | %.2f | %s | %.2f | %.0f | %.0f | %.2f | %s | %s |\n", c, u, u == 1000 ? " (default)" : "",
                    a, nb ? sprintf("%.2f", b) : "–", cs, wp, bq, fr, (fr <= 1.5 && wp <= bq) ? "yes" : "no",
                    a >= 0.90 ? "yes" : "no"
            }
        print ""
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
        print "Throughput on this shared 2-CPU machine moves with what the other work on it does; these counts do not. **instr** = user-space instructions per op inside the op function and everything it calls (callgrind, one thread, L = 3); **syscalls** and **csw** = system calls and context switches of the whole benchmark process per op (perf software tracepoints, start-up included) at C = L = 3 and at C = 64, L = 3. A connection moved from one thread to another costs at least one futex wake, one futex wait and one context switch more than raw's dedicated threads ever do."
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
    print "| W | L | C | system | ops/s (x) | p50 µs (x) | p99 µs (x) | p99.9 µs (x) | wait p50 µs | wait p99 µs | CPU µs/op (x) | RSS MiB (Δ raw) | TTFQ ms (x) | fair | csw/op | prep |"
    print "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for (wi = 1; wi <= 2; wi++)
        for (li = 1; li <= nl; li++)
            for (ci = 1; ci <= nc; ci++)
                for (i = 1; i <= nsys; i++) {
                    s = S[i]; w = Ws[wi]; l = Ls[li]; c = Cs[ci]
                    if (med(s, w, l, c, "ops_per_s") == "")
                        continue
                    rss = med(s, w, l, c, "rss_kib") / 1024
                    d = s == "raw" ? "" : dmed(s, w, l, c, "rss_kib")
                    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f%s | %s | %s | %s | %s |\n",
                        toupper(w), l, c, s, withr(s, w, l, c, "ops_per_s"), withr(s, w, l, c, "lat_p50_us"),
                        withr(s, w, l, c, "lat_p99_us"), withr(s, w, l, c, "lat_p999_us"),
                        num(med(s, w, l, c, "wait_p50_us")), num(med(s, w, l, c, "wait_p99_us")),
                        withr(s, w, l, c, "cpu_us_per_op"), rss, d == "" ? "" : sprintf(" (%+.1f)", d / 1024),
                        withr(s, w, l, c, "ttfq_ms"), num(med(s, w, l, c, "fairness")),
                        num(med(s, w, l, c, "csw_per_op")), med(s, w, l, c, "server_prepares")
                }
    print ""
    if (nfail > 0 || errors_total > 0) {
        print "## Failed runs"
        print ""
        for (i = 1; i <= nfail; i++)
            print "- " FAILS[i]
        if (errors_total > 0)
            print "- " errors_total " failed ops in total (see stderr.log of the run)"
        print ""
    }
}

# One sentence per target, with the measured figures.
function targets(    w, l, c, x, y, ok, worst, wc, txt, n, i, cnt, wins, lost, m, better, sysname, opt, fq, raw_op, wp, fr, thr1, thr1cpu, thr64, thr64c, d, li, ci, wi, oi) {
    # 1. throughput at C = L and at C = 16, 64 with L = 3
    ok = 1; txt = ""
    for (li = 1; li <= nl; li++)
        for (ci = 1; ci <= nc; ci++)
            if (Cs[ci] == Ls[li])
                for (wi = 1; wi <= 2; wi++) {
                    x = rmed("dbpool", Ws[wi], Ls[li], Cs[ci], "ops_per_s")
                    if (x == "") continue
                    ok = ok && x >= 0.95
                    txt = txt sprintf("%s L=%d C=%d %.2f; ", toupper(Ws[wi]), Ls[li], Cs[ci], x)
                }
    y = ""
    for (li = 1; li <= nl; li++)
        for (ci = 1; ci <= nc; ci++)
            if (Cs[ci] < Ls[li])
                for (wi = 1; wi <= 2; wi++) {
                    x = rmed("dbpool", Ws[wi], Ls[li], Cs[ci], "ops_per_s")
                    if (x != "") y = y sprintf("%s L=%d C=%d %.2f; ", toupper(Ws[wi]), Ls[li], Cs[ci], x)
                }
    print "1. **Throughput at C = L ≥ 0.95 × raw**: " metyn(ok && txt != "") ". dbpool / raw: " txt "(for information, C < L, where raw also runs C dedicated threads: " y ")"
    ok = 1; txt = ""
    for (ci = 1; ci <= nc; ci++)
        if (Cs[ci] == 16 || Cs[ci] == 64)
            for (wi = 1; wi <= 2; wi++) {
                x = rmed("dbpool", Ws[wi], 3, Cs[ci], "ops_per_s")
                if (x == "") continue
                ok = ok && x >= 0.90
                txt = txt sprintf("%s C=%d %.2f; ", toupper(Ws[wi]), Cs[ci], x)
            }
    print "2. **Throughput at C = 16 and 64 with L = 3 ≥ 0.90 × raw (L threads)**: " metyn(ok && txt != "") ". dbpool / raw: " txt
    # 2. CPU per op
    ok = 1; worst = 0; wc = ""; y = 0; m = ""
    for (wi = 1; wi <= 2; wi++)
        for (li = 1; li <= nl; li++)
            for (ci = 1; ci <= nc; ci++) {
                x = rmed("dbpool", Ws[wi], Ls[li], Cs[ci], "cpu_us_per_op")
                if (x == "") continue
                ok = ok && x <= 1.15
                if (Cs[ci] <= Ls[li] && x > worst) { worst = x; wc = toupper(Ws[wi]) " L=" Ls[li] " C=" Cs[ci] }
                if (Cs[ci] > Ls[li] && x > y) { y = x; m = toupper(Ws[wi]) " L=" Ls[li] " C=" Cs[ci] }
            }
    print "3. **Client CPU per op ≤ 1.15 × raw**: " metyn(ok && wc != "") ". Worst dbpool / raw at C ≤ L: " sprintf("%.2f", worst) " (" wc "); worst at C > L: " sprintf("%.2f", y) " (" m "), where every op has to move a connection to another thread (a futex wake and a park) that raw's L threads never do."
    # 3. micro
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
        print "4. **get+release ≤ 100 ns median for one thread, no collapse at 64 threads**: " metyn(thr1 + 0 <= 100 && thr64 != "" && thr64 + 0 <= 4 * thr1) ". One thread: " thr1  " ns per pair (CPU " thr1cpu " ns); 64 threads, limit 64: " thr64 " ns per pair aggregate (" sprintf("%.1f", thr64 / thr1) " x one thread; \"no collapse\" taken as ≤ 4 x); 64 threads, limit 3 (every pair waits for a hand-off): " thr64c " ns."
    # 4. fairness at C = 64, L = 3
    ok = 1; txt = ""
    for (wi = 1; wi <= 2; wi++) {
        fr = med("dbpool", Ws[wi], 3, 64, "fairness")
        wp = med("dbpool", Ws[wi], 3, 64, "wait_p99_us")
        x = med("raw", Ws[wi], 3, 64, "ops_per_s")
        n = med("raw", Ws[wi], 3, 64, "workers")
        if (fr == "" || wp == "" || x == "" || x == 0) continue
        raw_op = n / x * 1e6           # mean raw op time per connection, µs (Little's law)
        fq = 64 / 3 * raw_op           # fair-queue expectation
        ok = ok && fr <= 1.5 && wp <= 2 * fq
        txt = txt sprintf("%s: max/min %.2f, wait p99 %.0f µs vs bound 2 x %.0f = %.0f µs (raw op %.0f µs); ", toupper(Ws[wi]), fr, wp, fq, 2 * fq, raw_op)
    }
    print "5. **Fairness at C = 64, L = 3 (max/min ≤ 1.5, wait p99 ≤ 2 × C/L × raw op time)**: " metyn(ok && txt != "") ". " txt
    # 5. RSS
    ok = 1; worst = -1e9; wc = ""
    for (wi = 1; wi <= 2; wi++)
        for (ci = 1; ci <= nc; ci++) {
            d = dmed("dbpool", Ws[wi], 3, Cs[ci], "rss_kib")
            if (d == "") continue
            d = d / 1024
            ok = ok && d <= 2
            if (d > worst) { worst = d; wc = toupper(Ws[wi]) " C=" Cs[ci] }
        }
    y = dmed("dbpool", "w1", 3, 3, "rss_kib")
    print "6. **Peak RSS with L = 3 within 2 MiB of raw**: " metyn(ok && wc != "") ". dbpool − raw at C = L = 3 (same thread count): " (y == "" ? "–" : sprintf("%+.1f", y / 1024)) " MiB (W1); largest difference " sprintf("%+.1f", worst) " MiB (" wc "), which includes the C − L extra application threads (stacks, malloc arenas) that the raw program does not have."
    # 6. ahead of zdb and mysql2
    split("zdb mysql2", opt, " ")
    for (oi = 1; oi <= 2; oi++) {
        sysname = opt[oi]
        if (!(sysname in SYS)) {
            print (6 + oi) ". **Ahead of " sysname " on every point**: **not measured** (" sysname " was not available)."
            continue
        }
        cnt = 0; wins = 0; lost = ""
        for (wi = 1; wi <= 2; wi++)
            for (li = 1; li <= nl; li++)
                for (ci = 1; ci <= nc; ci++) {
                    w = Ws[wi]; l = Ls[li]; c = Cs[ci]
                    if (med(sysname, w, l, c, "ops_per_s") == "" || med("dbpool", w, l, c, "ops_per_s") == "") continue
                    cnt++
                    better = 1; m = ""
                    if (med("dbpool", w, l, c, "ops_per_s") <= med(sysname, w, l, c, "ops_per_s")) { better = 0; m = m " ops/s" }
                    if (med("dbpool", w, l, c, "lat_p99_us") >= med(sysname, w, l, c, "lat_p99_us")) { better = 0; m = m " p99" }
                    if (med("dbpool", w, l, c, "cpu_us_per_op") >= med(sysname, w, l, c, "cpu_us_per_op")) { better = 0; m = m " CPU" }
                    d = med("dbpool", w, l, c, "rss_kib") - med(sysname, w, l, c, "rss_kib")
                    if (d >= 0) { better = 0; m = m sprintf(" RSS %+.1f MiB", d / 1024) }
                    if (better) wins++
                    else lost = lost sprintf("%s L=%d C=%d (%s); ", toupper(w), l, c, substr(m, 2))
                }
        print (6 + oi) ". **Ahead of " sysname " on every point (throughput, p99, CPU per op, RSS)**: " metyn(cnt > 0 && wins == cnt) ". dbpool is ahead on all four at " wins " of " cnt " points" (lost == "" ? "." : "; behind on: " lost)
    }
    # 7. statement cache
    txt = ""; ok = 1
    for (li = 1; li <= nl; li++)
        for (ci = 1; ci <= nc; ci++) {
            l = Ls[li]; c = Cs[ci]
            x = med("dbpool", "w2", l, c, "server_prepares")
            y = med("dbpool", "w2", l, c, "server_executes")
            if (x == "") continue
            ok = ok && x <= l
            txt = txt sprintf("L=%d C=%d: %d prepares for %d executions; ", l, c, x, y)
        }
    m = ""
    for (li = 1; li <= nl && m == ""; li++)
        for (ci = nc; ci >= 1 && m == ""; ci--) {
            x = med("dbpool-reset", "w2", Ls[li], Cs[ci], "server_prepares")
            y = med("dbpool-reset", "w2", Ls[li], Cs[ci], "server_executes")
            if (x != "")
                m = sprintf("%d prepares for %d executions (L=%d C=%d)", x, y, Ls[li], Cs[ci])
        }
    print "9. **The statement cache shows up in W2 (prepared once per connection)**: " metyn(ok && txt != "") " with `DB_RESET_ON_RELEASE=0`: " txt "With `DB_RESET_ON_RELEASE=1` the reset drops the cache, so every op prepares again: " (m == "" ? "–" : m) "."
}
