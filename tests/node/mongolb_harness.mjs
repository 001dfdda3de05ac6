// Starts and stops mongolb (build/mongolb) in front of a mongosim cluster for the Node.js tests.
//
//   const c = await startCluster('--mongos', '3');   // sim + mongolb, both ready
//   const client = new MongoClient(c.lb.uri);
//   await c.lb.status();                            // db.adminCommand({mongolbStatus: 1})
//   await c.close();
//
// The binary is $MONGOLB or build/mongolb. mongolb gets a temporary config listening on a free
// loopback port; startMongolb resolves once mongolbStatus shows every seed as a known server.
// Its stderr goes to a file; logTail() returns the end of it for failure messages.
// MONGOLB_TEST_SEEDS=host:port,... puts mongolb in front of a real cluster's mongos routers
// instead of the simulator (c.sim is then null and sim-only checks are skipped).
//
// MONGOLB_TEST_TLS=1 runs every cluster of startCluster/startClusterWith with TLS on both legs:
// the certificates of tests/integration/tls_certs.py (made once per process), the simulator with
// --tls-cert, mongolb with tls_mode = require and [upstream] tls = true. c.lb.uri then carries
// tls=true&tlsCAFile=..., and the harness's own connections (c.lb.status(), c.simCommand(),
// directCommand()) speak TLS too, so the tests run unchanged.
import { spawn } from 'node:child_process';
import {
  closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync,
} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { commandOn, startSim, tlsCerts, tlsEverywhere } from './harness.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const binary = process.env.MONGOLB || path.join(root, 'build', 'mongolb');

export async function waitFor(pred, timeoutMs = 10000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// The TLS options of the harness's own connections with MONGOLB_TEST_TLS=1 (mongolb and the
// simulator both present the test server certificate), null otherwise.
export function defaultTls() {
  return tlsEverywhere() ? { tlsCAFile: tlsCerts().ca } : null;
}

// One command on a fresh direct connection (used for mongolbStatus and the sim* commands); over
// TLS with MONGOLB_TEST_TLS=1, or as tls says ({ tlsCAFile, tlsCertificateKeyFile? }, or null for
// plaintext).
export function directCommand(hostPort, cmd, timeoutMs = 5000, tls = defaultTls()) {
  return commandOn(hostPort, cmd, { timeoutMs, tls });
}

export class Mongolb {
  constructor(proc, port, dir, logPath, tls = null) {
    this.proc = proc;
    this.port = port;
    this.dir = dir;
    this.logPath = logPath;
    // With tls_mode = require: { tlsCAFile, tlsCertificateKeyFile? } for uri, status(), command().
    this.tls = tls;
    this.uri = `mongodb://127.0.0.1:${port}/`;
    if (tls) {
      const q = new URLSearchParams({ tls: 'true', tlsCAFile: tls.tlsCAFile });
      if (tls.tlsCertificateKeyFile) q.set('tlsCertificateKeyFile', tls.tlsCertificateKeyFile);
      this.uri += `?${q}`;
    }
    this.exitCode = null;
    this.exited = new Promise((resolve) => proc.once('exit', (code, sig) => resolve(code ?? sig)));
    this.exited.then((c) => (this.exitCode = c));
  }

  get hostPort() {
    return `127.0.0.1:${this.port}`;
  }

  // One command on a fresh direct connection to mongolb (TLS when it requires it).
  command(cmd, timeoutMs = 5000) {
    return directCommand(this.hostPort, cmd, timeoutMs, this.tls);
  }

  // uri with credentials and URI options (authSource, authMechanism...).
  uriAs(user, password, options = {}) {
    const u = new URL(this.uri);
    u.username = encodeURIComponent(user);
    u.password = encodeURIComponent(password);
    for (const [k, v] of Object.entries(options)) u.searchParams.set(k, v);
    return u.toString();
  }

  // With [auth] on (this.admin = { user, password, source }), mongolbStatus through the Node
  // driver logged in as that user; else over a raw connection.
  async status(timeoutMs = 5000) {
    if (!this.admin) return this.command({ mongolbStatus: 1 }, timeoutMs);
    const { MongoClient } = await import('mongodb');
    const { user, password, source } = this.admin;
    const client = new MongoClient(this.uriAs(user, password, { authSource: source }), {
      serverSelectionTimeoutMS: timeoutMs, connectTimeoutMS: timeoutMs,
    });
    try {
      return await client.db('admin').command({ mongolbStatus: 1 });
    } finally {
      await client.close();
    }
  }

  log() {
    try {
      return readFileSync(this.logPath, 'utf8');
    } catch {
      return this.savedLog ?? '';
    }
  }

  logTail(n = 60) {
    return this.log().split('\n').slice(-n).join('\n');
  }

  // SIGTERM, then wait; resolves to the exit code.
  async stop(timeoutMs = 15000) {
    if (this.exitCode === null) {
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
      this.proc.kill('SIGTERM');
      await this.exited;
      clearTimeout(timer);
    }
    return this.exitCode;
  }

  async cleanup() {
    await this.stop();
    this.savedLog = this.log();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// config: extra keys as { upstream: { mode: 'replicaset', ... }, cursors: {...} }; a key given
// there replaces the default of the same name. tls ({ tlsCAFile, tlsCertificateKeyFile? }): how
// the harness and c.lb.uri reach a mongolb configured with tls_mode = require (null: plaintext).
function configText(port, seeds, config) {
  const sections = {
    mongolb: { listen: `127.0.0.1:${port}`, log_level: 'info' },
    upstream: { mode: 'mongos', seeds: seeds.join(','), heartbeat_interval_ms: '500' },
  };
  for (const [section, keys] of Object.entries(config)) {
    sections[section] = { ...(sections[section] ?? {}), ...keys };
  }
  let text = '';
  for (const [section, keys] of Object.entries(sections)) {
    text += `[${section}]\n`;
    for (const [k, v] of Object.entries(keys)) text += `${k} = ${v}\n`;
  }
  return text;
}

export async function startMongolb(
  seeds, {
    expectKnown = seeds.length, timeoutMs = 15000, config = {}, tls = null, admin = null,
  } = {},
) {
  if (!existsSync(binary)) throw new Error(`mongolb not found at ${binary} (run make)`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mongolb-node-'));
  const logPath = path.join(dir, 'mongolb.stderr');
  const conf = path.join(dir, 'mongolb.ini');
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    writeFileSync(conf, configText(port, seeds, config));
    const fd = openSync(logPath, 'a');
    const proc = spawn(binary, ['-c', conf], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const lb = new Mongolb(proc, port, dir, logPath, tls);
    lb.admin = admin;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (lb.exitCode !== null) break; // e.g. the port was taken meanwhile: try another
      try {
        const st = await lb.status(1000);
        if (st.servers.filter((s) => s.type !== 'Unknown').length >= expectKnown) return lb;
      } catch (e) {
        lastErr = e;
      }
      if (Date.now() > deadline) {
        await lb.stop();
        const tail = lb.logTail();
        rmSync(dir, { recursive: true, force: true });
        throw new Error(`mongolb did not know ${expectKnown} servers in time:\n${tail}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    lastErr = new Error(`mongolb exited with ${lb.exitCode}:\n${lb.logTail()}`);
  }
  rmSync(dir, { recursive: true, force: true });
  throw lastErr;
}

export class Cluster {
  constructor(sim, lb, seeds) {
    this.sim = sim;
    this.lb = lb;
    this.seeds = seeds;
  }

  // A control command (simStats, simTxnLog, simKill...) on simulator server i (TLS when the
  // simulator speaks it).
  simCommand(cmd, i = 0) {
    if (!this.sim) throw new Error('needs mongosim');
    return this.sim.command(i, cmd);
  }

  // {server index: count of command `name`} from simStats.
  async commandCounts(name) {
    const st = await this.simCommand({ simStats: 1 });
    const out = {};
    for (const s of st.servers) out[s.index] = Number(s.commands[name] ?? 0);
    return out;
  }

  async close() {
    await this.lb?.cleanup();
    await this.sim?.stop();
  }
}

export function realSeeds() {
  const v = (process.env.MONGOLB_TEST_SEEDS || '').trim();
  const seeds = v.split(',').map((s) => s.trim()).filter(Boolean);
  return seeds.length ? seeds : null;
}

// Like startCluster, with options: simArgs (an array), config (see startMongolb), seedIndices
// (which simulator servers are mongolb's seeds; a replica set needs one) and expectKnown.
// With MONGOLB_TEST_TLS=1, TLS on both legs (see the top of this file).
export async function startClusterWith({ simArgs = ['--mongos', '3'], config = {}, seedIndices,
  expectKnown } = {}) {
  let seeds = realSeeds();
  let sim = null;
  let tls = null;
  const cfg = { ...config };
  if (tlsEverywhere()) {
    const certs = tlsCerts();
    tls = { tlsCAFile: certs.ca };
    cfg.mongolb = { ...cfg.mongolb, tls_mode: 'require', tls_certificate_key_file: certs.server };
    // Towards the servers only when they are the simulator's: a real cluster's CA is not ours.
    if (!seeds) cfg.upstream = { ...cfg.upstream, tls: 'true', tls_ca_file: certs.ca };
  }
  if (!seeds) {
    sim = tls
      ? await startSim(...simArgs, '--tls-cert', tlsCerts().server, tls)
      : await startSim(...simArgs);
    seeds = seedIndices ? seedIndices.map((i) => sim.servers[i]) : sim.servers;
  }
  try {
    const lb = await startMongolb(seeds, {
      config: cfg, expectKnown: expectKnown ?? seeds.length, tls,
    });
    return new Cluster(sim, lb, seeds);
  } catch (e) {
    await sim?.stop();
    throw e;
  }
}

export function startCluster(...simArgs) {
  return startClusterWith(simArgs.length ? { simArgs } : {});
}
