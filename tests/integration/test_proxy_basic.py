"""mongolb seen through PyMongo (Debian's 3.11) and raw sockets: the handshake, a CRUD round trip,
mongolbStatus, legacy OP_QUERY isMaster, the local CursorNotFound, and a clean SIGTERM."""


import pymongo
import pytest
from bson.int64 import Int64
from pymongo.errors import OperationFailure

from harness import OP_QUERY, OP_REPLY, frame, parse_reply, query_payload, recv_frame
from mongolb_harness import cluster  # noqa: F401  (cluster is a fixture)


def client_for(lb, **kw):
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(lb.uri, **kw)


def test_handshake_as_mongos(cluster):
    client = client_for(cluster.lb)
    try:
        client.admin.command("ping")
        assert client.is_mongos is True
        ismaster = client.admin.command("isMaster")
        assert ismaster["msg"] == "isdbgrid"
        assert ismaster["ismaster"] is True
        assert ismaster["maxMessageSizeBytes"] == 48000000
        assert "setName" not in ismaster
        hello = client.admin.command("hello")
        assert hello["isWritablePrimary"] is True and hello["msg"] == "isdbgrid"
    finally:
        client.close()


def test_crud_round_trip(cluster):
    client = client_for(cluster.lb)
    try:
        coll = client.test_crud.people
        coll.drop()
        res = coll.insert_many([{"_id": i, "n": i, "even": i % 2 == 0} for i in range(100)])
        assert len(res.inserted_ids) == 100
        assert coll.count_documents({}) == 100
        assert [d["_id"] for d in coll.find({"n": {"$lt": 5}}).sort("_id", 1)] == [0, 1, 2, 3, 4]
        assert coll.find_one({"_id": 7})["n"] == 7
        upd = coll.update_one({"_id": 7}, {"$set": {"n": 700}})
        assert upd.matched_count == 1 and upd.modified_count == 1
        assert coll.find_one({"_id": 7})["n"] == 700
        dele = coll.delete_many({"even": True})
        assert dele.deleted_count == 50
        assert coll.count_documents({}) == 50
        assert coll.count_documents({"even": True}) == 0
        # Stages within what mongosim implements, so a real cluster gives the same answers.
        agg = list(coll.aggregate([{"$match": {"n": {"$gte": 90}}}, {"$sort": {"n": -1}},
                                   {"$project": {"_id": 1}}]))
        assert agg == [{"_id": i} for i in (7, 99, 97, 95, 93, 91)]  # 7 has n 700
        agg = list(coll.aggregate([{"$match": {"n": {"$gte": 90}}}, {"$count": "c"}]))
        assert agg == [{"c": 6}]
        # A multi-batch aggregate cursor (getMores go to its owner).
        assert len(list(coll.aggregate([{"$sort": {"_id": 1}}], batchSize=7))) == 50
    finally:
        client.close()


def test_status_shape(cluster):
    client = client_for(cluster.lb)
    try:
        client.test_status.c.insert_one({"a": 1})
        st = client.admin.command({"mongolbStatus": 1})
    finally:
        client.close()
    assert st["ok"] == 1
    assert len(st["servers"]) == len(cluster.seeds)
    assert {s["address"] for s in st["servers"]} == set(cluster.seeds)
    for s in st["servers"]:
        assert s["type"] == "Mongos"
        assert isinstance(s["rttMillis"], float) and s["rttMillis"] >= 0
        assert isinstance(s["inFlight"], int) and s["inFlight"] >= 0
        assert isinstance(s["requests"], int) and s["requests"] >= 0
        assert isinstance(s["pool"]["total"], int) and isinstance(s["pool"]["waiting"], int)
    assert sum(s["requests"] for s in st["servers"]) >= 1
    for k in ("open", "opened", "idCollisions"):
        assert isinstance(st["cursors"][k], int) and st["cursors"][k] >= 0
    for k in ("requests", "getMoresRouted", "killCursorsRouted", "cursorNotFound",
              "misroutesAvoided", "retries", "errorsReturned", "badFrames"):
        assert isinstance(st["counters"][k], int) and st["counters"][k] >= 0, k
    assert st["counters"]["requests"] >= 1
    assert isinstance(st["clients"], int) and st["clients"] >= 1  # this status request's own
    assert isinstance(st["rssKB"], int) and st["rssKB"] > 0


def test_legacy_op_query_is_master(cluster):
    lb = cluster.lb
    with lb.connect(timeout=5) as s:
        s.sendall(frame(OP_QUERY, query_payload("admin.$cmd", {"isMaster": 1}), request_id=77))
        hdr, body = recv_frame(s)
        assert hdr[3] == OP_REPLY
        assert hdr[2] == 77  # responseTo
        flags, cursor_id, start, docs = parse_reply(body)
        assert cursor_id == 0 and len(docs) == 1
        assert docs[0]["ismaster"] is True
        assert docs[0]["msg"] == "isdbgrid"
        assert docs[0]["ok"] == 1


def test_unknown_get_more_is_43_and_reaches_no_server(cluster):
    client = client_for(cluster.lb)
    try:
        db = client.test_unknown
        db.c.drop()  # a real cluster may keep data from an earlier run
        db.c.insert_one({"a": 1})
        if cluster.is_sim:
            cluster.sim_stats(reset=True)
        before = cluster.lb.counters()
        with pytest.raises(OperationFailure) as ei:
            db.command({"getMore": Int64(123456789), "collection": "c"})
        assert ei.value.code == 43
        after = cluster.lb.counters()
        assert after["cursorNotFound"] == before["cursorNotFound"] + 1
        assert after["getMoresRouted"] == before["getMoresRouted"]
        # The connection still works afterwards.
        assert db.c.count_documents({}) == 1
    finally:
        client.close()
    if cluster.is_sim:
        assert sum(cluster.command_counts("getMore").values()) == 0
        stats = cluster.sim_stats()
        assert all(s["opcounters"]["getmore"] == 0 for s in stats["servers"])


def test_sigterm_exits_zero(cluster):
    client = client_for(cluster.lb)
    try:
        client.test_stop.c.insert_one({"a": 1})
    finally:
        client.close()
    assert cluster.lb.stop() == 0
    with pytest.raises(OSError):  # the listener is gone
        cluster.lb.connect(timeout=2).close()
