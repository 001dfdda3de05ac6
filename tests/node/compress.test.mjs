// OP_COMPRESSED with the Node.js driver (npm mongodb, zlib built in), directly against mongosim:
// the driver negotiates zlib in its hello, and its compressed commands, getMores included, are
// answered with compressed replies (the simulator's counters say so).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { MongoClient } from 'mongodb';

import { commandOn, startSim } from './harness.mjs';
import { startMongolb } from './mongolb_harness.mjs';

describe('compression, Node.js driver directly to mongosim', () => {
  let sim;
  let client;
  before(async () => {
    sim = await startSim('--mongos', '1');
    client = new MongoClient(`mongodb://${sim.servers[0]}/?directConnection=true&compressors=zlib`, {
      serverSelectionTimeoutMS: 5000,
    });
    await client.connect();
  });
  after(async () => {
    await client?.close();
    await sim?.stop();
  });

  test('zlib: commands and replies compressed, cursors whole', async () => {
    const coll = client.db('test').collection('node_z');
    await coll.insertMany(Array.from({ length: 250 }, (_, i) => ({ _id: i, v: 'y'.repeat(100) })));
    const docs = await coll.find({}).sort({ _id: 1 }).batchSize(40).toArray();
    assert.equal(docs.length, 250);
    assert.equal(docs[249]._id, 249);
    const stats = await commandOn(sim.servers[0], { simStats: 1 });
    const z = stats.servers[0].compression;
    assert.ok(z.msgsIn >= 7, JSON.stringify(z));
    assert.ok(z.msgsOut >= 7, JSON.stringify(z));
  });
});

describe('compression, Node.js driver through mongolb', () => {
  let sim;
  let lb;
  let client;
  before(async () => {
    sim = await startSim('--mongos', '2');
    lb = await startMongolb(sim.servers, { config: { upstream: { compressors: 'zstd,zlib' } } });
    client = new MongoClient(`${lb.uri}?compressors=zlib`, { serverSelectionTimeoutMS: 5000 });
    await client.connect();
  });
  after(async () => {
    await client?.close();
    await lb?.cleanup();
    await sim?.stop();
  });

  test('zlib to mongolb, zstd to the servers: cursors whole, both legs compressed', async () => {
    const coll = client.db('test').collection('node_lbz');
    await coll.insertMany(Array.from({ length: 250 }, (_, i) => ({ _id: i, v: 'z'.repeat(100) })));
    const docs = await coll.find({}).sort({ _id: 1 }).batchSize(40).toArray();
    assert.equal(docs.length, 250);
    assert.equal(docs[249]._id, 249);
    const st = await lb.status();
    const t = st.servers.reduce((a, s) => a + Number(s.traffic.compressedMsgsIn), 0);
    assert.ok(t >= 7, JSON.stringify(st.servers.map((s) => s.traffic)));
    // The driver's own requests reached mongolb compressed too.
    assert.ok(Number(st.counters.compressedRequests) >= 7, JSON.stringify(st.counters));
    assert.ok(!/AddressSanitizer|runtime error:/.test(lb.log()));
  });
});
