"""mongosh (npm, node_modules/.bin/mongosh) through mongolb: what a user of the shell sees."""

import os
import subprocess

import pytest

from mongolb_harness import ROOT, cluster  # noqa: F401  (cluster is a fixture)

MONGOSH = os.path.join(ROOT, "node_modules", ".bin", "mongosh")


def mongosh(uri, script, timeout=60):
    if not os.path.exists(MONGOSH):
        pytest.skip("mongosh not installed (npm ci)")
    env = dict(os.environ, MONGOSH_NO_TELEMETRY="1", DO_NOT_TRACK="1")
    env.setdefault("HOME", "/tmp")
    p = subprocess.run([MONGOSH, uri, "--quiet", "--norc", "--eval", script],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, env=env)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0, "mongosh exited %d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, out,
                                                                              err)
    return out.strip().splitlines()


def test_mongosh_insert_count_and_status(cluster):
    uri = "mongodb://127.0.0.1:%d/test?serverSelectionTimeoutMS=5000" % cluster.lb.port
    lines = mongosh(uri, "db.c.drop(); db.c.insertOne({a: 1}); db.c.insertOne({a: 2}); "
                         "printjson(db.c.countDocuments()); "
                         "print(db.adminCommand({mongolbStatus: 1}).ok); "
                         "print(db.hello().msg)")
    assert lines[-3:] == ["2", "1", "isdbgrid"], lines
