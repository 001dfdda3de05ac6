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
import { spawn } from 'node:child_process';
import {
  closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync,
} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { MongoClient } from 'mongodb';

import { startSim } from './harness.mjs';

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

// One command on a fresh direct connection (used for mongolbStatus and the sim* commands).
export async function directCommand(hostPort, cmd, timeoutMs = 5000) {
  const client = new MongoClient(`mongodb://${hostPort}/?directConnection=true`, {
    serverSelectionTimeoutMS: timeoutMs,
    connectTimeoutMS: timeoutMs,
  });
  try {
    return await client.db('admin').command(cmd);
  } finally {
    await client.close();
  }
}

export class Mongolb {
  constructor(proc, port, dir, logPath) {
    this.proc = proc;
    this.port = port;
    this.dir = dir;
    this.logPath = logPath;
    this.uri = `mongodb://127.0.0.1:${port}/`;
    this.exitCode = null;
    this.exited = new Promise((resolve) => proc.once('exit', (code, sig) => resolve(code ?? sig)));
    this.exited.then((c) => (this.exitCode = c));
  }

  status() {
    return directCommand(`127.0.0.1:${this.port}`, { mongolbStatus: 1 });
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
// there replaces the default of the same name.
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
  seeds, { expectKnown = seeds.length, timeoutMs = 15000, config = {} } = {},
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
    const lb = new Mongolb(proc, port, dir, logPath);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (lb.exitCode !== null) break; // e.g. the port was taken meanwhile: try another
      try {
        const st = await directCommand(`127.0.0.1:${port}`, { mongolbStatus: 1 }, 1000);
        if (st.servers.filter((s) => s.type !== 'Unknown').length >= expectKnown) return lb;
      } catch (e) {
        lastErr = e;
      }
      if (Date.now() > deadline) {
        await lb.stop();
        throw new Error(`mongolb did not know ${expectKnown} servers in time:\n${lb.logTail()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    lastErr = new Error(`mongolb exited with ${lb.exitCode}:\n${lb.logTail()}`);
  }
  throw lastErr;
}

export class Cluster {
  constructor(sim, lb, seeds) {
    this.sim = sim;
    this.lb = lb;
    this.seeds = seeds;
  }

  // A control command (simStats, simTxnLog, simKill...) on the first live simulator server.
  simCommand(cmd, i = 0) {
    if (!this.sim) throw new Error('needs mongosim');
    return directCommand(this.sim.servers[i], cmd);
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
export async function startClusterWith({ simArgs = ['--mongos', '3'], config = {}, seedIndices,
  expectKnown } = {}) {
  let seeds = realSeeds();
  let sim = null;
  if (!seeds) {
    sim = await startSim(...simArgs);
    seeds = seedIndices ? seedIndices.map((i) => sim.servers[i]) : sim.servers;
  }
  try {
    const lb = await startMongolb(seeds, { config, expectKnown: expectKnown ?? seeds.length });
    return new Cluster(sim, lb, seeds);
  } catch (e) {
    await sim?.stop();
    throw e;
  }
}

export async function startCluster(...simArgs) {
  let seeds = realSeeds();
  let sim = null;
  if (!seeds) {
    sim = await startSim(...(simArgs.length ? simArgs : ['--mongos', '3']));
    seeds = sim.servers;
  }
  try {
    return new Cluster(sim, await startMongolb(seeds), seeds);
  } catch (e) {
    await sim?.stop();
    throw e;
  }
}
