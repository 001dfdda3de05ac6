// mongolb in replica-set mode seen through the Node.js driver: seeded with one member of
// `mongosim --replset rs0 --members 3 --tags 'dc=ny;dc=ny,rack=2;dc=sf'`, it discovers the set,
// still looks like a mongos, sends writes and default reads to the primary, spreads secondary
// reads (each getMore where its find ran), honours tag sets from the application or from its own
// configuration, rejects an invalid maxStalenessSeconds, and follows a step-down under load.
// Member 0 (dc=ny) starts as the primary, member 1 is dc=ny,rack=2, member 2 is dc=sf.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { MongoClient, ReadPreference } from 'mongodb';

import { directCommand, realSeeds, startClusterWith, waitFor } from './mongolb_harness.mjs';

const SIM_ARGS = ['--replset', 'rs0', '--members', '3', '--tags', 'dc=ny;dc=ny,rack=2;dc=sf'];
const RS = { mode: 'replicaset', replica_set: 'rs0', heartbeat_interval_ms: '500' };
const skip = realSeeds() ? 'replica-set mode needs mongosim' : false;

function startRs(upstream = {}) {
  return startClusterWith({
    simArgs: SIM_ARGS, config: { upstream: { ...RS, ...upstream } }, seedIndices: [0],
    expectKnown: 3,
  });
}

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

async function stopClean(c) {
  await c.close();
  assert.equal(c.lb.exitCode, 0, `mongolb exited with ${c.lb.exitCode}`);
  assert.ok(!/AddressSanitizer|runtime error:/.test(c.lb.log()));
}

describe('replica-set mode', { skip }, () => {
  let c;
  let client;

  before(async () => {
    c = await startRs();
    client = new MongoClient(c.lb.uri, { serverSelectionTimeoutMS: 5000, maxPoolSize: 8 });
    await client.connect();
  });

  after(async () => {
    await client?.close();
    if (c) await stopClean(c);
  });

  async function seed(dbName, n) {
    const coll = client.db(dbName).collection('docs');
    await coll.drop().catch(() => {});
    if (n) await coll.insertMany(Array.from({ length: n }, (_, i) => ({ _id: i, v: i })));
    return coll;
  }

  test('discovers all members and still looks like a mongos', withLog(() => c, async () => {
    const st = await c.lb.status();
    assert.equal(st.mode, 'replicaset');
    assert.deepEqual(st.servers.map((s) => s.type).sort(),
      ['RSPrimary', 'RSSecondary', 'RSSecondary']);
    assert.deepEqual(st.servers.map((s) => s.address).sort(), [...c.sim.servers].sort());
    const hello = await client.db('admin').command({ hello: 1 });
    assert.equal(hello.msg, 'isdbgrid');
    assert.equal(hello.setName, undefined);
    assert.equal(hello.hosts, undefined);
  }));

  test('writes and default reads go to the primary', withLog(() => c, async () => {
    const coll = await seed('node_rs_writes', 0);
    await c.simCommand({ simStats: 1, reset: true });
    for (let i = 0; i < 20; i++) await coll.insertOne({ _id: i, v: i });
    for (let i = 0; i < 10; i++) await coll.updateOne({ _id: i }, { $inc: { v: 1 } });
    for (let i = 0; i < 10; i++) assert.equal((await coll.findOne({ _id: 2 })).v, 3);
    assert.equal((await coll.find({}, { batchSize: 3 }).toArray()).length, 20);
    assert.deepEqual(await c.commandCounts('insert'), { 0: 20, 1: 0, 2: 0 });
    assert.deepEqual(await c.commandCounts('update'), { 0: 10, 1: 0, 2: 0 });
    assert.deepEqual(await c.commandCounts('find'), { 0: 11, 1: 0, 2: 0 });
    const gms = await c.commandCounts('getMore');
    assert.ok(gms[0] > 0 && gms[1] === 0 && gms[2] === 0, JSON.stringify(gms));
  }));

  test('secondary reads spread, getMores stay put', withLog(() => c, async () => {
    await seed('node_rs_secondary', 10);
    const coll = client.db('node_rs_secondary').collection('docs',
      { readPreference: ReadPreference.SECONDARY });
    await c.simCommand({ simStats: 1, reset: true });
    assert.equal((await coll.find({}, { batchSize: 3 }).toArray()).length, 10);
    const perCursor = Object.values(await c.commandCounts('getMore')).reduce((a, b) => a + b);
    assert.ok(perCursor >= 3);
    await c.simCommand({ simStats: 1, reset: true });
    const CURSORS = 60;
    // Four cursors at a time, so that their getMores interleave on the driver's connections.
    for (let k = 0; k < CURSORS; k += 4) {
      await Promise.all([0, 1, 2, 3].map(async () => {
        const docs = await coll.find({}, { batchSize: 3 }).sort({ _id: 1 }).toArray();
        assert.deepEqual(docs.map((d) => d._id), [...Array(10).keys()]);
      }));
    }
    const finds = await c.commandCounts('find');
    const gms = await c.commandCounts('getMore');
    assert.equal(finds[0], 0, JSON.stringify(finds));
    assert.equal(gms[0], 0);
    assert.ok(finds[1] > 0 && finds[2] > 0, JSON.stringify(finds));
    assert.equal(finds[1] + finds[2], CURSORS);
    for (const i of [1, 2]) assert.equal(gms[i], finds[i] * perCursor, JSON.stringify({ finds, gms }));
    assert.equal((await c.lb.status()).counters.cursorNotFound, 0);
  }));

  test('an application tag set reaches only that member', withLog(() => c, async () => {
    await seed('node_rs_tags', 10);
    const coll = client.db('node_rs_tags').collection('docs',
      { readPreference: new ReadPreference('secondary', [{ dc: 'sf' }]) });
    await c.simCommand({ simStats: 1, reset: true });
    for (let i = 0; i < 20; i++) {
      assert.equal((await coll.find({}, { batchSize: 4 }).toArray()).length, 10);
    }
    assert.deepEqual(await c.commandCounts('find'), { 0: 0, 1: 0, 2: 20 });
    const gms = await c.commandCounts('getMore');
    assert.ok(gms[0] === 0 && gms[1] === 0 && gms[2] > 0, JSON.stringify(gms));
  }));

  test('maxStalenessSeconds below 90 is rejected with code 160', withLog(() => c, async () => {
    await seed('node_rs_stale', 3);
    const bad = client.db('node_rs_stale').collection('docs',
      { readPreference: new ReadPreference('secondary', undefined, { maxStalenessSeconds: 10 }) });
    await assert.rejects(bad.findOne({}), (e) => {
      assert.equal(e.code, 160, String(e));
      return true;
    });
    const good = client.db('node_rs_stale').collection('docs',
      { readPreference: new ReadPreference('secondary', undefined, { maxStalenessSeconds: 90 }) });
    assert.deepEqual(await good.findOne({ _id: 1 }), { _id: 1, v: 1 });
  }));
});

describe('replica-set mode, configured read preference', { skip }, () => {
  test('configured secondary + tags apply to reads without a read preference', async () => {
    const c = await startRs({ read_preference: 'secondary', read_preference_tags: 'dc:ny,rack:2' });
    const client = new MongoClient(c.lb.uri, { serverSelectionTimeoutMS: 5000 });
    try {
      // The Node.js driver sends no $readPreference for mode primary to a mongos, so these
      // reads carry none and mongolb adds its configured one.
      const coll = client.db('node_rs_conf').collection('docs');
      await coll.drop().catch(() => {});
      await coll.insertMany(Array.from({ length: 10 }, (_, i) => ({ _id: i })));
      await c.simCommand({ simStats: 1, reset: true });
      for (let i = 0; i < 20; i++) {
        assert.equal((await coll.find({}, { batchSize: 4 }).toArray()).length, 10);
      }
      assert.equal(await coll.countDocuments({}), 10);
      await coll.insertOne({ _id: 'w' });
      assert.deepEqual(await c.commandCounts('find'), { 0: 0, 1: 20, 2: 0 });
      assert.deepEqual(await c.commandCounts('aggregate'), { 0: 0, 1: 1, 2: 0 });
      const gms = await c.commandCounts('getMore');
      assert.ok(gms[0] === 0 && gms[2] === 0 && gms[1] > 0, JSON.stringify(gms));
      assert.deepEqual(await c.commandCounts('insert'), { 0: 1, 1: 0, 2: 0 });
    } catch (e) {
      e.message += `\n----- mongolb stderr -----\n${c.lb.logTail(60)}`;
      throw e;
    } finally {
      await client.close();
      await stopClean(c);
    }
  });
});

describe('replica-set mode, step-down under write load', { skip }, () => {
  test('writes reach the new primary within 2 s and none is lost', async () => {
    const LOOPS = 4;
    const c = await startRs();
    const client = new MongoClient(c.lb.uri, {
      serverSelectionTimeoutMS: 10000, retryWrites: true, maxPoolSize: LOOPS + 2,
    });
    try {
      const coll = client.db('node_rs_stepdown').collection('docs');
      await coll.drop().catch(() => {});
      const okIds = [];
      const failures = [];
      let stop = false;
      const loops = Array.from({ length: LOOPS }, async (_, t) => {
        for (let n = 0; !stop; n++) {
          const _id = `t${t}-${n}`;
          try {
            await coll.insertOne({ _id, t });
            okIds.push(_id);
          } catch (e) {
            failures.push([_id, String(e)]);
          }
        }
      });
      let failover;
      let next;
      try {
        await waitFor(() => okIds.length >= 100, 20000, 'writes before the step-down');
        const t0 = Date.now();
        const r = await c.simCommand({ simStepDown: 1 });
        next = c.sim.servers.indexOf(r.primary);
        assert.notEqual(next, 0);
        await waitFor(async () => {
          const st = await directCommand(c.sim.servers[next], { simStats: 1 });
          return st.servers[next].opcounters.insert > 0;
        }, 10000, 'an insert on the new primary');
        failover = Date.now() - t0;
        console.log(`step-down to first insert on the new primary: ${failover} ms`);
        const at = okIds.length;
        await waitFor(() => okIds.length >= at + 100, 20000, 'writes after the step-down');
      } finally {
        stop = true;
        await Promise.all(loops);
      }
      assert.ok(failover < 2000, `writes reached the new primary after ${failover} ms`);
      assert.ok(failures.length <= LOOPS, JSON.stringify(failures));
      assert.deepEqual(failures, []);
      const found = (await coll.find({}, { projection: { _id: 1 } }).toArray()).map((d) => d._id);
      assert.equal(new Set(found).size, found.length);
      assert.deepEqual([...found].sort(), [...okIds].sort());
    } catch (e) {
      e.message += `\n----- mongolb stderr -----\n${c.lb.logTail(60)}`;
      throw e;
    } finally {
      await client.close();
      await stopClean(c);
    }
  });
});
