"""Faults of mongolb's I/O layer, as a user sees them: a reply, an error document, a closed socket,
mongolb still alive and serving other clients, a log line.

Each test sets up its own simulator (mongosim) and mongolb and tears both down whatever happens,
bounds every wait, and sends traffic only to 127.0.0.1. Several use configuration keys and
mongolbStatus fields of the reworked connection layer ([upstream] request_timeout_ms,
servers[i].pool.busy, counters.requestsTimedOut, ...).
"""

import os
import select
import signal
import socket
import ssl
import struct
import threading
import time

import bson
import pymongo
import pytest
from bson.int64 import Int64

from fake_server import FakeServer
from harness import (OP_KILL_CURSORS, OP_MSG, OP_QUERY, frame, free_port_list,
                     msg_frame_checksummed, msg_payload, recv_msg, send_msg, start_sim)
from mongolb_harness import (SimAndMongolb, decode_msg_body, log_lines, peer_log_lines,
                             raw_command, read_outcome, start_mongolb_clean, stop_quietly,
                             wait_for)

# Network-error codes a mongos (or mongolb) may put in an error document for a lost request.
NETWORK_ERROR_CODES = {6, 7, 89, 202, 262, 9001}


def fail_command(sim, i, commands, mode="alwaysOn", **data):
    data["failCommands"] = list(commands)
    r = sim.command(i, {"configureFailPoint": "failCommand", "mode": mode, "data": data})
    assert r.get("ok") == 1, r


def fail_off(sim, i):
    sim.command(i, {"configureFailPoint": "failCommand", "mode": "off"})


def sim_count(sim, i, name):
    for s in sim.stats()["servers"]:
        if s["index"] == i:
            return int(s["commands"].get(name, 0))
    return 0


def assert_serves_others(lb, what=""):
    """mongolb is alive and another client gets answers (a local one and a forwarded one)."""
    code = exit_status(lb, 0.2)
    assert code is None, "mongolb died (exit status %s) %s" % (code, what)
    st = raw_command(lb.host, lb.port, {"mongolbStatus": 1}, timeout=5)
    assert st["ok"] == 1
    r = raw_command(lb.host, lb.port, {"ping": 1}, timeout=5)
    assert r["ok"] == 1, r


def exit_status(lb, grace=1.0):
    """mongolb's exit status if it has exited or exits within grace seconds, else None (a client
    may see its socket closed a moment before the process can be reaped)."""
    try:
        return lb.proc.wait(grace)
    except Exception:  # noqa: BLE001  (subprocess.TimeoutExpired)
        return None


def connect(lb, timeout=5.0):
    return socket.create_connection((lb.host, lb.port), timeout=timeout)


def pool_of(st, i=0):
    return st["servers"][i]["pool"]


# --- 1. a request held on a mongos that is then killed -----------------------------------------

def test_request_on_killed_mongos_gets_error_within_selection_timeout():
    cfg = {"upstream.server_selection_timeout_ms": 2000}
    with SimAndMongolb(("--mongos", "1"), cfg) as (sim, lb):
        fail_command(sim, 0, ["find"], blockConnection=True, blockTimeMS=30000)
        with connect(lb, 10) as s:
            send_msg(s, {"find": "c", "filter": {}, "$db": "test"}, request_id=11)
            wait_for(lambda: sim_count(sim, 0, "find") >= 1, 5, what="find reached the mongos")
            sim.proc.kill()
            sim.proc.wait()
            t0 = time.monotonic()
            kind, hdr, body = read_outcome(s, 8.0)
            elapsed = time.monotonic() - t0
        assert kind == "reply", ("the client got %s %.1fs after its mongos was killed (with "
                                 "server_selection_timeout_ms=2000): no error reply"
                                 % (kind, elapsed))
        doc, _ = decode_msg_body(body)
        assert doc.get("ok") == 0, doc
        assert elapsed < 6.0, "error reply only after %.1fs" % elapsed
        assert lb.proc.poll() is None


# --- 2. deep recursion on pipelined frames that need no backend ----------------------------------

def _pipeline_then_command(lb, lead, small, n):
    with connect(lb, 15) as s:
        s.sendall(lead + small * n)
        send_msg(s, {"ping": 1, "$db": "admin"}, request_id=999)
        kind, hdr, body = read_outcome(s, 15.0)
    return kind, hdr, body


def test_pipelined_more_to_come_status_frames_do_not_crash():
    with SimAndMongolb(("--mongos", "1")) as (sim, lb):
        lead = frame(OP_MSG, msg_payload({"mongolbStatus": 1, "pad": "x" * 600000, "$db": "admin"},
                                         flags=0x2), 1)
        small = frame(OP_MSG, msg_payload({"mongolbStatus": 1, "$db": "admin"}, flags=0x2), 2)
        kind, hdr, body = _pipeline_then_command(lb, lead, small, 20000)
        code = exit_status(lb, 1.0 if kind != "reply" else 0.2)
        assert code is None, ("mongolb died (exit status %s) on 20,000 pipelined moreToCome "
                              "mongolbStatus frames" % code)
        assert kind == "reply", "no answer to the command after the pipeline: " + kind
        assert hdr[2] == 999 and decode_msg_body(body)[0]["ok"] == 1
        assert_serves_others(lb)


def test_pipelined_legacy_kill_cursors_do_not_crash():
    with SimAndMongolb(("--mongos", "1")) as (sim, lb):
        lead = frame(OP_MSG, msg_payload({"mongolbStatus": 1, "pad": "x" * 600000, "$db": "admin"},
                                         flags=0x2), 1)
        small = frame(OP_KILL_CURSORS, struct.pack("<ii", 0, 1) + struct.pack("<q", 987654321), 2)
        kind, hdr, body = _pipeline_then_command(lb, lead, small, 40000)
        code = exit_status(lb, 1.0 if kind != "reply" else 0.2)
        assert code is None, ("mongolb died (exit status %s) on 40,000 pipelined OP_KILL_CURSORS "
                              "frames" % code)
        assert kind == "reply", "no answer to the command after the pipeline: " + kind
        assert hdr[2] == 999 and decode_msg_body(body)[0]["ok"] == 1
        assert_serves_others(lb)


# --- 3. checksum and unknown optional flag bits --------------------------------------------------

UNKNOWN_OPTIONAL_FLAG = 1 << 20


def test_checksummed_kill_cursors_with_unknown_optional_flag():
    with SimAndMongolb(("--mongos", "1")) as (sim, lb):
        with connect(lb) as s:
            s.sendall(msg_frame_checksummed(
                {"killCursors": "c", "cursors": [Int64(123456789)], "$db": "test"},
                flags=UNKNOWN_OPTIONAL_FLAG, request_id=21))
            kind, hdr, body = read_outcome(s, 5.0)
            assert kind == "reply", ("killCursors with a checksum and flag bit 20: connection %s, "
                                     "no reply" % kind)
            doc, _ = decode_msg_body(body)
            assert hdr[2] == 21
            assert doc["ok"] == 1, doc
            assert [int(x) for x in doc["cursorsNotFound"]] == [123456789], doc
        assert_serves_others(lb)


def test_checksummed_find_with_unknown_optional_flag():
    with SimAndMongolb(("--mongos", "1")) as (sim, lb):
        sim.command(0, {"insert": "ck", "documents": [{"_id": i} for i in range(3)]}, db="test")
        with connect(lb) as s:
            s.sendall(msg_frame_checksummed({"find": "ck", "filter": {}, "$db": "test"},
                                            flags=UNKNOWN_OPTIONAL_FLAG, request_id=22))
            kind, hdr, body = read_outcome(s, 5.0)
            assert kind == "reply", "find with a checksum and flag bit 20: connection " + kind
            doc, _ = decode_msg_body(body)
            assert hdr[2] == 22
            assert doc["ok"] == 1, doc
            assert sorted(d["_id"] for d in doc["cursor"]["firstBatch"]) == [0, 1, 2]


# --- 4. documents nested ~9,350 levels deep ------------------------------------------------------

DEPTH = 9350
NEST_KEY = b"nest_level"  # 17 bytes a level: about 160 KB at DEPTH


def nested_doc(depth, key=NEST_KEY):
    """BSON bytes of {key: {key: ... {} ...}} nested `depth` levels, built without recursion."""
    lens = [5]
    for _ in range(depth):
        lens.append(4 + 1 + len(key) + 1 + lens[-1] + 1)
    head = b"".join(struct.pack("<i", lens[i]) + b"\x03" + key + b"\x00"
                    for i in range(depth, 0, -1))
    return head + b"\x05\x00\x00\x00\x00" + b"\x00" * depth


def bson_doc(*elements):
    body = b"".join(elements)
    return struct.pack("<i", 4 + len(body) + 1) + body + b"\x00"


def e_str(name, value):
    v = value.encode()
    return b"\x02" + name + b"\x00" + struct.pack("<i", len(v) + 1) + v + b"\x00"


def e_int(name, value):
    return b"\x10" + name + b"\x00" + struct.pack("<i", value)


def e_doc(name, doc_bytes):
    return b"\x03" + name + b"\x00" + doc_bytes


def deep_frames():
    deep = nested_doc(DEPTH)
    find = bson_doc(e_str(b"find", "c"), e_doc(b"filter", deep), e_str(b"$db", "test"))
    hello = bson_doc(e_int(b"hello", 1), e_doc(b"x", deep), e_str(b"$db", "admin"))
    query = bson_doc(e_doc(b"$query", bson_doc(e_doc(b"a", deep))))
    return {
        "find": frame(OP_MSG, struct.pack("<I", 0) + b"\x00" + find, 31),
        "hello": frame(OP_MSG, struct.pack("<I", 0) + b"\x00" + hello, 31),
        "op_query": frame(OP_QUERY, struct.pack("<i", 0) + b"test.c\x00" + struct.pack("<ii", 0, -1)
                          + query, 31),
    }


@pytest.mark.parametrize("which", ["find", "hello", "op_query"])
def test_deeply_nested_request(which):
    data = deep_frames()[which]
    assert len(data) > 150000
    with SimAndMongolb(("--mongos", "1")) as (sim, lb):
        other = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000, socketTimeoutMS=5000)
        try:
            other.test.c.insert_one({"_id": 1})
            with connect(lb) as s:
                s.sendall(data)
                kind, hdr, body = read_outcome(s, 5.0)
                code = exit_status(lb, 0.5)
                assert code is None, ("mongolb died (exit status %s) on a %s nested %d levels "
                                      "deep" % (code, which, DEPTH))
                assert kind in ("reply", "closed"), "no reply and no close within 5 s"
                if kind == "reply" and which == "find":
                    doc, _ = decode_msg_body(body)
                    assert doc["ok"] == 0, doc
            if sim.proc.poll() is None:
                assert other.test.c.find_one({"_id": 1}) == {"_id": 1}
                assert_serves_others(lb)
            else:
                # mongolb forwarded it and mongosim itself died of the depth (a simulator limit,
                # not mongolb's): only mongolb's own answers can be checked.
                print("note: mongosim exited with %s on the deep %s" % (sim.proc.returncode, which))
                assert other.admin.command("mongolbStatus")["ok"] == 1
                assert exit_status(lb, 0.2) is None
        finally:
            other.close()


# --- 5. kind-1 document sequences holding a malformed document -----------------------------------

def invalid_bson_doc():
    # Consistent outer length and terminator, but the string element claims 1000 bytes.
    body = b"\x02a\x00" + struct.pack("<i", 1000) + b"x\x00"
    return struct.pack("<i", 4 + len(body) + 1) + body + b"\x00"


def poisoned_insert_frame(request_id):
    body = bson.BSON.encode({"insert": "poison", "$db": "test"})
    seq = b"documents\x00" + invalid_bson_doc()
    payload = (struct.pack("<I", 0) + b"\x00" + body + b"\x01" + struct.pack("<i", 4 + len(seq))
               + seq)
    return frame(OP_MSG, payload, request_id)


def wait_all_closed(socks, timeout):
    """Indexes of the sockets the peer closed within timeout (reading and dropping any data)."""
    closed = set()
    deadline = time.monotonic() + timeout
    while len(closed) < len(socks):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        pending = [s for i, s in enumerate(socks) if i not in closed]
        r, _, _ = select.select(pending, [], [], min(left, 0.2))
        for s in r:
            i = socks.index(s)
            try:
                if not s.recv(65536):
                    closed.add(i)
            except (ConnectionError, OSError):
                closed.add(i)
    return closed


def test_poisoned_document_sequence_closes_only_its_client():
    with SimAndMongolb(("--mongos", "3")) as (sim, lb):
        a = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000, socketTimeoutMS=10000)
        socks = []
        try:
            coll = a.test.poison
            coll.insert_many([{"_id": i} for i in range(10)])
            cursor = coll.find({}, batch_size=2).sort("_id", 1)
            first = [next(cursor)["_id"], next(cursor)["_id"]]
            assert first == [0, 1]
            before = lb.counters()
            for i in range(6):
                s = connect(lb)
                socks.append(s)
                s.sendall(poisoned_insert_frame(100 + i))
            closed = wait_all_closed(socks, 3.0)
            problems = []
            if len(closed) != 6:
                problems.append("%d of 6 poisoned connections were not closed within 3 s"
                                % (6 - len(closed)))
            closing = [ln for s in socks for ln in peer_log_lines(lb, s) if "clos" in ln.lower()]
            if len(closing) < len(closed) or not closing:
                problems.append("no 'closing' log line for the poisoned connections")
            st = lb.status()
            known = [x["address"] for x in st["servers"] if x["type"] != "Unknown"]
            if len(known) != 3:
                problems.append("mongoses known after the poisoned inserts: %s" % known)
            if st["counters"]["badFrames"] - before["badFrames"] < 6:
                problems.append("badFrames grew by %d, not 6"
                                % (st["counters"]["badFrames"] - before["badFrames"]))
            try:
                rest = [d["_id"] for d in cursor]
                if rest != list(range(2, 10)):
                    problems.append("getMore returned %s" % rest)
            except pymongo.errors.PyMongoError as e:
                problems.append("A's getMore failed: %r" % e)
            assert not problems, "; ".join(problems)
            assert lb.proc.poll() is None
        finally:
            for s in socks:
                s.close()
            a.close()


# --- 8. a TLS ClientHello on the plaintext port --------------------------------------------------

def tls_client_hello():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = outgoing.read()
    assert data[:3] == b"\x16\x03\x01", data[:8]
    return data


def test_tls_client_hello_is_closed_promptly():
    hello = tls_client_hello()
    assert 16 <= struct.unpack("<i", hello[:4])[0] <= 48000000  # looks like a plausible length
    with SimAndMongolb(("--mongos", "1")) as (sim, lb):
        with connect(lb) as s:
            port = s.getsockname()[1]
            s.sendall(hello)
            closed = wait_all_closed([s], 3.0)
        assert closed, ("a TLS ClientHello (read as a %d-byte frame) left the connection open for "
                        "3 s" % struct.unpack("<i", hello[:4])[0])
        wait_for(lambda: [ln for ln in peer_log_lines(lb, port) if "clos" in ln.lower()], 2,
                 what="a log line closing the TLS client")
        assert_serves_others(lb)


# --- 9. a mongos frozen with SIGSTOP --------------------------------------------------------------

def test_frozen_mongos_does_not_block_requests():
    sims = [start_sim("--mongos", "1"), start_sim("--mongos", "1")]
    lb = client = None
    frozen = sims[1]
    stopped = False
    try:
        for sm in sims:
            sm.command(0, {"insert": "fz", "documents": [{"_id": i} for i in range(20)]}, db="test")
        cfg = {"mongolb.shutdown_timeout_ms": 1000, "upstream.heartbeat_interval_ms": 500,
               "upstream.connect_timeout_ms": 1000, "upstream.server_selection_timeout_ms": 5000}
        lb = start_mongolb_clean([sm.servers[0] for sm in sims], cfg)
        client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000, socketTimeoutMS=9000,
                                     maxPoolSize=16)
        coll = client.test.fz
        results = []  # (start, duration, error or None)
        lock = threading.Lock()
        stop = threading.Event()

        def reader(k):
            n = 0
            while not stop.is_set():
                t = time.monotonic()
                err = None
                try:
                    assert coll.find_one({"_id": (k + n) % 20}) is not None
                except Exception as e:  # noqa: BLE001
                    err = repr(e)
                with lock:
                    results.append((t, time.monotonic() - t, err))
                n += 1

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        stopped = True
        t_freeze = time.monotonic()
        time.sleep(4.0)
        stop.set()
        for t in threads:
            t.join(12.0)
        with lock:
            res = list(results)
        slow = [(round(t - t_freeze, 2), round(d, 2), e) for t, d, e in res if d > 8.0]
        assert not slow, ("requests blocked longer than 8 s after a mongos froze "
                          "(start since freeze, seconds, error): %s" % slow[:5])
        late = [(round(t - t_freeze, 2), round(d, 2), e) for t, d, e in res
                if t >= t_freeze + 2.5]
        assert late, "no read started 2.5 s after the freeze"
        bad = [x for x in late if x[2] is not None or x[1] > 3.0]
        assert not bad, "reads 2.5 s after the freeze failed or were slow: %s" % bad[:5]
        assert lb.proc.poll() is None
    finally:
        if stopped:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        if client is not None:
            client.close()
        if lb is not None:
            code = stop_quietly(lb)
            print("\n----- mongolb exit status %s; stderr tail -----\n%s" % (code, lb.log_tail(60)))
        for sm in sims:
            sm.stop()


# --- 10. replica-set hellos listing more hosts than mongolb tracks -------------------------------

def rs_config():
    return {"mongolb.shutdown_timeout_ms": 1000, "upstream.mode": "replicaset",
            "upstream.replica_set": "rs0", "upstream.server_selection_timeout_ms": 5000}


TRACK_LIMIT_LOG = (r"could not be tracked|cannot be tracked|not tracked|cannot track|too many "
                   r"(hosts|members|servers)|more than 64|limit of 64|at most 64")


def test_replset_hello_with_70_hosts():
    with FakeServer() as fs:
        fs.hosts = [fs.address] + ["127.0.0.1:%d" % p for p in free_port_list(69)]
        lb = start_mongolb_clean([fs.address], rs_config(), expect_known=1)
        try:
            wait_for(lambda: log_lines(lb, TRACK_LIMIT_LOG) or lb.proc.poll() is not None, 5,
                     what="a log line saying some of the 70 hosts could not be tracked")
            assert lb.proc.poll() is None, "mongolb died: %s" % lb.proc.returncode
            st = lb.status()
            assert any(x["address"] == fs.address and x["type"] == "RSPrimary"
                       for x in st["servers"]), st["servers"][:2]
            r = raw_command(lb.host, lb.port, {"hello": 1}, timeout=5)
            assert r["ok"] == 1
        finally:
            code = stop_quietly(lb)
            print("\n----- mongolb exit status %s; stderr tail -----\n%s" % (code, lb.log_tail(40)))


def test_replset_membership_churn_beyond_64_hosts():
    rounds, per_round = 6, 12
    ports = free_port_list(rounds * per_round)
    lists = [["127.0.0.1:%d" % p for p in ports[r * per_round:(r + 1) * per_round]]
             for r in range(rounds)]
    state = {"round": 0}

    def handler(fs, cmd):
        name = next(iter(cmd), "")
        if name in ("hello", "ismaster", "isMaster"):
            with fs.lock:
                r = state["round"]
                fs.hosts = [fs.address] + lists[r]
                fs.set_version = r + 1
                if r < rounds - 1:
                    state["round"] = r + 1
            return fs.hello(legacy=name != "hello")
        return {"ok": 0.0, "errmsg": "fake", "code": 59, "codeName": "CommandNotFound"}

    with FakeServer(handler) as fs:
        lb = start_mongolb_clean([fs.address], rs_config(), expect_known=1)
        try:
            wait_for(lambda: state["round"] == rounds - 1, 8, what="the fake primary's last round")
            final = set(lists[-1])

            def newest_listed():
                st = lb.status()
                live = {x["address"] for x in st["servers"] if not x.get("removed")}
                return final <= live

            try:
                wait_for(newest_listed, 4, what="the newest members in mongolbStatus")
            except AssertionError:
                st = lb.status()
                live = {x["address"] for x in st["servers"] if not x.get("removed")}
                raise AssertionError(
                    "after %d distinct hosts, mongolbStatus lists %d of the %d newest members "
                    "(%d servers in all)" % (1 + rounds * per_round, len(final & live),
                                             len(final), len(st["servers"])))
            assert lb.proc.poll() is None
        finally:
            code = stop_quietly(lb)
            print("\n----- mongolb exit status %s; stderr tail -----\n%s" % (code, lb.log_tail(40)))


# --- 13. a client that hangs up while its request is held on the server --------------------------

def test_client_hangup_releases_backend_connection():
    # max_pool_size = 1: the connection the departed client held is the only way to the server.
    with SimAndMongolb(("--mongos", "1"), {"upstream.max_pool_size": 1}) as (sim, lb):
        fail_command(sim, 0, ["find"], mode={"times": 1}, blockConnection=True, blockTimeMS=5000)
        problems = []
        s = connect(lb)
        try:
            send_msg(s, {"find": "c", "filter": {}, "$db": "test"}, request_id=41)
            wait_for(lambda: sim_count(sim, 0, "find") >= 1, 3, what="find reached the mongos")
            pool = pool_of(lb.status())
            has_busy = "busy" in pool
            if not has_busy:
                problems.append("mongolbStatus has no servers[0].pool.busy (%s)" % pool)
            elif pool["busy"] != 1:
                problems.append("pool.busy is %s while the find is held" % pool["busy"])
        finally:
            s.close()
        t0 = time.monotonic()
        if has_busy:
            try:
                wait_for(lambda: pool_of(lb.status())["busy"] == 0, 2.5, step=0.05,
                         what="pool.busy back to 0")
            except AssertionError:
                problems.append("the backend connection stayed busy %.1fs after its client hung up"
                                % (time.monotonic() - t0))
        # Another client needs that one connection: it must not wait for the 5 s block to end.
        with connect(lb, 10) as b:
            send_msg(b, {"find": "c", "filter": {}, "$db": "test"}, request_id=42)
            kind, hdr, body = read_outcome(b, 8.0)
        waited = time.monotonic() - t0
        if kind != "reply" or decode_msg_body(body)[0].get("ok") != 1:
            problems.append("the next client's find got %s" % kind)
        elif waited > 2.5:
            problems.append("the next client's find was answered %.1fs after the hang-up (the "
                            "backend connection was held until the server's 5 s block ended)"
                            % waited)
        assert not problems, "; ".join(problems)
        assert_serves_others(lb)


# --- 14. one failed backend connection must not forget a healthy server's cursors ----------------

def test_one_failed_backend_socket_keeps_other_cursors():
    with SimAndMongolb(("--mongos", "1")) as (sim, lb):
        a = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=8000, socketTimeoutMS=10000)
        try:
            coll = a.test.keep
            coll.insert_many([{"_id": i} for i in range(10)])
            cursor = coll.find({}, batch_size=2).sort("_id", 1)
            assert [next(cursor)["_id"], next(cursor)["_id"]] == [0, 1]
            # connectionStatus, since mongolb answers ping itself.
            fail_command(sim, 0, ["connectionStatus"], mode={"times": 1}, closeConnection=True)
            with connect(lb) as s:  # client B
                send_msg(s, {"connectionStatus": 1, "$db": "admin"}, request_id=51)
                kind, _, _ = read_outcome(s, 5.0)
            assert kind in ("reply", "closed")
            lb.wait_known(1, timeout=5)
            try:
                rest = [d["_id"] for d in cursor]
            except pymongo.errors.OperationFailure as e:
                raise AssertionError("A's getMore failed after B's backend connection was "
                                     "dropped: %s (code %s)" % (e, e.code))
            assert rest == list(range(2, 10))
        finally:
            fail_off(sim, 0)
            a.close()


# --- 15. request_timeout_ms ----------------------------------------------------------------------

def test_request_timeout_returns_network_error():
    with SimAndMongolb(("--mongos", "1"), {"upstream.request_timeout_ms": 1000}) as (sim, lb):
        before = lb.counters()
        fail_command(sim, 0, ["find"], blockConnection=True, blockTimeMS=3000)
        try:
            with connect(lb, 10) as s:
                t0 = time.monotonic()
                send_msg(s, {"find": "c", "filter": {}, "$db": "test"}, request_id=61)
                kind, hdr, body = read_outcome(s, 5.0)
                elapsed = time.monotonic() - t0
            assert kind == "reply", "find held 3 s with request_timeout_ms=1000: " + kind
            doc, _ = decode_msg_body(body)
            assert doc["ok"] == 0 and doc.get("code") in NETWORK_ERROR_CODES, doc
            assert elapsed < 2.5, "error only after %.1fs" % elapsed
        finally:
            fail_off(sim, 0)
        assert_serves_others(lb)
        after = lb.counters()
        assert after["requestsTimedOut"] > before.get("requestsTimedOut", 0)


def test_request_timeout_respects_a_longer_max_time_ms():
    """A command that gives itself more time (maxTimeMS) than request_timeout_ms is not cut at
    request_timeout_ms: the server enforces the command's own limit."""
    with SimAndMongolb(("--mongos", "1"), {"upstream.request_timeout_ms": 1000}) as (sim, lb):
        fail_command(sim, 0, ["find"], blockConnection=True, blockTimeMS=2000)
        try:
            with connect(lb, 10) as s:
                send_msg(s, {"find": "c", "filter": {}, "maxTimeMS": 5000, "$db": "test"},
                         request_id=62)
                kind, hdr, body = read_outcome(s, 6.0)
            assert kind == "reply", kind
            doc, _ = decode_msg_body(body)
            assert doc["ok"] == 1, doc
        finally:
            fail_off(sim, 0)


# --- 18. killCursors with 1,500,000 ids ----------------------------------------------------------

def kill_cursors_frame(n, request_id):
    pack = struct.Struct("<q").pack
    base = 7 * 10**15
    arr_body = b"".join(b"\x12" + str(i).encode() + b"\x00" + pack(base + i) for i in range(n))
    arr = struct.pack("<i", 4 + len(arr_body) + 1) + arr_body + b"\x00"
    doc = bson_doc(e_str(b"killCursors", "c"), b"\x04cursors\x00" + arr, e_str(b"$db", "test"))
    return frame(OP_MSG, struct.pack("<I", 0) + b"\x00" + doc, request_id)


def test_kill_cursors_with_one_and_a_half_million_ids():
    n = 1500000
    data = kill_cursors_frame(n, 71)
    with SimAndMongolb(("--mongos", "1")) as (sim, lb):
        lat, errors, stop = [], [], threading.Event()

        def pinger():
            try:
                with connect(lb, 5) as p:
                    while not stop.is_set():
                        t = time.monotonic()
                        send_msg(p, {"ping": 1, "$db": "admin"}, request_id=1)
                        recv_msg(p)
                        lat.append(time.monotonic() - t)
                        time.sleep(0.05)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        th = threading.Thread(target=pinger)
        th.start()
        try:
            with connect(lb, 15) as s:
                s.sendall(data)
                t0 = time.monotonic()
                s.settimeout(10)
                head = b""
                try:
                    while len(head) < 16:
                        chunk = s.recv(16 - len(head))
                        if not chunk:
                            break
                        head += chunk
                except (socket.timeout, OSError):
                    pass
                elapsed = time.monotonic() - t0
                assert len(head) == 16, ("no reply to a killCursors of %d ids within %.1fs (%s)"
                                         % (n, elapsed, "closed" if elapsed < 10 else "timeout"))
                length = struct.unpack("<i", head[:4])[0]
                assert length <= 16 * 1024 * 1024 + 16 * 1024, (
                    "reply of %d bytes, over the 16 MB BSON limit" % length)
                rest = b""
                while len(rest) < length - 16:
                    chunk = s.recv(min(1 << 20, length - 16 - len(rest)))
                    assert chunk, "connection closed in the middle of the reply"
                    rest += chunk
                elapsed = time.monotonic() - t0
            doc, _ = decode_msg_body(rest)
            if doc["ok"] == 1:
                total = sum(len(doc.get(k, [])) for k in
                            ("cursorsKilled", "cursorsNotFound", "cursorsAlive", "cursorsUnknown"))
                assert total == n, total
            else:
                assert doc.get("code"), doc
            assert elapsed < 5.0, "reply after %.1fs" % elapsed
        finally:
            stop.set()
            th.join(10)
        assert not errors, errors
        assert lat and max(lat) < 2.0, "another client's ping took %.1fs" % max(lat or [0])
        assert_serves_others(lb)
