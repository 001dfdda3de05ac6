// The Node.js driver (npm mongodb) connecting with TLS to mongolb (tls_mode = require): CRUD, a
// multi-batch cursor and withTransaction with tls + tlsCAFile, through to a simulator that speaks
// TLS only; a certificate from another CA refused by the driver; and, with
// tls_client_certificates = required, a client without a certificate (or with one from another
// CA) refused by mongolb while tlsCertificateKeyFile = client works.
//
// This file configures TLS itself, whatever MONGOLB_TEST_TLS says, and always uses mongosim. The
// certificates are tests/integration/tls_certs.py's, made once for the file (harness.mjs).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { MongoClient } from 'mongodb';

import { startSim, tlsCerts } from './harness.mjs';
import { directCommand, startMongolb, waitFor } from './mongolb_harness.mjs';

const certs = tlsCerts();

// [mongolb] keys for TLS towards applications.
const appSide = (extra = {}) => ({
  tls_mode: 'require', tls_certificate_key_file: certs.server, ...extra,
});

async function stopClean(lb) {
  const code = await lb.stop();
  const log = lb.log();
  await lb.cleanup();
  assert.equal(code, 0, `mongolb exited with ${code}:\n${log.split('\n').slice(-60).join('\n')}`);
  assert.ok(!/AddressSanitizer|runtime error:/.test(log));
}

// Wraps a test body so that a failure carries the end of mongolb's log.
function withLog(lb, fn) {
  return async () => {
    try {
      await fn();
    } catch (e) {
      const m = lb();
      if (m) e.message += `\n----- mongolb stderr (${m.logPath}) -----\n${m.logTail(60)}`;
      throw e;
    }
  };
}

// Connects with uri + options, expecting the connection to be refused; returns the reason the
// driver gives (the selection error and the server description's error).
async function refusal(uri, options = {}) {
  const client = new MongoClient(uri, {
    serverSelectionTimeoutMS: 1500, connectTimeoutMS: 1500, ...options,
  });
  try {
    await client.db('admin').command({ ping: 1 });
  } catch (e) {
    assert.equal(e.name, 'MongoServerSelectionError', String(e));
    return `${e.message} ${e.reason?.error?.message ?? ''}`;
  } finally {
    await client.close();
  }
  assert.fail(`${uri} ${JSON.stringify(options)}: the connection should have been refused`);
}

describe('the Node.js driver over TLS to mongolb, TLS onwards to two mongos routers', () => {
  let sim;
  let lb;
  let client;
  const simTls = { tlsCAFile: certs.ca };

  before(async () => {
    sim = await startSim('--mongos', '2', '--tls-cert', certs.server, simTls);
    try {
      lb = await startMongolb(sim.servers, {
        config: { mongolb: appSide(), upstream: { tls: 'true', tls_ca_file: certs.ca } },
        tls: { tlsCAFile: certs.ca },
      });
    } catch (e) {
      await sim.stop();
      throw e;
    }
    // The URI the application would write, not the harness's.
    client = new MongoClient(`mongodb://127.0.0.1:${lb.port}/`, {
      tls: true, tlsCAFile: certs.ca, serverSelectionTimeoutMS: 5000,
    });
    await client.connect();
  });

  after(async () => {
    await client?.close();
    try {
      if (lb) await stopClean(lb);
    } finally {
      await sim?.stop();
    }
  });

  test('CRUD', withLog(() => lb, async () => {
    const coll = client.db('node_tls').collection('crud');
    await coll.drop().catch(() => {});
    const hello = await client.db('admin').command({ hello: 1 });
    assert.equal(hello.msg, 'isdbgrid');
    await coll.insertOne({ _id: 1, name: 'a' });
    await coll.insertMany([{ _id: 2, name: 'b' }, { _id: 3, name: 'c' }]);
    assert.equal((await coll.updateOne({ _id: 2 }, { $set: { name: 'B' } })).modifiedCount, 1);
    assert.deepEqual(await coll.findOne({ _id: 2 }), { _id: 2, name: 'B' });
    assert.equal((await coll.deleteOne({ _id: 3 })).deletedCount, 1);
    assert.deepEqual(await coll.find({}).sort({ _id: 1 }).toArray(),
      [{ _id: 1, name: 'a' }, { _id: 2, name: 'B' }]);
    assert.equal(await coll.countDocuments({}), 2);
    // A document of about 4 MB each way: many TLS records per message.
    const big = { _id: 'big', blob: 'z'.repeat(4 << 20) };
    await coll.insertOne(big);
    assert.equal((await coll.findOne({ _id: 'big' })).blob.length, 4 << 20);
  }));

  test('a 300-document cursor in batches of 25', withLog(() => lb, async () => {
    const coll = client.db('node_tls').collection('cursor');
    await coll.drop().catch(() => {});
    const pad = 'p'.repeat(200);
    await coll.insertMany(Array.from({ length: 300 }, (_, i) => ({ _id: i, pad })));
    const before = (await lb.status()).counters;
    await sim.command(0, { simStats: 1, reset: true });
    const ids = [];
    for await (const d of coll.find({}).sort({ _id: 1 }).batchSize(25)) ids.push(d._id);
    assert.deepEqual(ids, Array.from({ length: 300 }, (_, i) => i));
    const after = (await lb.status()).counters;
    assert.equal(after.getMoresRouted - before.getMoresRouted, 300 / 25 - 1);
    assert.equal(after.cursorNotFound, before.cursorNotFound);
    const st = await sim.command(0, { simStats: 1 });
    const gms = st.servers.reduce((n, s) => n + Number(s.commands.getMore ?? 0), 0);
    assert.equal(gms, 300 / 25 - 1);
  }));

  test('withTransaction commits on one mongos', withLog(() => lb, async () => {
    const coll = client.db('node_tls').collection('accounts');
    await coll.drop().catch(() => {});
    await coll.insertMany([{ _id: 'a', balance: 100 }, { _id: 'b', balance: 0 }]);
    await sim.command(0, { simStats: 1, reset: true }); // clears the transaction log too
    const session = client.startSession();
    let lsid;
    try {
      await session.withTransaction(async () => {
        await coll.updateOne({ _id: 'a' }, { $inc: { balance: -40 } }, { session });
        await coll.updateOne({ _id: 'b' }, { $inc: { balance: 40 } }, { session });
        assert.equal((await coll.findOne({ _id: 'b' }, { session })).balance, 40);
      });
      lsid = Buffer.from(session.id.id.buffer).toString('hex');
    } finally {
      await session.endSession();
    }
    assert.equal((await coll.findOne({ _id: 'a' })).balance, 60);
    assert.equal((await coll.findOne({ _id: 'b' })).balance, 40);
    const log = await sim.command(0, { simTxnLog: 1 });
    const used = log.servers
      .map((s) => s.entries.filter((e) => e.lsid === lsid && e.inTxn).map((e) => e.cmd))
      .filter((cmds) => cmds.length > 0);
    assert.deepEqual(used, [['update', 'update', 'find', 'commitTransaction']]);
    const st = await lb.status();
    assert.equal(st.transactionsPinned, 0);
    assert.equal(st.counters.tlsHandshakeFailures, 0);
    assert.ok(st.servers.every((s) => s.type === 'Mongos'), JSON.stringify(st.servers));
  }));

  test('a mongolb certificate from another CA is refused with a certificate error',
    withLog(() => lb, async () => {
      const uri = `mongodb://127.0.0.1:${lb.port}/`;
      const why = await refusal(uri, { tls: true, tlsCAFile: certs.other_ca });
      // Node's wording for a chain it cannot verify ("self-signed certificate in certificate
      // chain", "unable to get local issuer certificate"...).
      assert.match(why, /certificate/i);
      // A plaintext driver is refused too (mongolb closes it).
      await refusal(uri);
      await waitFor(() => lb.log().includes('a plaintext client on a TLS-only port'), 5000,
        "mongolb's log line about the plaintext client");
      // The connected client never noticed.
      assert.equal(await client.db('node_tls').collection('crud').countDocuments({}), 3);
    }));
});

describe('mongolb with tls_client_certificates = required', () => {
  let sim;
  let lb;

  before(async () => {
    // Plaintext towards the simulator: only the applications' leg is under test here.
    sim = await startSim('--mongos', '1');
    try {
      lb = await startMongolb(sim.servers, {
        config: {
          mongolb: appSide({ tls_client_certificates: 'required', tls_ca_file: certs.ca }),
        },
        tls: { tlsCAFile: certs.ca, tlsCertificateKeyFile: certs.client },
      });
    } catch (e) {
      await sim.stop();
      throw e;
    }
  });

  after(async () => {
    try {
      if (lb) await stopClean(lb);
    } finally {
      await sim?.stop();
    }
  });

  test('no client certificate, or one from another CA, is refused', withLog(() => lb, async () => {
    const uri = `mongodb://127.0.0.1:${lb.port}/`;
    const failures = (await lb.status()).counters.tlsHandshakeFailures;
    // mongolb refuses in the handshake, and says why in its log; the driver sees the alert.
    assert.match(await refusal(uri, { tls: true, tlsCAFile: certs.ca }),
      /certificate required|ECONNRESET|closed/i);
    await waitFor(() => lb.log().includes('peer did not return a certificate'), 5000,
      "mongolb's log line about the missing certificate");
    const foreign = { tls: true, tlsCAFile: certs.ca, tlsCertificateKeyFile: certs.other_client };
    assert.match(await refusal(uri, foreign), /unknown ca|ECONNRESET|closed/i);
    await waitFor(() => lb.log().includes('certificate verification failed'), 5000,
      "mongolb's log line about the client certificate from another CA");
    await waitFor(async () => (await lb.status()).counters.tlsHandshakeFailures >= failures + 2,
      5000, 'two more failed handshakes counted');
    // The harness's own connection (no certificate) cannot ask either.
    await assert.rejects(directCommand(lb.hostPort, { ping: 1 }, 1500, { tlsCAFile: certs.ca }));
  }));

  test('tlsCertificateKeyFile = client works', withLog(() => lb, async () => {
    const client = new MongoClient(`mongodb://127.0.0.1:${lb.port}/`, {
      tls: true, tlsCAFile: certs.ca, tlsCertificateKeyFile: certs.client,
      serverSelectionTimeoutMS: 5000,
    });
    try {
      const coll = client.db('node_tls_certs').collection('c');
      await coll.drop().catch(() => {});
      await coll.insertMany(Array.from({ length: 120 }, (_, i) => ({ _id: i })));
      const docs = await coll.find({}).sort({ _id: -1 }).batchSize(10).toArray();
      assert.equal(docs.length, 120);
      assert.equal(docs[0]._id, 119);
    } finally {
      await client.close();
    }
    // The same through the URI, as an application would write it.
    const viaUri = new MongoClient(lb.uri, { serverSelectionTimeoutMS: 5000 });
    try {
      assert.match(lb.uri, /tls=true&tlsCAFile=.*&tlsCertificateKeyFile=/);
      assert.equal((await viaUri.db('admin').command({ ping: 1 })).ok, 1);
    } finally {
      await viaUri.close();
    }
  }));
});
