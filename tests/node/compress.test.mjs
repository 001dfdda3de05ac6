// OP_COMPRESSED with the Node.js driver (npm mongodb, zlib built in), directly against mongosim:
// the driver negotiates zlib in its hello, and its compressed commands, getMores included, are
// answered with compressed replies (the simulator's counters say so).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { MongoClient } from 'mongodb';

import { commandOn, startSim } from './harness.mjs';

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
