// mongolb seen through the Node.js driver (npm mongodb): the handshake, concurrent multi-batch
// cursors, and a transaction with session.withTransaction.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { MongoClient } from 'mongodb';

import { startCluster } from './mongolb_harness.mjs';

const LOOPS = 8;
const ROUNDS = 10;
const DOCS = 250;
const BATCH = 50;

// Wraps a test body so that a failure carries the end of mongolb's log.
function withLog(cluster, fn) {
  return async () => {
    try {
      await fn();
    } catch (e) {
      const c = cluster();
      if (c?.lb) e.message += `\n----- mongolb stderr (${c.lb.logPath}) -----\n${c.lb.logTail(60)}`;
      throw e;
    }
  };
}

describe('mongolb in front of mongosim --mongos 3', () => {
  let c;
  let client;
  before(async () => {
    c = await startCluster('--mongos', '3');
    client = new MongoClient(c.lb.uri, { serverSelectionTimeoutMS: 5000 });
    await client.connect();
  });
  after(async () => {
    await client?.close();
    const code = await c?.lb.stop();
    await c?.close();
    assert.equal(code, 0, `mongolb exited with ${code} after SIGTERM:\n${c?.lb.logTail()}`);
  });

  test('hello is a mongos', withLog(() => c, async () => {
    const hello = await client.db('admin').command({ hello: 1 });
    assert.equal(hello.msg, 'isdbgrid');
    assert.equal(hello.isWritablePrimary, true);
    assert.equal(hello.ok, 1);
    assert.equal(hello.setName, undefined);
    assert.equal(typeof hello.logicalSessionTimeoutMinutes, 'number');
  }));

  test('8 concurrent loops read 250-document cursors 10 times each', withLog(() => c, async () => {
    const coll = client.db('node_cursors').collection('docs');
    await coll.drop().catch(() => {});
    const docs = Array.from({ length: DOCS }, (_, i) => ({ _id: i, pad: 'x'.repeat(100) }));
    await coll.insertMany(docs);
    const before = (await c.lb.status()).counters;
    if (c.sim) await c.simCommand({ simStats: 1, reset: true });
    const errors = [];
    const loop = async () => {
      for (let r = 0; r < ROUNDS; r++) {
        try {
          const docs = await coll.find({}, { batchSize: BATCH }).toArray();
          const ids = docs.map((d) => d._id).sort((a, b) => a - b);
          if (ids.length !== DOCS || ids.some((id, i) => id !== i))
            errors.push(`cursor returned ${ids.length} documents`);
        } catch (e) {
          errors.push(String(e));
        }
      }
    };
    await Promise.all(Array.from({ length: LOOPS }, loop));
    assert.deepEqual(errors, []);
    const after = (await c.lb.status()).counters;
    const getMores = after.getMoresRouted - before.getMoresRouted;
    assert.ok(getMores >= LOOPS * ROUNDS * (DOCS / BATCH - 1), `getMoresRouted +${getMores}`);
    assert.equal(after.cursorNotFound, before.cursorNotFound);
    assert.equal(after.errorsReturned, before.errorsReturned);
    if (c.sim) {
      const finds = await c.commandCounts('find');
      const total = Object.values(finds).reduce((a, b) => a + b, 0);
      assert.equal(total, LOOPS * ROUNDS);
      assert.ok(Object.values(finds).filter((n) => n > 0).length >= 2, JSON.stringify(finds));
      const gms = await c.commandCounts('getMore');
      assert.equal(Object.values(gms).reduce((a, b) => a + b, 0), getMores);
    }
  }));

  test('withTransaction commits, all on one mongos', withLog(() => c, async () => {
    const db = client.db('node_txn');
    const coll = db.collection('accounts');
    await coll.drop().catch(() => {}); // a real cluster may keep data from an earlier run
    await coll.insertMany([{ _id: 'a', balance: 100 }, { _id: 'b', balance: 0 }]);
    if (c.sim) await c.simCommand({ simStats: 1, reset: true }); // also clears the txn log
    const session = client.startSession();
    let lsid;
    try {
      await session.withTransaction(async () => {
        await coll.updateOne({ _id: 'a' }, { $inc: { balance: -30 } }, { session });
        await coll.updateOne({ _id: 'b' }, { $inc: { balance: 30 } }, { session });
        const a = await coll.findOne({ _id: 'a' }, { session });
        assert.equal(a.balance, 70);
        await coll.insertOne({ _id: 'log1', moved: 30 }, { session });
      });
      lsid = Buffer.from(session.id.id.buffer).toString('hex');
    } finally {
      await session.endSession();
    }
    assert.equal((await coll.findOne({ _id: 'a' })).balance, 70);
    assert.equal((await coll.findOne({ _id: 'b' })).balance, 30);
    assert.equal((await coll.findOne({ _id: 'log1' })).moved, 30);
    const st = await c.lb.status();
    assert.equal(st.transactionsPinned, 0);
    if (c.sim) {
      const log = await c.simCommand({ simTxnLog: 1 });
      const perServer = log.servers.map((s) =>
        s.entries.filter((e) => e.lsid === lsid && e.inTxn));
      const used = perServer.filter((e) => e.length > 0);
      assert.equal(used.length, 1,
        `transaction commands on ${used.length} servers: ${JSON.stringify(perServer)}`);
      const cmds = used[0].map((e) => e.cmd);
      assert.deepEqual(cmds, ['update', 'update', 'find', 'insert', 'commitTransaction']);
    }
  }));

  test('an aborted transaction leaves nothing behind', withLog(() => c, async () => {
    const coll = client.db('node_txn2').collection('c');
    await coll.drop().catch(() => {});
    await coll.insertOne({ _id: 1 });
    const session = client.startSession();
    try {
      session.startTransaction();
      await coll.insertOne({ _id: 2 }, { session });
      await session.abortTransaction();
    } finally {
      await session.endSession();
    }
    assert.equal(await coll.countDocuments({}), 1);
  }));
});

describe('mongolb shutdown', () => {
  test('SIGTERM stops mongolb with exit code 0', async () => {
    const c = await startCluster('--mongos', '2');
    try {
      const client = new MongoClient(c.lb.uri, { serverSelectionTimeoutMS: 5000 });
      await client.db('t').collection('c').insertOne({ a: 1 });
      await client.close();
      assert.equal(await c.lb.stop(), 0, c.lb.logTail());
    } finally {
      await c.close();
    }
  });
});
