"""mongosim's transactions as MongoDB's: snapshot isolation, WriteConflict, rollback of writes a
dead primary had not replicated, and majority read concern. PyMongo connects to the simulator
directly; each test names what a real server does and the simulator checks it."""

import pymongo
import pytest
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from harness import start_sim


def client_of(sim, **kw):
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(sim.uri(), **kw)


@pytest.fixture(params=["mongos", "replset"])
def deployment(request):
    args = ("--mongos", "2") if request.param == "mongos" else ("--replset", "rs0",
                                                                "--members", "3")
    with start_sim(*args) as sim:
        client = client_of(sim)
        try:
            yield client
        finally:
            client.close()


def test_a_transaction_reads_its_snapshot_and_others_do_not_see_its_writes(deployment):
    """Reads in a transaction see the data as of its first statement, plus its own writes;
    nobody else sees its writes until it commits."""
    coll = deployment.t_iso.c
    coll.drop()
    coll.insert_many([{"_id": 1, "v": "before"}, {"_id": 2, "v": "before"}])
    with deployment.start_session() as s:
        s.start_transaction()
        assert coll.find_one({"_id": 1}, session=s) == {"_id": 1, "v": "before"}
        # Outside the transaction, a document changes and another is added.
        coll.update_one({"_id": 2}, {"$set": {"v": "after"}})
        coll.insert_one({"_id": 3})
        # The transaction still reads its snapshot.
        assert coll.find_one({"_id": 2}, session=s) == {"_id": 2, "v": "before"}
        assert coll.count_documents({}, session=s) == 2
        coll.insert_one({"_id": 10, "v": "txn"}, session=s)
        coll.update_one({"_id": 1}, {"$set": {"v": "txn"}}, session=s)
        assert coll.find_one({"_id": 10}, session=s) == {"_id": 10, "v": "txn"}
        # Its writes are invisible outside it.
        assert coll.find_one({"_id": 10}) is None
        assert coll.find_one({"_id": 1}) == {"_id": 1, "v": "before"}
        s.commit_transaction()
    assert coll.find_one({"_id": 10}) == {"_id": 10, "v": "txn"}
    assert coll.find_one({"_id": 1}) == {"_id": 1, "v": "txn"}
    # The write made outside it is kept.
    assert coll.find_one({"_id": 2}) == {"_id": 2, "v": "after"}
    assert sorted(d["_id"] for d in coll.find()) == [1, 2, 3, 10]


def test_an_aborted_transaction_leaves_nothing(deployment):
    coll = deployment.t_abort.c
    coll.drop()
    coll.insert_one({"_id": 1})
    with deployment.start_session() as s:
        s.start_transaction()
        coll.insert_one({"_id": 2}, session=s)
        coll.delete_one({"_id": 1}, session=s)
        deployment.t_abort.created_in_txn.insert_one({"_id": 1}, session=s)
        s.abort_transaction()
    assert sorted(d["_id"] for d in coll.find()) == [1]
    assert "created_in_txn" not in deployment.t_abort.list_collection_names()


def assert_write_conflict(e):
    assert e.code == 112 and e.details["codeName"] == "WriteConflict", e.details
    assert e.has_error_label("TransientTransactionError"), e.details


def test_two_transactions_writing_one_document_conflict(deployment):
    """The second transaction to write a document another open transaction wrote gets
    WriteConflict (112) with TransientTransactionError, and is aborted; the first commits."""
    coll = deployment.t_wc.c
    coll.drop()
    coll.insert_one({"_id": 1, "n": 0})
    with deployment.start_session() as a, deployment.start_session() as b:
        a.start_transaction()
        b.start_transaction()
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=a)
        with pytest.raises(OperationFailure) as e:
            coll.update_one({"_id": 1}, {"$inc": {"n": 10}}, session=b)
        assert_write_conflict(e.value)
        # b is aborted: its next statement gets NoSuchTransaction.
        with pytest.raises(OperationFailure) as e:
            coll.find_one({"_id": 1}, session=b)
        assert e.value.code == 251, e.value.details
        b.abort_transaction()
        a.commit_transaction()
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 1}


def test_a_transaction_writing_a_document_changed_since_its_snapshot_conflicts(deployment):
    coll = deployment.t_wc2.c
    coll.drop()
    coll.insert_many([{"_id": 1, "n": 0}, {"_id": 2}])
    with deployment.start_session() as a:
        a.start_transaction()
        coll.find_one({"_id": 2}, session=a)  # the snapshot is taken here
        coll.update_one({"_id": 1}, {"$set": {"n": 5}})  # outside, after the snapshot
        with pytest.raises(OperationFailure) as e:
            coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=a)
        assert_write_conflict(e.value)
        a.abort_transaction()
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 5}


def test_with_transaction_retries_a_write_conflict(deployment):
    """The driver's with_transaction runs the transaction again on TransientTransactionError:
    the conflicting update is applied once, on top of the other write."""
    coll = deployment.t_wc3.c
    coll.drop()
    coll.insert_one({"_id": 1, "n": 0})
    attempts = []

    def callback(session):
        attempts.append(1)
        coll.find_one({"_id": 1}, session=session)
        if len(attempts) == 1:
            coll.update_one({"_id": 1}, {"$inc": {"n": 100}})
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    with deployment.start_session() as s:
        s.with_transaction(callback)
    assert len(attempts) == 2
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 101}


# --- rollback on election -----------------------------------------------------------------------

def direct(sim, i, **kw):
    host, port = sim.host_port(i)
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(host, port, directConnection=True, **kw)


def raw(sim, i, cmd, db="t"):
    """One command on member i over a raw socket (for a chosen lsid and txnNumber)."""
    from harness import recv_msg, send_msg
    import socket

    cmd = dict(cmd)
    cmd["$db"] = db
    with socket.create_connection(sim.host_port(i), timeout=10) as s:
        send_msg(s, cmd, request_id=1)
        return recv_msg(s)[1]


def wait_primary(sim, candidates, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i in candidates:
            try:
                if raw(sim, i, {"hello": 1}, db="admin").get("isWritablePrimary"):
                    return i
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError("no primary among %s" % (candidates,))


def ids(client, i=None):
    return sorted(d["_id"] for d in client.t.d.find())


def test_writes_a_dead_primary_had_not_replicated_are_rolled_back():
    """The primary dies with writes no secondary has applied (w:1): the new primary has only what
    the live members had, the rest is rolled back (also on the old primary when it is back), a
    retryable write that was rolled back runs again when retried, and a w:majority write is
    never rolled back."""
    import uuid

    from bson.binary import Binary, UUID_SUBTYPE
    from bson.int64 import Int64

    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", "0,200,200") as sim:
        p = direct(sim, 0)
        try:
            p.t.get_collection("d", write_concern=WriteConcern("majority")).insert_one(
                {"_id": "majority"})
            for i in (1, 2):
                assert sim.command(0, {"simSetLag": {"server": i, "ms": 60000}})["ok"] == 1
            p.t.get_collection("d", write_concern=WriteConcern(w=1)).insert_one({"_id": "lost"})
            lsid = {"id": Binary(uuid.uuid4().bytes, UUID_SUBTYPE)}
            retried = {"insert": "d", "documents": [{"_id": "retried"}], "lsid": lsid,
                       "txnNumber": Int64(1), "writeConcern": {"w": 1}}
            assert raw(sim, 0, retried)["n"] == 1
            assert ids(p) == ["lost", "majority", "retried"]
        finally:
            p.close()
        assert sim.command(1, {"simKill": 0})["ok"] == 1
        new = wait_primary(sim, (1, 2))
        np_ = direct(sim, new)
        try:
            assert ids(np_) == ["majority"]
            assert sim.command(new, {"simStats": 1})["rolledBack"] == 2
            # The retryable write's record was rolled back with it: the retry runs it again.
            assert raw(sim, new, retried)["n"] == 1
            assert ids(np_) == ["majority", "retried"]
        finally:
            np_.close()
        # The old primary, back, has rolled back its lost write and follows the new primary.
        assert sim.command(new, {"simSetLag": {"server": 0, "ms": 0}})["ok"] == 1
        assert sim.command(new, {"simRevive": 0})["ok"] == 1
        old = direct(sim, 0)
        try:
            assert ids(old) == ["majority", "retried"]
        finally:
            old.close()


def test_a_step_down_rolls_nothing_back():
    """A primary that steps down hands everything over (catch-up): nothing is rolled back."""
    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", "0,60000,60000") as sim:
        p = direct(sim, 0, w=1)
        try:
            p.t.d.insert_one({"_id": 1})
        finally:
            p.close()
        assert sim.command(0, {"simStepDown": {"to": 1}})["ok"] == 1
        np_ = direct(sim, 1)
        try:
            assert ids(np_) == [1]
            assert sim.command(1, {"simStats": 1})["rolledBack"] == 0
        finally:
            np_.close()


# --- readConcern majority -----------------------------------------------------------------------

def test_majority_reads_see_only_what_a_majority_has_applied():
    """readConcern majority reads the data as of the majority commit point (given each member's
    lag); a local read on the primary sees everything."""
    import time

    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", "0,60000,60000") as sim:
        p = direct(sim, 0, w=1)
        try:
            p.t.m.insert_one({"_id": 1})  # w:1: only the primary has it
            majority = p.t.get_collection("m", read_concern=ReadConcern("majority"))
            assert [d["_id"] for d in p.t.m.find()] == [1]
            assert list(majority.find()) == []
            assert majority.count_documents({}) == 0
            # Member 1 catches up: the primary and it are a majority.
            assert sim.command(0, {"simSetLag": {"server": 1, "ms": 0}})["ok"] == 1
            deadline = time.monotonic() + 5
            while [d["_id"] for d in majority.find()] != [1]:
                assert time.monotonic() < deadline, "the majority read never saw the write"
                time.sleep(0.02)
            p.t.m.insert_one({"_id": 2})
            # Member 1 has no lag: a w:1 write is on a majority at once.
            assert [d["_id"] for d in majority.find()] == [1, 2]
            # A write only the primary has again (member 1 lags once more) stays invisible.
            assert sim.command(0, {"simSetLag": {"server": 1, "ms": 60000}})["ok"] == 1
            p.t.m.insert_one({"_id": 3})
            assert [d["_id"] for d in majority.find()] == [1, 2]
            assert [d["_id"] for d in p.t.m.find()] == [1, 2, 3]
        finally:
            p.close()
        # The member that lags reads its own (older) data, all of it majority-committed.
        s2 = direct(sim, 2)
        try:
            lagging = s2.t.get_collection("m", read_concern=ReadConcern("majority"))
            assert list(lagging.find()) == []
        finally:
            s2.close()


@pytest.mark.parametrize("commit_w", [1, "majority"])
def test_a_commit_rolled_back_is_unknown_to_the_new_primary(commit_w):
    """A transaction committed with w:1 whose commit no secondary applied is rolled back when its
    primary dies: a retried commitTransaction on the new primary gets NoSuchTransaction and its
    write is gone. Committed with w:majority, it survives and the retried commit succeeds."""
    import uuid

    from bson.binary import Binary, UUID_SUBTYPE
    from bson.int64 import Int64

    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", "0,200,200") as sim:
        p = direct(sim, 0)
        try:
            p.t.get_collection("d", write_concern=WriteConcern("majority")).insert_one(
                {"_id": "seed"})
        finally:
            p.close()
        if commit_w == 1:
            for i in (1, 2):
                assert sim.command(0, {"simSetLag": {"server": i, "ms": 60000}})["ok"] == 1
        lsid = {"id": Binary(uuid.uuid4().bytes, UUID_SUBTYPE)}
        txn = {"lsid": lsid, "txnNumber": Int64(1), "autocommit": False}
        r = raw(sim, 0, dict({"insert": "d", "documents": [{"_id": "txn"}],
                              "startTransaction": True}, **txn))
        assert r["ok"] == 1 and r["n"] == 1, r
        commit = dict({"commitTransaction": 1, "writeConcern": {"w": commit_w}}, **txn)
        assert raw(sim, 0, commit, db="admin")["ok"] == 1
        assert sim.command(1, {"simKill": 0})["ok"] == 1
        new = wait_primary(sim, (1, 2))
        r = raw(sim, new, commit, db="admin")
        np_ = direct(sim, new)
        try:
            if commit_w == 1:
                assert r["ok"] == 0 and r["code"] == 251, r
                assert "TransientTransactionError" in r.get("errorLabels", []), r
                assert ids(np_) == ["seed"]
            else:
                assert r["ok"] == 1, r
                assert ids(np_) == ["seed", "txn"]
        finally:
            np_.close()
