// Authentication through mongolb ([auth] mode = passthrough) with the Node.js driver, which logs
// in inside its hello (speculativeAuthenticate) and asks for saslSupportedMechs: both answered
// by mongolb itself, which then logs its backend connections in as the same user.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { MongoClient, MongoServerError } from 'mongodb';

import { startSim } from './harness.mjs';
import { startMongolb } from './mongolb_harness.mjs';

const ADMIN_PWD = 's3cret';

describe('mongolb passthrough authentication with the Node.js driver', () => {
  let sim;
  let lb;
  let dir;
  const clients = [];
  const connect = async (uri) => {
    const c = new MongoClient(uri, { serverSelectionTimeoutMS: 5000 });
    clients.push(c);
    await c.connect();
    return c;
  };

  before(async () => {
    sim = await startSim('--mongos', '2', '--auth', '--auth-user', `admin:${ADMIN_PWD}`,
      '--auth-user', 'reader:rpw:read@test', '--auth-user', 'writer:wpw:readWrite@test');
    dir = mkdtempSync(path.join(os.tmpdir(), 'mongolb-node-auth-'));
    const pw = path.join(dir, 'service.password');
    writeFileSync(pw, `${ADMIN_PWD}\n`);
    chmodSync(pw, 0o600);
    lb = await startMongolb(sim.servers, {
      config: {
        mongolb: { log_level: 'debug' },
        auth: {
          mode: 'passthrough', service_user: 'admin', service_password_file: pw,
          admin_users: 'admin@admin',
        },
      },
      admin: { user: 'admin', password: ADMIN_PWD, source: 'admin' },
    });
  });

  after(async () => {
    for (const c of clients) await c.close();
    const code = await lb?.stop();
    await lb?.cleanup();
    await sim?.stop();
    rmSync(dir, { recursive: true, force: true });
    assert.equal(code, 0);
  });

  test('speculative login, then requests as that user only', async () => {
    const before = lb.log().length;
    const w = await connect(lb.uriAs('writer', 'wpw'));
    await w.db('test').collection('node').insertOne({ by: 'writer' });
    const r = await connect(lb.uriAs('reader', 'rpw'));
    assert.ok((await r.db('test').collection('node').countDocuments({})) >= 1);
    await assert.rejects(r.db('test').collection('node').insertOne({ by: 'reader' }),
      (e) => e instanceof MongoServerError && e.code === 13);
    // The driver logged in inside hello: mongolb saw saslContinue, never a saslStart command.
    const log = lb.log().slice(before);
    assert.match(log, /admin\.saslContinue/);
    assert.doesNotMatch(log, /admin\.saslStart/);
    assert.match(log, /logged in as writer@admin/);
  });

  test('SCRAM-SHA-1 and authSource', async () => {
    const w = await connect(lb.uriAs('writer', 'wpw',
      { authMechanism: 'SCRAM-SHA-1', authSource: 'admin' }));
    await w.db('test').collection('node').insertOne({ by: 'writer-sha1' });
  });

  test('wrong password and unknown user: 18, one message', async () => {
    for (const [u, p] of [['writer', 'nope'], ['ghost', 'x']]) {
      const c = new MongoClient(lb.uriAs(u, p), { serverSelectionTimeoutMS: 3000 });
      await assert.rejects(c.connect(), (e) => e.code === 18 || /Authentication failed/.test(
        String(e.message) + String(e.cause?.message)));
      await c.close();
    }
  });

  test('mongolbStatus shows one pool per user', async () => {
    const st = await lb.status();
    const names = new Set(st.servers.flatMap((s) => s.pool.users.map((u) => u.user)));
    assert.ok(names.has('writer@admin') && names.has('reader@admin'), [...names].join(','));
    assert.equal(st.auth.mode, 'passthrough');
    assert.doesNotMatch(JSON.stringify(st), /wpw|rpw|s3cret/);
  });
});
