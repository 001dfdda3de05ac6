"""Failover in replica-set mode that the application does not notice (PyMongo 3.11).

- The simulator itself: killing the primary elects the next live member with a higher
  electionId, and mongolb follows.
- "Save the Monkey": an application writes in a loop (client-generated _ids, retryWrites=true)
  while the primary steps down three times, a secondary is killed and revived, and the primary is
  killed and revived. No error reaches it, and every document is there exactly once.
- failCommand failpoints on the primary: a dropped connection or a retryable error code on an
  insert or a find is retried by mongolb (counters.retries grows, the driver sees one attempt),
  with no duplicate; a write that is not retryable gets a clean error document instead.
"""

import threading
import time

import pymongo
import pytest
from pymongo import monitoring
from pymongo.errors import OperationFailure

from mongolb_harness import Cluster, real_seeds, wait_for

TAGS = "dc=ny;dc=ny,rack=2;dc=sf"
RS_CONFIG = {"upstream.mode": "replicaset", "upstream.replica_set": "rs0",
             "upstream.heartbeat_interval_ms": "500"}


@pytest.fixture
def rs():
    """mongosim --replset rs0 --members 3 behind a mongolb seeded with member 0 only."""
    if real_seeds():
        pytest.skip("replica-set mode needs mongosim (MONGOLB_TEST_SEEDS names mongos routers)")
    c = Cluster(sim_args=("--replset", "rs0", "--members", "3", "--tags", TAGS),
                config=RS_CONFIG, seed_indices=[0], expect_known=3)
    try:
        yield c
    finally:
        code = c.close()
        log = c.lb.log()
        print("\n----- mongolb stderr (%s) -----\n%s" % (c.lb.log_path, c.lb.log_tail(100)))
        assert code == 0, "mongolb exited with %s after SIGTERM" % code
        assert "AddressSanitizer" not in log and "runtime error:" not in log


def roles(c):
    """{index: (role, alive)} from simStats."""
    return {s["index"]: (s["role"], s["alive"]) for s in c.sim_stats()["servers"]}


def primary_of(c):
    for i, (role, alive) in roles(c).items():
        if role == "primary" and alive:
            return i
    return None


def election_id(c, i):
    return c.sim.command(i, {"hello": 1}).get("electionId")


def lb_primary(c):
    for s in c.lb.status()["servers"]:
        if s["type"] == "RSPrimary":
            return s["address"]
    return None


class CommandCounter(monitoring.CommandListener):
    """Counts the commands the driver itself sends, to tell its retries from mongolb's."""

    def __init__(self):
        self.started_counts = {}
        self.lock = threading.Lock()

    def started(self, event):
        with self.lock:
            self.started_counts[event.command_name] = \
                self.started_counts.get(event.command_name, 0) + 1

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def take(self, name):
        with self.lock:
            return self.started_counts.pop(name, 0)


def test_killed_primary_is_replaced_by_an_election(rs):
    before = election_id(rs, 1)
    assert before is None  # a secondary reports no electionId
    old = election_id(rs, 0)
    t0 = time.monotonic()
    rs.sim_command({"simKill": 0}, i=1)
    new = wait_for(lambda: primary_of(rs), timeout=5, what="an election in the simulator")
    elected_after = time.monotonic() - t0
    assert new == 1  # the next live member after the lost primary
    assert election_id(rs, new) > old
    assert roles(rs)[0] == ("secondary", False)
    wait_for(lambda: lb_primary(rs) == rs.sim.servers[new], timeout=5,
             what="mongolb seeing the new primary")
    followed_after = time.monotonic() - t0
    print("election %.3f s after the kill; mongolb followed after %.3f s"
          % (elected_after, followed_after))
    client = pymongo.MongoClient(rs.lb.uri, serverSelectionTimeoutMS=5000)
    try:
        client.failover_elect.docs.insert_one({"_id": 1})
    finally:
        client.close()
    assert rs.command_counts("insert")[new] == 1
    # Revived, the old primary comes back as a secondary.
    wait_for(lambda: rs.sim_command({"simRevive": 0}, i=1).get("ok") == 1, what="simRevive")
    assert roles(rs)[0] == ("secondary", True)
    wait_for(lambda: [s["type"] for s in rs.lb.status()["servers"]
                      if s["address"] == rs.sim.servers[0]] == ["RSSecondary"],
             timeout=10, what="mongolb seeing the revived member as a secondary")


WRITERS = 2


def test_save_the_monkey(rs):
    client = pymongo.MongoClient(rs.lb.uri, retryWrites=True, serverSelectionTimeoutMS=30000,
                                 maxPoolSize=WRITERS + 2)
    coll = client.failover_monkey.docs
    coll.drop()
    lock = threading.Lock()
    ok_ids, errors = [], []
    stop = threading.Event()

    def writer(t):
        n = 0
        while not stop.is_set():
            _id = "w%d-%06d" % (t, n)
            n += 1
            try:
                coll.insert_one({"_id": _id, "n": n})
                with lock:
                    ok_ids.append(_id)
            except Exception as e:  # noqa: BLE001  (no error may reach the application)
                with lock:
                    errors.append((_id, repr(e)))

    def progress(n=60):
        with lock:
            target = len(ok_ids) + n
        wait_for(lambda: len(ok_ids) >= target, timeout=30, what="%d more writes" % n)

    def lb_type(i):
        return [s["type"] for s in rs.lb.status()["servers"]
                if s["address"] == rs.sim.servers[i]][0]

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(WRITERS)]
    for th in threads:
        th.start()
    events = []
    try:
        progress()
        for _ in range(3):
            r = rs.sim_command({"simStepDown": 1})
            events.append("stepDown -> %s" % r["primary"])
            progress()
        # A secondary goes down and comes back.
        p = primary_of(rs)
        sec = next(i for i in range(3) if i != p)
        rs.sim_command({"simKill": sec}, i=p)
        events.append("kill secondary %d" % sec)
        progress()
        wait_for(lambda: rs.sim_command({"simRevive": sec}, i=p).get("ok") == 1,
                 what="simRevive")
        events.append("revive %d" % sec)
        wait_for(lambda: lb_type(sec) == "RSSecondary", timeout=10,
                 what="mongolb seeing the revived secondary")
        progress()
        # The primary goes down: the simulator elects another member after 200 ms.
        p = primary_of(rs)
        other = next(i for i in range(3) if i != p)
        rs.sim_command({"simKill": p}, i=other)
        events.append("kill primary %d" % p)
        progress()
        new = primary_of(rs)
        assert new is not None and new != p
        wait_for(lambda: rs.sim_command({"simRevive": p}, i=new).get("ok") == 1,
                 what="simRevive")
        events.append("revive %d" % p)
        wait_for(lambda: lb_type(p) == "RSSecondary", timeout=10,
                 what="mongolb seeing the revived old primary as a secondary")
        progress()
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    try:
        assert not any(th.is_alive() for th in threads), "writer threads hung"
        print("events: %s; %d writes" % (events, len(ok_ids)))
        assert errors == [], errors[:5]
        found = [d["_id"] for d in coll.find({}, {"_id": 1})]
        assert len(found) == len(set(found))
        assert sorted(found) == sorted(ok_ids)
    finally:
        client.close()


def fail_point(c, i, commands, **data):
    data["failCommands"] = list(commands)
    r = c.sim.command(i, {"configureFailPoint": "failCommand", "mode": {"times": 1},
                          "data": data})
    assert r["ok"] == 1, r


def test_fail_points_are_retried_by_mongolb(rs):
    listener = CommandCounter()
    client = pymongo.MongoClient(rs.lb.uri, retryWrites=True, retryReads=False,
                                 serverSelectionTimeoutMS=10000, event_listeners=[listener])
    try:
        coll = client.failover_fp.docs
        coll.drop()
        coll.insert_one({"_id": "seed"})
        assert primary_of(rs) == 0
        cases = [
            ("insert", {"closeConnection": True}),
            ("find", {"closeConnection": True}),
            ("insert", {"errorCode": 91, "errorLabels": ["RetryableWriteError"]}),
            ("find", {"errorCode": 91}),
            ("insert", {"errorCode": 189, "errorLabels": ["RetryableWriteError"]}),
            ("find", {"errorCode": 11600}),
        ]
        for k, (cmd, data) in enumerate(cases):
            wait_for(lambda: lb_primary(rs) == rs.sim.servers[0], timeout=10,
                     what="the primary known again")
            before = rs.lb.counters()["retries"]
            rs.sim_stats(reset=True)
            listener.take(cmd)
            fail_point(rs, 0, [cmd], **data)
            if cmd == "insert":
                coll.insert_one({"_id": k})
            else:
                assert coll.find_one({"_id": "seed"}) == {"_id": "seed"}
            what = "%s with %s" % (cmd, data)
            assert listener.take(cmd) == 1, "the driver retried " + what
            assert rs.lb.counters()["retries"] > before, "mongolb did not retry " + what
            assert rs.command_counts(cmd)[0] >= 2, what
        ids = [d["_id"] for d in coll.find({}, {"_id": 1})]
        assert sorted(ids, key=str) == sorted(["seed", 0, 2, 4], key=str)
    finally:
        client.close()


def test_non_retryable_write_gets_a_clean_error(rs):
    client = pymongo.MongoClient(rs.lb.uri, retryWrites=False, serverSelectionTimeoutMS=10000)
    try:
        coll = client.failover_nr.docs
        coll.drop()
        coll.insert_one({"_id": "seed"})
        before = rs.lb.counters()["retries"]
        rs.sim_stats(reset=True)
        fail_point(rs, 0, ["insert"], closeConnection=True)
        with pytest.raises(OperationFailure) as e:
            coll.insert_one({"_id": "x"})
        # An error document from mongolb (HostUnreachable), not a dropped connection.
        assert e.value.code == 6, e.value.details
        assert "RetryableWriteError" not in (e.value.details or {}).get("errorLabels", [])
        # mongolb did not send it twice, and the application's next request works.
        assert rs.command_counts("insert")[0] == 1
        assert rs.lb.counters()["retries"] == before
        wait_for(lambda: lb_primary(rs) == rs.sim.servers[0], timeout=10,
                 what="the primary known again")
        assert coll.count_documents({"_id": "x"}) <= 1
        coll.insert_one({"_id": "y"})
        assert coll.count_documents({"_id": "y"}) == 1
    finally:
        client.close()


def test_not_writable_primary_inside_a_transaction_is_transient(rs):
    """A statement of a transaction refused with NotWritablePrimary (10107) and no label reaches
    the application as HostUnreachable with TransientTransactionError: the transaction is gone
    with that primary, and only retrying it whole (what with_transaction does on that label) can
    succeed; the state-change code itself is not passed on, since it would make the driver drop
    its pool to mongolb."""
    client = pymongo.MongoClient(rs.lb.uri, retryWrites=True, serverSelectionTimeoutMS=10000)
    try:
        coll = client.failover_txn_label.docs
        coll.drop()
        coll.insert_one({"_id": "seed"})
        wait_for(lambda: lb_primary(rs) == rs.sim.servers[0], timeout=10,
                 what="the primary known")
        # The failpoint's empty errorLabels replace whatever the simulator would add itself, so
        # the label can only come from mongolb.
        fail_point(rs, 0, ["insert"], errorCode=10107, errorLabels=[])
        with client.start_session() as s:
            s.start_transaction()
            # PyMongo raises NotMasterError (an AutoReconnect) for this code.
            with pytest.raises(pymongo.errors.PyMongoError) as e:
                coll.insert_one({"_id": "in-txn"}, session=s)
            s.abort_transaction()
        details = getattr(e.value, "details", None) or {}
        # Relayed as a lost server, not as NotWritablePrimary: that code would make the driver
        # take mongolb itself for a stepped-down primary and drop its pool.
        assert details.get("code") == 6 and "10107" in details.get("errmsg", ""), details
        # The reply itself must carry the label: PyMongo adds it on its own to this error class,
        # but drivers such as Node's do not, and see only what the server (here mongolb) sent.
        assert "TransientTransactionError" in details.get("errorLabels", []), details
        # Outside a transaction the same error gets no such label.
        wait_for(lambda: lb_primary(rs) == rs.sim.servers[0], timeout=10,
                 what="the primary known again")
        fail_point(rs, 0, ["find"], errorCode=10107, errorLabels=[])
        client2 = pymongo.MongoClient(rs.lb.uri, retryReads=False,
                                      serverSelectionTimeoutMS=10000)
        try:
            doc = client2.failover_txn_label.docs.find_one({"_id": "seed"})
            assert doc == {"_id": "seed"}  # taken back by mongolb and retried on the primary
        finally:
            client2.close()
    finally:
        client.close()


def test_plain_write_refused_as_not_primary_waits_for_the_new_primary(rs):
    """An insert without txnNumber (retryWrites=false) refused with NotWritablePrimary did not
    run, so mongolb sends it to the primary instead of passing the error on (found by the soak:
    only retryable writes were taken back)."""
    client = pymongo.MongoClient(rs.lb.uri, retryWrites=False, serverSelectionTimeoutMS=10000)
    try:
        coll = client.failover_plain_nwp.docs
        coll.drop()
        coll.insert_one({"_id": "seed"})
        wait_for(lambda: lb_primary(rs) == rs.sim.servers[0], timeout=10,
                 what="the primary known")
        before = rs.lb.counters()["retries"]
        rs.sim_stats(reset=True)
        fail_point(rs, 0, ["insert"], errorCode=10107, errorLabels=[])
        r = client.failover_plain_nwp.command("insert", "docs", documents=[{"_id": "plain"}])
        assert r["ok"] == 1 and r["n"] == 1, r
        assert rs.lb.counters()["retries"] > before
        assert coll.count_documents({"_id": "plain"}) == 1
    finally:
        client.close()


def test_a_secondary_that_is_not_who_it_says_gets_no_reads(rs):
    """SDAM's me rule: a secondary whose hello names another address than the one mongolb
    reached it at (a stale DNS name, a reused pod IP) is removed, and reads stop going to it
    (found by the faithful simulator: mongolb kept reading from it)."""
    client = pymongo.MongoClient(rs.lb.uri, serverSelectionTimeoutMS=10000)
    try:
        coll = client.failover_me.docs
        coll.drop()
        coll.insert_one({"_id": 1})
        rs.sim.command(0, {"simSetMe": {"server": 1, "me": "localhost:1"}})
        bad = rs.sim.servers[1]

        def dropped():
            for s in rs.lb.status()["servers"]:
                if s["address"] == bad:
                    return s["type"] == "Unknown" and "hello's me" in s.get("lastError", "")
            return True  # its slot was released
        wait_for(dropped, timeout=10, what="the mismatched member dropped")
        rs.sim_stats(reset=True)
        sec = coll.with_options(read_preference=pymongo.ReadPreference.SECONDARY)
        for _ in range(20):
            assert sec.find_one({"_id": 1}) == {"_id": 1}
        finds = rs.command_counts("find")
        assert finds[1] == 0 and finds[2] == 20, finds
    finally:
        rs.sim.command(0, {"simSetMe": {"server": 1, "me": None}})
        client.close()
