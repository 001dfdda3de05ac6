// mongosim's TLS listener (--tls-cert, --tls-ca, --tls-require-client-cert) seen through the
// Node.js driver (npm mongodb, pinned in package-lock.json). The certificates come from
// tests/integration/tls_certs.py, run once for this file into a temporary directory.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';

import { BSON, MongoClient } from 'mongodb';

import { startSim } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const certDir = mkdtempSync(path.join(os.tmpdir(), 'mongosim-tls-'));
// The helper needs only Python's standard library; Debian's interpreter comes first, as for
// pytest.
const debianPython = '/usr/bin/python3';
const python = process.env.PYTHON || (existsSync(debianPython) ? debianPython : 'python3');
const certs = JSON.parse(
  execFileSync(python, [path.join(here, '..', 'integration', 'tls_certs.py'), certDir]).toString(),
);
after(() => rmSync(certDir, { recursive: true, force: true }));

// A client that gives up quickly, for connections that are meant to fail.
async function expectRefused(uri, options) {
  const client = new MongoClient(uri, {
    serverSelectionTimeoutMS: 1500,
    connectTimeoutMS: 1500,
    ...options,
  });
  try {
    await assert.rejects(client.db('admin').command({ ping: 1 }), (e) => {
      assert.equal(e.name, 'MongoServerSelectionError');
      return true;
    });
  } finally {
    await client.close();
  }
}

// The reason the driver gave for the last failed selection (the server's description error).
async function refusalReason(uri, options) {
  const client = new MongoClient(uri, {
    serverSelectionTimeoutMS: 1500,
    connectTimeoutMS: 1500,
    ...options,
  });
  try {
    await client.db('admin').command({ ping: 1 });
    assert.fail('the connection should have been refused');
  } catch (e) {
    assert.equal(e.name, 'MongoServerSelectionError');
    return String(e.message) + ' ' + String(e.reason?.error?.message ?? '');
  } finally {
    await client.close();
  }
}

const tlsOpts = () => ({ tls: true, tlsCAFile: certs.ca, serverSelectionTimeoutMS: 5000 });

describe('two mongos routers over TLS', () => {
  let sim;
  let client;
  before(async () => {
    sim = await startSim('--mongos', '2', '--tls-cert', certs.server);
    client = new MongoClient(sim.uri(), { ...tlsOpts(), heartbeatFrequencyMS: 500 });
    await client.connect();
  });
  after(async () => {
    await client?.close();
    await sim?.stop();
  });

  test('CRUD, cursors and large replies', async () => {
    const c = client.db('shop').collection('items');
    await c.insertMany(Array.from({ length: 2000 }, (_, i) => ({ _id: i, qty: i % 5 })));
    await c.updateOne({ _id: 3 }, { $set: { tag: 'x' } });
    assert.deepEqual(await c.findOne({ _id: 3 }), { _id: 3, qty: 3, tag: 'x' });
    // Small batches: many getMores on the same TLS connection.
    const cursor = c.find({}, { projection: { _id: 1 } }).sort({ _id: 1 }).batchSize(64);
    const ids = (await cursor.toArray()).map((d) => d._id);
    assert.deepEqual(ids, Array.from({ length: 2000 }, (_, i) => i));
    assert.equal((await c.deleteMany({ qty: 0 })).deletedCount, 400);
    // A 6 MB document and a batch of about 12 MB.
    const big = client.db('shop').collection('big');
    await big.insertOne({ _id: 1, blob: Buffer.alloc(6 << 20, 7) });
    assert.equal((await big.findOne({ _id: 1 })).blob.length(), 6 << 20);
    const wide = client.db('shop').collection('wide');
    const pad = 'y'.repeat(8000);
    await wide.insertMany(Array.from({ length: 1500 }, (_, i) => ({ _id: i, pad })));
    const docs = await wide.find().batchSize(1500).toArray();
    assert.equal(docs.length, 1500);
    assert.ok(docs.every((d) => d.pad.length === 8000));
  });

  test('every router answers over TLS by IP and by name', async () => {
    for (const hp of sim.servers) {
      const port = hp.split(':')[1];
      for (const host of ['127.0.0.1', 'localhost']) {
        const c = new MongoClient(`mongodb://${host}:${port}/?directConnection=true`, tlsOpts());
        try {
          const hello = await c.db('admin').command({ hello: 1 });
          assert.equal(hello.msg, 'isdbgrid');
          assert.equal(await c.db('shop').collection('items').estimatedDocumentCount(), 1600);
        } finally {
          await c.close();
        }
      }
    }
  });

  test('streaming monitoring (awaitable hello) works over TLS', async () => {
    const c = new MongoClient(sim.uri(0), { ...tlsOpts(), heartbeatFrequencyMS: 300 });
    let awaited = 0;
    c.on('serverHeartbeatSucceeded', (ev) => {
      if (ev.awaited) awaited++;
    });
    try {
      await c.db('admin').command({ ping: 1 });
      const deadline = Date.now() + 5000;
      while (awaited < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.ok(awaited >= 2, `awaited heartbeats: ${awaited}`);
    } finally {
      await c.close();
    }
  });

  test('a plaintext client is closed', async () => {
    const [host, port] = sim.servers[0].split(':');
    const body = BSON.serialize({ hello: 1, $db: 'admin' });
    const msg = Buffer.alloc(21 + body.length);
    msg.writeInt32LE(msg.length, 0);
    msg.writeInt32LE(1, 4);
    msg.writeInt32LE(0, 8);
    msg.writeInt32LE(2013, 12); // OP_MSG
    msg.writeUInt32LE(0, 16);
    msg.writeUInt8(0, 20);
    body.copy(msg, 21);
    const received = await new Promise((resolve, reject) => {
      const sock = net.connect(Number(port), host, () => sock.write(msg));
      let bytes = 0;
      sock.on('data', (d) => (bytes += d.length));
      sock.on('error', () => resolve(bytes));
      sock.on('close', () => resolve(bytes));
      sock.setTimeout(5000, () => reject(new Error('not closed in time')));
    });
    // No MongoDB reply came back (at most a TLS alert).
    assert.ok(received < 16, `received ${received} bytes`);
    await expectRefused(sim.uri(0));
  });

  test('a server certificate from another CA is refused by the driver', async () => {
    const why = await refusalReason(sim.uri(0), { tls: true, tlsCAFile: certs.other_ca });
    assert.match(why, /certificate/i);
  });
});

describe('certificates the driver must refuse', () => {
  test('expired', async () => {
    const sim = await startSim('--standalone', '--tls-cert', certs.expired);
    try {
      const why = await refusalReason(sim.uri(0), { tls: true, tlsCAFile: certs.ca });
      assert.match(why, /expired/i);
      const c = new MongoClient(sim.uri(0), { ...tlsOpts(), tlsAllowInvalidCertificates: true });
      assert.equal((await c.db('admin').command({ ping: 1 })).ok, 1);
      await c.close();
    } finally {
      await sim.stop();
    }
  });

  test('wrong host name', async () => {
    const sim = await startSim('--standalone', '--tls-cert', certs.wrong_host);
    try {
      const why = await refusalReason(sim.uri(0), { tls: true, tlsCAFile: certs.ca });
      assert.match(why, /does not match|altnames/i);
      const c = new MongoClient(sim.uri(0), { ...tlsOpts(), tlsAllowInvalidHostnames: true });
      assert.equal((await c.db('admin').command({ ping: 1 })).ok, 1);
      await c.close();
    } finally {
      await sim.stop();
    }
  });
});

describe('client certificates', () => {
  test('required: refused without one or from another CA, accepted when valid', async () => {
    const sim = await startSim(
      '--mongos',
      '1',
      '--tls-cert',
      certs.server,
      '--tls-ca',
      certs.ca,
      '--tls-require-client-cert',
    );
    try {
      await expectRefused(sim.uri(0), { tls: true, tlsCAFile: certs.ca });
      await expectRefused(sim.uri(0), {
        tls: true,
        tlsCAFile: certs.ca,
        tlsCertificateKeyFile: certs.other_client,
      });
      const c = new MongoClient(sim.uri(0), { ...tlsOpts(), tlsCertificateKeyFile: certs.client });
      try {
        const coll = c.db('test').collection('c');
        await coll.insertMany(Array.from({ length: 300 }, (_, i) => ({ _id: i })));
        const docs = await coll.find().sort({ _id: -1 }).batchSize(10).toArray();
        assert.equal(docs.length, 300);
        assert.equal(docs[0]._id, 299);
      } finally {
        await c.close();
      }
    } finally {
      await sim.stop();
    }
  });

  test('optional: accepted without one, checked when sent', async () => {
    const sim = await startSim('--standalone', '--tls-cert', certs.server, '--tls-ca', certs.ca);
    try {
      for (const extra of [{}, { tlsCertificateKeyFile: certs.client }]) {
        const c = new MongoClient(sim.uri(0), { ...tlsOpts(), ...extra });
        assert.equal((await c.db('admin').command({ ping: 1 })).ok, 1);
        await c.close();
      }
      await expectRefused(sim.uri(0), {
        tls: true,
        tlsCAFile: certs.ca,
        tlsCertificateKeyFile: certs.other_client,
      });
    } finally {
      await sim.stop();
    }
  });
});

describe('replica set over TLS', () => {
  let sim;
  before(async () => {
    sim = await startSim('--replset', 'rs0', '--members', '3', '--tls-cert', certs.server);
  });
  after(async () => {
    await sim?.stop();
  });

  test('a direct connection to a member sees every member in hello', async () => {
    const c = new MongoClient(sim.uri(1), tlsOpts());
    try {
      const hello = await c.db('admin').command({ hello: 1 });
      assert.equal(hello.setName, 'rs0');
      assert.equal(hello.secondary, true);
      assert.deepEqual(hello.hosts, sim.servers);
    } finally {
      await c.close();
    }
  });

  test('the set is discovered from one seed and used over TLS', async () => {
    const c = new MongoClient(`mongodb://${sim.servers[0]}/?replicaSet=rs0`, {
      ...tlsOpts(),
      heartbeatFrequencyMS: 500,
    });
    try {
      const coll = c.db('test').collection('rs');
      await coll.insertMany(Array.from({ length: 50 }, (_, i) => ({ _id: i })));
      const docs = await coll.find({}, { readPreference: 'secondary' }).batchSize(7).toArray();
      assert.equal(docs.length, 50);
      const hello = await c.db('admin').command({ hello: 1 });
      assert.deepEqual(hello.hosts, sim.servers);
    } finally {
      await c.close();
    }
  });
});
