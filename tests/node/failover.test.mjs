// Failover that Node.js applications do not notice, through mongolb:
// - 200 transactions from 8 concurrent loops (session.withTransaction) in front of three mongos
//   routers all commit, and mongosim's transaction log shows every command of each transaction
//   on exactly one mongos;
// - in front of a replica set, a writing loop (client-generated _ids, retryWrites) sees no error
//   while the primary steps down, and while it is killed and the simulator elects another member.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { MongoClient } from 'mongodb';

import { realSeeds, startClusterWith, waitFor } from './mongolb_harness.mjs';

async function stopClean(c) {
  await c.close();
  assert.equal(c.lb.exitCode, 0, `mongolb exited with ${c.lb.exitCode}`);
  assert.ok(!/AddressSanitizer|runtime error:/.test(c.lb.log()));
}

// Runs body(c) and adds the end of mongolb's log to a failure.
async function withCluster(opts, body) {
  const c = await startClusterWith(opts);
  try {
    await body(c);
  } catch (e) {
    e.message += `\n----- mongolb stderr (${c.lb.logPath}) -----\n${c.lb.logTail(80)}`;
    throw e;
  } finally {
    await stopClean(c);
  }
}

describe('transactions in front of three mongos routers', () => {
  test('200 transactions from 8 loops commit, each on one mongos', async () => {
    await withCluster({ simArgs: ['--mongos', '3'] }, async (c) => {
      const LOOPS = 8;
      const PER_LOOP = 25;
      const client = new MongoClient(c.lb.uri, { serverSelectionTimeoutMS: 5000 });
      try {
        const db = client.db('node_failover_txn');
        const accounts = db.collection('accounts');
        const moves = db.collection('moves');
        await accounts.drop().catch(() => {});
        await moves.drop().catch(() => {});
        // One account per loop, so that transactions of different loops never conflict.
        await accounts.insertMany(Array.from({ length: LOOPS }, (_, t) => ({ _id: t, n: 0 })));
        await moves.insertOne({ _id: 'seed' });
        if (c.sim) await c.simCommand({ simStats: 1, reset: true }); // clears the txn log too
        const lsids = new Set();
        await Promise.all(Array.from({ length: LOOPS }, async (_, t) => {
          const session = client.startSession();
          lsids.add(Buffer.from(session.id.id.buffer).toString('hex'));
          try {
            for (let k = 0; k < PER_LOOP; k++) {
              await session.withTransaction(async () => {
                const a = await accounts.findOne({ _id: t }, { session });
                assert.equal(a.n, k);
                await moves.insertOne({ _id: `${t}-${k}-a` }, { session });
                await accounts.updateOne({ _id: t }, { $inc: { n: 1 } }, { session });
                assert.ok(await moves.findOne({ _id: `${t}-${k}-a` }, { session }));
                await moves.insertOne({ _id: `${t}-${k}-b` }, { session });
              });
            }
          } finally {
            await session.endSession();
          }
        }));
        for (let t = 0; t < LOOPS; t++) {
          assert.equal((await accounts.findOne({ _id: t })).n, PER_LOOP);
        }
        assert.equal(await moves.countDocuments({}), 1 + 2 * LOOPS * PER_LOOP);
        if (!c.sim) return;
        const log = await c.simCommand({ simTxnLog: 1 });
        const where = new Map(); // "lsid:txnNumber" -> Set of server indexes
        const cmds = new Map();
        for (const s of log.servers) {
          for (const e of s.entries) {
            if (!e.inTxn || !lsids.has(e.lsid)) continue;
            const key = `${e.lsid}:${e.txnNumber}`;
            if (!where.has(key)) {
              where.set(key, new Set());
              cmds.set(key, []);
            }
            where.get(key).add(s.index);
            cmds.get(key).push(e.cmd);
          }
        }
        assert.equal(where.size, LOOPS * PER_LOOP);
        const split = [...where].filter(([, v]) => v.size !== 1).map(([k]) => k);
        assert.deepEqual(split, []);
        const expected = ['commitTransaction', 'find', 'find', 'insert', 'insert', 'update'];
        for (const [key, names] of cmds) assert.deepEqual([...names].sort(), expected, key);
        const used = new Set([...where.values()].map((v) => [...v][0]));
        assert.ok(used.size >= 2, 'every transaction went to the same mongos');
      } finally {
        await client.close();
      }
    });
  });
});

const RS = {
  simArgs: ['--replset', 'rs0', '--members', '3'],
  config: { upstream: { mode: 'replicaset', replica_set: 'rs0', heartbeat_interval_ms: '500' } },
  seedIndices: [0],
  expectKnown: 3,
};

describe('failover in front of a replica set', { skip: realSeeds() ? 'needs mongosim' : false }, () => {
  test('a writing loop sees no error through step-downs and a killed primary', async () => {
    await withCluster(RS, async (c) => {
      const client = new MongoClient(c.lb.uri, {
        serverSelectionTimeoutMS: 30000, retryWrites: true, maxPoolSize: 4,
      });
      // The primary's index, from simStats asked of member via (one that is up: the driver
      // would spend its whole selection timeout on a member that is down).
      const primaryIndex = async (via) => {
        const st = await c.simCommand({ simStats: 1 }, via);
        return st.servers.find((s) => s.role === 'primary' && s.alive)?.index;
      };
      try {
        const coll = client.db('node_failover_monkey').collection('docs');
        await coll.drop().catch(() => {});
        const okIds = [];
        const errors = [];
        let stop = false;
        const loops = [0, 1].map(async (t) => {
          for (let n = 0; !stop; n++) {
            const _id = `w${t}-${String(n).padStart(6, '0')}`;
            try {
              await coll.insertOne({ _id });
              okIds.push(_id);
            } catch (e) {
              errors.push([_id, String(e)]);
            }
          }
        });
        const progress = async (n = 60) => {
          const target = okIds.length + n;
          await waitFor(() => okIds.length >= target, 30000, `${n} more writes`);
        };
        try {
          await progress();
          for (let k = 0; k < 3; k++) {
            await c.simCommand({ simStepDown: 1 }, 0);
            await progress();
          }
          const p = await primaryIndex(0);
          const other = (p + 1) % 3;
          await c.simCommand({ simKill: p }, other);
          await waitFor(async () => {
            const q = await primaryIndex(other);
            return q !== undefined && q !== p;
          }, 5000, 'an election');
          await progress();
          await waitFor(async () => {
            try {
              return (await c.simCommand({ simRevive: p }, other)).ok === 1;
            } catch {
              return false;
            }
          }, 5000, 'simRevive');
          await progress();
        } finally {
          stop = true;
          await Promise.all(loops);
        }
        assert.deepEqual(errors, []);
        const found = (await coll.find({}, { projection: { _id: 1 } }).toArray()).map((d) => d._id);
        assert.equal(new Set(found).size, found.length);
        assert.deepEqual([...found].sort(), [...okIds].sort());
      } finally {
        await client.close();
      }
    });
  });
});
