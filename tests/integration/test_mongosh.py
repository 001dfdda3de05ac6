"""mongosh (npm, node_modules/.bin/mongosh) through mongolb: what a user of the shell sees, in
plaintext and over TLS (mongolb with tls_mode = require in front of a simulator that speaks TLS
only, so both legs are encrypted)."""

import contextlib
import os
import subprocess

import pytest

from harness import start_sim
from mongolb_harness import ROOT, cluster, start_mongolb, wait_for  # noqa: F401  (a fixture)
from tls_certs import tls_certs  # noqa: F401  (a fixture)

MONGOSH = os.path.join(ROOT, "node_modules", ".bin", "mongosh")


def run_mongosh(uri, script, extra_args=(), timeout=60):
    """Runs mongosh on uri with script; returns (exit status, stdout, stderr)."""
    if not os.path.exists(MONGOSH):
        pytest.skip("mongosh not installed (npm ci)")
    env = dict(os.environ, MONGOSH_NO_TELEMETRY="1", DO_NOT_TRACK="1")
    env.setdefault("HOME", "/tmp")
    p = subprocess.run([MONGOSH, uri, "--quiet", "--norc"] + list(extra_args)
                       + ["--eval", script],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, env=env)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def mongosh(uri, script, extra_args=(), timeout=60):
    code, out, err = run_mongosh(uri, script, extra_args, timeout)
    assert code == 0, "mongosh exited %d\nstdout:\n%s\nstderr:\n%s" % (code, out, err)
    return out.strip().splitlines()


def test_mongosh_insert_count_and_status(cluster):
    uri = "mongodb://127.0.0.1:%d/test?serverSelectionTimeoutMS=5000" % cluster.lb.port
    # With MONGOLB_TEST_TLS=1 the cluster's mongolb requires TLS.
    tls = ["--tls", "--tlsCAFile", cluster.lb.tls_ca] if cluster.lb.tls_ca else []
    lines = mongosh(uri, "db.c.drop(); db.c.insertOne({a: 1}); db.c.insertOne({a: 2}); "
                         "printjson(db.c.countDocuments()); "
                         "print(db.adminCommand({mongolbStatus: 1}).ok); "
                         "print(db.hello().msg)", tls)
    assert lines[-3:] == ["2", "1", "isdbgrid"], lines


@contextlib.contextmanager
def tls_mongolb(certs):
    """mongosim --mongos 2 speaking TLS only, behind a mongolb with tls_mode = require and
    [upstream] tls = true; yields (sim, lb). Checks a clean exit of mongolb at the end."""
    cfg = {"mongolb.tls_mode": "require", "mongolb.tls_certificate_key_file": certs.server,
           "upstream.tls": "true", "upstream.tls_ca_file": certs.ca}
    with start_sim("--mongos", "2", "--tls-cert", certs.server, tls_ca=certs.ca) as sim:
        lb = start_mongolb(sim.servers, config=cfg, tls_ca=certs.ca)
        try:
            yield sim, lb
        except BaseException:
            print("\n----- mongolb stderr -----\n%s" % lb.log_tail(80))
            raise
        finally:
            code = lb.stop()
            log = lb.log()
            lb.cleanup()
        assert code == 0, "mongolb exited with %s:\n%s" % (code, log[-4000:])
        assert "AddressSanitizer" not in log and "runtime error:" not in log


# Inserts 300 documents, reads some back, runs a cursor of 20-document batches through to the end
# (14 getMores) and a count, and shows what mongolb says it is.
TLS_SCRIPT = """
db.docs.drop();
db.docs.insertMany(Array.from({length: 300}, (_, i) => ({_id: i, v: i % 7, s: 'x' + i})));
db.docs.updateOne({_id: 42}, {$set: {tag: 'over-tls'}});
print(JSON.stringify(db.docs.findOne({_id: 42})));
let n = 0, last = -1, ordered = true;
db.docs.find({}).sort({_id: 1}).batchSize(20).forEach((d) => {
  if (d._id !== last + 1) ordered = false;
  last = d._id;
  n++;
});
print(n, ordered);
print(db.docs.countDocuments({v: 3}));
print(db.adminCommand({mongolbStatus: 1}).ok, db.hello().msg);
"""


def test_mongosh_over_tls(tls_certs):
    certs = tls_certs
    with tls_mongolb(certs) as (sim, lb):
        before = lb.counters()
        sim.stats(reset=True)
        uri = "mongodb://127.0.0.1:%d/mongosh_tls?serverSelectionTimeoutMS=5000" % lb.port
        lines = mongosh(uri, TLS_SCRIPT, ["--tls", "--tlsCAFile", certs.ca])
        assert lines[-4:] == [
            '{"_id":42,"v":0,"s":"x42","tag":"over-tls"}',
            "300 true",
            str(len([i for i in range(300) if i % 7 == 3])),
            "1 isdbgrid",
        ], lines
        after = lb.counters()
        assert after["getMoresRouted"] - before["getMoresRouted"] >= 300 // 20 - 1, after
        assert after["tlsHandshakeFailures"] == 0
        assert after["errorsReturned"] == before["errorsReturned"]
        # The documents went through mongolb onwards to the (TLS-only) simulator.
        stats = sim.stats()
        assert sum(int(s["commands"].get("getMore", 0)) for s in stats["servers"]) >= 14, stats


def test_mongosh_without_tls_is_refused(tls_certs):
    certs = tls_certs
    with tls_mongolb(certs) as (_, lb):
        uri = "mongodb://127.0.0.1:%d/test?serverSelectionTimeoutMS=2000" % lb.port
        code, out, err = run_mongosh(uri, "print(db.hello().msg)", timeout=60)
        assert code != 0, "mongosh connected in plaintext to a TLS-only port:\n%s" % out
        assert "isdbgrid" not in out
        assert "MongoServerSelectionError" in err + out or "ECONNRESET" in err + out, (out, err)
        wait_for(lambda: "a plaintext client on a TLS-only port" in lb.log(), timeout=5,
                 what="mongolb's log line about the plaintext client")
        # TLS clients are still served.
        assert lb.status()["ok"] == 1
        lines = mongosh(uri, "print(db.hello().msg)", ["--tls", "--tlsCAFile", certs.ca])
        assert lines[-1:] == ["isdbgrid"], lines
