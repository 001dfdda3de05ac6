"""mongosim where it must behave as MongoDB does so that a proxy test can fail: replication that
really lags (stale secondaries, lastWrite, causal reads, write concern), the version a deployment
claims (wire version, legacy opcodes, exhaust on a mongos), and replica-set membership
(reconfiguration, removed members, a member whose "me" is not the address it is reached at).

PyMongo (Debian's 3.11) connects to the simulator directly; raw sockets send what drivers no
longer send. Each test names what a real server does and the simulator checks it."""

import socket
import struct
import time

import bson
import pymongo
import pytest
from bson.int64 import Int64
from pymongo.errors import OperationFailure, WTimeoutError
from pymongo.read_preferences import Secondary
from pymongo.write_concern import WriteConcern

from harness import (OP_GET_MORE, OP_KILL_CURSORS, OP_QUERY, OP_REPLY, closed_by_peer, frame,
                     parse_reply, query_payload, recv_frame, recv_msg, send_msg, start_sim)

QUERY_FAILURE = 2
EXHAUST_ALLOWED = 1 << 16
MORE_TO_COME = 2


def wait_for(pred, timeout=10.0, step=0.01):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %.1fs" % timeout)
        time.sleep(step)


def direct(sim, i, **kw):
    host, port = sim.host_port(i)
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(host, port, directConnection=True, **kw)


def rs_client(sim, **kw):
    host, port = sim.host_port(0)
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    kw.setdefault("heartbeatFrequencyMS", 500)
    return pymongo.MongoClient(host, port, replicaSet=sim.set_name, **kw)


def find_ids(client, db, coll):
    c = client[db].get_collection(coll, read_preference=pymongo.ReadPreference.SECONDARY_PREFERRED)
    return sorted(d["_id"] for d in c.find({}))


def connect(sim, i=0):
    return socket.create_connection(sim.host_port(i), timeout=5)


def finds(sim):
    return [s["commands"].get("find", 0) for s in sim.stats()["servers"]]


# --- replication lag --------------------------------------------------------------------------

LAG_MS = 700


def test_a_lagging_secondary_reads_only_what_it_has_applied():
    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", str(LAG_MS)) as sim:
        primary = direct(sim, 0, w=1)
        sec = direct(sim, 1)
        try:
            primary.t.d.insert_one({"_id": 1})
            t0 = time.monotonic()
            # Not there yet: not the document, not even its implicitly created collection.
            assert find_ids(sec, "t", "d") == []
            assert "d" not in sec.t.list_collection_names()
            wait_for(lambda: find_ids(sec, "t", "d") == [1], timeout=5)
            waited = time.monotonic() - t0
            assert LAG_MS / 1000 - 0.15 <= waited <= LAG_MS / 1000 + 2.0, waited
            # Updates and deletes lag the same way.
            primary.t.d.update_one({"_id": 1}, {"$set": {"v": 2}})
            primary.t.d.insert_one({"_id": 2})
            primary.t.d.delete_one({"_id": 1})
            assert find_ids(sec, "t", "d") == [1]
            wait_for(lambda: find_ids(sec, "t", "d") == [2], timeout=5)
            primary.t.drop_collection("d")
            assert find_ids(sec, "t", "d") == [2]
            wait_for(lambda: "d" not in sec.t.list_collection_names(), timeout=5)
        finally:
            primary.close()
            sec.close()


def test_last_write_is_what_each_member_applied():
    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", "0,0,4000") as sim:
        client = direct(sim, 0, w=1)
        try:
            client.t.d.insert_many([{"_id": i} for i in range(3)])
            p = sim.command(0, {"hello": 1})["lastWrite"]
            fresh = sim.command(1, {"hello": 1})["lastWrite"]
            stale = sim.command(2, {"hello": 1})["lastWrite"]
            # The opTime counts what each member applied: the primary and the member without lag
            # have the writes, the lagging member none of them yet.
            assert p["opTime"]["ts"].inc == fresh["opTime"]["ts"].inc >= 4
            assert stale["opTime"]["ts"].inc < p["opTime"]["ts"].inc
            assert stale["opTime"]["ts"] < p["opTime"]["ts"]
            # lastWriteDate keeps whole seconds, as MongoDB's; the primary writes all the time
            # (its no-op writer), so the lagging member trails it by its lag even when idle.
            for lw in (p, fresh, stale):
                assert lw["lastWriteDate"].microsecond == 0
            time.sleep(4.5)
            p = sim.command(0, {"hello": 1})["lastWrite"]
            stale = sim.command(2, {"hello": 1})["lastWrite"]
            behind = (p["lastWriteDate"] - stale["lastWriteDate"]).total_seconds()
            assert 3 <= behind <= 5, behind
            # By now it has applied the writes.
            assert stale["opTime"]["ts"].inc == p["opTime"]["ts"].inc
            # The majority point is where two of the three members are: the primary's here.
            assert p["majorityOpTime"]["ts"].inc == p["opTime"]["ts"].inc
        finally:
            client.close()


def test_max_staleness_keeps_reads_off_a_member_that_really_lags():
    # Member 2 lags 150 s behind; maxStalenessSeconds 90 must exclude it, and only it.
    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", "0,0,150000") as sim:
        client = rs_client(sim)
        try:
            client.t.d.insert_one({"_id": 1})  # w:majority: the primary and member 1 have it
            wait_for(lambda: len(client._topology.description.readable_servers) == 3)
            time.sleep(1.2)  # a heartbeat or two, so that PyMongo knows every lastWriteDate
            sim.stats(reset=True)
            fresh = client.t.get_collection("d", read_preference=Secondary(max_staleness=90))
            for _ in range(20):
                assert fresh.find_one({"_id": 1}) == {"_id": 1}
            assert finds(sim) == [0, 20, 0]
            # Without the bound, reads spread over both secondaries and the stale one has no data.
            sim.stats(reset=True)
            anyone = client.t.get_collection("d", read_preference=Secondary())
            seen = [anyone.find_one({"_id": 1}) for _ in range(40)]
            counts = finds(sim)
            assert counts[0] == 0 and counts[1] > 0 and counts[2] > 0, counts
            assert seen.count(None) == counts[2]
        finally:
            client.close()


def test_lag_set_at_run_time_splits_the_data_and_never_goes_back():
    with start_sim("--replset", "rs0", "--members", "2") as sim:
        client = direct(sim, 0, w=1)
        sec = direct(sim, 1)
        try:
            client.t.d.insert_one({"_id": 1})
            assert find_ids(sec, "t", "d") == [1]  # no lag: one shared store
            r = sim.command(0, {"simSetLag": {"server": 1, "ms": 800}})
            assert r["ok"] == 1 and r["replicating"] is True
            client.t.d.insert_one({"_id": 2})
            assert find_ids(sec, "t", "d") == [1]
            wait_for(lambda: find_ids(sec, "t", "d") == [1, 2], timeout=5)
            # Lag 0 again: it catches up at once.
            client.t.d.insert_one({"_id": 3})
            assert sim.command(0, {"simSetLag": 1, "server": 1, "ms": 0})["ok"] == 1
            assert find_ids(sec, "t", "d") == [1, 2, 3]
            # A longer lag stalls the member; what it applied stays applied.
            assert sim.command(0, {"simSetLag": 1, "server": 1, "ms": 3000})["ok"] == 1
            client.t.d.insert_one({"_id": 4})
            time.sleep(0.3)
            assert find_ids(sec, "t", "d") == [1, 2, 3]
            assert sim.stats()["servers"][1]["lagMs"] == 3000
            r = sim.command(0, {"simSetLag": 1, "server": 5, "ms": 1})
            assert r["ok"] == 0
        finally:
            client.close()
            sec.close()


def test_without_lag_nothing_changes():
    # The default: one shared store, no operationTime or $clusterTime, writes visible at once.
    with start_sim("--replset", "rs0", "--members", "3") as sim:
        client = direct(sim, 0)
        sec = direct(sim, 2)
        try:
            client.t.d.insert_one({"_id": 1})
            assert find_ids(sec, "t", "d") == [1]
            r = sim.command(0, {"find": "d"}, db="t")
            assert "operationTime" not in r and "$clusterTime" not in r
            assert "operationTime" not in sim.command(1, {"hello": 1})
            r = sim.command(0, {"simSetLag": {"server": 1, "ms": 0}})
            assert r["replicating"] is False
        finally:
            client.close()
            sec.close()


def test_causal_read_on_a_secondary_waits_for_the_write():
    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", str(LAG_MS)) as sim:
        client = rs_client(sim, w=1)
        try:
            coll = client.t.d
            coll.insert_one({"_id": 0})
            r = client.t.command("find", "d")
            assert isinstance(r["operationTime"], bson.timestamp.Timestamp)
            assert set(r["$clusterTime"]) == {"clusterTime", "signature"}
            wait_for(lambda: len(client._topology.description.readable_servers) == 3)
            with client.start_session(causal_consistency=True) as s:
                coll.insert_one({"_id": 1}, session=s)
                t0 = time.monotonic()
                doc = coll.with_options(read_preference=Secondary()).find_one({"_id": 1},
                                                                            session=s)
                waited = time.monotonic() - t0
            assert doc == {"_id": 1}
            assert LAG_MS / 1000 - 0.2 <= waited <= LAG_MS / 1000 + 2.0, waited
            # Without a session's causal consistency the same read is stale.
            coll.insert_one({"_id": 2})
            assert coll.with_options(read_preference=Secondary()).find_one({"_id": 2}) is None
        finally:
            client.close()


def test_causal_read_errors_as_mongodb_does():
    with start_sim("--replset", "rs0", "--members", "2", "--lag-ms", "5000") as sim:
        # An afterClusterTime beyond the cluster's time is refused.
        future = bson.timestamp.Timestamp(int(time.time()) + 3600, 1)
        r = sim.command(1, {"find": "d", "readConcern": {"afterClusterTime": future},
                            "$readPreference": {"mode": "secondary"}}, db="t")
        assert r["ok"] == 0 and r["code"] == 72, r
        # A wait longer than maxTimeMS ends with MaxTimeMSExpired after maxTimeMS.
        sim.command(0, {"insert": "d", "documents": [{"_id": 1}], "writeConcern": {"w": 1}},
                    db="t")
        ct = sim.command(0, {"ping": 1})["operationTime"]
        t0 = time.monotonic()
        r = sim.command(1, {"find": "d", "readConcern": {"afterClusterTime": ct},
                            "maxTimeMS": 300, "$readPreference": {"mode": "secondary"}}, db="t")
        waited = time.monotonic() - t0
        assert r["ok"] == 0 and r["code"] == 50, r
        assert 0.25 <= waited <= 3.0, waited
        # The wait holds the requests behind it on the connection, in order.
        with connect(sim, 1) as s:
            send_msg(s, {"find": "d", "readConcern": {"afterClusterTime": ct}, "maxTimeMS": 200,
                         "$readPreference": {"mode": "secondary"}, "$db": "t"}, request_id=1)
            send_msg(s, {"ping": 1, "$db": "admin"}, request_id=2)
            hdr1, d1, _ = recv_msg(s)
            hdr2, d2, _ = recv_msg(s)
            assert (hdr1[2], d1["code"]) == (1, 50) and (hdr2[2], d2["ok"]) == (2, 1)


def test_writes_wait_for_their_write_concern():
    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", str(LAG_MS)) as sim:
        client = direct(sim, 0)
        try:

            def timed(wc, doc):
                t0 = time.monotonic()
                client.t.get_collection("d", write_concern=wc).insert_one(doc)
                return time.monotonic() - t0

            lag = LAG_MS / 1000
            # MongoDB 7.0's default is w:majority: one of the two lagging secondaries must apply.
            assert lag - 0.1 <= timed(WriteConcern(), {"_id": 1}) <= lag + 2.0
            assert timed(WriteConcern(w=1), {"_id": 2}) < lag - 0.2
            assert lag - 0.1 <= timed(WriteConcern(w=3), {"_id": 3}) <= lag + 2.0
            with pytest.raises(WTimeoutError) as e:
                timed(WriteConcern(w="majority", wtimeout=150), {"_id": 4})
            wce = e.value.details  # PyMongo raises with the writeConcernError itself
            assert wce["code"] == 64 and wce["errInfo"]["wtimeout"] is True
            # The write itself was applied.
            assert client.t.d.find_one({"_id": 4}) == {"_id": 4}
            with pytest.raises(OperationFailure) as e:
                timed(WriteConcern(w=5), {"_id": 5})
            assert e.value.code == 100
            # A transaction's commit waits too, and its writes reach a secondary together.
            sec = direct(sim, 1)
            with client.start_session() as s:
                with s.start_transaction():
                    client.t.txn.insert_one({"_id": 1}, session=s)
                    client.t.txn.insert_one({"_id": 2}, session=s)
            seen = wait_for(lambda: find_ids(sec, "t", "txn"), timeout=5)
            assert seen == [1, 2]
            sec.close()
        finally:
            client.close()


def test_default_write_concern_is_w1_before_5_0():
    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", "2000",
                   "--version", "4.4") as sim:
        client = direct(sim, 0)
        try:
            t0 = time.monotonic()
            client.t.d.insert_one({"_id": 1})
            assert time.monotonic() - t0 < 1.5  # not the 2 s a w:majority write waits
        finally:
            client.close()


def test_a_new_primary_has_every_write_and_a_dead_member_catches_up():
    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", "5000") as sim:
        client = direct(sim, 0, w=1)
        try:
            client.t.d.insert_many([{"_id": i} for i in range(5)])
            assert find_ids(direct(sim, 1), "t", "d") == []
            # MongoDB's new primary catches up before it takes writes: nothing is lost.
            assert sim.command(0, {"simStepDown": {"to": 1}})["ok"] == 1
            new = direct(sim, 1, w=1)
            assert sorted(d["_id"] for d in new.t.d.find()) == list(range(5))
            new.t.d.insert_one({"_id": 5})
            # The old primary, now a secondary, applies the new primary's writes late.
            old = direct(sim, 0)
            assert find_ids(old, "t", "d") == list(range(5))
            # A member that is down applies nothing, and catches up when it is back.
            assert sim.command(0, {"simSetLag": {"server": 2, "ms": 0}})["ok"] == 1
            assert sim.command(0, {"simKill": 2})["ok"] == 1
            new.t.d.insert_one({"_id": 6})
            assert sim.command(0, {"simRevive": 2})["ok"] == 1
            assert find_ids(direct(sim, 2), "t", "d") == list(range(7))
            new.close()
            old.close()
        finally:
            client.close()


# --- versions --------------------------------------------------------------------------------

@pytest.mark.parametrize("version,wire", [("5.0", 13), ("6.0", 17), ("7.0", 21), ("7.1", 22),
                                          ("8.0", 25), (None, 21)])
def test_version_sets_the_wire_version(version, wire):
    args = ["--mongos", "1"] + (["--version", version] if version else [])
    with start_sim(*args) as sim:
        hello = sim.command(0, {"hello": 1})
        assert hello["maxWireVersion"] == wire
        assert sim.command(0, {"buildInfo": 1})["version"] == (version or "7.0") + ".0"


def test_wire_version_alone_names_its_release():
    with start_sim("--standalone", "--max-wire-version", "17") as sim:
        assert sim.command(0, {"buildInfo": 1})["version"] == "6.0.0"
    with start_sim("--standalone", "--version", "7.1", "--max-wire-version", "21") as sim:
        assert sim.command(0, {"hello": 1})["maxWireVersion"] == 21
        assert sim.command(0, {"buildInfo": 1})["version"] == "7.1.0"


@pytest.mark.parametrize("bad", ["7", "7.4", "x.y", "3.6"])
def test_unknown_versions_are_refused(bad):
    with pytest.raises(Exception):
        start_sim("--mongos", "1", "--version", bad)


def seed(sim, n=30):
    sim.command(0, {"insert": "w", "documents": [{"_id": i, "x": i % 3} for i in range(n)]},
                db="test")


def op_query(sock, ns, doc, rid, n_return=-1, skip=0, fields=None):
    payload = query_payload(ns, doc, skip=skip, n_return=n_return)
    if fields is not None:
        payload += bson.BSON.encode(fields)
    sock.sendall(frame(OP_QUERY, payload, rid))
    hdr, body = recv_frame(sock)
    assert hdr[3] == OP_REPLY and hdr[2] == rid
    return parse_reply(body)


def op_get_more(sock, ns, cid, n, rid):
    sock.sendall(frame(OP_GET_MORE, struct.pack("<i", 0) + ns.encode() + b"\x00" +
                       struct.pack("<iq", n, cid), rid))
    hdr, body = recv_frame(sock)
    assert hdr[3] == OP_REPLY and hdr[2] == rid
    return parse_reply(body)


@pytest.mark.parametrize("version", [None, "5.1", "8.0"])
def test_legacy_opcodes_are_refused_from_5_1(version):
    args = ["--mongos", "1"] + (["--version", version] if version else [])
    with start_sim(*args) as sim:
        seed(sim)
        with connect(sim) as s:
            # The handshake still works over OP_QUERY, and so do the few commands old drivers
            # need before they switch to OP_MSG; anything else is 352.
            assert op_query(s, "admin.$cmd", {"isMaster": 1}, 1)[3][0]["ismaster"] is True
            assert op_query(s, "admin.$cmd", {"hello": 1}, 2)[3][0]["isWritablePrimary"] is True
            assert op_query(s, "admin.$cmd", {"buildinfo": 1}, 3)[3][0]["ok"] == 1
            flags, _, _, docs = op_query(s, "admin.$cmd", {"$query": {"ping": 1}}, 4)
            assert flags == 0 and docs[0]["ok"] == 0 and docs[0]["code"] == 352
            assert docs[0]["codeName"] == "UnsupportedOpQueryCommand"
            assert docs[0]["errmsg"].startswith("Unsupported OP_QUERY command: ping.")
            # A query on a collection and OP_GET_MORE: QueryFailure and 5739101.
            flags, cid, _, docs = op_query(s, "test.w", {}, 5)
            assert flags & QUERY_FAILURE and cid == 0 and docs[0]["code"] == 5739101
            assert docs[0]["$err"].startswith("OP_QUERY is no longer supported.")
            send_msg(s, {"find": "w", "batchSize": 2, "$db": "test"}, request_id=6)
            cid = recv_msg(s)[1]["cursor"]["id"]
            flags, _, _, docs = op_get_more(s, "test.w", cid, 2, 7)
            assert flags & QUERY_FAILURE and docs[0]["code"] == 5739101
            assert docs[0]["$err"].startswith("OP_GET_MORE is no longer supported.")
            # The cursor is untouched: OP_MSG getMore continues it.
            send_msg(s, {"getMore": Int64(cid), "collection": "w", "batchSize": 2,
                         "$db": "test"}, request_id=8)
            assert [d["_id"] for d in recv_msg(s)[1]["cursor"]["nextBatch"]] == [2, 3]
            # OP_KILL_CURSORS cannot be answered: the server ends the connection.
            s.sendall(frame(OP_KILL_CURSORS, struct.pack("<iiq", 0, 1, cid), 9))
            assert closed_by_peer(s)


def test_legacy_opcodes_work_before_5_1():
    with start_sim("--mongos", "1", "--version", "5.0") as sim:
        seed(sim)
        with connect(sim) as s:
            assert op_query(s, "admin.$cmd", {"$query": {"ping": 1}}, 1)[3][0]["ok"] == 1
            # A query: filter, sort and projection, a first batch of nToReturn and a cursor.
            flags, cid, start, docs = op_query(
                s, "test.w", {"$query": {"x": 1}, "$orderby": {"_id": -1}}, 2, n_return=3,
                fields={"x": 0})
            assert flags & QUERY_FAILURE == 0 and cid != 0 and start == 0
            assert docs == [{"_id": 28}, {"_id": 25}, {"_id": 22}]
            flags, cid2, start, docs = op_get_more(s, "test.w", cid, 4, 3)
            assert cid2 == cid and start == 3
            assert [d["_id"] for d in docs] == [19, 16, 13, 10]
            s.sendall(frame(OP_KILL_CURSORS, struct.pack("<iiq", 0, 1, cid), 4))
            flags, _, _, docs = op_get_more(s, "test.w", cid, 4, 5)
            assert flags & 1 and docs == []  # CursorNotFound: killed
            # A plain filter, skip, and a negative nToReturn: one batch, no cursor.
            flags, cid, _, docs = op_query(s, "test.w", {"x": 2}, 6, n_return=-2, skip=1)
            assert cid == 0 and [d["_id"] for d in docs] == [5, 8]
            flags, cid, _, docs = op_query(s, "test.w", {"x": {"$bad": 1}}, 7)
            assert flags & QUERY_FAILURE and "$err" in docs[0]


def exhaust_replies(sim):
    """A getMore with exhaustAllowed on a cursor of 30 documents (batches of 4, then 8): the
    replies (their flags and ids) that come back before one without moreToCome."""
    with connect(sim) as s:
        send_msg(s, {"find": "w", "batchSize": 4, "$db": "test"}, request_id=1)
        cid = recv_msg(s)[1]["cursor"]["id"]
        send_msg(s, {"getMore": Int64(cid), "collection": "w", "batchSize": 8, "$db": "test"},
                 request_id=40, flags=EXHAUST_ALLOWED)
        replies = []
        while True:
            hdr, doc, flags = recv_msg(s)
            replies.append((flags, [d["_id"] for d in doc["cursor"]["nextBatch"]],
                            doc["cursor"]["id"]))
            if not flags & MORE_TO_COME:
                break
        # The connection still serves requests afterwards.
        send_msg(s, {"ping": 1, "$db": "admin"}, request_id=99)
        assert recv_msg(s)[0][2] == 99
        return cid, replies


def test_exhaust_get_more_on_a_mongos_only_from_7_1():
    with start_sim("--mongos", "1") as sim:  # 7.0: the flag is ignored, one reply
        seed(sim)
        cid, replies = exhaust_replies(sim)
        assert replies == [(0, list(range(4, 12)), cid)]
    with start_sim("--mongos", "1", "--version", "7.1") as sim:
        seed(sim)
        cid, replies = exhaust_replies(sim)
        assert len(replies) == 4 and replies[-1][2] == 0
        assert all(f & MORE_TO_COME for f, _, _ in replies[:-1])
    with start_sim("--standalone") as sim:  # a 7.0 mongod streams
        seed(sim)
        cid, replies = exhaust_replies(sim)
        assert len(replies) == 4


# --- replica-set membership ------------------------------------------------------------------

def test_reconfig_removes_and_adds_members():
    with start_sim("--replset", "rs0", "--members", "3") as sim:
        hello = sim.command(0, {"hello": 1})
        assert hello["setVersion"] == 1 and len(hello["hosts"]) == 3
        counter = sim.command(1, {"hello": 1})["topologyVersion"]["counter"]
        r = sim.command(0, {"simReconfig": {"remove": [2]}})
        assert r["ok"] == 1 and r["setVersion"] == 2 and r["hosts"] == sim.servers[:2]
        for i in (0, 1):
            hello = sim.command(i, {"hello": 1})
            assert hello["setVersion"] == 2 and hello["hosts"] == sim.servers[:2]
        assert sim.command(1, {"hello": 1})["topologyVersion"]["counter"] > counter
        # The removed member answers as one without a configuration: an RSGhost to drivers.
        ghost = sim.command(2, {"hello": 1})
        assert ghost["isWritablePrimary"] is False and ghost["secondary"] is False
        assert ghost["isreplicaset"] is True
        assert ghost["info"] == "Does not have a valid replica set config"
        for field in ("hosts", "me", "setVersion", "primary", "lastWrite"):
            assert field not in ghost
        legacy = sim.command(2, {"isMaster": 1})
        assert legacy["ismaster"] is False and legacy["isreplicaset"] is True
        # It serves nothing.
        r = sim.command(2, {"find": "d", "$readPreference": {"mode": "secondary"}}, db="t")
        assert r["ok"] == 0 and r["code"] == 13436
        r = sim.command(2, {"insert": "d", "documents": [{"_id": 1}]}, db="t")
        assert r["ok"] == 0 and r["code"] == 10107
        assert sim.stats()["servers"][2]["role"] == "removed"
        # Back by host:port; setVersion goes on rising.
        r = sim.command(0, {"simReconfig": 1, "add": [sim.servers[2]]})
        assert r["ok"] == 1 and r["setVersion"] == 3 and r["hosts"] == sim.servers
        assert sim.command(2, {"hello": 1})["secondary"] is True


def test_reconfig_refusals_and_elections():
    with start_sim("--replset", "rs0", "--members", "3") as sim:
        r = sim.command(1, {"simReconfig": {"remove": [0]}})
        assert r["ok"] == 0 and r["code"] == 103  # not the primary
        r = sim.command(1, {"simReconfig": {"remove": [7]}})
        assert r["ok"] == 0 and r["code"] == 2
        r = sim.command(1, {"simReconfig": {"remove": ["nowhere:1"]}})
        assert r["ok"] == 0 and r["code"] == 2
        assert sim.command(0, {"hello": 1})["setVersion"] == 1  # refusals change nothing
        assert sim.command(0, {"simReconfig": {"remove": [1]}})["ok"] == 1
        # A removed member is never elected.
        r = sim.command(0, {"simStepDown": {"to": 1}})
        assert r["ok"] == 0
        r = sim.command(0, {"simStepDown": 1})
        assert r["ok"] == 1 and r["primary"] == sim.servers[2]
        assert sim.command(2, {"hello": 1})["setVersion"] == 2


def test_pymongo_drops_a_removed_member():
    with start_sim("--replset", "rs0", "--members", "3") as sim:
        client = rs_client(sim)
        try:
            client.admin.command("ping")
            wait_for(lambda: len(client._topology.description.server_descriptions()) == 3)
            assert sim.command(0, {"simReconfig": {"remove": [1]}})["ok"] == 1
            wait_for(lambda: sim.host_port(1) not in
                     client._topology.description.server_descriptions(), timeout=5)
            sim.stats(reset=True)
            for _ in range(10):
                client.t.get_collection("d", read_preference=Secondary()).find_one()
            assert finds(sim) == [0, 0, 10]
        finally:
            client.close()


def test_removed_member_applies_nothing_until_it_is_back():
    with start_sim("--replset", "rs0", "--members", "3", "--lag-ms", "0") as sim:
        assert sim.command(0, {"simSetLag": {"server": 2, "ms": 1}})["replicating"] is True
        assert sim.command(0, {"simReconfig": {"remove": [2]}})["ok"] == 1
        client = direct(sim, 0)
        try:
            client.t.d.insert_one({"_id": 1})  # w:majority of two: the primary and member 1
            time.sleep(0.2)
            assert sim.stats()["servers"][2]["oplogApplied"] == 0
            assert sim.command(0, {"simReconfig": {"add": [2]}})["ok"] == 1
            assert find_ids(direct(sim, 2), "t", "d") == [1]
        finally:
            client.close()


def test_me_mismatch():
    with start_sim("--replset", "rs0", "--members", "3") as sim:
        client = rs_client(sim)
        try:
            client.admin.command("ping")
            wait_for(lambda: len(client._topology.description.readable_servers) == 3)
            r = sim.command(0, {"simSetMe": {"server": 1, "me": "localhost:1"}})
            assert r["ok"] == 1 and r["me"] == "localhost:1"
            hello = sim.command(1, {"hello": 1})
            assert hello["me"] == "localhost:1" and sim.servers[1] in hello["hosts"]
            # SDAM: a secondary whose me is not the address it is reached at is removed.
            wait_for(lambda: sim.host_port(1) not in
                     client._topology.description.server_descriptions(), timeout=5)
            sim.stats(reset=True)
            for _ in range(10):
                client.t.get_collection("d", read_preference=Secondary()).find_one()
            assert finds(sim) == [0, 0, 10]
            # me: null gives it its own address back.
            assert sim.command(0, {"simSetMe": {"server": 1, "me": None}})["me"] == sim.servers[1]
            assert sim.command(1, {"hello": 1})["me"] == sim.servers[1]
            assert sim.command(0, {"simSetMe": {"server": 1, "me": 5}})["ok"] == 0
        finally:
            client.close()
