"""Transactions through mongolb in front of three mongos routers (PyMongo 3.11): 200 transactions
from 8 threads, each with reads, writes and a commit, all succeed, and mongosim's transaction log
shows every command of each transaction (lsid + txnNumber) on exactly one mongos."""

import collections
import threading
import time

import pymongo

from mongolb_harness import cluster  # noqa: F401  (a fixture)
from mongolb_harness import run_threads

THREADS = 8
PER_THREAD = 25


def test_transactions_each_stay_on_one_mongos(cluster):  # noqa: F811
    cluster.need_sim()
    client = pymongo.MongoClient(cluster.lb.uri, serverSelectionTimeoutMS=5000,
                                 maxPoolSize=THREADS + 2)
    try:
        db = client.failover_txn
        db.accounts.drop()
        db.moves.drop()
        # One account per thread, so that transactions of different threads never conflict.
        db.accounts.insert_many([{"_id": t, "balance": 0} for t in range(THREADS)])
        db.moves.insert_one({"_id": "seed"})  # the collection exists before the transactions
        cluster.sim_stats(reset=True)  # also clears the transaction log
        errors = []
        lsids = {}

        def worker(t):
            try:
                with client.start_session() as s:
                    lsids[t] = s.session_id["id"].hex()
                    for k in range(PER_THREAD):
                        def body(session, k=k):
                            acct = db.accounts.find_one({"_id": t}, session=session)
                            assert acct["balance"] == k
                            db.moves.insert_one({"_id": "%d-%d-a" % (t, k)}, session=session)
                            db.accounts.update_one({"_id": t}, {"$inc": {"balance": 1}},
                                                   session=session)
                            assert db.moves.find_one({"_id": "%d-%d-a" % (t, k)},
                                                     session=session) is not None
                            db.moves.insert_one({"_id": "%d-%d-b" % (t, k)}, session=session)

                        s.with_transaction(body)
            except Exception as e:  # noqa: BLE001  (reported below)
                errors.append((t, repr(e)))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
        run_threads(threads, "transaction threads")
        assert errors == [], errors

        for t in range(THREADS):
            assert db.accounts.find_one({"_id": t})["balance"] == PER_THREAD
        assert db.moves.count_documents({}) == 1 + 2 * THREADS * PER_THREAD
    finally:
        client.close()

    log = cluster.sim_command({"simTxnLog": 1})
    where = collections.defaultdict(set)  # (lsid, txnNumber) -> servers
    cmds = collections.defaultdict(list)
    for srv in log["servers"]:
        for e in srv["entries"]:
            if e["inTxn"] and e["lsid"] in lsids.values():
                key = (e["lsid"], e["txnNumber"])
                where[key].add(srv["index"])
                cmds[key].append(e["cmd"])
    assert len(where) == THREADS * PER_THREAD, len(where)
    split = {k: v for k, v in where.items() if len(v) != 1}
    assert split == {}, split
    for key, names in cmds.items():
        # find, insert, update, find, insert, then the commit, all where the transaction began.
        assert sorted(names) == sorted(["find", "insert", "update", "find", "insert",
                                        "commitTransaction"]), (key, names)
    used = collections.Counter(next(iter(v)) for v in where.values())
    assert len(used) >= 2, used  # balanced per transaction, not all on one router
    st = cluster.lb.status()
    assert st["transactionsPinned"] <= THREADS
    assert st["counters"]["transactionCommandsPinned"] >= THREADS * PER_THREAD * 5


def test_getmore_of_a_dead_mongos_inside_a_transaction_is_transient(cluster):  # noqa: F811
    """Inside a transaction, a getMore whose mongos is gone gets an error with
    TransientTransactionError in the reply itself (found by the soak: mongolb answered a bare
    CursorNotFound, so withTransaction gave up), and the transaction's next statement stays
    pinned: it fails with that label instead of reaching another mongos as a new write."""
    cluster.need_sim()
    client = pymongo.MongoClient(cluster.lb.uri, serverSelectionTimeoutMS=5000)
    try:
        db = client.failover_txn_dead
        db.seed.drop()
        db.w.drop()
        db.seed.insert_many([{"_id": i} for i in range(10)])
        db.w.insert_one({"_id": "exists"})
        cluster.sim_stats(reset=True)
        listener_errors = []
        with client.start_session() as s:
            lsid = s.session_id["id"].hex()
            s.start_transaction()
            db.w.insert_one({"x": 1}, session=s)
            cur = db.seed.find({}, batch_size=2, session=s)
            next(cur)
            owner = [x["index"] for x in cluster.sim_stats()["servers"]
                     if x["cursorsOpen"] > 0][0]
            other = (owner + 1) % 3
            cluster.sim.command(other, {"simKill": owner})
            # Two failed checks in a row: the server is taken as gone and its cursors forgotten.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                st = cluster.lb.status()
                if st["cursors"]["open"] == 0:
                    break
                time.sleep(0.1)
            try:
                list(cur)
            except pymongo.errors.PyMongoError as e:
                listener_errors.append(e)
            try:
                db.w.insert_one({"y": 2}, session=s)
            except pymongo.errors.PyMongoError as e:
                listener_errors.append(e)
            try:
                s.abort_transaction()
            except pymongo.errors.PyMongoError:
                pass
        assert len(listener_errors) == 2, listener_errors
        gm, nxt = listener_errors
        assert "TransientTransactionError" in (gm.details or {}).get("errorLabels", []), gm.details
        # The next statement stays pinned: it fails (NoSuchTransaction, or HostUnreachable from its
        # one attempt at the pinned mongos), labelled for with_transaction to start again.
        assert (nxt.details or {}).get("code") in (6, 251), nxt.details
        assert "TransientTransactionError" in nxt.details.get("errorLabels", []), nxt.details
        # The second statement reached no other mongos: the transaction's statements are all on
        # the dead one.
        log = cluster.sim_command({"simTxnLog": 1})
        elsewhere = [(srv["index"], e["cmd"]) for srv in log["servers"] for e in srv["entries"]
                     if e["inTxn"] and e["lsid"] == lsid and srv["index"] != owner
                     and e["cmd"] != "abortTransaction"]
        assert elsewhere == [], elsewhere
        cluster.sim.command(other, {"simRevive": owner})
    finally:
        client.close()


def test_write_conflicts_reach_the_application_with_their_label(cluster):  # noqa: F811
    """Two transactions through mongolb write one document: the second gets mongod's
    WriteConflict (112) with TransientTransactionError, as relayed by mongolb, and its next
    attempt (a new txnNumber, pinned afresh) commits after the first; the counter is exact."""
    cluster.need_sim()
    client = pymongo.MongoClient(cluster.lb.uri, serverSelectionTimeoutMS=5000)
    try:
        coll = client.failover_txn_wc.counter
        coll.drop()
        coll.insert_one({"_id": 1, "n": 0})
        with client.start_session() as a, client.start_session() as b:
            a.start_transaction()
            b.start_transaction()
            coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=a)
            try:
                coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=b)
                raise AssertionError("no WriteConflict")
            except pymongo.errors.OperationFailure as e:
                assert e.code == 112, e.details
                assert e.has_error_label("TransientTransactionError"), e.details
            b.abort_transaction()
            a.commit_transaction()
            b.with_transaction(
                lambda s: coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=s))
        assert coll.find_one({"_id": 1})["n"] == 2

        # Many transactions on one document at once: conflicts are retried by the driver, and
        # every increment is applied exactly once.
        errors = []

        def worker():
            try:
                with client.start_session() as s:
                    for _ in range(10):
                        s.with_transaction(lambda ss: coll.update_one(
                            {"_id": 1}, {"$inc": {"n": 1}}, session=ss))
            except Exception as e:  # noqa: BLE001  (reported below)
                errors.append(repr(e))

        threads = [threading.Thread(target=worker) for _ in range(6)]
        run_threads(threads, "transaction threads")
        assert errors == [], errors
        assert coll.find_one({"_id": 1})["n"] == 2 + 60
    finally:
        client.close()
