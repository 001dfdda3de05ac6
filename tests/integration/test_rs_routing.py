"""mongolb in replica-set mode (PyMongo 3.11): seeded with one member of
`mongosim --replset rs0 --members 3 --tags 'dc=ny;dc=ny,rack=2;dc=sf'`, it discovers the other two,
still looks like a mongos to the application, sends writes and primary reads to the primary,
spreads secondary reads over the secondaries (each getMore on the member that ran its find),
honours tag sets given by the application or by its own configuration, rejects an invalid
maxStalenessSeconds, and follows a step-down under a steady write load without losing a write.

Member 0 (dc=ny) starts as the primary, member 1 is dc=ny,rack=2 and member 2 is dc=sf.
"""

import threading
import time

import pymongo
import pytest
from pymongo.errors import OperationFailure
from pymongo.read_preferences import Secondary

from mongolb_harness import Cluster, real_seeds, wait_for

TAGS = "dc=ny;dc=ny,rack=2;dc=sf"
SIM_ARGS = ("--replset", "rs0", "--members", "3", "--tags", TAGS)
RS_CONFIG = {"upstream.mode": "replicaset", "upstream.replica_set": "rs0",
             "upstream.heartbeat_interval_ms": "500"}


def start_rs(extra=None):
    """A replica-set simulator behind a mongolb that is given only member 0 as its seed."""
    if real_seeds():
        pytest.skip("replica-set mode needs mongosim (MONGOLB_TEST_SEEDS names mongos routers)")
    config = dict(RS_CONFIG)
    config.update(extra or {})
    return Cluster(sim_args=SIM_ARGS, config=config, seed_indices=[0], expect_known=3)


def finish(c):
    """Stops both processes; fails on an unclean mongolb exit. Prints mongolb's log, which pytest
    shows only for a failed test."""
    code = c.close()
    log = c.lb.log()
    print("\n----- mongolb stderr (%s) -----\n%s" % (c.lb.log_path, c.lb.log_tail(80)))
    assert code == 0, "mongolb exited with %s after SIGTERM" % code
    assert "AddressSanitizer" not in log and "runtime error:" not in log


@pytest.fixture
def rs():
    c = start_rs()
    try:
        yield c
    finally:
        finish(c)


def client_for(c, **kw):
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(c.lb.uri, **kw)


def counts(c, name):
    return c.command_counts(name)


def seed_docs(client, db, n=10):
    coll = client[db].docs
    coll.drop()
    if n:
        coll.insert_many([{"_id": i, "v": i} for i in range(n)])
    return coll


def test_discovers_all_members_and_still_looks_like_a_mongos(rs):
    st = rs.lb.status()
    assert st["mode"] == "replicaset"
    types = sorted(s["type"] for s in st["servers"])
    assert types == ["RSPrimary", "RSSecondary", "RSSecondary"], st["servers"]
    by_addr = {s["address"]: s for s in st["servers"]}
    assert set(by_addr) == set(rs.sim.servers)
    assert by_addr[rs.sim.servers[0]]["type"] == "RSPrimary"
    assert by_addr[rs.sim.servers[2]]["tags"] == {"dc": "sf"}
    client = client_for(rs)
    try:
        assert client.is_mongos
        hello = client.admin.command("ismaster")
        assert hello["msg"] == "isdbgrid"
        assert "setName" not in hello and "hosts" not in hello
    finally:
        client.close()


def test_writes_and_default_reads_go_to_the_primary(rs):
    client = client_for(rs)
    try:
        coll = seed_docs(client, "rs_writes", 0)
        rs.sim_stats(reset=True)
        for i in range(20):
            coll.insert_one({"_id": i, "v": i})
        coll.insert_many([{"_id": 100 + i} for i in range(10)])
        for i in range(10):
            coll.update_one({"_id": i}, {"$inc": {"v": 1}})
        coll.delete_one({"_id": 19})
        for _ in range(20):
            assert coll.find_one({"_id": 3})["v"] == 4
        assert len(list(coll.find({}, batch_size=5))) == 29
    finally:
        client.close()
    stats = rs.sim_stats()
    ins, upd = counts(rs, "insert"), counts(rs, "update")
    assert ins == {0: 21, 1: 0, 2: 0}, ins
    assert upd == {0: 10, 1: 0, 2: 0}, upd
    assert counts(rs, "delete") == {0: 1, 1: 0, 2: 0}
    assert stats["servers"][0]["opcounters"]["insert"] == 30
    finds, gms = counts(rs, "find"), counts(rs, "getMore")
    assert finds == {0: 21, 1: 0, 2: 0}, finds
    assert gms[1] == 0 and gms[2] == 0 and gms[0] > 0, gms


def test_secondary_reads_spread_and_getmores_stay_put(rs):
    client = client_for(rs)
    try:
        seed_docs(client, "rs_secondary", 10)
        coll = client.rs_secondary.get_collection("docs", read_preference=Secondary())
        # One cursor first, to learn how many getMores a cursor of 10 documents in batches of 3
        # needs; every later cursor needs as many, on the member that ran its find.
        rs.sim_stats(reset=True)
        assert len(list(coll.find({}, batch_size=3))) == 10
        per_cursor = sum(counts(rs, "getMore").values())
        assert per_cursor >= 3
        rs.sim_stats(reset=True)
        cursors = 60
        for _ in range(cursors):
            assert [d["_id"] for d in coll.find({}, batch_size=3).sort("_id", 1)] == list(range(10))
    finally:
        client.close()
    finds, gms = counts(rs, "find"), counts(rs, "getMore")
    assert finds[0] == 0 and gms[0] == 0, (finds, gms)
    assert finds[1] > 0 and finds[2] > 0, finds
    assert finds[1] + finds[2] == cursors
    for i in (1, 2):
        assert gms[i] == finds[i] * per_cursor, (finds, gms)
    assert rs.lb.counters()["cursorNotFound"] == 0


def test_application_tag_set_reaches_only_that_member(rs):
    client = client_for(rs)
    try:
        seed_docs(client, "rs_tags", 10)
        coll = client.rs_tags.get_collection(
            "docs", read_preference=Secondary(tag_sets=[{"dc": "sf"}]))
        rs.sim_stats(reset=True)
        for _ in range(20):
            assert len(list(coll.find({}, batch_size=4))) == 10
        # A tag set no member has, then an empty one: the empty set matches any secondary.
        wide = client.rs_tags.get_collection(
            "docs", read_preference=Secondary(tag_sets=[{"dc": "tokyo"}, {}]))
        for _ in range(5):
            assert wide.find_one({"_id": 1}) is not None
    finally:
        client.close()
    finds = counts(rs, "find")
    assert finds[0] == 0 and finds[2] >= 20, finds
    assert finds[1] + finds[2] == 25, finds
    gms = counts(rs, "getMore")
    assert gms[0] == 0 and gms[1] == 0 and gms[2] > 0, gms


def test_configured_read_preference_and_tags_apply_to_reads_without_one():
    # PyMongo 3.11 always sends $readPreference (mode primary by default) over OP_MSG, so the
    # application without a read preference is played here on the wire: find, getMore and
    # aggregate carry no $readPreference, and mongolb must add its configured one.
    c = start_rs({"upstream.read_preference": "secondary",
                  "upstream.read_preference_tags": "dc:ny,rack:2"})
    try:
        client = client_for(c)
        try:
            coll = client.rs_conf_tags.docs
            coll.drop()
            coll.insert_many([{"_id": i} for i in range(10)])
        finally:
            client.close()
        c.sim_stats(reset=True)
        lb = c.lb
        for _ in range(20):
            r = lb.command({"find": "docs", "batchSize": 4}, db="rs_conf_tags")
            assert r["ok"] == 1, r
            ids = [d["_id"] for d in r["cursor"]["firstBatch"]]
            cid = r["cursor"]["id"]
            while cid:
                r = lb.command({"getMore": cid, "collection": "docs",
                                                   "batchSize": 4}, db="rs_conf_tags")
                assert r["ok"] == 1, r
                ids += [d["_id"] for d in r["cursor"]["nextBatch"]]
                cid = r["cursor"]["id"]
            assert sorted(ids) == list(range(10))
        r = lb.command({"aggregate": "docs", "pipeline": [{"$count": "n"}],
                                           "cursor": {}}, db="rs_conf_tags")
        assert r["ok"] == 1 and r["cursor"]["firstBatch"] == [{"n": 10}], r
        # Writes still go to the primary.
        r = lb.command({"insert": "docs", "documents": [{"_id": "w"}]},
                        db="rs_conf_tags")
        assert r["ok"] == 1 and r["n"] == 1, r
        finds = counts(c, "find")
        assert finds == {0: 0, 1: 20, 2: 0}, finds
        aggs = counts(c, "aggregate")
        assert aggs == {0: 0, 1: 1, 2: 0}, aggs
        gms = counts(c, "getMore")
        assert gms[0] == 0 and gms[2] == 0 and gms[1] > 0, gms
        assert counts(c, "insert") == {0: 1, 1: 0, 2: 0}
    finally:
        finish(c)


def test_invalid_max_staleness_is_rejected_with_code_160(rs):
    client = client_for(rs)
    try:
        seed_docs(client, "rs_stale", 3)
        coll = client.rs_stale.get_collection(
            "docs", read_preference=Secondary(max_staleness=10))
        with pytest.raises(OperationFailure) as e:
            coll.find_one({})
        assert e.value.code == 160, e.value.details
        # A valid bound is accepted (the simulated secondaries lag 0.5 s at most).
        ok = client.rs_stale.get_collection(
            "docs", read_preference=Secondary(max_staleness=90))
        assert ok.find_one({"_id": 1}) == {"_id": 1, "v": 1}
    finally:
        client.close()


THREADS = 4


def test_step_down_under_write_load(rs):
    client = client_for(rs, retryWrites=True, maxPoolSize=THREADS + 2)
    coll = client.rs_stepdown.docs
    coll.drop()
    lock = threading.Lock()
    ok_ids, failures = [], []
    stop = threading.Event()

    def writer(t):
        n = 0
        while not stop.is_set():
            _id = "t%d-%d" % (t, n)
            n += 1
            try:
                coll.insert_one({"_id": _id, "t": t})
                with lock:
                    ok_ids.append(_id)
            except Exception as e:  # noqa: BLE001  (every failure is recorded and asserted)
                with lock:
                    failures.append((_id, repr(e)))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    try:
        wait_for(lambda: len(ok_ids) >= 100, timeout=20, what="writes before the step-down")
        t0 = time.monotonic()
        r = rs.sim_command({"simStepDown": 1}, i=0)
        new = rs.sim.servers.index(r["primary"])
        assert new != 0

        def new_primary_inserts():
            st = rs.sim.command(new, {"simStats": 1})
            return st["servers"][new]["opcounters"]["insert"] > 0

        wait_for(new_primary_inserts, timeout=10, step=0.005,
                 what="a successful insert on the new primary")
        failover = time.monotonic() - t0
        print("step-down to first insert on the new primary: %.3f s" % failover)
        with lock:
            at_failover = len(ok_ids)
        wait_for(lambda: len(ok_ids) >= at_failover + 100, timeout=20,
                 what="writes after the step-down")
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    try:
        assert not any(th.is_alive() for th in threads), "writer threads hung"
        assert failover < 2.0, "writes reached the new primary only after %.3f s" % failover
        # At most the writes in flight at the step-down may fail; mongolb retries them, so none.
        assert len(failures) <= THREADS, failures
        assert failures == [], failures
        stats = rs.sim_stats()
        assert stats["servers"][new]["role"] == "primary"
        found = [d["_id"] for d in coll.find({}, {"_id": 1})]
        assert len(found) == len(set(found))
        missing = set(ok_ids) - set(found)
        assert not missing, sorted(missing)[:10]
        # Nothing beyond the successes and the failed attempts was written.
        assert len(found) <= len(ok_ids) + len(failures)
        assert rs.lb.server_type(rs.sim.servers[new]) in ("RSPrimary",)
    finally:
        client.close()
