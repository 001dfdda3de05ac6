"""mongosim's OP_COMPRESSED, checked directly with PyMongo (zlib always; snappy and zstd when
python3-snappy / python3-zstandard are installed) and over raw sockets: the hello negotiation
(the intersection, in the simulator's order), compressed requests answered with the compressor
they used, the never-compressed handshake, and the frames a server must refuse (a declared size
that is wrong or huge, an unknown compressor, a nested OP_COMPRESSED), which close only the
connection that sent them."""

import socket

import pymongo
import pytest

from compress_wire import HAVE, compressed_msg, recv_any
from harness import closed_by_peer, send_msg, start_sim


@pytest.fixture(scope="module")
def sim():
    with start_sim("--mongos", "1") as s:
        yield s


def raw(sim):
    return socket.create_connection(sim.host_port(0), timeout=5)


def hello_compression(sim, offered):
    with raw(sim) as s:
        send_msg(s, {"hello": 1, "compression": offered, "$db": "admin"})
        _, doc, how = recv_any(s)
        assert how is None  # a reply to an uncompressed hello stays uncompressed
        return doc.get("compression")


def test_hello_answers_the_intersection_in_server_order(sim):
    assert hello_compression(sim, ["zlib", "lz4", "snappy", "zstd"]) == ["zstd", "snappy", "zlib"]
    assert hello_compression(sim, ["zlib"]) == ["zlib"]
    assert hello_compression(sim, []) is None
    assert hello_compression(sim, ["lz4"]) is None
    with start_sim("--mongos", "1", "--compressors", "zlib") as only_zlib:
        assert hello_compression(only_zlib, ["zstd", "zlib"]) == ["zlib"]
    with start_sim("--mongos", "1", "--compressors", "") as none:
        assert hello_compression(none, ["zstd", "zlib"]) is None


@pytest.mark.parametrize("name", ["noop", "snappy", "zlib", "zstd"])
def test_compressed_request_gets_reply_with_same_compressor(name):
    if not HAVE[name]:
        pytest.skip("python module for %s not installed" % name)
    # noop is for tests only, and only offered when asked for.
    with start_sim("--mongos", "1", "--compressors", "zstd,snappy,zlib,noop") as sim4:
        with socket.create_connection(sim4.host_port(0), timeout=5) as s:
            s.sendall(compressed_msg(name, {"ping": 1, "$db": "admin"}, request_id=41))
            hdr, doc, how = recv_any(s)
            assert doc["ok"] == 1 and hdr[2] == 41
            assert how == name


@pytest.mark.parametrize("name", ["zlib", "snappy", "zstd"])
def test_pymongo_direct_with_compressor(name):
    if not HAVE[name]:
        pytest.skip("PyMongo needs python3-%s for %s" % ("snappy" if name == "snappy" else
                                                          "zstandard", name))
    with start_sim("--mongos", "1", "--compressors", name) as sim:
        client = pymongo.MongoClient(sim.uri(0, compressors=name), serverSelectionTimeoutMS=5000)
        try:
            coll = client.test.get_collection("c_" + name)
            coll.insert_many([{"_id": i, "v": "x" * 200} for i in range(300)])
            docs = list(coll.find({}).sort("_id", 1).batch_size(50))  # six getMores
            assert [d["_id"] for d in docs] == list(range(300))
            assert coll.find_one({"_id": 7})["v"] == "x" * 200
        finally:
            client.close()
        z = sim.stats()["servers"][0]["compression"]
        # Every command after the handshake came compressed, and so did every reply to them.
        assert z["msgsIn"] >= 8 and z["msgsOut"] >= 8, z
        assert z["bytesOut"] < z["uncompressedBytesOut"] / 4, z


@pytest.mark.parametrize(
    "why,kw",
    [
        ("declared size too small", {"declared": -7}),  # relative, see below
        ("declared size too large", {"declared": +7}),
        ("declared size huge", {"declared": 2000000000}),
        ("unknown compressor", {"cid": 9}),
    ],
)
def test_bad_frames_close_only_that_connection(sim, why, kw):
    payload_doc = {"ping": 1, "$db": "admin"}
    from harness import msg_payload

    n = len(msg_payload(payload_doc))
    if kw.get("declared") in (-7, 7):
        kw = {"declared": n + kw["declared"]}
    with raw(sim) as bystander, raw(sim) as s:
        s.sendall(compressed_msg("zlib", payload_doc, **kw))
        assert closed_by_peer(s), why
        send_msg(bystander, {"ping": 1, "$db": "admin"}, request_id=9)
        assert recv_any(bystander)[1]["ok"] == 1


def test_nested_and_disabled_compressors_are_refused():
    from compress_wire import compressed
    from harness import msg_payload

    with start_sim("--mongos", "1", "--compressors", "zlib") as sim:
        inner = compressed_msg("zlib", {"ping": 1, "$db": "admin"})
        with raw(sim) as s:
            s.sendall(compressed("noop", 2012, inner[16:]))
            assert closed_by_peer(s)
        with raw(sim) as s:  # noop is not in this server's list
            s.sendall(compressed_msg("noop", {"ping": 1, "$db": "admin"}))
            assert closed_by_peer(s)
        with raw(sim) as s:
            s.sendall(compressed("zlib", 2013, msg_payload({"ping": 1, "$db": "admin"})))
            assert recv_any(s)[2] == "zlib"
