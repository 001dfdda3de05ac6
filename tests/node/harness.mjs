// Starts and stops mongosim (build/mongosim) for the Node.js integration tests.
//
//   const sim = await startSim('--replset', 'rs0', '--members', '3');
//   const client = new MongoClient(sim.uri());
//   ...
//   await sim.stop();
//
// The binary is $MONGOSIM or build/mongosim; every simulator listens on ephemeral ports
// (--port 0) and startSim resolves once mongosim prints its ready line.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const binary = process.env.MONGOSIM || path.join(root, 'build', 'mongosim');

export class Sim {
  constructor(proc, ready) {
    this.proc = proc;
    this.ready = ready;
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
    const q = new URLSearchParams(opts).toString();
    return `mongodb://${hosts}/${q ? '?' + q : ''}`;
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
        resolve(new Sim(proc, JSON.parse(buf.slice(0, nl))));
      } catch (e) {
        proc.kill('SIGKILL');
        reject(e);
      }
    });
  });
}
