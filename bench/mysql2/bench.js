#!/usr/bin/env node
// bench/mysql2/bench.js - the same point of the grid as dbpool-bench, for the mysql2 pool on
// Node.js (the stack the original project used).
//
//   node bench.js --workload w1|w2 --limit L --threads C [--duration S] [--warmup S]
//
// "Threads" are C concurrent async loops on the one event loop (Node's model); the pool has
// connectionLimit L and queues the rest (waitForConnections, unbounded queue). One op =
// pool.getConnection(), one statement, read the whole result, release():
//   W1  conn.query('SELECT 1')                       (text protocol)
//   W2  conn.execute('SELECT id, name, email FROM users WHERE id = ?', [id])
//       (prepared-statement protocol; mysql2 caches statements per connection)
// Coordinates from DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME. mysql2 is found through
// NODE_PATH (bench/run.sh installs it into a scratch directory). Prints the same
// "RESULT key=value ..." line as dbpool-bench; exit 1 if any op failed.
'use strict';

const mysql = require('mysql2');

const O = { workload: 'w1', limit: 3, threads: 1, duration: 3, warmup: 1 };
for (let i = 2; i + 1 < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  const v = process.argv[i + 1];
  if (!(k in O)) {
    console.error('usage: bench.js --workload w1|w2 --limit L --threads C [--duration S] [--warmup S]');
    process.exit(2);
  }
  O[k] = k === 'workload' ? v : Number(v);
}
const W2 = O.workload === 'w2';
const SQL2 = 'SELECT id, name, email FROM users WHERE id = ?';
const coords = {
  host: process.env.DB_HOST || '127.0.0.1',
  port: Number(process.env.DB_PORT || 3306),
  user: process.env.DB_USER || 'root',
  password: process.env.DB_PASSWORD || '',
  database: process.env.DB_NAME || undefined,
};

// Log-linear histogram, 1/64 octave, as in bench.c.
const SUB_BITS = 6, SUB = 1 << SUB_BITS, NB = SUB * 41;
function newHist() { return { n: 0, b: new Uint32Array(NB) }; }
function bucketOf(v) {
  if (v < SUB) return v;
  let msb = Math.floor(Math.log2(v)); // exact below 2^53 after the correction
  if (2 ** msb > v) msb--;
  else if (2 ** (msb + 1) <= v) msb++;
  const shift = msb - SUB_BITS + 1;
  const idx = shift * SUB + Math.floor(v / 2 ** shift);
  return idx < NB ? idx : NB - 1;
}
function bucketValue(i) {
  if (i < SUB) return i;
  const shift = Math.floor(i / SUB), m = i % SUB;
  return (m + 0.5) * 2 ** shift;
}
function add(h, ns) { h.b[bucketOf(Math.max(0, Math.round(ns)))]++; h.n++; }
function quantile(h, q) {
  if (h.n === 0) return 0;
  let rank = Math.floor(q * h.n);
  if (rank >= h.n) rank = h.n - 1;
  let seen = 0;
  for (let i = 0; i < NB; i++) {
    seen += h.b[i];
    if (seen > rank) return bucketValue(i);
  }
  return bucketValue(NB - 1);
}

const now = () => Number(process.hrtime.bigint());
let phase = 0; // 0 warm-up, 1 measure, 2 stop
let failures = 0, firstError = '';
let firstDone = 0;
let opsAll = 0; // warm-up included
const lat = newHist(), wait = newHist();
const perThread = new Array(O.threads).fill(0);

function getConn(pool) {
  return new Promise((resolve, reject) => pool.getConnection((e, c) => (e ? reject(e) : resolve(c))));
}
function runOn(conn, id) {
  return new Promise((resolve, reject) => {
    const cb = (e, rows) => (e ? reject(e) : resolve(rows));
    if (W2) conn.execute(SQL2, [id], cb);
    else conn.query('SELECT 1', cb);
  });
}

let sink = 0;
async function worker(pool, idx) {
  let x = (0x9e3779b9 * (idx + 1)) >>> 0 || 1;
  while (phase !== 2) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    const id = 1 + (x % 10000);
    const t0 = now();
    let conn;
    try {
      conn = await getConn(pool);
      const t1 = now();
      const rows = await runOn(conn, id);
      conn.release();
      conn = null;
      if (W2 && rows.length !== 1) throw new Error('expected exactly one row');
      sink += rows.length;
      const t2 = now();
      if (!firstDone) firstDone = t2;
      opsAll++;
      if (phase === 1) {
        add(lat, t2 - t0);
        add(wait, t1 - t0);
        perThread[idx]++;
      }
    } catch (e) {
      if (conn) conn.release();
      failures++;
      if (!firstError) firstError = String(e && e.message);
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}

function serverCounters() {
  return new Promise((resolve) => {
    const c = mysql.createConnection(coords);
    c.query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_stmt_prepare','Com_stmt_execute'," +
            "'Connections','Com_admin_commands')", (e, rows) => {
      const r = { Com_stmt_prepare: 0, Com_stmt_execute: 0, Connections: 0, Com_admin_commands: 0 };
      if (!e) for (const row of rows) r[row.Variable_name] = Number(row.Value);
      c.end(() => resolve(r));
    });
  });
}

const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));
const cpuUs = () => { const u = process.cpuUsage(); return u.user + u.system; };

async function main() {
  const before = await serverCounters();
  const tStart = now();
  const pool = mysql.createPool({ ...coords, connectionLimit: O.limit, waitForConnections: true,
                                  queueLimit: 0, maxIdle: O.limit });
  const workers = [];
  for (let i = 0; i < O.threads; i++) workers.push(worker(pool, i));
  await sleep(O.warmup);
  const c0 = cpuUs(), r0 = process.resourceUsage();
  const t0 = now();
  phase = 1;
  await sleep(O.duration);
  phase = 2;
  const secs = (now() - t0) / 1e9;
  const cpu = cpuUs() - c0, r1 = process.resourceUsage();
  await Promise.all(workers);
  const rss = process.resourceUsage().maxRSS;
  await new Promise((r) => pool.end(r));
  const after = await serverCounters();
  const ops = perThread.reduce((a, b) => a + b, 0);
  const tmax = Math.max(...perThread), tmin = Math.min(...perThread);
  const csw = (r1.voluntaryContextSwitches + r1.involuntaryContextSwitches) -
              (r0.voluntaryContextSwitches + r0.involuntaryContextSwitches);
  const f = (v, d) => v.toFixed(d);
  console.log(`RESULT system=mysql2 workload=${O.workload} limit=${O.limit} threads=${O.threads} ` +
    `workers=${O.threads} duration_s=${f(secs, 2)} ops=${ops} ops_per_s=${f(ops / secs, 1)} ` +
    `lat_p50_us=${f(quantile(lat, 0.5) / 1e3, 1)} lat_p99_us=${f(quantile(lat, 0.99) / 1e3, 1)} ` +
    `lat_p999_us=${f(quantile(lat, 0.999) / 1e3, 1)} wait_p50_us=${f(quantile(wait, 0.5) / 1e3, 2)} ` +
    `wait_p99_us=${f(quantile(wait, 0.99) / 1e3, 1)} wait_p999_us=${f(quantile(wait, 0.999) / 1e3, 1)} cpu_us_per_op=${f(ops ? cpu / ops : 0, 2)} ` +
    `rss_kib=${rss} ttfq_ms=${f(firstDone ? (firstDone - tStart) / 1e6 : -1, 2)} ` +
    `ops_thread_max=${tmax} ops_thread_min=${tmin} fairness=${f(tmin ? tmax / tmin : 0, 3)} ` +
    `server_prepares=${after.Com_stmt_prepare - before.Com_stmt_prepare} ` +
    `server_executes=${after.Com_stmt_execute - before.Com_stmt_execute} ` +
    `server_connections=${after.Connections - before.Connections} ` +
    `server_admin_cmds=${after.Com_admin_commands - before.Com_admin_commands} ` +
    `errors=${failures} stmt_cache=${W2 ? 1 : 0} csw_per_op=${f(ops ? csw / ops : 0, 2)} ` +
    `pool_created=0 pool_closed=0 pool_waits=0 ops_all=${opsAll}`);
  if (failures) console.error(`bench.js: ${failures} failed ops; first: ${firstError}`);
  if (sink < 0) console.log(sink);
  process.exit(failures ? 1 : 0);
}

main().catch((e) => { console.error('bench.js:', e); process.exit(1); });
