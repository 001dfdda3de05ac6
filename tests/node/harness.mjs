// Starts and stops mongosim (build/mongosim) for the Node.js integration tests.
//
//   const sim = await startSim('--replset', 'rs0', '--members', '3');
//   const client = new MongoClient(sim.uri());
//   ...
//   await sim.stop();
//
// The binary is $MONGOSIM or build/mongosim; every simulator listens on ephemeral ports
// (--port 0) and startSim resolves once mongosim prints its ready line.
//
// A simulator started with --tls-cert speaks TLS only; give startSim the CA that verifies it as a
// last argument, startSim(...args, { tlsCAFile }), and sim.uri() and sim.command() use TLS.
// tlsCerts() makes the test certificates (tests/integration/tls_certs.py) once per process.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { MongoClient } from 'mongodb';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const binary = process.env.MONGOSIM || path.join(root, 'build', 'mongosim');

let certs = null;

// The certificate set of tests/integration/tls_certs.py ({ ca, server, client, expired,
// wrong_host, other_ca, other_client }: file paths), written into a temporary directory the first
// time it is asked for and removed when the process exits.
export function tlsCerts() {
  if (certs) return certs;
  const debianPython = '/usr/bin/python3'; // the helper needs only the standard library
  const python = process.env.PYTHON || (existsSync(debianPython) ? debianPython : 'python3');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mongolb-node-tls-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const script = path.join(root, 'tests', 'integration', 'tls_certs.py');
  certs = JSON.parse(execFileSync(python, [script, dir]).toString());
  return certs;
}

// True when MONGOLB_TEST_TLS=1 asks for TLS on both legs (applications to mongolb, mongolb to
// the simulator) in every cluster the harness starts; scripts/run-integration.sh runs the
// proxy, failover and replica-set files a second time that way.
export function tlsEverywhere() {
  return process.env.MONGOLB_TEST_TLS === '1';
}

// Driver options for TLS verified against tls.tlsCAFile (plus tls.tlsCertificateKeyFile when
// given); {} for null.
export function tlsOptions(tls) {
  if (!tls) return {};
  const o = { tls: true, tlsCAFile: tls.tlsCAFile };
  if (tls.tlsCertificateKeyFile) o.tlsCertificateKeyFile = tls.tlsCertificateKeyFile;
  return o;
}

// One command on a fresh direct connection to hostPort, over TLS when tls is given
// ({ tlsCAFile, tlsCertificateKeyFile? }).
export async function commandOn(hostPort, cmd, { timeoutMs = 5000, tls = null } = {}) {
  const client = new MongoClient(`mongodb://${hostPort}/?directConnection=true`, {
    serverSelectionTimeoutMS: timeoutMs,
    connectTimeoutMS: timeoutMs,
    ...tlsOptions(tls),
  });
  try {
    return await client.db('admin').command(cmd);
  } finally {
    await client.close();
  }
}

export class Sim {
  constructor(proc, ready, tls = null) {
    this.proc = proc;
    this.ready = ready;
    this.tls = tls; // { tlsCAFile, tlsCertificateKeyFile? } when the simulator speaks TLS
    this.servers = ready.servers;
    this.setName = ready.setName;
    this.mode = ready.mode;
  }

  // URI of server i (a direct connection), or of the whole deployment when i is undefined.
  uri(i, options = {}) {
    const opts = { ...options };
    let hosts;
    if (i === undefined) {
      hosts = this.servers.join(',');
      if (this.setName && !('replicaSet' in opts)) opts.replicaSet = this.setName;
    } else {
      hosts = this.servers[i];
      if (!('directConnection' in opts)) opts.directConnection = 'true';
    }
    for (const [k, v] of Object.entries(tlsOptions(this.tls))) {
      if (!(k in opts)) opts[k] = String(v);
    }
    const q = new URLSearchParams(opts).toString();
    return `mongodb://${hosts}/${q ? '?' + q : ''}`;
  }

  // uri() with credentials, for a simulator started with --auth and --auth-user:
  // sim.uriAs('app', 'pw', 0, { authSource: 'test' }).
  uriAs(user, password, i, options = {}) {
    const creds = `${encodeURIComponent(user)}:${encodeURIComponent(password)}@`;
    return this.uri(i, options).replace('mongodb://', `mongodb://${creds}`);
  }

  // One command (simStats, simKill...) on a fresh direct connection to server i.
  command(i, cmd, timeoutMs = 5000) {
    return commandOn(this.servers[i], cmd, { timeoutMs, tls: this.tls });
  }

  stop() {
    return new Promise((resolve) => {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) return resolve();
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
      this.proc.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      this.proc.kill('SIGTERM');
    });
  }
}

export function startSim(...args) {
  const tls = args.length && typeof args[args.length - 1] === 'object' ? args.pop() : null;
  if (tls && !args.includes('--tls-cert')) throw new Error('TLS options for a plaintext mongosim');
  if (!existsSync(binary)) throw new Error(`mongosim not found at ${binary} (run make)`);
  if (!args.includes('--port')) args.push('--port', '0');
  return new Promise((resolve, reject) => {
    const proc = spawn(binary, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    let buf = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error('mongosim did not print its ready line within 10s'));
    }, 10000);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`mongosim exited with ${code} before it was ready`));
    });
    proc.stdout.on('data', (chunk) => {
      buf += chunk.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      proc.removeAllListeners('exit');
      proc.stdout.removeAllListeners('data');
      proc.stdout.resume();
      try {
        resolve(new Sim(proc, JSON.parse(buf.slice(0, nl)), tls));
      } catch (e) {
        proc.kill('SIGKILL');
        reject(e);
      }
    });
  });
}
