"""mongolb's minimum backend version: MongoDB 5.0, maxWireVersion 13 (src/topology.h).

A backend that reports an older maxWireVersion is refused, as a driver refuses an incompatible
server: mongolbStatus shows it Unknown with the reason as its lastError, the log says so once,
no request is ever sent to it, and an application with nothing else to use gets an error instead
of a hang. A backend at exactly the minimum is used like any other. The simulator claims the
version with --max-wire-version; these tests always run against it, also when MONGOLB_TEST_SEEDS
names a real cluster.
"""

import contextlib
import time

import pymongo
import pytest
from pymongo.errors import PyMongoError

from harness import start_sim
from mongolb_harness import start_mongolb, wait_for

MIN_WIRE = 13
TOO_OLD = "wire version %d is older than mongolb's minimum 13 (MongoDB 5.0)"

# Quick heartbeats, and a short wait for a server so that a refused one fails fast.
CONFIG = {"upstream.heartbeat_interval_ms": 500, "upstream.server_selection_timeout_ms": 1500}


@contextlib.contextmanager
def mongolb(seeds, config=CONFIG, **kw):
    """mongolb in front of seeds; at the end it must stop cleanly (SIGTERM, status 0) with no
    sanitizer report in its log, as the cluster fixture asks of every other test."""
    lb = start_mongolb(seeds, config=config, **kw)
    try:
        yield lb
    finally:
        lb.cleanup()
        print("\n----- mongolb stderr -----\n%s" % lb.log_tail(40))
    log = lb.log()
    assert lb.proc.returncode == 0, lb.log_tail(40)
    assert "AddressSanitizer" not in log and "runtime error:" not in log, lb.log_tail(80)


def server(lb, address):
    for s in lb.status()["servers"]:
        if s["address"] == address:
            return s
    raise KeyError(address)


def refusal_lines(lb, wire):
    return [line for line in lb.log().splitlines() if "refused: " + TOO_OLD % wire in line]


def sent_to_sim(sim, i=0):
    """The commands the simulator's server i received, other than hellos and its own sim*
    control commands (these stats included)."""
    counts = sim.stats(i)["servers"][i]["commands"]
    return {k: v for k, v in counts.items()
            if v and k not in ("hello", "isMaster", "ismaster") and not k.startswith("sim")}


def test_a_mongos_older_than_the_minimum_is_refused_with_a_clear_error():
    with start_sim("--mongos", "1", "--max-wire-version", str(MIN_WIRE - 1)) as sim, \
            mongolb(sim.servers, expect_known=0) as lb:
        addr = sim.servers[0]
        wait_for(lambda: server(lb, addr).get("lastError"), 10, what="a lastError for the server")
        s = server(lb, addr)
        assert s["type"] == "Unknown"
        assert s["lastError"] == TOO_OLD % (MIN_WIRE - 1)
        # Logged once, however many heartbeats say the same (500 ms apart).
        wait_for(lambda: refusal_lines(lb, MIN_WIRE - 1), 5, what="the refusal in the log")
        time.sleep(2.0)
        assert len(refusal_lines(lb, MIN_WIRE - 1)) == 1, lb.log_tail(30)
        assert server(lb, addr)["lastError"] == TOO_OLD % (MIN_WIRE - 1)

        # An application gets an error, not a hang, and nothing reaches the old server.
        client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=4000, connectTimeoutMS=4000)
        try:
            started = time.monotonic()
            with pytest.raises(PyMongoError) as ei:
                client.test_min.docs.insert_one({"_id": 1})
            assert time.monotonic() - started < 15
            assert "no backend reachable" in str(ei.value) or "no suitable server" in str(ei.value)
        finally:
            client.close()
        assert sent_to_sim(sim) == {}, sent_to_sim(sim)
        assert server(lb, addr)["requests"] == 0


def test_a_mongos_at_the_minimum_is_used():
    with start_sim("--mongos", "1", "--max-wire-version", str(MIN_WIRE)) as sim, \
            mongolb(sim.servers) as lb:
        s = server(lb, sim.servers[0])
        assert s["type"] == "Mongos"
        assert "lastError" not in s
        assert not refusal_lines(lb, MIN_WIRE)
        client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
        try:
            hello = client.admin.command("hello")
            assert hello["maxWireVersion"] == MIN_WIRE
            coll = client.test_min.docs
            coll.insert_many([{"_id": i} for i in range(5)])
            assert sorted(d["_id"] for d in coll.find()) == list(range(5))
        finally:
            client.close()
        assert server(lb, sim.servers[0])["requests"] > 0


def test_an_old_mongos_next_to_a_current_one_is_never_chosen():
    with start_sim("--mongos", "1", "--max-wire-version", "9") as old, \
            start_sim("--mongos", "1") as new, \
            mongolb(old.servers + new.servers, expect_known=1) as lb:
        wait_for(lambda: server(lb, old.servers[0]).get("lastError") == TOO_OLD % 9, 10,
                 what="the 4.4 mongos refused")
        client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
        try:
            # mongolb's own hello is not lowered by the refused server.
            assert client.admin.command("hello")["maxWireVersion"] == 21
            coll = client.test_min.docs
            for i in range(20):
                coll.insert_one({"_id": i})
                assert coll.find_one({"_id": i}) == {"_id": i}
        finally:
            client.close()
        assert sent_to_sim(old) == {}, sent_to_sim(old)
        assert server(lb, old.servers[0])["requests"] == 0
        assert server(lb, new.servers[0])["requests"] >= 40
        assert len(refusal_lines(lb, 9)) == 1, lb.log_tail(30)


def test_an_old_replica_set_is_refused_and_not_discovered():
    config = dict(CONFIG)
    config.update({"upstream.mode": "replicaset", "upstream.replica_set": "rs0"})
    with start_sim("--replset", "rs0", "--members", "3", "--max-wire-version", "8") as sim, \
            mongolb(sim.servers[:1], config=config, expect_known=0) as lb:
        wait_for(lambda: server(lb, sim.servers[0]).get("lastError") == TOO_OLD % 8, 10,
                 what="the 4.2 member refused")
        time.sleep(1.5)
        st = lb.status()
        # The members the refused primary lists are not taken from it.
        assert [s["address"] for s in st["servers"]] == sim.servers[:1], st["servers"]
        assert st["servers"][0]["type"] == "Unknown"
        assert sent_to_sim(sim) == {}
