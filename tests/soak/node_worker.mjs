// The Node.js side of the chaos soak (tests/soak/soak.py starts one per deployment).
//
//   node tests/soak/node_worker.mjs --uri mongodb://127.0.0.1:PORT/ --cluster ms --seconds 40 \
//        --grace 40 --out ops.json [--secondary] [--seed-docs 200] [--batch 10] [--seed N]
//
// Runs, concurrently, for --seconds: retryable inserts (a client _id, or a server-made _id with
// forceServerObjectId) and $inc on this worker's counters (node-0, node-1), raw insert commands
// without txnNumber (not retryable), withTransaction pairs around a cursor read, and cursors
// (find and aggregate with a small batchSize) iterated to the end; with --secondary also
// secondaryPreferred cursors and reads. Operations still running --grace seconds after the end
// are reported as hung. Every write's op id and outcome, the errors and any cursor that returned
// wrong data go to --out; counts go to stdout as one JSON line at the end.
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';

import { MongoClient } from 'mongodb';

function parseArgs(argv) {
  const a = { seedDocs: 200, batch: 10, seed: 1, secondary: false, grace: 40 };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    switch (k) {
      case '--uri': a.uri = v; i++; break;
      case '--cluster': a.cluster = v; i++; break;
      case '--seconds': a.seconds = Number(v); i++; break;
      case '--grace': a.grace = Number(v); i++; break;
      case '--out': a.out = v; i++; break;
      case '--seed-docs': a.seedDocs = Number(v); i++; break;
      case '--batch': a.batch = Number(v); i++; break;
      case '--seed': a.seed = Number(v); i++; break;
      case '--secondary': a.secondary = true; break;
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  if (!a.uri || !a.cluster || !a.seconds || !a.out) throw new Error('missing --uri/--cluster/--seconds/--out');
  return a;
}

const args = parseArgs(process.argv);

// mulberry32: a small seeded PRNG, so a run can be repeated with the same choices.
function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = prng(args.seed);

const requests = {}; // "kind:ok" / "kind:failed" -> n
const commands = {};
const commandsFailed = {};
const ops = new Map(); // op id -> [kind, status]
const txnInfo = new Map(); // transaction op id -> [lsid hex, first txnNumber, last txnNumber]
const cnfTimes = []; // when a getMore failed with a plain CursorNotFound (not "its server failed")
const errors = [];
const badCursors = [];
const counters = {}; // counter id -> [acknowledged, failed]
const inFlight = new Map(); // loop name -> [kind, op, since]
let finished = false;

const now = () => Date.now() / 1000;
const newOp = () => randomUUID().replace(/-/g, '');
function count(kind, outcome) {
  const k = `${kind}:${outcome}`;
  requests[k] = (requests[k] ?? 0) + 1;
}
function recordError(worker, kind, e, t0, op) {
  errors.push({
    lang: 'node',
    cluster: args.cluster,
    worker,
    op_kind: kind,
    type: e?.name ?? typeof e,
    code: typeof e?.code === 'number' ? e.code : (e?.code ?? null),
    codeName: e?.codeName ?? null,
    labels: Array.isArray(e?.errorLabels) ? [...e.errorLabels].sort() : [],
    msg: String(e?.message ?? e).slice(0, 300),
    t0,
    t1: now(),
    op: op ?? null,
  });
}

const client = new MongoClient(args.uri, {
  monitorCommands: true,
  retryWrites: true,
  retryReads: true,
  serverSelectionTimeoutMS: 20000,
  socketTimeoutMS: 30000,
  connectTimeoutMS: 5000,
  maxPoolSize: 40,
});
client.on('commandStarted', (ev) => {
  commands[ev.commandName] = (commands[ev.commandName] ?? 0) + 1;
});
client.on('commandFailed', (ev) => {
  const code = ev.failure?.code ?? 'network';
  let k = `${ev.commandName}:${code}`;
  if (ev.commandName === 'getMore' && code === 43) {
    if (String(ev.failure?.message ?? '').includes('its server')) k += ':server-failed';
    else cnfTimes.push(now());
  }
  commandsFailed[k] = (commandsFailed[k] ?? 0) + 1;
});

const db = client.db('soak');
const writes = db.collection('writes');
const seed = db.collection('seed');
const ctrs = db.collection('counters');
const stopAt = Date.now() + args.seconds * 1000;
const running = () => !finished && Date.now() < stopAt;

function checkIds(kind, docs, expect) {
  const ids = docs.map((d) => d._id).sort((x, y) => x - y);
  const ok = ids.length === expect && ids.every((v, i) => v === i);
  if (!ok) {
    badCursors.push({ cluster: args.cluster, worker: `node.${kind}`,
      what: `${kind} returned ${ids.length} documents (${new Set(ids).size} distinct), expected ${expect}`,
      t: now() });
  }
}

async function insertLoop(name, counterId) {
  counters[counterId] = [0, 0];
  while (running()) {
    const r = rnd();
    const t0 = now();
    if (r < 0.2) {
      inFlight.set(name, ['node.inc', null, t0]);
      try {
        await ctrs.updateOne({ _id: counterId }, { $inc: { n: 1 } });
        counters[counterId][0]++;
        count('node.inc', 'ok');
      } catch (e) {
        counters[counterId][1]++;
        count('node.inc', 'failed');
        recordError(name, 'node.inc', e, t0);
      }
      continue;
    }
    const op = newOp();
    const kind = r < 0.6 ? 'node.ins.cid' : 'node.ins.sid';
    ops.set(op, [kind, 'pending']);
    inFlight.set(name, [kind, op, t0]);
    try {
      if (kind === 'node.ins.cid') await writes.insertOne({ _id: `c-${op}`, op, k: kind });
      else await writes.insertOne({ op, k: kind }, { forceServerObjectId: true });
      ops.get(op)[1] = 'ok';
      count(kind, 'ok');
    } catch (e) {
      ops.get(op)[1] = 'failed';
      count(kind, 'failed');
      recordError(name, kind, e, t0, op);
    }
  }
  inFlight.delete(name);
}

async function rawInsertLoop(name) {
  const kind = 'node.raw';
  while (running()) {
    const op = newOp();
    ops.set(op, [kind, 'pending']);
    const t0 = now();
    inFlight.set(name, [kind, op, t0]);
    try {
      const res = await db.command({ insert: 'writes', documents: [{ op, k: kind }] });
      if (res.n === 1 && !res.writeErrors) {
        ops.get(op)[1] = 'ok';
        count(kind, 'ok');
      } else {
        ops.get(op)[1] = 'failed';
        count(kind, 'failed');
        const we = res.writeErrors?.[0] ?? {};
        recordError(name, kind, { name: 'WriteError', code: we.code, message: we.errmsg }, t0, op);
      }
    } catch (e) {
      ops.get(op)[1] = 'failed';
      count(kind, 'failed');
      recordError(name, kind, e, t0, op);
    }
    await new Promise((res) => setTimeout(res, rnd() * 10));
  }
  inFlight.delete(name);
}

async function txnLoop(name) {
  const kind = 'node.txn';
  while (running()) {
    const op = newOp();
    ops.set(op, [kind, 'pending']);
    const t0 = now();
    inFlight.set(name, [kind, op, t0]);
    const session = client.startSession();
    // Which transactions (lsid, txnNumbers) this op used, to find them in the simulator's log.
    let lsid = null;
    let first = null;
    try {
      lsid = session.id.id.toString('hex');
      first = session.serverSession.txnNumber + 1;
    } catch {
      // only used to explain duplicates
    }
    try {
      await session.withTransaction(async (s) => {
        await writes.insertOne({ op, k: kind, pair: 'a' }, { session: s, forceServerObjectId: true });
        const got = await seed.find({}, { session: s, batchSize: 2, limit: 6 }).toArray();
        if (got.length !== 6) {
          badCursors.push({ cluster: args.cluster, worker: name,
            what: `find in transaction returned ${got.length} of 6`, t: now() });
        }
        await writes.insertOne({ op, k: kind, pair: 'b' }, { session: s, forceServerObjectId: true });
      });
      ops.get(op)[1] = 'ok';
      count(kind, 'ok');
    } catch (e) {
      ops.get(op)[1] = 'failed';
      count(kind, 'failed');
      recordError(name, kind, e, t0, op);
    } finally {
      try {
        txnInfo.set(op, [lsid, first, session.serverSession.txnNumber, t0, now()]);
      } catch {
        // the session could not say
      }
      await session.endSession().catch(() => {});
    }
  }
  inFlight.delete(name);
}

async function cursorLoop(name, secondary) {
  const opts = secondary ? { readPreference: 'secondaryPreferred' } : {};
  const base = secondary ? 'node.secread' : 'node.cursor';
  while (running()) {
    const agg = rnd() < 0.3;
    const kind = `${base}.${agg ? 'agg' : 'find'}`;
    const t0 = now();
    inFlight.set(name, [kind, null, t0]);
    try {
      const cur = agg
        ? seed.aggregate([{ $match: {} }], { ...opts, batchSize: args.batch })
        : seed.find({}, { ...opts, batchSize: args.batch });
      const docs = [];
      for await (const d of cur) docs.push(d);
      checkIds(kind, docs, args.seedDocs);
      count(kind, 'ok');
      if (secondary && rnd() < 0.5) {
        await writes.findOne({ k: 'node.ins.cid' }, opts);
        count('node.secread.findOne', 'ok');
      }
    } catch (e) {
      count(kind, 'failed');
      recordError(name, kind, e, t0);
    }
  }
  inFlight.delete(name);
}

function finish(reason) {
  if (finished) return;
  finished = true;
  const hung = [...inFlight.entries()].map(
    ([n, [kind, op, since]]) => `node ${args.cluster} ${n} stuck in ${kind} ${op ?? ''} for ${Math.round(now() - since)} s`,
  );
  const detail = {
    ops: [...ops.entries()].map(([op, [kind, status]]) => [op, kind, status, ...(txnInfo.get(op) ?? [])]),
    cnfTimes,
    errors,
    badCursors,
    counters,
  };
  writeFileSync(args.out, JSON.stringify(detail));
  const summary = {
    cluster: args.cluster,
    reason,
    requests,
    commands,
    commandsFailed,
    errors: errors.length,
    writes: ops.size,
    hung,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

process.on('SIGTERM', () => {
  finish('SIGTERM');
  process.exit(0);
});

async function main() {
  await client.connect();
  const loops = [
    insertLoop('ins0', 'node-0'),
    insertLoop('ins1', 'node-1'),
    rawInsertLoop('raw0'),
    txnLoop('txn0'),
    txnLoop('txn1'),
    cursorLoop('cur0', false),
    cursorLoop('cur1', false),
  ];
  if (args.secondary) loops.push(cursorLoop('sec0', true), cursorLoop('sec1', true));
  let timer;
  const deadline = new Promise((res) => {
    timer = setTimeout(() => res('grace expired'), (args.seconds + args.grace) * 1000);
  });
  const how = await Promise.race([Promise.all(loops).then(() => 'done'), deadline]);
  clearTimeout(timer);
  finish(how);
  await Promise.race([client.close(), new Promise((res) => setTimeout(res, 3000))]);
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`node worker failed: ${e?.stack ?? e}\n`);
  try {
    finish(`error: ${e?.message ?? e}`);
  } catch {
    // nothing more to report
  }
  process.exit(1);
});
