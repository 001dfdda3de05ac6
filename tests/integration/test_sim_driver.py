"""mongosim seen through PyMongo (Debian's 3.11), connecting directly to the simulator: what a
user of a real deployment would see. These tests are the simulator's "Done when" list."""

import time

import pymongo
import pytest
from bson.int64 import Int64
from pymongo.errors import OperationFailure
from pymongo.read_preferences import Secondary

from harness import start_sim


def wait_for(pred, timeout=10.0, step=0.02):
    """Polls pred until it returns a truthy value; returns it, or fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %.1fs" % timeout)
        time.sleep(step)


def count(coll, filt):
    """Counts with the count command. (PyMongo's count_documents runs an aggregation with $group,
    which the simulator's store does not implement.)"""
    return coll.database.command("count", coll.name, query=filt)["n"]


def rs_client(sim, **kw):
    host, port = sim.host_port(0)
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    # PyMongo marks a server Unknown after a "not primary" or shutdown error and waits for the
    # next heartbeat: keep it short so that tests recover fast.
    kw.setdefault("heartbeatFrequencyMS", 500)
    return pymongo.MongoClient(host, port, replicaSet=sim.set_name, **kw)


def direct(sim, i, **kw):
    host, port = sim.host_port(i)
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    kw.setdefault("heartbeatFrequencyMS", 500)
    return pymongo.MongoClient(host, port, directConnection=True, **kw)


def test_every_mode_starts_and_says_hello():
    with start_sim("--mongos", "3") as sim:
        assert len(sim.servers) == 3
        for i in range(3):
            hello = sim.command(i, {"hello": 1, "helloOk": True})
            assert hello["msg"] == "isdbgrid"
            assert hello["isWritablePrimary"] is True
            assert hello["helloOk"] is True
            assert hello["maxWireVersion"] == 21
            assert hello["maxMessageSizeBytes"] == 48000000
            assert "setName" not in hello
        ids = {sim.command(i, {"isMaster": 1})["topologyVersion"]["processId"] for i in range(3)}
        assert len(ids) == 3
    with start_sim("--standalone", "--max-wire-version", "17") as sim:
        hello = sim.command(0, {"isMaster": 1})
        assert hello["ismaster"] is True
        assert "msg" not in hello and "setName" not in hello and "helloOk" not in hello
        assert hello["maxWireVersion"] == 17
    with start_sim("--replset", "rs9", "--members", "2") as sim:
        p, s = sim.command(0, {"hello": 1}), sim.command(1, {"hello": 1})
        assert p["setName"] == s["setName"] == "rs9"
        assert p["isWritablePrimary"] and not p["secondary"] and "electionId" in p
        assert not s["isWritablePrimary"] and s["secondary"] and "electionId" not in s
        assert p["hosts"] == sim.servers and s["primary"] == sim.servers[0]
        assert s["me"] == sim.servers[1]


def test_replica_set_discovered_from_one_seed(replset):
    client = rs_client(replset)
    try:
        client.admin.command("ping")
        assert "%s:%d" % client.primary == replset.servers[0]
        wait_for(lambda: len(client.secondaries) == 2)
        assert {"%s:%d" % a for a in client.secondaries} == set(replset.servers[1:])
    finally:
        client.close()


def test_secondary_reads_with_tag_sets(replset):
    client = rs_client(replset)
    try:
        client.test.people.insert_many([{"_id": i} for i in range(5)])
        wait_for(lambda: len(client.secondaries) == 2)
        replset.stats(reset=True)
        coll = client.test.get_collection("people",
                                          read_preference=Secondary(tag_sets=[{"dc": "sf"}]))
        for _ in range(5):
            assert len(list(coll.find())) == 5
        per = [s["commands"].get("find", 0) for s in replset.stats()["servers"]]
        assert per == [0, 0, 5]
        coll = client.test.get_collection(
            "people", read_preference=Secondary(tag_sets=[{"dc": "ny", "rack": "2"}]))
        replset.stats(reset=True)
        assert len(list(coll.find({"_id": {"$gt": 2}}))) == 2
        per = [s["commands"].get("find", 0) for s in replset.stats()["servers"]]
        assert per == [0, 1, 0]
    finally:
        client.close()


def test_crud_round_trips(replset):
    client = rs_client(replset)
    try:
        c = client.shop.items
        c.insert_one({"_id": 1, "name": "pen", "qty": 5})
        c.insert_many([{"_id": i, "name": "item%d" % i, "qty": i} for i in range(2, 12)])
        assert c.find_one({"_id": 1}) == {"_id": 1, "name": "pen", "qty": 5}
        r = c.update_one({"_id": 1}, {"$set": {"name": "ink"}, "$inc": {"qty": 2}})
        assert (r.matched_count, r.modified_count) == (1, 1)
        assert c.find_one({"_id": 1}, {"qty": 1}) == {"_id": 1, "qty": 7}
        r = c.update_one({"_id": 99}, {"$set": {"qty": 1}}, upsert=True)
        assert r.upserted_id == 99
        r = c.update_many({"qty": {"$gt": 9}}, {"$inc": {"qty": 100}})
        assert r.modified_count == 2  # qty 10 and 11
        assert [d["_id"] for d in c.find({"qty": {"$lt": 4}}).sort("qty", 1)] == [99, 2, 3]
        assert [d["_id"] for d in c.find({"_id": {"$in": [3, 5, 7]}}).sort("_id", -1)] == [7, 5, 3]
        assert [d["_id"] for d in c.find().sort("_id", 1).skip(2).limit(3)] == [3, 4, 5]
        assert count(c, {}) == 12
        assert count(c, {"qty": {"$gt": 100}}) == 2
        doc = c.find_one_and_update({"_id": 2}, {"$inc": {"qty": 1}},
                                    return_document=pymongo.ReturnDocument.AFTER)
        assert doc["qty"] == 3
        out = list(c.aggregate([{"$match": {"qty": {"$gt": 4}}}, {"$sort": {"qty": -1}},
                                {"$skip": 1}, {"$limit": 2}]))
        assert [d["_id"] for d in out] == [10, 9]
        assert list(c.aggregate([{"$match": {"qty": {"$gt": 4}}}, {"$count": "n"}])) == [{"n": 8}]
        assert c.delete_one({"_id": 99}).deleted_count == 1
        assert c.delete_many({"qty": {"$gt": 100}}).deleted_count == 2
        assert count(c, {}) == 9
        assert "items" in client.shop.list_collection_names()
        assert [i["name"] for i in c.list_indexes()] == ["_id_"]
        client.shop.create_collection("empty")
        client.shop.drop_collection("empty")
        assert "empty" not in client.shop.list_collection_names()
        with pytest.raises(OperationFailure) as e:
            client.shop.command("noSuchCommand")
        assert e.value.code == 59
    finally:
        client.close()


def test_cursor_of_1000_documents_in_batches(mongos2):
    client = direct(mongos2, 0)
    try:
        c = client.test.big
        c.insert_many([{"_id": i, "v": "x" * 20} for i in range(1000)])
        mongos2.stats(reset=True)
        seen = [d["_id"] for d in c.find().sort("_id", 1).batch_size(100)]
        assert seen == list(range(1000))
        st = mongos2.stats()["servers"][0]
        assert st["commands"]["find"] == 1 and st["commands"]["getMore"] == 9
        assert st["cursorsOpen"] == 0
        # The default first batch is 101 documents, a getMore without batchSize the rest.
        first = client.test.command("find", "big")["cursor"]
        assert len(first["firstBatch"]) == 101 and first["id"] != 0
        rest = client.test.command("getMore", first["id"], collection="big")["cursor"]
        assert len(rest["nextBatch"]) == 899 and rest["id"] == 0
        assert mongos2.stats()["servers"][0]["cursorsOpen"] == 0
    finally:
        client.close()


def test_getmore_on_another_mongos_gets_cursor_not_found(mongos2):
    a, b = direct(mongos2, 0), direct(mongos2, 1)
    try:
        a.test.c.insert_many([{"_id": i} for i in range(50)])
        reply = a.test.command("find", "c", batchSize=10)
        cid = reply["cursor"]["id"]
        assert cid != 0 and len(reply["cursor"]["firstBatch"]) == 10
        with pytest.raises(OperationFailure) as e:
            b.test.command("getMore", Int64(cid), collection="c")
        assert e.value.code == 43
        assert e.value.details["codeName"] == "CursorNotFound"
        # killCursors of an id this mongos does not know succeeds and lists it, as on MongoDB,
        # and leaves the cursor of the other mongos alone.
        r = b.test.command("killCursors", "c", cursors=[Int64(cid)])
        assert r["ok"] == 1 and r["cursorsNotFound"] == [cid] and r["cursorsKilled"] == []
        assert r["cursorsAlive"] == [] and r["cursorsUnknown"] == []
        # The server that opened it still serves it, and checks the namespace.
        with pytest.raises(OperationFailure) as e:
            a.test.command("getMore", Int64(cid), collection="other")
        assert e.value.code == 13
        more = a.test.command("getMore", Int64(cid), collection="c", batchSize=5)
        assert [d["_id"] for d in more["cursor"]["nextBatch"]] == [10, 11, 12, 13, 14]
        killed = a.test.command("killCursors", "c", cursors=[Int64(cid), Int64(12345)])
        assert killed["cursorsKilled"] == [cid] and killed["cursorsNotFound"] == [12345]
        assert mongos2.stats()["servers"][0]["cursorsOpen"] == 0
    finally:
        a.close()
        b.close()


def test_step_down_elects_a_new_primary_pymongo_finds(replset):
    client = rs_client(replset, retryWrites=True)
    try:
        client.test.c.insert_one({"_id": "before"})
        old = replset.command(0, {"hello": 1})["electionId"]
        r = replset.command(2, {"simStepDown": 1})
        assert r["ok"] == 1 and r["primary"] == replset.servers[1]
        wait_for(lambda: client.primary and "%s:%d" % client.primary == replset.servers[1])
        new = replset.command(1, {"hello": 1})
        assert new["isWritablePrimary"] and new["electionId"] > old
        assert replset.command(0, {"hello": 1})["secondary"] is True
        client.test.c.insert_one({"_id": "after"})
        assert count(client.test.c, {}) == 2
        # A write sent straight to the old primary is refused, as a real secondary does.
        with pytest.raises(pymongo.errors.NotMasterError) as e:
            direct(replset, 0).test.c.insert_one({"_id": "nope"})
        assert e.value.details["code"] == 10107
    finally:
        client.close()


def test_fail_command_failpoint_fires_as_configured(replset):
    client = rs_client(replset, retryWrites=False)
    try:
        client.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 2},
                              "data": {"failCommands": ["insert"], "errorCode": 2}})
        for _ in range(2):
            with pytest.raises(OperationFailure) as e:
                client.test.c.insert_one({"x": 1})
            assert e.value.code == 2
        client.test.c.insert_one({"x": 1})
        assert count(client.test.c, {}) == 1

        # errorLabels given in data are returned as they are.
        client.admin.command({"configureFailPoint": "failCommand", "mode": "alwaysOn",
                              "data": {"failCommands": ["find"], "errorCode": 50,
                                       "errorLabels": ["Custom"]}})
        with pytest.raises(OperationFailure) as e:
            client.test.c.find_one()
        assert e.value.code == 50 and e.value.details["errorLabels"] == ["Custom"]
        assert e.value.details["codeName"] == "MaxTimeMSExpired"
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        assert client.test.c.find_one()["x"] == 1

        # closeConnection: the driver sees a network error; the next command works.
        client.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
                              "data": {"failCommands": ["count"], "closeConnection": True}})
        with pytest.raises(pymongo.errors.AutoReconnect):
            client.test.command("count", "c")
        assert client.test.command("count", "c")["n"] == 1
    finally:
        client.close()


def test_failpoint_retryable_error_is_retried_by_the_driver(replset):
    client = rs_client(replset, retryWrites=True)
    try:
        client.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
                              "data": {"failCommands": ["insert"], "errorCode": 6}})
        replset.stats(reset=True)
        client.test.c.insert_one({"_id": 1})
        assert count(client.test.c, {}) == 1
        assert replset.stats()["servers"][0]["commands"]["insert"] == 2
    finally:
        client.close()


def test_repeated_retryable_write_is_applied_once(mongos2):
    import uuid

    from bson.binary import Binary, UUID_SUBTYPE

    # Raw commands, because drivers replace the lsid of a command with their own session's.
    lsid = {"id": Binary(uuid.uuid4().bytes, UUID_SUBTYPE)}
    mongos2.command(0, {"insert": "c", "documents": [{"_id": 1, "n": 0}]}, db="test")
    cmd = {"update": "c", "updates": [{"q": {"_id": 1}, "u": {"$inc": {"n": 1}}}],
           "lsid": lsid, "txnNumber": Int64(7)}
    first = mongos2.command(0, cmd, db="test")
    again = mongos2.command(0, cmd, db="test")
    elsewhere = mongos2.command(1, cmd, db="test")
    assert first["nModified"] == again["nModified"] == elsewhere["nModified"] == 1
    assert first == again == elsewhere

    def n():
        return mongos2.command(0, {"find": "c"}, db="test")["cursor"]["firstBatch"][0]["n"]

    assert n() == 1
    assert mongos2.stats()["retriedWritesDeduplicated"] == 2
    # A new txnNumber is a new write; an older one is refused, as MongoDB does.
    cmd["txnNumber"] = Int64(8)
    mongos2.command(1, cmd, db="test")
    assert n() == 2
    cmd["txnNumber"] = Int64(6)
    assert mongos2.command(0, cmd, db="test")["code"] == 225
    assert n() == 2


def test_driver_retry_after_write_concern_error_is_applied_once(replset):
    client = rs_client(replset, retryWrites=True)
    try:
        c = client.test.r
        c.insert_one({"_id": 1, "n": 0})
        client.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
                              "data": {"failCommands": ["update"],
                                       "writeConcernError": {
                                           "code": 64, "errmsg": "waiting for replication timed out",
                                           "errorLabels": ["RetryableWriteError"]}}})
        replset.stats(reset=True)
        assert c.update_one({"_id": 1}, {"$inc": {"n": 1}}).modified_count == 1
        assert c.find_one({"_id": 1})["n"] == 1
        st = replset.stats()
        assert st["servers"][0]["commands"]["update"] == 2
        assert st["retriedWritesDeduplicated"] == 1
    finally:
        client.close()


def test_transactions_commit_abort_and_pinning(mongos2):
    a, b = direct(mongos2, 0), direct(mongos2, 1)
    try:
        a.test.c.insert_one({"_id": "seed"})
        with a.start_session() as s:
            s.start_transaction()
            a.test.c.insert_one({"_id": "t1"}, session=s)
            s.abort_transaction()
        assert a.test.c.find_one({"_id": "t1"}) is None
        with a.start_session() as s:
            s.start_transaction()
            a.test.c.insert_one({"_id": "t2"}, session=s)
            s.commit_transaction()
        assert a.test.c.find_one({"_id": "t2"}) is not None
        log = mongos2.command(0, {"simTxnLog": 1})["servers"]
        entries = [e for e in log[0]["entries"] if e["inTxn"]]
        assert [e["cmd"] for e in entries] == ["insert", "abortTransaction", "insert",
                                               "commitTransaction"]
        assert log[1]["entries"] == []

        # A commit that reaches a mongos that does not hold the transaction fails as on a real
        # cluster whose proxy forgot to pin it.
        with a.start_session() as s:
            s.start_transaction()
            a.test.c.insert_one({"_id": "t3"}, session=s)
            with pytest.raises(OperationFailure) as e:
                b.admin.command({"commitTransaction": 1, "lsid": s.session_id,
                                 "txnNumber": Int64(s._server_session.transaction_id),
                                 "autocommit": False})
            assert e.value.code == 251
            assert "TransientTransactionError" in e.value.details["errorLabels"]
            s.abort_transaction()
        assert a.test.c.find_one({"_id": "t3"}) is None
    finally:
        a.close()
        b.close()


def new_lsid():
    import uuid

    from bson.binary import Binary, UUID_SUBTYPE

    return {"id": Binary(uuid.uuid4().bytes, UUID_SUBTYPE)}


def labels(reply):
    """The errorLabels a server put in a raw reply ([] when it put none)."""
    return reply.get("errorLabels", [])


def test_step_down_in_a_transaction_gives_transient_errors(replset):
    """What mongod answers to the statements of a transaction cut by a step-down: raw commands,
    so that the labels seen are the server's and not ones a driver adds."""
    lsid = new_lsid()

    def txn(cmd, n=1, **more):
        doc = dict(cmd, lsid=lsid, txnNumber=Int64(n), autocommit=False)
        doc.update(more)
        return doc

    r = replset.command(0, txn({"insert": "t", "documents": [{"_id": 1}]}, startTransaction=True),
                        db="test")
    assert r["ok"] == 1 and "errorLabels" not in r
    assert replset.command(2, {"simStepDown": {"to": 1}})["primary"] == replset.servers[1]
    # The old primary refuses to continue the transaction, whatever the statement.
    for cmd in ({"insert": "t", "documents": [{"_id": 2}]},
                {"find": "t", "$readPreference": {"mode": "secondaryPreferred"}}):
        r = replset.command(0, txn(cmd), db="test")
        assert r["code"] == 10107 and r["codeName"] == "NotWritablePrimary", r
        assert labels(r) == ["TransientTransactionError"], r
    # The new primary never heard of it.
    r = replset.command(1, txn({"insert": "t", "documents": [{"_id": 2}]}), db="test")
    assert r["code"] == 251 and labels(r) == ["TransientTransactionError"], r
    # A commit is not transient when it reaches a secondary (its outcome is unknown there): it is
    # a retryable write error instead. On the primary, NoSuchTransaction is transient.
    r = replset.command(0, txn({"commitTransaction": 1}), db="admin")
    assert r["code"] == 10107 and labels(r) == ["RetryableWriteError"], r
    r = replset.command(1, txn({"commitTransaction": 1}), db="admin")
    assert r["code"] == 251 and labels(r) == ["TransientTransactionError"], r
    assert replset.command(1, {"find": "t"}, db="test")["cursor"]["firstBatch"] == []
    # Outside a transaction: a retryable write gets RetryableWriteError, a plain write nothing.
    r = replset.command(0, {"insert": "t", "documents": [{"_id": 3}], "lsid": lsid,
                            "txnNumber": Int64(9)}, db="test")
    assert r["code"] == 10107 and labels(r) == ["RetryableWriteError"], r
    r = replset.command(0, {"insert": "t", "documents": [{"_id": 3}]}, db="test")
    assert r["code"] == 10107 and "errorLabels" not in r, r


def test_commit_retried_on_another_mongos_is_recovered_with_the_token(mongos2):
    """A commit retried on a mongos that did not route the transaction (its own one became
    unreachable) is answered from the transaction's outcome, which a real mongos finds through the
    recoveryToken: raw commands, so that what is checked is the server's answer."""
    lsid = new_lsid()

    def txn(cmd, n, **more):
        doc = dict(cmd, lsid=lsid, txnNumber=Int64(n), autocommit=False)
        doc.update(more)
        return doc

    def start(n, _id):
        r = mongos2.command(0, txn({"insert": "rt", "documents": [{"_id": _id}]}, n,
                                   startTransaction=True), db="test")
        assert r["ok"] == 1, r
        return r["recoveryToken"]

    def commit(i, n, **more):
        return mongos2.command(i, txn({"commitTransaction": 1}, n, **more), db="admin")

    def ids():
        return [d["_id"] for d in mongos2.command(0, {"find": "rt"}, db="test")["cursor"][
            "firstBatch"]]

    # Committed on mongos 0: the commit retried on mongos 1 with the token succeeds, and so does
    # a commit retried on mongos 0 itself. The transaction's writes are there once.
    token = start(1, "committed")
    assert token == {"recoveryShardId": "mongosim"}
    r = commit(0, 1, recoveryToken=token)
    assert r["ok"] == 1 and r["recoveryToken"] == token, r
    r = commit(1, 1, recoveryToken=token)
    assert r["ok"] == 1 and "errorLabels" not in r, r
    # A mongos that only recovered the decision knows no shard of its own: its token is empty.
    assert r["recoveryToken"] == {}, r
    assert commit(0, 1, recoveryToken=token)["ok"] == 1
    assert commit(1, 1, recoveryToken=token)["ok"] == 1
    assert ids() == ["committed"]
    # Without the token the mongos cannot recover anything (drivers always send it).
    r = commit(1, 1)
    assert r["code"] == 251 and labels(r) == ["TransientTransactionError"], r

    # Aborted on mongos 0: NoSuchTransaction, which lets the driver run the transaction again.
    token = start(2, "aborted")
    assert mongos2.command(0, txn({"abortTransaction": 1}, 2), db="admin")["ok"] == 1
    r = commit(1, 2, recoveryToken=token)
    assert r["code"] == 251 and r["codeName"] == "NoSuchTransaction", r
    assert labels(r) == ["TransientTransactionError"], r
    # Never started anywhere: the same.
    r = commit(1, 3, recoveryToken=token)
    assert r["code"] == 251 and labels(r) == ["TransientTransactionError"], r
    assert ids() == ["committed"]

    # Still open on mongos 0 (its commit never arrived): recovering the decision aborts it, as the
    # shard does, so that it cannot commit after the driver was told to run it again.
    token = start(4, "open")
    r = commit(1, 4, recoveryToken=token)
    assert r["code"] == 251 and labels(r) == ["TransientTransactionError"], r
    r = commit(0, 4, recoveryToken=token)
    assert r["code"] == 251, r
    assert ids() == ["committed"]

    # An empty token (a transaction that only read) and a token naming an unknown shard.
    start(5, "read-only")
    r = commit(1, 5, recoveryToken={})
    assert r["code"] == 251 and labels(r) == ["TransientTransactionError"], r
    r = commit(1, 5, recoveryToken={"recoveryShardId": "elsewhere"})
    assert r["code"] == 70 and r["codeName"] == "ShardNotFound" and labels(r) == [], r
    # An abort on a mongos that did not route the transaction is not recovered.
    r = mongos2.command(1, txn({"abortTransaction": 1}, 5), db="admin")
    assert r["code"] == 251, r
    assert commit(0, 5)["ok"] == 1
    assert sorted(ids()) == ["committed", "read-only"]


def committed_on(sim, via, i):
    """Whether server i has run a commitTransaction (asked through server via)."""
    log = sim.command(via, {"simTxnLog": 1})["servers"][i]["entries"]
    return any(e["cmd"] == "commitTransaction" for e in log)


def test_pymongo_commit_retried_on_another_mongos_succeeds_once():
    """PyMongo through two mongoses: the commit runs on the pinned mongos, which dies before its
    reply leaves; the driver retries the commit on the other mongos with the recoveryToken, which
    succeeds, so with_transaction does not run the transaction again."""
    import threading

    with start_sim("--mongos", "2") as sim:
        client = pymongo.MongoClient(sim.uri(), serverSelectionTimeoutMS=5000,
                                     heartbeatFrequencyMS=500)
        try:
            coll = client.test.get_collection("once")
            coll.insert_one({"_id": "seed"})
            attempts, pinned, threads = [], [], []

            def kill_after_commit(p):
                wait_for(lambda: committed_on(sim, 1 - p, p))
                sim.command(1 - p, {"simKill": p})

            def callback(session):
                attempts.append(1)
                coll.insert_one({"_id": "t%d" % len(attempts)}, session=session)
                if len(attempts) > 1:
                    return
                p = sim.servers.index("%s:%d" % session._pinned_address)
                pinned.append(p)
                # The commit runs on the pinned mongos and its reply is held back; the mongos
                # then dies, so the driver sees a network error after the commit took effect.
                sim.command(p, {"configureFailPoint": "failCommand", "mode": {"times": 1},
                                "data": {"failCommands": ["commitTransaction"],
                                         "blockConnection": True, "blockTimeMS": 3000}})
                t = threading.Thread(target=kill_after_commit, args=(p,), daemon=True)
                t.start()
                threads.append(t)

            with client.start_session() as s:
                s.with_transaction(callback)
            threads[0].join()
            assert attempts == [1]
            p, other = pinned[0], 1 - pinned[0]
            assert sorted(d["_id"] for d in coll.find()) == ["seed", "t1"]
            log = sim.command(other, {"simTxnLog": 1})["servers"]
            commits = [[e["cmd"] for e in srv["entries"] if e["cmd"] == "commitTransaction"]
                       for srv in log]
            assert commits[p] == commits[other] == ["commitTransaction"], commits
        finally:
            client.close()


def test_commit_retried_on_the_new_primary_after_a_step_down(replset):
    """mongod: a committed transaction is known to every member through replication, so its commit
    retried on the new primary succeeds; one that never committed is NoSuchTransaction there."""
    lsid = new_lsid()

    def txn(cmd, n, **more):
        doc = dict(cmd, lsid=lsid, txnNumber=Int64(n), autocommit=False)
        doc.update(more)
        return doc

    r = replset.command(0, txn({"insert": "np", "documents": [{"_id": 1}]}, 1,
                               startTransaction=True), db="test")
    assert r["ok"] == 1 and "recoveryToken" not in r, r
    assert replset.command(0, txn({"commitTransaction": 1}, 1), db="admin")["ok"] == 1
    # Retried on the same member: mongod answers a commit of a committed transaction with success.
    r = replset.command(0, txn({"commitTransaction": 1}, 1), db="admin")
    assert r["ok"] == 1 and "errorLabels" not in r, r
    # A second transaction is left open, then the primary steps down (which aborts it).
    assert replset.command(0, txn({"insert": "np", "documents": [{"_id": 2}]}, 2,
                                  startTransaction=True), db="test")["ok"] == 1
    assert replset.command(2, {"simStepDown": {"to": 1}})["primary"] == replset.servers[1]
    r = replset.command(1, txn({"commitTransaction": 1}, 1), db="admin")
    assert r["ok"] == 1 and "errorLabels" not in r, r
    r = replset.command(1, txn({"abortTransaction": 1}, 1), db="admin")
    assert r["code"] == 256 and r["codeName"] == "TransactionCommitted", r
    r = replset.command(1, txn({"commitTransaction": 1}, 2), db="admin")
    assert r["code"] == 251 and labels(r) == ["TransientTransactionError"], r
    # The old primary, now a secondary, refuses the commit as before.
    r = replset.command(0, txn({"commitTransaction": 1}, 1), db="admin")
    assert r["code"] == 10107 and labels(r) == ["RetryableWriteError"], r
    # Still known after another election, and stats resets do not forget it.
    replset.stats(reset=True)
    assert replset.command(2, {"simStepDown": {"to": 2}})["primary"] == replset.servers[2]
    assert replset.command(2, txn({"commitTransaction": 1}, 1), db="admin")["ok"] == 1
    assert [d["_id"] for d in replset.command(2, {"find": "np"}, db="test")["cursor"][
        "firstBatch"]] == [1]


def test_pymongo_commit_retried_on_the_new_primary_succeeds(replset):
    """PyMongo against the replica set: the primary commits, and steps down before its reply
    (with a PrimarySteppedDown write-concern error) leaves; the driver retries the commit on the
    new primary, which knows through replication that the transaction committed, so
    with_transaction runs the transaction once."""
    import threading

    client = rs_client(replset)
    try:
        coll = client.test.get_collection("rsonce")
        coll.insert_one({"_id": "seed"})
        attempts, threads = [], []

        def step_down_after_commit():
            wait_for(lambda: committed_on(replset, 2, 0))
            replset.command(2, {"simStepDown": {"to": 1}})

        def callback(session):
            attempts.append(1)
            coll.insert_one({"_id": "t%d" % len(attempts)}, session=session)
            if len(attempts) > 1:
                return
            replset.command(0, {"configureFailPoint": "failCommand", "mode": {"times": 1},
                                "data": {"failCommands": ["commitTransaction"],
                                         "blockConnection": True, "blockTimeMS": 1500,
                                         "writeConcernError": {
                                             "code": 189, "codeName": "PrimarySteppedDown",
                                             "errmsg": "primary stepped down"}}})
            t = threading.Thread(target=step_down_after_commit, daemon=True)
            t.start()
            threads.append(t)

        with client.start_session() as s:
            s.with_transaction(callback)
        threads[0].join()
        assert attempts == [1]
        assert sorted(d["_id"] for d in coll.find()) == ["seed", "t1"]
        log = replset.command(0, {"simTxnLog": 1})["servers"]
        commits = [[e["cmd"] for e in srv["entries"] if e["cmd"] == "commitTransaction"]
                   for srv in log]
        assert commits[0] == ["commitTransaction"] and "commitTransaction" in commits[1], commits
    finally:
        client.close()


def test_pymongo_sees_step_down_in_a_transaction_as_transient(replset):
    client = rs_client(replset)
    try:
        coll = client.test.get_collection("tx")
        coll.insert_one({"_id": "seed"})
        with client.start_session() as s:
            s.start_transaction()
            coll.insert_one({"_id": "a"}, session=s)
            replset.command(2, {"simStepDown": 1})
            # PyMongo 3.x raises NotMasterError, which is no OperationFailure, for 10107.
            with pytest.raises((OperationFailure, pymongo.errors.NotMasterError)) as e:
                coll.insert_one({"_id": "b"}, session=s)
            # Whichever member the driver reached, the server said the transaction can be run
            # again: the old primary refuses it (10107), the new one does not know it (251). The
            # details are the server's reply, without the labels the driver adds itself.
            assert e.value.details["code"] in (10107, 251), e.value.details
            assert e.value.details["errorLabels"] == ["TransientTransactionError"]
            s.abort_transaction()

        # with_transaction runs the whole transaction again after such an error, and it
        # commits once.
        attempts = []

        def callback(session):
            attempts.append(1)
            coll.insert_one({"_id": "c%d" % len(attempts)}, session=session)
            if len(attempts) == 1:
                replset.command(2, {"simStepDown": 1})
            coll.insert_one({"_id": "d"}, session=session)

        with client.start_session() as s:
            s.with_transaction(callback)
        assert len(attempts) >= 2
        assert sorted(d["_id"] for d in coll.find()) == ["c%d" % len(attempts), "d", "seed"]
    finally:
        client.close()


def test_failpoint_errors_are_labelled_as_the_server_would(replset):
    lsid = new_lsid()

    def fail(cmd, code, **data):
        data.update(failCommands=[cmd], errorCode=code)
        replset.command(0, {"configureFailPoint": "failCommand", "mode": {"times": 1},
                            "data": data})

    def in_txn(n, cmd, **more):
        doc = dict(cmd, lsid=lsid, txnNumber=Int64(n), autocommit=False)
        doc.update(more)
        return doc

    cases = [
        # (command, code, in a transaction, expected labels)
        ("insert", 112, True, ["TransientTransactionError"]),    # WriteConflict
        ("insert", 91, True, ["TransientTransactionError"]),     # ShutdownInProgress
        ("insert", 6, True, ["TransientTransactionError"]),      # HostUnreachable
        ("insert", 251, True, ["TransientTransactionError"]),    # NoSuchTransaction
        ("insert", 50, True, []),                                # MaxTimeMSExpired
        ("insert", 11000, True, []),                             # DuplicateKey
        ("insert", 91, False, ["RetryableWriteError"]),
        # ReadConcernMajorityNotAvailableYet: retriable for the server, though not for mongolb.
        ("insert", 134, False, ["RetryableWriteError"]),
        ("insert", 112, False, []),
        ("commitTransaction", 91, True, ["RetryableWriteError"]),
        ("commitTransaction", 251, True, ["TransientTransactionError"]),
        ("commitTransaction", 112, True, ["TransientTransactionError"]),
        ("abortTransaction", 10107, True, ["RetryableWriteError"]),
    ]
    for n, (cmd, code, txn, expected) in enumerate(cases, start=1):
        if cmd == "insert":
            doc = {"insert": "f", "documents": [{"x": n}]}
        else:
            replset.command(0, in_txn(n, {"insert": "f", "documents": [{"x": n}]},
                                      startTransaction=True), db="test")
            doc = {cmd: 1}
        fail(cmd, code)
        if txn:
            doc = in_txn(n, doc, **({"startTransaction": True} if cmd == "insert" else {}))
        else:
            doc.update(lsid=lsid, txnNumber=Int64(n))
        r = replset.command(0, doc, db="test" if cmd == "insert" else "admin")
        assert r["code"] == code, (cmd, code, r)
        assert labels(r) == expected, (cmd, code, txn, r)

    # errorLabels given to the failpoint replace the server's, an empty list included.
    fail("insert", 91, errorLabels=[])
    r = replset.command(0, {"insert": "f", "documents": [{}], "lsid": lsid,
                            "txnNumber": Int64(100)}, db="test")
    assert r["code"] == 91 and "errorLabels" not in r, r
    # A write-concern error on a commit is retryable; the commit itself succeeded.
    replset.command(0, in_txn(101, {"insert": "f", "documents": [{"x": 101}]},
                              startTransaction=True), db="test")
    replset.command(0, {"configureFailPoint": "failCommand", "mode": {"times": 1},
                        "data": {"failCommands": ["commitTransaction"],
                                 "writeConcernError": {"code": 91, "errmsg": "shutting down"}}})
    r = replset.command(0, in_txn(101, {"commitTransaction": 1}), db="admin")
    assert r["ok"] == 1 and r["writeConcernError"]["code"] == 91, r
    assert labels(r) == ["RetryableWriteError"], r
    assert replset.command(0, {"count": "f", "query": {"x": 101}}, db="test")["n"] == 1


def test_labels_depend_on_the_kind_and_version_of_server():
    lsid = new_lsid()
    # A mongos leaves RetryableWriteError to its shards; it still labels transient errors.
    with start_sim("--mongos", "1") as sim:
        for n, (txn, expected) in enumerate([(False, []), (True, ["TransientTransactionError"])]):
            sim.command(0, {"configureFailPoint": "failCommand", "mode": {"times": 1},
                            "data": {"failCommands": ["insert"], "errorCode": 91}})
            doc = {"insert": "m", "documents": [{}], "lsid": lsid, "txnNumber": Int64(n + 1)}
            if txn:
                doc.update(autocommit=False, startTransaction=True)
            r = sim.command(0, doc, db="test")
            assert r["code"] == 91 and labels(r) == expected, r
    # Before 4.4 (wire version 9) servers did not label retryable writes: drivers did.
    with start_sim("--replset", "old", "--members", "2", "--max-wire-version", "8") as sim:
        r = sim.command(1, {"insert": "m", "documents": [{}], "lsid": lsid,
                            "txnNumber": Int64(1)}, db="test")
        assert r["code"] == 10107 and "errorLabels" not in r, r
        r = sim.command(1, {"insert": "m", "documents": [{}], "lsid": lsid, "txnNumber": Int64(2),
                            "autocommit": False, "startTransaction": True}, db="test")
        assert r["code"] == 10107 and labels(r) == ["TransientTransactionError"], r


def test_secondary_refuses_writes_and_unflagged_reads(replset):
    s = direct(replset, 1)
    try:
        # PyMongo adds a secondary-ok read preference on direct connections: reads work.
        assert s.test.c.find_one() is None
        with pytest.raises(pymongo.errors.NotMasterError) as e:
            s.test.c.insert_one({"x": 1})
        assert e.value.details["code"] == 10107
    finally:
        s.close()
    r = replset.command(1, {"find": "c"}, db="test")
    assert r["ok"] == 0 and r["code"] == 13435 and r["codeName"] == "NotPrimaryNoSecondaryOk"
    r = replset.command(1, {"find": "c", "$readPreference": {"mode": "secondaryPreferred"}},
                        db="test")
    assert r["ok"] == 1


def test_kill_and_revive(replset):
    import socket

    before = replset.command(1, {"hello": 1})["topologyVersion"]["processId"]
    assert replset.command(0, {"simKill": 1})["ok"] == 1
    with pytest.raises(OSError):
        socket.create_connection(replset.host_port(1), timeout=2).close()
    assert replset.command(0, {"simStats": 1})["servers"][1]["alive"] is False
    assert replset.command(0, {"simRevive": 1})["ok"] == 1
    after = replset.command(1, {"hello": 1})["topologyVersion"]["processId"]
    assert after != before
    # Killing the server that received the command still answers it before closing.
    assert replset.command(2, {"simKill": 2})["ok"] == 1
    wait_for(lambda: replset.command(0, {"simRevive": 2})["ok"] == 1)


def test_latency_is_added_to_every_reply():
    with start_sim("--mongos", "2", "--latency", "0,60") as sim:
        t0 = time.monotonic()
        sim.command(1, {"hello": 1})
        assert time.monotonic() - t0 >= 0.06
        sim.command(0, {"simSetLatency": {"server": 0, "ms": 50}})
        t0 = time.monotonic()
        sim.command(0, {"ping": 1})
        assert time.monotonic() - t0 >= 0.05
        assert sim.stats(0)["servers"][0]["latencyMs"] == 50
