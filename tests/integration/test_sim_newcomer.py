"""What a newcomer tries on the simulator in mongosh, checked with PyMongo against mongosim
directly and through mongolb: each command works, or fails with CommandNotSupported (115) and a
message that says mongosim does not support it and why (never a bare "no such command" that reads
like a typo, nor an empty success). And `mongosim --help` lists the fault-injection commands."""

import os
import subprocess

import pymongo
import pytest

from harness import start_sim
from mongolb_harness import start_mongolb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

UNSUPPORTED = [
    ("test", {"createIndexes": "c", "indexes": [{"key": {"x": 1}, "name": "x_1"}]}),
    ("test", {"explain": {"find": "c"}}),
    ("admin", {"currentOp": 1}),
    ("admin", {"killOp": 1, "op": 12}),
    ("admin", {"listShards": 1}),
]


@pytest.fixture(scope="module")
def deployment():
    sim = start_sim("--mongos", "2")
    lb = start_mongolb(sim.servers)
    try:
        yield sim, lb
    finally:
        lb.cleanup()
        sim.stop()


@pytest.mark.parametrize("via", ["mongosim", "mongolb"])
def test_newcomer_commands(deployment, via):
    sim, lb = deployment
    uri = sim.uri(0) if via == "mongosim" else lb.uri
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000)
    try:
        db = client["newcomer_" + via]
        db.c.drop()
        db.c.insert_many([{"x": i, "s": "abc"} for i in range(10)])
        idx = list(db.c.list_indexes())
        assert [i["name"] for i in idx] == ["_id_"], idx
        st = db.command("dbStats")
        assert st["collections"] == 1 and st["objects"] == 10 and st["dataSize"] > 0, st
        cs = db.command("collStats", "c")
        assert cs["count"] == 10 and cs["nindexes"] == 1 and cs["size"] > 0, cs
        for dbname, cmd in UNSUPPORTED:
            target = db if dbname == "test" else client.admin
            with pytest.raises(pymongo.errors.OperationFailure) as e:
                target.command(cmd)
            name = next(iter(cmd))
            assert e.value.code == 115, e.value.details
            assert e.value.details["codeName"] == "CommandNotSupported"
            msg = e.value.details["errmsg"]
            assert msg.startswith("%s is not supported by mongosim" % name), msg
    finally:
        client.close()


def test_help_lists_the_fault_injection_commands():
    binary = os.environ.get("MONGOSIM", os.path.join(ROOT, "build", "mongosim"))
    r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    for word in ("failCommand", "simKill", "simRevive", "simStepDown", "simSetLatency",
                 "simSetLag", "simReconfig", "simSetMe", "simStats", "simTxnLog",
                 "CommandNotSupported"):
        assert word in r.stdout, word
