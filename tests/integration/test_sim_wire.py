"""mongosim at the byte level: legacy opcodes, exhaust, moreToCome, and bad input. These send
what drivers no longer send (or never should), over raw sockets.

The default simulator is MongoDB 7.0, which refuses the legacy opcodes and whose mongos has no
exhaust getMore: the tests of those paths run against the release that has them (--version 5.0
for the legacy opcodes, 7.1 for a mongos that streams); test_sim_faithful.py checks the refusals."""

import socket
import struct

import bson
import pytest

from harness import (OP_GET_MORE, OP_KILL_CURSORS, OP_MSG, OP_QUERY, OP_REPLY, closed_by_peer,
                     frame, msg_payload, parse_reply, query_payload, recv_frame, recv_msg,
                     send_msg, start_sim)


def seeded_sim(*args):
    s = start_sim(*args)
    s.command(0, {"insert": "w", "documents": [{"_id": i} for i in range(30)]}, db="test")
    return s


@pytest.fixture(scope="module")
def sim():
    with seeded_sim("--mongos", "2") as s:
        yield s


@pytest.fixture(scope="module")
def sim50():
    """A MongoDB 5.0 mongos: the last release that takes legacy opcodes."""
    with seeded_sim("--mongos", "2", "--version", "5.0") as s:
        yield s


@pytest.fixture(scope="module")
def sim71():
    """A MongoDB 7.1 mongos: the first whose mongos streams exhaust getMore."""
    with seeded_sim("--mongos", "2", "--version", "7.1") as s:
        yield s


def connect(sim, i=0):
    return socket.create_connection(sim.host_port(i), timeout=5)


def assert_still_serving(sim):
    with connect(sim) as s:
        send_msg(s, {"ping": 1, "$db": "admin"}, request_id=77)
        hdr, doc, _ = recv_msg(s)
        assert hdr[2] == 77 and doc["ok"] == 1


def test_legacy_is_master_over_op_query(sim):
    with connect(sim) as s:
        s.sendall(frame(OP_QUERY, query_payload("admin.$cmd", {"isMaster": 1, "helloOk": True}),
                        request_id=5))
        hdr, body = recv_frame(s)
        assert hdr[3] == OP_REPLY and hdr[2] == 5
        flags, cid, _, docs = parse_reply(body)
        assert flags == 0 and cid == 0
        assert docs[0]["ismaster"] is True and docs[0]["msg"] == "isdbgrid"
        assert docs[0]["helloOk"] is True
        # The $query wrapper of old drivers is understood too.
        s.sendall(frame(OP_QUERY, query_payload("admin.$cmd", {"$query": {"isMaster": 1}}), 6))
        _, body = recv_frame(s)
        assert parse_reply(body)[3][0]["ismaster"] is True


def test_other_commands_over_op_query_before_5_1(sim50):
    with connect(sim50) as s:
        s.sendall(frame(OP_QUERY, query_payload("admin.$cmd", {"$query": {"ping": 1}}), 6))
        _, body = recv_frame(s)
        assert parse_reply(body)[3][0]["ok"] == 1


def test_op_query_on_a_collection_is_refused_like_mongodb_5_1(sim):
    with connect(sim) as s:
        s.sendall(frame(OP_QUERY, query_payload("test.w", {}), 9))
        hdr, body = recv_frame(s)
        flags, _, _, docs = parse_reply(body)
        assert flags & 2  # QueryFailure
        assert docs[0]["code"] == 5739101 and docs[0]["ok"] == 0
        assert docs[0]["$err"].startswith("OP_QUERY is no longer supported")


def test_legacy_get_more_and_kill_cursors(sim50):
    sim = sim50
    with connect(sim) as s:
        send_msg(s, {"find": "w", "batchSize": 10, "$db": "test"})
        _, doc, _ = recv_msg(s)
        cid = doc["cursor"]["id"]
        assert cid != 0
        s.sendall(frame(OP_GET_MORE, struct.pack("<i", 0) + b"test.w\x00" +
                        struct.pack("<iq", 5, cid), 11))
        hdr, body = recv_frame(s)
        flags, rcid, start, docs = parse_reply(body)
        assert hdr[2] == 11 and flags == 0 and rcid == cid and start == 10
        assert [d["_id"] for d in docs] == [10, 11, 12, 13, 14]
        s.sendall(frame(OP_KILL_CURSORS, struct.pack("<iiq", 0, 1, cid), 12))
        s.sendall(frame(OP_GET_MORE, struct.pack("<i", 0) + b"test.w\x00" +
                        struct.pack("<iq", 5, cid), 13))
        hdr, body = recv_frame(s)
        flags, _, _, docs = parse_reply(body)
        assert hdr[2] == 13 and flags & 1 and docs == []  # CursorNotFound


def test_exhaust_get_more_streams_with_more_to_come(sim71):
    with connect(sim71) as s:
        send_msg(s, {"find": "w", "batchSize": 4, "$db": "test"})
        _, doc, _ = recv_msg(s)
        cid = doc["cursor"]["id"]
        send_msg(s, {"getMore": bson.int64.Int64(cid), "collection": "w", "batchSize": 8,
                     "$db": "test"}, request_id=40, flags=0x10000)
        ids, prev, replies = [], 40, 0
        while True:
            hdr, doc, flags = recv_msg(s)
            replies += 1
            assert hdr[2] == prev
            prev = hdr[1]
            ids += [d["_id"] for d in doc["cursor"]["nextBatch"]]
            if not flags & 2:
                assert doc["cursor"]["id"] == 0
                break
            assert doc["cursor"]["id"] == cid
        assert ids == list(range(4, 30)) and replies == 4


def test_more_to_come_request_gets_no_reply(sim):
    with connect(sim) as s:
        send_msg(s, {"insert": "w0", "documents": [{"_id": 1}], "writeConcern": {"w": 0},
                     "$db": "test"}, request_id=50, flags=2)
        send_msg(s, {"count": "w0", "$db": "test"}, request_id=51)
        hdr, doc, _ = recv_msg(s)
        assert hdr[2] == 51 and doc["n"] == 1


def test_pipelined_requests_are_answered_in_order(sim):
    with connect(sim) as s:
        s.sendall(b"".join(frame(OP_MSG, msg_payload({"ping": 1, "$db": "admin"}), 100 + i)
                           for i in range(200)))
        for i in range(200):
            hdr, doc, _ = recv_msg(s)
            assert hdr[2] == 100 + i and doc["ok"] == 1


def test_document_sequence_insert(sim):
    docs = b"".join(bson.BSON.encode({"_id": i}) for i in range(3))
    section = b"\x01" + struct.pack("<i", 4 + len(b"documents\x00") + len(docs)) + \
        b"documents\x00" + docs
    body = struct.pack("<I", 0) + b"\x00" + bson.BSON.encode({"insert": "seq", "$db": "test"}) + \
        section
    with connect(sim) as s:
        s.sendall(frame(OP_MSG, body, 60))
        _, doc, _ = recv_msg(s)
        assert doc["ok"] == 1 and doc["n"] == 3


def test_unknown_command_is_command_not_found(sim):
    r = sim.command(0, {"frobnicate": 1})
    assert r["ok"] == 0 and r["code"] == 59 and r["codeName"] == "CommandNotFound"


@pytest.mark.parametrize("name,data", [
    ("length under 16", struct.pack("<iiii", 10, 1, 0, OP_MSG)),
    ("length over 48000000", struct.pack("<iiii", 48000001, 1, 0, OP_MSG)),
    ("invalid BSON", frame(OP_MSG, struct.pack("<I", 0) + b"\x00" +
                           b"\x10\x00\x00\x00\x02a\x00\xff\xff\xff\x7fxx\x00\x00")),
    ("unknown opcode", frame(4242, b"\x00" * 8)),
    ("OP_INSERT", frame(2002, b"\x00" * 8)),
    ("unknown required flag bit", frame(OP_MSG, msg_payload({"ping": 1, "$db": "a"}, 0x4))),
])
def test_bad_input_closes_only_that_connection(sim, name, data):
    with connect(sim) as bystander, connect(sim) as bad:
        bad.sendall(data)
        assert closed_by_peer(bad), name
        send_msg(bystander, {"ping": 1, "$db": "admin"}, request_id=3)
        assert recv_msg(bystander)[1]["ok"] == 1
    assert_still_serving(sim)


def test_truncated_frame_closes_only_that_connection(sim):
    with connect(sim) as bad:
        full = frame(OP_MSG, msg_payload({"ping": 1, "$db": "admin"}))
        bad.sendall(full[:len(full) - 3])
        bad.shutdown(socket.SHUT_WR)
        assert closed_by_peer(bad)
    assert_still_serving(sim)


def test_deeply_nested_request_gets_overflow_like_mongod(sim):
    """A document nested deeper than BSON allows (200 levels below the top) is refused as mongod
    does, with 15 Overflow and the connection kept, never by a crash of the simulator: tests
    through mongolb may forward such a request to it. 201 levels (the most allowed) still run."""
    def nested(depth):
        doc = {}
        for _ in range(depth):
            doc = {"a": doc}
        return doc

    deep_lens = [5]
    key = b"nest_level"
    for _ in range(9350):
        deep_lens.append(4 + 1 + len(key) + 1 + deep_lens[-1] + 1)
    deep = (b"".join(struct.pack("<i", deep_lens[i]) + b"\x03" + key + b"\x00"
                     for i in range(9350, 0, -1)) + b"\x05\x00\x00\x00\x00" + b"\x00" * 9350)
    head = bson.encode({"find": "w"})[4:-1]
    tail = bson.encode({"$db": "test"})[4:-1]
    body = head + b"\x03filter\x00" + deep + tail
    doc = struct.pack("<i", 4 + len(body) + 1) + body + b"\x00"
    with connect(sim) as s:
        s.sendall(frame(OP_MSG, struct.pack("<I", 0) + b"\x00" + doc, request_id=91))
        hdr, reply, _ = recv_msg(s)
        assert hdr[2] == 91 and reply["ok"] == 0 and reply["code"] == 15, reply
        assert reply["codeName"] == "Overflow"
        # Within the limit: the filter's 199 levels under filter, 201 in all, still run.
        send_msg(s, {"find": "w", "filter": nested(199), "$db": "test"}, request_id=92)
        hdr, reply, _ = recv_msg(s)
        assert hdr[2] == 92 and reply["ok"] == 1, reply
    assert_still_serving(sim)
