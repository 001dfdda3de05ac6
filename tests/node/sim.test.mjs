// mongosim seen through the Node.js driver (npm mongodb), connecting directly to the simulator.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Long, MongoClient, MongoServerError } from 'mongodb';

import { startSim } from './harness.mjs';

async function waitFor(pred, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('replica set', () => {
  let sim;
  let client;
  before(async () => {
    sim = await startSim('--replset', 'rs0', '--members', '3', '--tags', 'dc=ny;dc=ny,rack=2;dc=sf');
    // One seed only: the driver discovers the other members from hello.
    client = new MongoClient(`mongodb://${sim.servers[0]}/?replicaSet=rs0`, {
      serverSelectionTimeoutMS: 5000,
      heartbeatFrequencyMS: 500,
    });
    await client.connect();
  });
  after(async () => {
    await client?.close();
    await sim?.stop();
  });

  test('discovers the set from one seed and finds the primary', async () => {
    const hello = await client.db('admin').command({ hello: 1 });
    assert.equal(hello.setName, 'rs0');
    assert.equal(hello.me, sim.servers[0]);
    assert.deepEqual(hello.hosts, sim.servers);
  });

  test('CRUD round trips', async () => {
    const c = client.db('shop').collection('items');
    await c.insertMany([{ _id: 1, qty: 5 }, { _id: 2, qty: 7 }, { _id: 3, qty: 9 }]);
    assert.deepEqual(await c.findOne({ _id: 2 }), { _id: 2, qty: 7 });
    const u = await c.updateOne({ _id: 1 }, { $inc: { qty: 10 }, $set: { tag: 'x' } });
    assert.equal(u.modifiedCount, 1);
    assert.deepEqual(await c.findOne({ _id: 1 }), { _id: 1, qty: 15, tag: 'x' });
    const up = await c.updateOne({ _id: 4 }, { $set: { qty: 1 } }, { upsert: true });
    assert.equal(up.upsertedId, 4);
    assert.deepEqual(
      (await c.find({ qty: { $gt: 6 } }).sort({ qty: -1 }).toArray()).map((d) => d._id),
      [1, 3, 2],
    );
    // countDocuments runs $group, which the store lacks: count with the count command.
    assert.equal(await c.estimatedDocumentCount(), 4);
    assert.equal((await c.deleteOne({ _id: 4 })).deletedCount, 1);
    const agg = await c.aggregate([{ $match: { qty: { $lt: 10 } } }, { $count: 'n' }]).toArray();
    assert.deepEqual(agg, [{ n: 2 }]);
  });

  test('reads a 1,000-document cursor in batches', async () => {
    const c = client.db('test').collection('big');
    await c.insertMany(Array.from({ length: 1000 }, (_, i) => ({ _id: i })));
    const ids = [];
    for await (const d of c.find({}, { batchSize: 100 }).sort({ _id: 1 })) ids.push(d._id);
    assert.equal(ids.length, 1000);
    assert.equal(ids[999], 999);
  });

  test('secondary reads honour tag sets', async () => {
    await client.db('test').collection('t').insertOne({ _id: 'x' });
    const stats0 = await client.db('admin').command({ simStats: 1, reset: true });
    assert.equal(stats0.ok, 1);
    const coll = client.db('test').collection('t', {
      readPreference: { mode: 'secondary', tags: [{ dc: 'sf' }] },
    });
    await waitFor(async () => {
      try {
        return (await coll.findOne({ _id: 'x' })) !== null;
      } catch {
        return false;
      }
    });
    const stats = await client.db('admin').command({ simStats: 1 });
    const finds = stats.servers.map((s) => s.commands.find ?? 0);
    assert.equal(finds[0], 0);
    assert.equal(finds[1], 0);
    assert.ok(finds[2] >= 1);
  });

  test('the failCommand failpoint fires as configured', async () => {
    const admin = client.db('admin');
    await admin.command({
      configureFailPoint: 'failCommand',
      mode: { times: 1 },
      data: { failCommands: ['find'], errorCode: 2 },
    });
    await assert.rejects(client.db('test').collection('t').findOne({}), (e) => {
      assert.ok(e instanceof MongoServerError);
      assert.equal(e.code, 2);
      return true;
    });
    assert.notEqual(await client.db('test').collection('t').findOne({}), null);
  });

  test('simStepDown: the driver finds the new primary', async () => {
    const r = await client.db('admin').command({ simStepDown: 1 });
    assert.equal(r.primary, sim.servers[1]);
    await waitFor(async () => {
      try {
        await client.db('test').collection('after').insertOne({ at: new Date() });
        return true;
      } catch {
        return false;
      }
    });
    const stats = await client.db('admin').command({ simStats: 1 });
    assert.equal(stats.servers[1].role, 'primary');
    assert.ok((stats.servers[1].commands.insert ?? 0) >= 1);
  });

  test('a step-down in a transaction is a TransientTransactionError', async () => {
    const coll = client.db('test').collection('tx');
    await coll.insertOne({ _id: 'seed' });
    const session = client.startSession();
    try {
      session.startTransaction();
      await coll.insertOne({ _id: 'a' }, { session });
      const before = (await client.db('admin').command({ simStats: 1 })).servers;
      const primary = before.findIndex((s) => s.role === 'primary');
      await client.db('admin').command({ simStepDown: { to: (primary + 1) % 3 } });
      // The old primary refuses the next statement (10107), or the new one does not know the
      // transaction (251): either way the server labels the error transient.
      await assert.rejects(coll.insertOne({ _id: 'b' }, { session }), (e) => {
        assert.ok(e instanceof MongoServerError, String(e));
        assert.ok([10107, 251].includes(e.code), String(e.code));
        // The server's own labels, not ones the driver adds.
        assert.deepEqual(e.errorResponse.errorLabels, ['TransientTransactionError']);
        assert.ok(e.hasErrorLabel('TransientTransactionError'));
        return true;
      });
      await session.abortTransaction().catch(() => {});
    } finally {
      await session.endSession();
    }
    assert.equal(await coll.findOne({ _id: 'a' }), null);
  });
});

describe('two mongos routers', () => {
  let sim;
  let a;
  let b;
  before(async () => {
    sim = await startSim('--mongos', '2');
    a = new MongoClient(sim.uri(0));
    b = new MongoClient(sim.uri(1));
    await a.connect();
    await b.connect();
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await sim?.stop();
  });

  test('a getMore sent to the other mongos gets CursorNotFound (43)', async () => {
    await a.db('test').collection('c').insertMany(Array.from({ length: 20 }, (_, i) => ({ _id: i })));
    const r = await a.db('test').command({ find: 'c', batchSize: 5 });
    const id = r.cursor.id;
    assert.ok(Long.isLong(id) && !id.isZero());
    await assert.rejects(b.db('test').command({ getMore: id, collection: 'c' }), (e) => {
      assert.equal(e.code, 43);
      assert.equal(e.codeName, 'CursorNotFound');
      return true;
    });
    const more = await a.db('test').command({ getMore: id, collection: 'c' });
    assert.equal(more.cursor.nextBatch.length, 15);
  });

  test('a retried write is applied once', async () => {
    // The failpoint lets the update apply, then reports a retryable write-concern error: the
    // driver retries with the same lsid and txnNumber, and must not increment twice. A mongos does
    // not label its own errors RetryableWriteError, so the failpoint gives the label, as the
    // drivers' specification tests do against sharded clusters.
    const coll = a.db('test').collection('r');
    await coll.insertOne({ _id: 1, n: 0 });
    await a.db('admin').command({
      configureFailPoint: 'failCommand',
      mode: { times: 1 },
      data: {
        failCommands: ['update'],
        errorLabels: ['RetryableWriteError'],
        writeConcernError: { code: 91, errmsg: 'shutting down' },
      },
    });
    const before = (await a.db('admin').command({ simStats: 1 })).retriedWritesDeduplicated;
    const r = await coll.updateOne({ _id: 1 }, { $inc: { n: 1 } });
    assert.equal(r.modifiedCount, 1);
    assert.equal((await coll.findOne({ _id: 1 })).n, 1);
    const stats = await a.db('admin').command({ simStats: 1 });
    assert.equal(stats.retriedWritesDeduplicated, before + 1);
    assert.equal(stats.servers[0].commands.update, 2);
  });

  test('a transaction commits on the mongos that started it', async () => {
    const session = a.startSession();
    await session.withTransaction(async () => {
      await a.db('test').collection('tx').insertOne({ _id: 'in-txn' }, { session });
    });
    await session.endSession();
    assert.notEqual(await a.db('test').collection('tx').findOne({ _id: 'in-txn' }), null);
    const log = await a.db('admin').command({ simTxnLog: 1 });
    const inTxn = log.servers[0].entries.filter((e) => e.inTxn).map((e) => e.cmd);
    assert.deepEqual(inTxn, ['insert', 'commitTransaction']);
    assert.equal(log.servers[1].entries.filter((e) => e.inTxn).length, 0);
  });

  // Last in this block: the tests above count the commands each router received.
  test('transactions: snapshot reads, invisible writes, WriteConflict across routers', async () => {
    const ca = a.db('test').collection('iso');
    const cb = b.db('test').collection('iso');
    await ca.insertOne({ _id: 1, v: 'before' });
    const sa = a.startSession();
    const sb = b.startSession();
    try {
      sa.startTransaction();
      assert.deepEqual(await ca.findOne({ _id: 1 }, { session: sa }), { _id: 1, v: 'before' });
      await cb.insertOne({ _id: 2 }); // outside, on the other router, after the snapshot
      assert.equal(await ca.countDocuments({}, { session: sa }), 1);
      await ca.updateOne({ _id: 1 }, { $set: { v: 'a' } }, { session: sa });
      assert.deepEqual(await cb.findOne({ _id: 1 }), { _id: 1, v: 'before' });
      // A second transaction, through the other router, writing the same document.
      sb.startTransaction();
      await assert.rejects(cb.updateOne({ _id: 1 }, { $set: { v: 'b' } }, { session: sb }), (e) => {
        assert.equal(e.code, 112);
        assert.equal(e.codeName, 'WriteConflict');
        assert.ok(e.hasErrorLabel('TransientTransactionError'));
        return true;
      });
      await sb.abortTransaction();
      await sa.commitTransaction();
      assert.deepEqual(await cb.findOne({ _id: 1 }), { _id: 1, v: 'a' });
    } finally {
      await sa.endSession();
      await sb.endSession();
    }
  });
});
