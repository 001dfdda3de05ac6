"""Two paths the drivers rarely take through a mongos but mongolb must get right: an exhaust
getMore, whose reply streams in several messages, and a transaction whose mongos dies in the
middle, which the driver's with_transaction must be able to retry."""

import struct
import time

import bson
import pymongo
import pytest

from mongolb_harness import Cluster, cluster, wait_for  # noqa: F401  (cluster is a fixture)

OP_MSG = 2013
MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16


def send_msg(sock, request_id, body, flags=0):
    payload = struct.pack("<I", flags) + b"\x00" + bson.BSON.encode(body)
    sock.sendall(struct.pack("<iiii", 16 + len(payload), request_id, 0, OP_MSG) + payload)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "mongolb closed the connection"
        data += chunk
    return data


def recv_msg(sock):
    """Reads one OP_MSG reply: (requestID, responseTo, flags, body)."""
    length, request_id, response_to, opcode = struct.unpack("<iiii", recv_exact(sock, 16))
    rest = recv_exact(sock, length - 16)
    assert opcode == OP_MSG
    flags = struct.unpack("<I", rest[:4])[0]
    assert rest[4] == 0
    body = bson.BSON(rest[5:5 + struct.unpack("<i", rest[5:9])[0]]).decode()
    return request_id, response_to, flags, body


@pytest.fixture
def cluster71():
    """The cluster fixture with MongoDB 7.1 mongos routers: the first release whose mongos
    streams an exhaust getMore (a 7.0 mongos answers it as a plain getMore)."""
    c = Cluster(sim_args=("--mongos", "3", "--version", "7.1"))
    try:
        yield c
    finally:
        code = c.close()
        print("\n----- mongolb stderr (%s) -----\n%s" % (c.lb.log_path, c.lb.log_tail(80)))
    log = c.lb.log()
    if code != 0 or "AddressSanitizer" in log or "runtime error:" in log:
        pytest.fail("mongolb exited with %s after SIGTERM:\n%s" % (code, c.lb.log_tail(80)))


def test_exhaust_get_more_streams_through(cluster71):
    cluster71.need_sim()
    client = pymongo.MongoClient(cluster71.lb.uri, serverSelectionTimeoutMS=5000)
    try:
        client.test_exhaust.c.drop()
        client.test_exhaust.c.insert_many([{"_id": i} for i in range(100)])
    finally:
        client.close()
    sock = cluster71.lb.connect(timeout=10)
    try:
        send_msg(sock, 1, {"find": "c", "batchSize": 10, "$db": "test_exhaust"})
        _, to, _, reply = recv_msg(sock)
        assert to == 1 and reply["ok"] == 1
        cursor_id = reply["cursor"]["id"]
        seen = len(reply["cursor"]["firstBatch"])
        assert cursor_id != 0 and seen == 10

        # One getMore allowed to stream: the replies come until one without moreToCome, each
        # answering the previous one, as the OP_MSG specification describes.
        send_msg(sock, 2, {"getMore": bson.int64.Int64(cursor_id), "collection": "c",
                           "batchSize": 10, "$db": "test_exhaust"}, flags=EXHAUST_ALLOWED)
        expect_to = 2
        parts = 0
        while True:
            rid, to, flags, reply = recv_msg(sock)
            assert reply["ok"] == 1, reply
            assert to == expect_to
            expect_to = rid
            parts += 1
            seen += len(reply["cursor"]["nextBatch"])
            if not flags & MORE_TO_COME:
                assert reply["cursor"]["id"] == 0
                break
        assert seen == 100
        assert parts > 1, "the reply did not stream"

        # The connection is free again for the next request.
        send_msg(sock, 3, {"ping": 1, "$db": "admin"})
        _, to, _, reply = recv_msg(sock)
        assert to == 3 and reply["ok"] == 1
    finally:
        sock.close()


def test_transaction_survives_its_mongos_dying(cluster):
    """The mongos a transaction is pinned to dies after its first write. The next command gets an
    error labelled TransientTransactionError, so with_transaction runs the transaction again, on
    another mongos, and it commits once."""
    cluster.need_sim()
    client = pymongo.MongoClient(cluster.lb.uri, serverSelectionTimeoutMS=10000)
    coll = client.test_txn_kill.c
    try:
        coll.drop()
        coll.insert_one({"_id": "seed"})
        attempts = []

        def callback(session):
            attempts.append(1)
            coll.insert_one({"_id": "a"}, session=session)
            if len(attempts) == 1:
                # Find the mongos that holds this transaction and kill it.
                logs = cluster.sim_command({"simTxnLog": 1})
                holder = None
                for i, server in enumerate(logs["servers"]):
                    if any(e.get("cmd") == "insert" and e.get("inTxn")
                           for e in server.get("log", server.get("entries", []))):
                        holder = i
                assert holder is not None, logs
                other = (holder + 1) % len(cluster.sim.servers)
                cluster.sim_command({"simKill": holder}, other)
            coll.insert_one({"_id": "b"}, session=session)

        with client.start_session() as session:
            session.with_transaction(callback)
        assert len(attempts) == 2
        assert sorted(d["_id"] for d in coll.find({})) == ["a", "b", "seed"]
    finally:
        client.close()


def test_exhaust_stream_whose_server_dies_ends_in_an_error_document(cluster71):
    """The mongos streaming an exhaust getMore dies in the middle of the stream. The client has
    some parts already, so nothing can be retried: it gets, as the answer to the last part it
    received, an error document (HostUnreachable, no moreToCome) as a mongos would send, never
    a hung or silently closed socket; its connection stays usable and other clients, on the
    other mongoses, go on unaffected."""
    cluster71.need_sim()
    client = pymongo.MongoClient(cluster71.lb.uri, serverSelectionTimeoutMS=10000)
    try:
        coll = client.test_exhaust_dies.c
        coll.drop()
        # 24 MB in all, 256 KB per document: far more than the loopback socket buffers between
        # the simulator, mongolb and this client hold, so most of the stream is still in the
        # simulator when it dies.
        pad = "x" * (256 * 1024)
        for i in range(0, 96, 8):
            coll.insert_many([{"_id": j, "pad": pad} for j in range(i, i + 8)])
        before = cluster71.command_counts("find")
        sock = cluster71.lb.connect(timeout=20)
        try:
            send_msg(sock, 1, {"find": "c", "batchSize": 1, "$db": "test_exhaust_dies"})
            _, to, _, reply = recv_msg(sock)
            assert to == 1 and reply["ok"] == 1
            cursor_id = reply["cursor"]["id"]
            after = cluster71.command_counts("find")
            owner = [i for i in after if after[i] > before.get(i, 0)]
            assert len(owner) == 1, (before, after)
            owner = owner[0]

            send_msg(sock, 2, {"getMore": bson.int64.Int64(cursor_id), "collection": "c",
                               "batchSize": 1, "$db": "test_exhaust_dies"},
                     flags=EXHAUST_ALLOWED)
            rid, to, flags, reply = recv_msg(sock)
            assert to == 2 and reply["ok"] == 1 and flags & MORE_TO_COME
            # The stream has begun; its server dies while the rest is on its way.
            other = (owner + 1) % len(cluster71.sim.servers)
            cluster71.sim_command({"simKill": owner}, other)

            # Meanwhile another client goes on through the other mongoses.
            assert coll.count_documents({}) == 96

            parts = 1
            while True:
                # A slow reader: mongolb is still writing a part out when the server's end of
                # stream reaches it, the case where the error must wait for that write.
                time.sleep(0.02)
                prev = rid
                rid, to, flags, reply = recv_msg(sock)
                assert to == prev, "each part answers the one before it"
                if reply["ok"] != 1:
                    break
                assert flags & MORE_TO_COME, "the stream ended normally despite the kill"
                parts += 1
            assert not flags & MORE_TO_COME
            assert reply["code"] == 6 and reply["codeName"] == "HostUnreachable", reply
            assert "during a streamed reply" in reply["errmsg"], reply
            assert parts < 95, "the whole stream arrived before the kill"

            # The client's connection is still usable, and its cursor is forgotten (its server
            # is gone): a getMore on it gets CursorNotFound at once.
            send_msg(sock, 3, {"ping": 1, "$db": "admin"})
            _, to, _, reply = recv_msg(sock)
            assert to == 3 and reply["ok"] == 1
            send_msg(sock, 4, {"getMore": bson.int64.Int64(cursor_id), "collection": "c",
                               "$db": "test_exhaust_dies"})
            _, to, _, reply = recv_msg(sock)
            assert to == 4 and reply["ok"] == 0 and reply["code"] == 43, reply
        finally:
            sock.close()
        assert coll.find_one({"_id": 95}, {"_id": 1}) == {"_id": 95}
    finally:
        client.close()


def test_exhaust_stream_cut_while_a_part_is_being_relayed():
    """A server sends two parts of an exhaust stream, the second of 8 MB, and closes the
    connection right after them, while this client reads nothing: mongolb notices the end of
    stream while it is still writing a part out to the client. The client gets the parts and
    then the error document, answering the last part it got, rather than a closed connection."""
    import socket as socket_mod

    from fake_server import HELLO_NAMES, FakeServer, msg_frame
    from mongolb_harness import IO_TEST_DEFAULTS, start_mongolb_clean, stop_quietly

    big = "x" * (8 * 1024 * 1024)

    def cut_stream(conn, rid):
        part1 = msg_frame({"cursor": {"nextBatch": [{"_id": 1}], "id": bson.int64.Int64(77),
                                      "ns": "t.c"}, "ok": 1.0}, 501, rid, flags=MORE_TO_COME)
        part2 = msg_frame({"cursor": {"nextBatch": [{"_id": 2, "big": big}],
                                      "id": bson.int64.Int64(77), "ns": "t.c"}, "ok": 1.0},
                          502, 501, flags=MORE_TO_COME)
        conn.sendall(part1 + part2)
        conn.shutdown(socket_mod.SHUT_RDWR)

    def handler(fs, cmd):
        name = next(iter(cmd), "")
        if name in HELLO_NAMES:
            return fs.mongos_hello(legacy=name != "hello")
        if name == "find":
            return {"cursor": {"firstBatch": [], "id": bson.int64.Int64(77), "ns": "t.c"},
                    "ok": 1.0}
        if name == "getMore":
            return cut_stream
        return {"ok": 1.0}

    with FakeServer(handler, mongos=True) as fs:
        lb = start_mongolb_clean([fs.address], dict(IO_TEST_DEFAULTS))
        try:
            with lb.connect(timeout=10) as sock:
                send_msg(sock, 1, {"find": "c", "$db": "t"})
                _, to, _, reply = recv_msg(sock)
                assert to == 1 and reply["cursor"]["id"] == 77
                send_msg(sock, 2, {"getMore": bson.int64.Int64(77), "collection": "c",
                                   "$db": "t"}, flags=EXHAUST_ALLOWED)
                time.sleep(1.0)  # mongolb's write of the 8 MB part cannot finish meanwhile
                expect_to, parts = 2, 0
                while True:
                    rid, to, flags, reply = recv_msg(sock)
                    assert to == expect_to, "each reply answers the one before it"
                    if not flags & MORE_TO_COME:
                        break
                    assert reply["ok"] == 1
                    expect_to, parts = rid, parts + 1
                assert parts >= 1
                assert reply["ok"] == 0 and reply["code"] == 6, reply
                assert "during a streamed reply" in reply["errmsg"], reply
                # The connection stays usable.
                send_msg(sock, 3, {"ping": 1, "$db": "admin"})
                _, to, _, reply = recv_msg(sock)
                assert to == 3 and reply["ok"] == 1
        finally:
            assert stop_quietly(lb) == 0, lb.log_tail()
