"""Cursors through mongolb with PyMongo: many threads reading multi-batch cursors, and killCursors
reaching the owning server only."""

import threading

import pymongo
from bson.int64 import Int64

from mongolb_harness import cluster  # noqa: F401  (cluster is a fixture)

THREADS = 8
ROUNDS = 10
DOCS = 250
BATCH = 50


def client_for(lb, **kw):
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(lb.uri, **kw)


def test_eight_threads_read_multi_batch_cursors(cluster):
    client = client_for(cluster.lb)
    try:
        coll = client.test_cursors.docs
        coll.drop()
        coll.insert_many([{"_id": i, "pad": "x" * 100} for i in range(DOCS)])
        if cluster.is_sim:
            cluster.sim_stats(reset=True)
        before = cluster.lb.counters()
        errors, counts, lock = [], [], threading.Lock()

        def reader():
            for _ in range(ROUNDS):
                try:
                    ids = [d["_id"] for d in coll.find({}, batch_size=BATCH)]
                    with lock:
                        counts.append(len(ids))
                        if sorted(ids) != list(range(DOCS)):
                            errors.append("cursor returned %d docs, not 0..%d"
                                          % (len(ids), DOCS - 1))
                except Exception as e:  # noqa: BLE001 - every failure is the finding
                    with lock:
                        errors.append(repr(e))

        threads = [threading.Thread(target=reader) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "reader threads hung"
        assert errors == []
        assert counts == [DOCS] * (THREADS * ROUNDS)
        after = cluster.lb.counters()
    finally:
        client.close()
    getmores = after["getMoresRouted"] - before["getMoresRouted"]
    # 250 documents in batches of 50: the find and at least 4 getMores per cursor.
    assert getmores >= THREADS * ROUNDS * (DOCS // BATCH - 1)
    assert after["cursorNotFound"] == before["cursorNotFound"]
    assert after["errorsReturned"] == before["errorsReturned"]
    if cluster.is_sim:
        finds = cluster.command_counts("find")
        gms = cluster.command_counts("getMore")
        assert sum(finds.values()) == THREADS * ROUNDS
        assert sum(gms.values()) == getmores
        # The cursors were spread over several servers, so getMore routing mattered.
        assert sum(1 for n in finds.values() if n > 0) >= 2, finds
        stats = cluster.sim_stats()
        assert all(s["cursorsOpen"] == 0 for s in stats["servers"])


def open_cursors_per_server(cluster):
    return {s["index"]: int(s["cursorsOpen"]) for s in cluster.sim_stats()["servers"]}


def test_cursor_close_kills_on_owner_only(cluster):
    cluster.need_sim()
    client = client_for(cluster.lb)
    try:
        coll = client.test_kill.docs
        coll.drop()
        coll.insert_many([{"_id": i} for i in range(100)])
        cursors = []
        for _ in range(12):
            cur = coll.find({}, batch_size=5)
            next(cur)  # the find ran; the cursor stays open on its server
            assert cur.cursor_id
            cursors.append(cur)
        opened = open_cursors_per_server(cluster)
        assert sum(opened.values()) == 12
        assert sum(1 for n in opened.values() if n > 0) >= 2, opened
        cluster.sim_stats(reset=True)
        before = cluster.lb.counters()
        for cur in cursors:
            cur.close()  # PyMongo sends killCursors now
        after = cluster.lb.counters()
        kills = cluster.command_counts("killCursors")
        # Each server got one killCursors per cursor it owned, and none for the others' cursors.
        assert kills == opened, (kills, opened)
        assert sum(open_cursors_per_server(cluster).values()) == 0
        assert after["killCursorsRouted"] - before["killCursorsRouted"] == 12
        assert after["errorsReturned"] == before["errorsReturned"]
        st = cluster.lb.status()
        assert st["cursors"]["open"] == 0
    finally:
        client.close()


def test_one_kill_cursors_for_many_owners_is_split(cluster):
    cluster.need_sim()
    client = client_for(cluster.lb)
    try:
        db = client.test_killsplit
        db.docs.insert_many([{"_id": i} for i in range(50)])
        ids = []
        for _ in range(9):
            reply = db.command({"find": "docs", "batchSize": 2})
            ids.append(reply["cursor"]["id"])
        assert all(ids)
        opened = open_cursors_per_server(cluster)
        owners = {i for i, n in opened.items() if n > 0}
        assert len(owners) >= 2, opened
        cluster.sim_stats(reset=True)
        unknown = Int64(987654321)
        reply = db.command({"killCursors": "docs", "cursors": [Int64(i) for i in ids] + [unknown]})
        assert sorted(reply["cursorsKilled"]) == sorted(ids)
        assert reply["cursorsNotFound"] == [unknown]
        assert reply["cursorsAlive"] == []
        kills = cluster.command_counts("killCursors")
        # One killCursors per owner; servers that owned none of the cursors saw nothing.
        assert {i for i, n in kills.items() if n > 0} == owners, (kills, opened)
        assert all(n <= 1 for n in kills.values()), kills
        assert sum(open_cursors_per_server(cluster).values()) == 0
        # The killed cursors are gone for mongolb too: a getMore is answered with 43 locally.
        cluster.sim_stats(reset=True)
        try:
            db.command({"getMore": Int64(ids[0]), "collection": "docs"})
            raise AssertionError("getMore on a killed cursor succeeded")
        except pymongo.errors.OperationFailure as e:
            assert e.code == 43
        assert sum(cluster.command_counts("getMore").values()) == 0
    finally:
        client.close()
