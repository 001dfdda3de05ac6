"""Compression through mongolb: the backend leg ([upstream] compressors) compressed with each of
zstd, snappy and zlib (mongolb's traffic counters and the simulator's both say so), cursors and
getMore across batches, applications that ask for compression themselves (PyMongo with
compressors=...), and malformed OP_COMPRESSED frames from a client (a wrong uncompressedSize, a
huge declared size, an unknown compressor id, a nested OP_COMPRESSED), which close only that
client with a log line while the others go on."""

import socket
import struct

import pymongo
import pytest

from compress_wire import HAVE, compressed, compressed_msg, recv_any
from harness import closed_by_peer, msg_payload, send_msg, start_sim
from mongolb_harness import log_lines, start_mongolb, stop_quietly

DOCS = 300
BATCH = 40


def stop_checked(lb):
    """Stops mongolb and fails on a sanitizer report in its log (make check runs these tests
    against an ASan+UBSan build)."""
    stop_quietly(lb)
    log = lb.log()
    assert "AddressSanitizer" not in log and "runtime error:" not in log, lb.log_tail()


def traffic(lb):
    t = {}
    for s in lb.status()["servers"]:
        for k, v in s["traffic"].items():
            t[k] = t.get(k, 0) + v
    return t


def workload(client, name):
    coll = client.test_z.get_collection(name)
    coll.drop()
    coll.insert_many([{"_id": i, "v": "compressible " * 20} for i in range(DOCS)])
    ids = [d["_id"] for d in coll.find({}).sort("_id", 1).batch_size(BATCH)]  # 8 getMores
    assert ids == list(range(DOCS))
    assert coll.find_one({"_id": 17})["v"] == "compressible " * 20


@pytest.mark.parametrize("name", ["zstd", "snappy", "zlib"])
def test_backend_leg_compressed(name):
    with start_sim("--mongos", "2") as sim:
        lb = start_mongolb(sim.servers, config={"upstream.compressors": name})
        try:
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                workload(client, "b_" + name)
            finally:
                client.close()
            t = traffic(lb)
            # Every request and reply on the pooled connections went compressed...
            assert t["compressedMsgsOut"] >= 12 and t["compressedMsgsIn"] >= 12, t
            assert t["bytesIn"] < t["uncompressedBytesIn"] / 3, t
            assert t["bytesOut"] < t["uncompressedBytesOut"], t
            # ... as the servers saw them.
            z = [s["compression"] for s in sim.stats()["servers"]]
            assert sum(x["msgsIn"] for x in z) == t["compressedMsgsOut"], (z, t)
            assert sum(x["msgsOut"] for x in z) == t["compressedMsgsIn"], (z, t)
        finally:
            stop_checked(lb)


def test_backend_leg_uncompressed_by_default_and_counted():
    with start_sim("--mongos", "1") as sim:
        lb = start_mongolb(sim.servers)
        try:
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                workload(client, "plain")
            finally:
                client.close()
            t = traffic(lb)
            assert t["compressedMsgsOut"] == 0 and t["compressedMsgsIn"] == 0, t
            assert t["bytesIn"] == t["uncompressedBytesIn"] > DOCS * 200, t
            assert sim.stats()["servers"][0]["compression"]["msgsIn"] == 0
        finally:
            stop_checked(lb)


def test_backend_only_uses_what_the_server_offers():
    # The server has zlib only: mongolb, preferring zstd, falls back to zlib.
    with start_sim("--mongos", "1", "--compressors", "zlib") as sim:
        lb = start_mongolb(sim.servers, config={"upstream.compressors": "zstd,zlib"})
        try:
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                workload(client, "fallback")
            finally:
                client.close()
            assert traffic(lb)["compressedMsgsOut"] > 0
            assert sim.stats()["servers"][0]["compression"]["msgsIn"] > 0
        finally:
            stop_checked(lb)
    with start_sim("--mongos", "1", "--compressors", "") as sim:
        lb = start_mongolb(sim.servers, config={"upstream.compressors": "zstd,zlib"})
        try:
            assert lb.command({"ping": 1})["ok"] == 1
            assert lb.command({"find": "x", "filter": {}}, db="test")["ok"] == 1
            assert traffic(lb)["compressedMsgsOut"] == 0
        finally:
            stop_checked(lb)


@pytest.fixture(scope="module")
def lbz():
    """mongolb with a compressed backend leg, offering all three to clients (the default)."""
    with start_sim("--mongos", "2") as sim:
        lb = start_mongolb(sim.servers, config={"upstream.compressors": "zstd,snappy,zlib"})
        try:
            yield lb
        finally:
            stop_checked(lb)


@pytest.mark.parametrize("name", ["zlib", "zstd", "snappy"])
def test_clients_that_ask_get_compression(lbz, name):
    if not HAVE[name]:
        pytest.skip("PyMongo needs the python module for %s" % name)
    before = lbz.counters()["compressedRequests"]
    client = pymongo.MongoClient(lbz.uri, compressors=name, serverSelectionTimeoutMS=5000)
    try:
        workload(client, "c_" + name)
    finally:
        client.close()
    # insert, find, 8 getMores, find_one (and the drop): all came compressed.
    assert lbz.counters()["compressedRequests"] - before >= 11


def test_hello_negotiation_with_clients(lbz):
    with lbz.connect() as s:
        send_msg(s, {"hello": 1, "compression": ["zlib", "lz4", "zstd"], "$db": "admin"})
        _, doc, how = recv_any(s)
        assert how is None and doc["compression"] == ["zstd", "zlib"]
        # Replies come with the compressor each request used.
        for name in ("zlib", "zstd"):
            s.sendall(compressed_msg(name, {"ping": 1, "$db": "admin"}, request_id=5))
            hdr, doc, how = recv_any(s)
            assert doc["ok"] == 1 and hdr[2] == 5 and how == name
        # mongolbStatus (answered locally) is compressed too.
        s.sendall(compressed_msg("zlib", {"mongolbStatus": 1, "$db": "admin"}, request_id=6))
        _, doc, how = recv_any(s)
        assert how == "zlib" and "servers" in doc
    with lbz.connect() as s:
        send_msg(s, {"hello": 1, "$db": "admin"})
        assert "compression" not in recv_any(s)[1]
        # Without agreement, OP_COMPRESSED is refused as any unknown opcode is.
        s.sendall(compressed_msg("zlib", {"ping": 1, "$db": "admin"}))
        assert closed_by_peer(s)


def test_clients_refused_when_mongolb_offers_none():
    with start_sim("--mongos", "1") as sim:
        lb = start_mongolb(sim.servers, config={"mongolb.compressors": ""})
        try:
            with lb.connect() as s:
                send_msg(s, {"hello": 1, "compression": ["zlib"], "$db": "admin"})
                assert "compression" not in recv_any(s)[1]
            client = pymongo.MongoClient(lb.uri, compressors="zlib",
                                         serverSelectionTimeoutMS=5000)
            try:
                workload(client, "none")  # the driver simply does not compress
            finally:
                client.close()
        finally:
            stop_checked(lb)


PING = {"ping": 1, "$db": "admin"}
N = len(msg_payload(PING))
BAD = [
    ("size one short", lambda: compressed_msg("zlib", PING, declared=N - 1),
     "does not decompress to its declared size"),
    ("size one over", lambda: compressed_msg("zlib", PING, declared=N + 1),
     "does not decompress to its declared size"),
    ("size far over (leaks memory in servers that trust it)",
     lambda: compressed_msg("zlib", PING, declared=N + 65536),
     "does not decompress to its declared size"),
    ("huge declared size", lambda: compressed_msg("zlib", PING, declared=2000000000),
     "above the limit"),
    ("unknown compressor id", lambda: compressed_msg("zlib", PING, cid=9),
     "unknown or not enabled"),
    ("not negotiated: noop", lambda: compressed_msg("noop", PING), "unknown or not enabled"),
    ("nested OP_COMPRESSED",
     lambda: compressed("noop", 2012, compressed_msg("zlib", PING)[16:], cid=2),
     "may not be wrapped"),
    ("corrupt data", lambda: compressed_msg("zlib", PING, data=b"\x78\x9c garbage"),
     "not valid for its compressor"),
]


@pytest.mark.parametrize("why,make,logged", BAD, ids=[b[0] for b in BAD])
def test_malformed_compressed_frame_closes_only_that_client(lbz, why, make, logged):
    before = lbz.counters()["badFrames"]
    with lbz.connect() as bystander, lbz.connect() as s:
        for sock in (bystander, s):
            send_msg(sock, {"hello": 1, "compression": ["zlib", "zstd"], "$db": "admin"})
            assert recv_any(sock)[1]["compression"] == ["zstd", "zlib"]
        port = s.getsockname()[1]
        s.sendall(make())
        assert closed_by_peer(s), why
        # The other client, mid-session, is unaffected, compressed or not.
        bystander.sendall(compressed_msg("zstd", {"find": "x", "$db": "test"}, request_id=3))
        assert recv_any(bystander)[1]["ok"] == 1
        send_msg(bystander, PING, request_id=4)
        assert recv_any(bystander)[1]["ok"] == 1
    assert lbz.counters()["badFrames"] == before + 1
    lines = [ln for ln in log_lines(lbz, r"127\.0\.0\.1:%d\].*closing: OP_COMPRESSED" % port)]
    assert lines and logged in lines[0], lbz.log_tail()
