// mongosim's users and SCRAM seen through the Node.js driver (npm mongodb) and mongosh, connecting
// DIRECTLY to the simulator. The driver logs in inside hello (speculativeAuthenticate) and asks
// saslSupportedMechs to pick a mechanism, which PyMongo 3.11 does not: both paths are checked here.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';

import { Long, MongoClient } from 'mongodb';

import { startSim, tlsCerts } from './harness.mjs';

const ROOT = ['admin', 's3cret'];
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const mongosh = path.join(root, 'node_modules', '.bin', 'mongosh');

function authSim(mode, ...extra) {
  return startSim(...mode, '--auth', '--auth-user', ROOT.join(':'), ...extra);
}

async function withClient(uri, fn, options = {}) {
  const c = new MongoClient(uri, { serverSelectionTimeoutMS: 5000, ...options });
  try {
    await c.connect();
    return await fn(c);
  } finally {
    await c.close();
  }
}

async function authStats(sim, i = 0) {
  return (await sim.command(0, { simStats: 1 })).servers[i].auth;
}

const modes = {
  standalone: ['--standalone'],
  mongos: ['--mongos', '2'],
  replset: ['--replset', 'rs0', '--members', '3'],
};

for (const [name, mode] of Object.entries(modes)) {
  describe(`logging in, ${name}`, () => {
    let sim;
    before(async () => {
      sim = await authSim(mode, '--auth-user', 'app@test:apw:readWrite@test');
    });
    after(async () => {
      await sim?.stop();
    });

    for (const mech of ['SCRAM-SHA-256', 'SCRAM-SHA-1', null]) {
      test(`${mech || 'negotiated mechanism'}, speculative, on the whole deployment`, async () => {
        const before = await authStats(sim);
        const opts = mech ? { authMechanism: mech } : {};
        await withClient(sim.uriAs(...ROOT, undefined, opts), async (c) => {
          const st = await c.db('admin').command({ connectionStatus: 1 });
          assert.deepEqual(st.authInfo.authenticatedUsers, [{ user: 'admin', db: 'admin' }]);
          await c.db('test').collection('c').insertOne({ mech });
          assert.ok((await c.db('test').collection('c').find({}).toArray()).length >= 1);
        });
        const now = await authStats(sim);
        // The driver's first step rode in hello: no separate saslStart was needed.
        assert.ok(now.speculative > before.speculative, JSON.stringify(now));
        assert.ok(now.successes > before.successes);
      });
    }

    test('authSource, and every member knows the user', async () => {
      for (let i = 0; i < sim.servers.length; i++) {
        await withClient(sim.uriAs('app', 'apw', i, { authSource: 'test' }), async (c) => {
          await c.db('test').command({ ping: 1 });
          await c.db('test').collection('c').findOne({}, { readPreference: 'nearest' });
        });
      }
    });
  });
}

describe('errors and roles', () => {
  let sim;
  before(async () => {
    sim = await authSim(
      ['--standalone'],
      '--auth-user',
      'reader:pw:read@test',
      '--auth-user',
      'writer:pw:readWrite@test',
      '--auth-user',
      'other:pw:read@test',
    );
  });
  after(async () => {
    await sim?.stop();
  });

  test('wrong password and unknown user: 18 Authentication failed.', async () => {
    for (const [u, p] of [
      ['admin', 'wrong'],
      ['ghost', 'x'],
    ]) {
      for (const authMechanism of ['SCRAM-SHA-256', 'SCRAM-SHA-1']) {
        await assert.rejects(
          withClient(sim.uriAs(u, p, 0), (c) => c.db('test').collection('c').findOne(), {
            authMechanism,
          }),
          (e) => e.code === 18 && e.message === 'Authentication failed.',
        );
      }
    }
  });

  test('a command before login: 13 requires authentication', async () => {
    await withClient(sim.uri(0), async (c) => {
      assert.equal((await c.db('admin').command({ ping: 1 })).ok, 1);
      await assert.rejects(c.db('test').collection('c').findOne(), (e) => {
        assert.equal(e.code, 13);
        assert.equal(e.message, 'Command find requires authentication');
        return true;
      });
    });
  });

  test('a read user cannot insert, a readWrite user can', async () => {
    await withClient(sim.uriAs('writer', 'pw', 0), (c) =>
      c.db('test').collection('c').insertMany([1, 2, 3, 4, 5].map((i) => ({ _id: i }))),
    );
    await withClient(sim.uriAs('reader', 'pw', 0), async (c) => {
      assert.equal((await c.db('test').collection('c').find({}).toArray()).length, 5);
      await assert.rejects(c.db('test').collection('c').insertOne({ _id: 9 }), (e) => {
        assert.equal(e.code, 13);
        assert.match(e.message, /^not authorized on test to execute command \{/);
        return true;
      });
    });
  });

  test("a getMore on another user's cursor is refused", async () => {
    const a = new MongoClient(sim.uriAs('reader', 'pw', 0));
    const b = new MongoClient(sim.uriAs('other', 'pw', 0));
    try {
      const first = await a.db('test').command({ find: 'c', batchSize: 2 });
      const id = first.cursor.id;
      assert.notEqual(Number(id), 0);
      await assert.rejects(
        b.db('test').command({ getMore: Long.fromValue(id), collection: 'c' }),
        (e) => {
          assert.equal(e.code, 13);
          assert.equal(e.message, `cursor id ${id} was not created by the authenticated user`);
          return true;
        },
      );
      await assert.rejects(
        b.db('test').command({ killCursors: 'c', cursors: [Long.fromValue(id)] }),
        (e) => e.code === 13 && e.message === 'not authorized to kill cursor on test.c',
      );
      const more = await a.db('test').command({ getMore: Long.fromValue(id), collection: 'c' });
      assert.equal(more.cursor.nextBatch.length, 3);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('mongosh logs in and runs a query', { skip: !existsSync(mongosh) && 'no mongosh' }, async () => {
    const out = await new Promise((resolve, reject) =>
      execFile(
        mongosh,
        [
          // The database in the path would also be the authSource: the user lives on admin.
          sim.uriAs('reader', 'pw', 0, { authSource: 'admin' }).replace('/?', '/test?'),
          '--quiet',
          '--norc',
          '--eval',
          'print("n=" + db.c.find().toArray().length)',
        ],
        { timeout: 60000, env: { ...process.env, MONGOSH_NO_UPDATE_CHECK: '1' } },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
      ),
    );
    assert.match(out, /n=5/);
  });
});

describe('MONGODB-X509', () => {
  let sim;
  let certs;
  before(async () => {
    certs = tlsCerts();
    sim = await authSim(
      ['--standalone'],
      '--auth-user',
      'CN=mongosim-client@$external::readWrite@test',
      '--tls-cert',
      certs.server,
      '--tls-ca',
      certs.ca,
      { tlsCAFile: certs.ca },
    );
  });
  after(async () => {
    await sim?.stop();
  });

  test('the client certificate logs in as its $external user, speculatively', async () => {
    const before = await authStats(sim);
    const uri = sim.uri(0, { authMechanism: 'MONGODB-X509' });
    await withClient(
      uri,
      async (c) => {
        await c.db('test').collection('c').insertOne({ x509: true });
        const st = await c.db('admin').command({ connectionStatus: 1 });
        assert.deepEqual(st.authInfo.authenticatedUsers, [
          { user: 'CN=mongosim-client', db: '$external' },
        ]);
      },
      { tlsCertificateKeyFile: certs.client },
    );
    const now = await authStats(sim);
    assert.ok(now.speculative > before.speculative, JSON.stringify(now));
  });
});
