"""Paths of mongolb's I/O layer that no other test runs, as a user sees them: the limits of retries
(3 attempts, the deadline), shutdown with clients connected (a request in flight finishing, one
cut at shutdown_timeout_ms, a second SIGTERM), SIGHUP reloads (a reloadable key changing live, a
change that needs a restart kept while the rest applies, a broken file kept out), cursor ids that collide between two
servers, the legacy opcodes routed through mongolb, an IPv6 listener, servers that break the
protocol (a frame of bad length, unsolicited bytes on a pooled or a monitoring connection, a
server that never answers or refuses mongolb's hello), a killCursors whose owner fails, and the
command line.

Each test sets up its own servers (mongosim, or scripted fake servers from fake_server.py) and
mongolb, tears them down whatever happens, bounds every wait generously, and talks only to
loopback addresses. Every mongolb must exit 0 on SIGTERM at the end, without a sanitizer report
in its log (make check runs these against an ASan+UBSan build).
"""

import contextlib
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import pymongo
import pytest
from bson.int64 import Int64

from fake_server import HELLO_NAMES, FakeServer, msg_frame
from harness import (OP_GET_MORE, OP_KILL_CURSORS, OP_MSG, OP_QUERY, OP_REPLY, SimError, frame,
                     parse_reply, query_payload, recv_frame, send_msg, start_sim)
from mongolb_harness import (IO_TEST_DEFAULTS, CustomMongolb, SimAndMongolb, decode_msg_body,
                             log_lines, ping_logged_at_debug, raw_command, read_outcome,
                             reload_with, start_mongolb_clean, stop_quietly, wait_for)


def fail_command(sim, i, commands, mode="alwaysOn", **data):
    data["failCommands"] = list(commands)
    r = sim.command(i, {"configureFailPoint": "failCommand", "mode": mode, "data": data})
    assert r.get("ok") == 1, r


def fail_off(sim, i):
    sim.command(i, {"configureFailPoint": "failCommand", "mode": "off"})


def sim_counts(sim, name):
    """{server index: how many `name` commands it received}."""
    return {s["index"]: int(s["commands"].get(name, 0)) for s in sim.stats()["servers"]}


def connect(lb, timeout=5.0):
    return socket.create_connection((lb.host, lb.port), timeout=timeout)


def request(sock, doc, request_id, timeout=10.0):
    """Sends doc as an OP_MSG on sock and waits for one frame: (kind, header, reply document)."""
    send_msg(sock, doc, request_id=request_id)
    kind, hdr, body = read_outcome(sock, timeout)
    return kind, hdr, decode_msg_body(body)[0] if kind == "reply" else None


def assert_serves(lb, what=""):
    """mongolb is alive and answers a local command and a forwarded one."""
    assert lb.proc.poll() is None, "mongolb died (exit status %s) %s" % (lb.proc.returncode, what)
    assert raw_command(lb.host, lb.port, {"mongolbStatus": 1})["ok"] == 1
    r = raw_command(lb.host, lb.port, {"ping": 1})
    assert r["ok"] == 1, r


def server_type(lb, address):
    return {s["address"]: s for s in lb.status()["servers"]}[address]["type"]


def assert_clean_exit(lb):
    """mongolb exited 0 (a graceful stop, nothing leaked under ASan) and its log holds no
    sanitizer report."""
    log = lb.log()
    assert "AddressSanitizer" not in log and "runtime error:" not in log, lb.log_tail(80)
    assert lb.proc.returncode == 0, "mongolb exited with %s:\n%s" % (lb.proc.returncode,
                                                                      lb.log_tail(80))


def close_lb(lb):
    """Stops a mongolb started by a test (SIGTERM; never raises on a hung or crashed one), prints
    its log tail, then assert_clean_exit."""
    code = stop_quietly(lb)
    print("\n----- mongolb exit status %s; stderr tail -----\n%s" % (code, lb.log_tail(60)))
    assert_clean_exit(lb)


@contextlib.contextmanager
def sim_and_mongolb(sim_args=("--mongos", "1"), config=None, **kw):
    """SimAndMongolb (mongolb with IO_TEST_DEFAULTS updated by config in front of a new mongosim),
    then assert_clean_exit once the test is done with it."""
    ctx = SimAndMongolb(sim_args, config, **kw)
    try:
        yield ctx.sim, ctx.lb
    finally:
        ctx.close()
    assert_clean_exit(ctx.lb)


# --- 1. the limits of retries --------------------------------------------------------------------

@pytest.mark.parametrize("failure", ["errorCode", "closeConnection"])
def test_retryable_read_failing_everywhere_gets_three_attempts(failure):
    """A find that fails on every mongos (a retryable error, or the connection dropped) is tried
    exactly 3 times in all, then the client gets an error document well within the selection
    timeout, on a connection that stays usable."""
    cfg = {"upstream.server_selection_timeout_ms": 8000}
    with sim_and_mongolb(("--mongos", "3"), cfg) as (sim, lb):
        for i in range(3):
            if failure == "errorCode":
                fail_command(sim, i, ["find"], errorCode=89)  # NetworkTimeout: retryable read
            else:
                fail_command(sim, i, ["find"], closeConnection=True)
        sim.stats(reset=True)
        before = lb.counters()
        try:
            with connect(lb, 10) as s:
                t0 = time.monotonic()
                kind, hdr, doc = request(s, {"find": "c", "filter": {}, "$db": "test"}, 31)
                elapsed = time.monotonic() - t0
                assert kind == "reply", "a find failing everywhere: connection %s" % kind
                assert hdr[2] == 31
                assert doc["ok"] == 0, doc
                # The last server's own answer relayed, or mongolb's HostUnreachable.
                assert doc["code"] == (89 if failure == "errorCode" else 6), doc
                assert elapsed < 6.0, "error only after %.1fs" % elapsed
                for i in range(3):
                    fail_off(sim, i)
                kind, _, doc = request(s, {"ping": 1, "$db": "admin"}, 32)
                assert kind == "reply" and doc["ok"] == 1, (kind, doc)
        finally:
            for i in range(3):
                fail_off(sim, i)
        finds = sim_counts(sim, "find")
        assert sum(finds.values()) == 3, "attempts per server: %s" % finds
        # Never twice in a row on the same server: each retry avoids the one that just failed.
        assert sum(1 for n in finds.values() if n > 0) >= 2, finds
        after = lb.counters()
        assert after["retries"] - before["retries"] == 2
        assert_serves(lb)


def test_retries_stop_at_the_deadline():
    """Each attempt fails after 1.5 s: the second attempt starts before the 2.5 s selection
    deadline, a third would start after it and is not made; the client gets the server's error."""
    cfg = {"upstream.server_selection_timeout_ms": 2500}
    with sim_and_mongolb(("--mongos", "1"), cfg) as (sim, lb):
        fail_command(sim, 0, ["find"], errorCode=89, blockConnection=True, blockTimeMS=1500)
        sim.stats(reset=True)
        try:
            with connect(lb, 15) as s:
                t0 = time.monotonic()
                kind, _, doc = request(s, {"find": "c", "filter": {}, "$db": "test"}, 33, 12.0)
                elapsed = time.monotonic() - t0
        finally:
            fail_off(sim, 0)
        assert kind == "reply", "no answer: connection %s after %.1fs" % (kind, elapsed)
        assert doc["ok"] == 0 and doc["code"] == 89, doc
        assert sim_counts(sim, "find")[0] == 2, "attempts: %s" % sim_counts(sim, "find")
        # Two attempts of 1.5 s each, and nothing after them.
        assert 2.9 <= elapsed < 7.0, "answered after %.1fs" % elapsed
        assert_serves(lb)


# --- 2. shutdown with clients connected ----------------------------------------------------------

def test_shutdown_lets_a_request_in_flight_finish():
    cfg = {"mongolb.shutdown_timeout_ms": 10000}
    with sim_and_mongolb(("--mongos", "1"), cfg) as (sim, lb):
        sim.command(0, {"insert": "sd", "documents": [{"_id": i} for i in range(3)]}, db="test")
        fail_command(sim, 0, ["find"], mode={"times": 1}, blockConnection=True, blockTimeMS=1500)
        idle = connect(lb)
        busy = connect(lb, 10)
        try:
            kind, _, doc = request(idle, {"hello": 1, "$db": "admin"}, 1)
            assert kind == "reply" and doc["ok"] == 1
            send_msg(busy, {"find": "sd", "filter": {}, "$db": "test"}, request_id=41)
            wait_for(lambda: sim_counts(sim, "find")[0] >= 1, 5, what="find reached the mongos")
            t0 = time.monotonic()
            lb.proc.send_signal(signal.SIGTERM)
            # The idle client is closed at once, and no new connection is taken.
            kind, _, _ = read_outcome(idle, 3.0)
            assert kind == "closed", "the idle client was not closed at SIGTERM: " + kind
            wait_for(lambda: log_lines(lb, r"SIGTERM: shutting down"), 3, what="the log line")

            def refused():
                try:
                    connect(lb, 1).close()
                    return False
                except OSError:
                    return True

            wait_for(refused, 3, what="new connections refused")
            # The request in flight gets its whole answer.
            kind, hdr, body = read_outcome(busy, 10.0)
            answered = time.monotonic() - t0
            assert kind == "reply", "the request in flight got %s, not its reply" % kind
            doc, _ = decode_msg_body(body)
            assert hdr[2] == 41 and doc["ok"] == 1, doc
            assert sorted(d["_id"] for d in doc["cursor"]["firstBatch"]) == [0, 1, 2]
            # Then mongolb exits 0, without waiting for the 10 s shutdown_timeout_ms.
            try:
                code = lb.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                raise AssertionError("mongolb still running 5 s after its last request ended")
            exited = time.monotonic() - t0
            assert code == 0, lb.log_tail()
            assert exited < answered + 5.0 and exited < 9.0, (answered, exited)
            assert read_outcome(busy, 3.0)[0] == "closed"
        finally:
            idle.close()
            busy.close()


def test_shutdown_timeout_cuts_a_request_that_outlives_it():
    cfg = {"mongolb.shutdown_timeout_ms": 1000}
    with sim_and_mongolb(("--mongos", "1"), cfg) as (sim, lb):
        fail_command(sim, 0, ["find"], mode={"times": 1}, blockConnection=True, blockTimeMS=20000)
        with connect(lb, 10) as s:
            send_msg(s, {"find": "c", "filter": {}, "$db": "test"}, request_id=42)
            wait_for(lambda: sim_counts(sim, "find")[0] >= 1, 5, what="find reached the mongos")
            t0 = time.monotonic()
            lb.proc.send_signal(signal.SIGTERM)
            try:
                code = lb.proc.wait(6.0)
            except subprocess.TimeoutExpired:
                raise AssertionError("mongolb still running 6 s after SIGTERM with "
                                     "shutdown_timeout_ms=1000")
            elapsed = time.monotonic() - t0
            kind, _, _ = read_outcome(s, 3.0)
        assert code == 0, lb.log_tail()
        assert 0.9 <= elapsed < 4.5, "exited %.1fs after SIGTERM" % elapsed
        assert kind == "closed", "the cut request's client saw " + kind
        assert log_lines(lb, r"shutdown deadline reached with 1 clients still busy")


def test_a_second_sigterm_exits_at_once():
    cfg = {"mongolb.shutdown_timeout_ms": 30000}
    with sim_and_mongolb(("--mongos", "1"), cfg) as (sim, lb):
        fail_command(sim, 0, ["find"], mode={"times": 1}, blockConnection=True, blockTimeMS=20000)
        with connect(lb, 10) as s:
            send_msg(s, {"find": "c", "filter": {}, "$db": "test"}, request_id=43)
            wait_for(lambda: sim_counts(sim, "find")[0] >= 1, 5, what="find reached the mongos")
            lb.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: log_lines(lb, r"SIGTERM: shutting down"), 3, what="the first SIGTERM")
            time.sleep(0.5)
            assert lb.proc.poll() is None, "mongolb exited with a request in flight"
            t0 = time.monotonic()
            lb.proc.send_signal(signal.SIGTERM)
            try:
                code = lb.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                raise AssertionError("mongolb still running 5 s after a second SIGTERM")
            elapsed = time.monotonic() - t0
            kind, _, _ = read_outcome(s, 3.0)
        assert code == 0, lb.log_tail()
        assert elapsed < 3.0, "exited %.1fs after the second SIGTERM" % elapsed
        assert kind == "closed"
        assert log_lines(lb, r"SIGTERM again: exiting now")


# --- 3. SIGHUP reload ----------------------------------------------------------------------------

def test_sighup_changes_reloadable_keys_live():
    with sim_and_mongolb(("--mongos", "1")) as (sim, lb):
        assert not ping_logged_at_debug(lb)
        reload_with(lb, {"mongolb.log_level": "debug",
                         "upstream.server_selection_timeout_ms": 1000}, r"reloaded ")
        assert ping_logged_at_debug(lb), "log_level = debug did not take effect"
        # server_selection_timeout_ms: with the only mongos gone, a request now fails after 1 s
        # (it was 5 s) and says so.
        sim.proc.kill()
        sim.proc.wait()
        wait_for(lambda: server_type(lb, sim.servers[0]) == "Unknown", 5,
                 what="the killed mongos marked unknown")
        with connect(lb, 10) as s:
            t0 = time.monotonic()
            kind, _, doc = request(s, {"find": "c", "filter": {}, "$db": "test"}, 51, 10.0)
            elapsed = time.monotonic() - t0
        assert kind == "reply", kind
        assert doc["ok"] == 0 and doc["code"] == 133, doc
        assert "after 1000 ms" in doc["errmsg"], doc
        assert 0.9 <= elapsed < 3.5, "the request failed after %.1fs" % elapsed
        assert lb.proc.poll() is None


def test_sighup_keeps_a_change_that_needs_a_restart_and_applies_the_rest():
    with sim_and_mongolb(("--mongos", "1")) as (sim, lb):
        line = reload_with(lb, {"mongolb.log_level": "debug", "upstream.mode": "replicaset",
                                "upstream.replica_set": "rs0"},
                           r"reload: \[upstream\] mode needs a restart")
        assert "kept mongos" in line, line
        assert log_lines(lb, r"reload: replica_set needs a restart")
        # The reloadable key was applied all the same.
        wait_for(lambda: log_lines(lb, r"reloaded .*1 key changed, 2 kept"), 5,
                 what="the reload's summary")
        assert ping_logged_at_debug(lb), "log_level not applied next to a restart-only change"
        assert_serves(lb)


def test_sighup_with_a_broken_file_keeps_the_running_configuration():
    with sim_and_mongolb(("--mongos", "1")) as (sim, lb):
        good = open(lb.conf_path).read()
        broken = good.replace("[mongolb]\n", "[mongolb]\nlog_level = debug\nno_such_key = 1\n"
                              "max_clients = lots\n", 1)
        line = reload_with(lb, None, r"reload: keeping the running configuration", raw=broken)
        assert "no_such_key" in line or "max_clients" in line, line
        assert not ping_logged_at_debug(lb), "log_level changed by a broken file"
        # Not even an ini file.
        reload_with(lb, None, r"reload: keeping the running configuration", raw="[mongolb\n\x00")
        assert_serves(lb)
        assert not ping_logged_at_debug(lb)
        # A file that is gone.
        os.unlink(lb.conf_path)
        seen = len(log_lines(lb, r"reload: keeping the running configuration"))
        lb.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(log_lines(lb, r"reload: keeping the running configuration")) > seen,
                 5, what="the reload of a missing file refused")
        assert_serves(lb)
        # Repaired, it is taken.
        reload_with(lb, None, r"reloaded ", raw=good.replace("log_level = info",
                                                             "log_level = debug"))
        assert ping_logged_at_debug(lb)


# --- 4. cursor ids that collide between two servers ----------------------------------------------

SHARED_ID = 4242424242


class CursorMongos:
    """A fake mongos whose first find opens cursor SHARED_ID (as the other fake's does), and later
    finds ids of its own; it checks every getMore and killCursors against its open cursors and
    records the ids they named."""

    def __init__(self, tag, base):
        self.tag = tag
        self.base = base
        self.lock = threading.Lock()
        self.finds = 0
        self.open = {}  # real id -> batches returned
        self.get_mores = []
        self.kills = []
        self.fs = FakeServer(self.handle, mongos=True)
        self.address = self.fs.address

    def batch(self, cid, n):
        return [{"server": self.tag, "real": Int64(cid), "n": n}]

    def handle(self, fs, cmd):
        name = next(iter(cmd), "")
        if name in HELLO_NAMES:
            return fs.mongos_hello(legacy=name != "hello")
        with self.lock:
            if name == "find":
                cid = SHARED_ID if self.finds == 0 else self.base + self.finds
                self.finds += 1
                self.open[cid] = 0
                return {"cursor": {"id": Int64(cid), "ns": "test.c",
                                   "firstBatch": self.batch(cid, 0)}, "ok": 1.0}
            if name == "getMore":
                cid = int(cmd["getMore"])
                self.get_mores.append(cid)
                if cid not in self.open:
                    return {"ok": 0.0, "code": 43, "codeName": "CursorNotFound",
                            "errmsg": "cursor id %d not found on %s" % (cid, self.tag)}
                self.open[cid] += 1
                return {"cursor": {"id": Int64(cid), "ns": "test.c",
                                   "nextBatch": self.batch(cid, self.open[cid])}, "ok": 1.0}
            if name == "killCursors":
                ids = [int(x) for x in cmd["cursors"]]
                self.kills.append(ids)
                killed = [i for i in ids if self.open.pop(i, None) is not None]
                return {"cursorsKilled": [Int64(i) for i in killed],
                        "cursorsNotFound": [Int64(i) for i in ids if i not in killed],
                        "cursorsAlive": [], "cursorsUnknown": [], "ok": 1.0}
        if name == "ping":
            return {"ok": 1.0}
        return {"ok": 0.0, "code": 59, "codeName": "CommandNotFound", "errmsg": name}

    def close(self):
        self.fs.close()


def test_colliding_cursor_ids_are_rewritten():
    a, b = CursorMongos("a", 1 << 40), CursorMongos("b", 2 << 40)
    lb = None
    try:
        lb = start_mongolb_clean([a.address, b.address], dict(IO_TEST_DEFAULTS))
        cursors = {}  # client-visible id -> (server tag, the server's own id)
        for i in range(60):
            r = lb.command({"find": "c", "batchSize": 1}, db="test")
            assert r["ok"] == 1, r
            first = r["cursor"]["firstBatch"][0]
            cid = int(r["cursor"]["id"])
            assert cid not in cursors, "cursor id %d handed out twice: %s" % (cid, cursors)
            cursors[cid] = (first["server"], int(first["real"]))
            if a.finds and b.finds and len(cursors) >= 4:
                break
        assert a.finds and b.finds, "60 finds never reached both servers (%d, %d)" % (
            a.finds, b.finds)
        assert len(cursors) == a.finds + b.finds
        # Both servers opened SHARED_ID: the first keeps it, the second's is rewritten.
        rewritten = {cid: v for cid, v in cursors.items() if cid != v[1]}
        assert len(rewritten) == 1, cursors
        assert list(rewritten.values())[0][1] == SHARED_ID
        assert SHARED_ID in cursors
        st = lb.status()
        assert st["cursors"]["idCollisions"] == 1
        assert st["cursors"]["open"] == len(cursors)
        assert any("collided" in ln for ln in log_lines(lb, str(SHARED_ID))), \
            "no log line about the collision"

        # getMore, by the client's id: each reaches its own server, with that server's id, and the
        # reply names the cursor by the client's id again.
        for cid, (tag, real) in cursors.items():
            r = lb.command({"getMore": Int64(cid), "collection": "c"}, db="test")
            assert r["ok"] == 1, (cid, tag, real, r)
            assert int(r["cursor"]["id"]) == cid, r
            assert r["cursor"]["nextBatch"] == [{"server": tag, "real": real, "n": 1}], r
        for srv in (a, b):
            mine = sorted(real for tag, real in cursors.values() if tag == srv.tag)
            assert sorted(srv.get_mores) == mine, (srv.tag, srv.get_mores, mine)

        # One killCursors for every cursor and an unknown id: each server gets its own real ids
        # once, and the answer is in the client's ids.
        unknown = 777
        r = lb.command({"killCursors": "c",
                        "cursors": [Int64(c) for c in cursors] + [Int64(unknown)]}, db="test")
        assert r["ok"] == 1, r
        assert sorted(int(x) for x in r["cursorsKilled"]) == sorted(cursors), r
        assert [int(x) for x in r["cursorsNotFound"]] == [unknown], r
        assert r["cursorsAlive"] == [] and r["cursorsUnknown"] == [], r
        for srv in (a, b):
            mine = sorted(real for tag, real in cursors.values() if tag == srv.tag)
            assert [sorted(k) for k in srv.kills] == [mine], (srv.tag, srv.kills, mine)
            assert srv.open == {}, (srv.tag, srv.open)
        st = lb.status()
        assert st["cursors"]["open"] == 0
        assert st["cursors"]["idCollisions"] == 1
        # Forgotten by mongolb too: a getMore is answered locally.
        rid = list(rewritten)[0]
        r = lb.command({"getMore": Int64(rid), "collection": "c"}, db="test")
        assert r["ok"] == 0 and r["code"] == 43, r
        assert len(a.get_mores) + len(b.get_mores) == len(cursors)
    finally:
        if lb is not None:
            close_lb(lb)
        a.close()
        b.close()


# --- 5. the legacy opcodes through mongolb -------------------------------------------------------

def legacy_sim():
    """mongosim as MongoDB 5.0 (two mongos routers), the last release that takes the legacy
    opcodes; skips the test if this simulator cannot be one."""
    try:
        sim = start_sim("--mongos", "2", "--version", "5.0")
    except SimError as e:
        pytest.skip("mongosim cannot behave as MongoDB 5.0 (%s): legacy opcodes untestable" % e)
    try:
        with socket.create_connection(sim.host_port(0), timeout=5) as s:
            s.sendall(frame(OP_QUERY, query_payload("test.$cmd", {"count": "none"}), 1))
            _, body = recv_frame(s)
            reply = parse_reply(body)[3][0]
    except BaseException:
        sim.stop()
        raise
    if reply.get("ok") != 1:
        sim.stop()
        pytest.skip("mongosim --version 5.0 refuses OP_QUERY commands: %s" % reply)
    return sim


def get_more_frame(ns, cid, n, request_id):
    return frame(OP_GET_MORE, struct.pack("<i", 0) + ns.encode() + b"\x00" +
                 struct.pack("<iq", n, cid), request_id)


def kill_cursors_frame(ids, request_id):
    return frame(OP_KILL_CURSORS, struct.pack("<ii", 0, len(ids)) +
                 b"".join(struct.pack("<q", i) for i in ids), request_id)


def test_legacy_opcodes_are_routed_to_the_cursor_owner():
    sim = legacy_sim()
    lb = None
    try:
        sim.command(0, {"insert": "leg", "documents": [{"_id": i} for i in range(30)]}, db="test")
        lb = start_mongolb_clean(sim.servers, dict(IO_TEST_DEFAULTS))
        with connect(lb) as s:
            # An OP_QUERY command is forwarded and its OP_REPLY relayed.
            s.sendall(frame(OP_QUERY, query_payload("test.$cmd", {"count": "leg"}), 61))
            hdr, body = recv_frame(s)
            assert hdr[3] == OP_REPLY and hdr[2] == 61, hdr
            assert parse_reply(body)[3][0]["n"] == 30
            # Legacy finds (OP_QUERY on the collection) open cursors on both routers.
            opened = {}  # cursor id -> the next _id it returns
            for k in range(40):
                s.sendall(frame(OP_QUERY, query_payload("test.leg", {"$query": {},
                                                                     "$orderby": {"_id": 1}},
                                                        n_return=4), 100 + k))
                hdr, body = recv_frame(s)
                flags, cid, start, docs = parse_reply(body)
                assert hdr[3] == OP_REPLY and hdr[2] == 100 + k and flags & 2 == 0, (hdr, docs)
                assert [d["_id"] for d in docs] == [0, 1, 2, 3] and cid != 0
                opened[cid] = 4
                owners = sim.stats()["servers"]
                if len(opened) >= 4 and all(sv["cursorsOpen"] > 0 for sv in owners):
                    break
            per_server = {sv["index"]: sv["cursorsOpen"] for sv in sim.stats()["servers"]}
            assert all(n > 0 for n in per_server.values()), per_server
            assert lb.status()["cursors"]["open"] == len(opened)
            sim.stats(reset=True)
            # OP_GET_MORE reaches each cursor's owner: a wrong server would answer CursorNotFound.
            for rid, cid in enumerate(opened, start=200):
                s.sendall(get_more_frame("test.leg", cid, 5, rid))
                hdr, body = recv_frame(s)
                flags, rcid, start, docs = parse_reply(body)
                assert hdr[3] == OP_REPLY and hdr[2] == rid, hdr
                assert flags & 1 == 0, "OP_GET_MORE of cursor %d: CursorNotFound" % cid
                assert rcid == cid and start == 4, (rcid, start)
                assert [d["_id"] for d in docs] == [4, 5, 6, 7, 8]
            stats = sim.stats()
            gm = {sv["index"]: sv["opcounters"]["getmore"] for sv in stats["servers"]}
            assert gm == per_server, (gm, per_server)
            # OP_KILL_CURSORS of every cursor (and one nobody has): no reply; each owner gets its
            # own ids, and the cursors are gone on the servers and in mongolb.
            routed = lb.counters()["killCursorsRouted"]
            s.sendall(kill_cursors_frame(list(opened) + [5555], 300))
            kind, hdr, doc = request(s, {"ping": 1, "$db": "admin"}, 301)
            assert kind == "reply" and hdr[2] == 301 and doc["ok"] == 1, (kind, hdr)
            assert sum(sv["cursorsOpen"] for sv in sim.stats()["servers"]) == 0
            assert lb.status()["cursors"]["open"] == 0
            assert lb.counters()["killCursorsRouted"] - routed == 2  # one part per owner
            # An OP_GET_MORE of a cursor mongolb does not know is answered locally, in OP_REPLY.
            cid = list(opened)[0]
            s.sendall(get_more_frame("test.leg", cid, 5, 302))
            hdr, body = recv_frame(s)
            flags, _, _, docs = parse_reply(body)
            assert hdr[3] == OP_REPLY and hdr[2] == 302 and flags & 1, (hdr, flags)
            assert sum(sv["opcounters"]["getmore"] for sv in sim.stats()["servers"]) == \
                sum(per_server.values())
        assert_serves(lb)
    finally:
        if lb is not None:
            close_lb(lb)
        sim.stop()


def test_legacy_kill_cursors_is_not_sent_to_a_server_that_refuses_it():
    """MongoDB 5.1+ (here the simulator's default, 7.0) drops a connection that sends
    OP_KILL_CURSORS. mongolb therefore does not pass a client's OP_KILL_CURSORS on to such a
    server: the ids are forgotten, the pooled connection is kept, and the server is not checked
    for a failure it did not have (found by the faithful simulator)."""
    with sim_and_mongolb(("--mongos", "1")) as (sim, lb):
        sim.command(0, {"insert": "lk", "documents": [{"_id": i} for i in range(10)]}, db="test")
        with connect(lb) as s:
            kind, hdr, doc = request(s, {"find": "lk", "batchSize": 2, "$db": "test"}, 71)
            assert kind == "reply" and doc["ok"] == 1, doc
            cid = doc["cursor"]["id"]
            assert cid != 0 and lb.status()["cursors"]["open"] == 1
            before = lb.counters()
            s.sendall(kill_cursors_frame([cid], 72))
            kind, hdr, doc = request(s, {"ping": 1, "$db": "admin"}, 73)
            assert kind == "reply" and hdr[2] == 73 and doc["ok"] == 1, (kind, doc)
            after = lb.counters()
            assert lb.status()["cursors"]["open"] == 0
            assert after["backendConnects"] == before["backendConnects"], "a pooled connection died"
            kind, hdr, doc = request(s, {"find": "lk", "batchSize": 2, "$db": "test"}, 74)
            assert kind == "reply" and doc["ok"] == 1
        assert "a connection failed" not in lb.log(), lb.log_tail(20)


# --- 6. an IPv6 listener -------------------------------------------------------------------------

def ipv6_loopback_port():
    """A free port on [::1], or None when this machine has no IPv6 loopback."""
    if not socket.has_ipv6:
        return None
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            return s.getsockname()[1]
    except OSError:
        return None


def test_ipv6_listener():
    port = ipv6_loopback_port()
    if port is None:
        pytest.skip("this machine has no IPv6 loopback address (::1)")
    with sim_and_mongolb(("--mongos", "1"), mongolb_class=CustomMongolb,
                       extra_listen=["[::1]:%d" % port]) as (sim, lb):
        assert log_lines(lb, r"listening on \[::1\]:%d" % port)
        with socket.create_connection(("::1", port), timeout=5) as s:
            local = s.getsockname()[1]
            kind, _, doc = request(s, {"hello": 1, "$db": "admin"}, 1)
            assert kind == "reply" and doc["ok"] == 1 and doc["msg"] == "isdbgrid"
            kind, _, doc = request(s, {"insert": "v6", "documents": [{"_id": 1}], "$db": "test"},
                                   2)
            assert kind == "reply" and doc["ok"] == 1 and doc["n"] == 1, doc
        # The connection is named by its IPv6 peer in the log.
        wait_for(lambda: log_lines(lb, r"\[c\d+ ::1:%d\]" % local), 3,
                 what="a log line naming the IPv6 client")
        client = pymongo.MongoClient("mongodb://[::1]:%d/" % port, serverSelectionTimeoutMS=5000)
        try:
            assert client.test.v6.find_one({"_id": 1}) == {"_id": 1}
        finally:
            client.close()
        assert_serves(lb)


# --- 7. servers that break the protocol ----------------------------------------------------------

def test_a_reply_of_invalid_length_becomes_an_error_document():
    state = {"finds": 0}

    def handler(fs, cmd):
        name = next(iter(cmd), "")
        if name in HELLO_NAMES:
            return fs.mongos_hello(legacy=name != "hello")
        if name == "find":
            state["finds"] += 1
            # A header whose length is below the 16 bytes of a header, or far above any limit.
            length = 8 if state["finds"] % 2 else 0x7FFFFFF0
            return lambda conn, rid: conn.sendall(struct.pack("<iiii", length, 9, rid, OP_MSG))
        return {"ok": 1.0}

    with FakeServer(handler, mongos=True) as fs:
        lb = start_mongolb_clean([fs.address], dict(IO_TEST_DEFAULTS))
        try:
            with connect(lb, 10) as s:
                kind, hdr, doc = request(s, {"find": "c", "filter": {}, "$db": "test"}, 71)
                assert kind == "reply", "a reply of bad length: the client's connection " + kind
                assert hdr[2] == 71 and doc["ok"] == 0 and doc["code"] == 6, doc  # HostUnreachable
                assert "invalid length" in doc["errmsg"], doc
                # A retryable read: tried 3 times, each time on a new connection.
                assert state["finds"] == 3
                kind, _, doc = request(s, {"ping": 1, "$db": "admin"}, 72)
                assert kind == "reply" and doc["ok"] == 1
            assert log_lines(lb, r"server sent a frame of invalid length")
            # One broken connection only asks for a check: the server stays known.
            time.sleep(1.0)
            assert server_type(lb, fs.address) == "Mongos"
            assert_serves(lb)
        finally:
            close_lb(lb)


def test_extra_bytes_after_a_reply_retire_the_connection():
    def handler(fs, cmd):
        name = next(iter(cmd), "")
        if name in HELLO_NAMES:
            return fs.mongos_hello(legacy=name != "hello")
        if name == "connectionStatus" and cmd.get("extra"):
            # The reply and, in the same write, a frame nobody asked for.
            return lambda conn, rid: conn.sendall(msg_frame({"ok": 1.0, "first": True}, 1, rid) +
                                                  msg_frame({"ok": 1.0, "stray": True}, 2, 0))
        return {"ok": 1.0}

    cfg = dict(IO_TEST_DEFAULTS)
    cfg["mongolb.log_level"] = "debug"
    with FakeServer(handler, mongos=True) as fs:
        lb = start_mongolb_clean([fs.address], cfg)
        try:
            with connect(lb, 10) as s:
                # connectionStatus, since mongolb answers ping itself.
                kind, _, doc = request(s, {"connectionStatus": 1, "$db": "admin"}, 80)
                assert kind == "reply" and doc == {"ok": 1.0}, doc  # a pooled connection
                before = lb.counters()["backendConnects"]
                kind, hdr, doc = request(s, {"connectionStatus": 1, "extra": True, "$db": "admin"},
                                         81)
                assert kind == "reply" and hdr[2] == 81 and doc == {"ok": 1.0, "first": True}, doc
                # Exactly one reply: the stray frame never reaches the client...
                kind, hdr, doc = request(s, {"connectionStatus": 1, "$db": "admin"}, 82)
                assert kind == "reply" and hdr[2] == 82 and doc == {"ok": 1.0}, (hdr, doc)
                assert read_outcome(s, 0.5)[0] == "timeout"
            # ...and the connection it came on is not used again: the next ping needed a new one.
            assert lb.counters()["backendConnects"] == before + 1
            assert log_lines(lb, r"unexpected bytes after a reply|unsolicited bytes from server")
            assert server_type(lb, fs.address) == "Mongos"
            assert_serves(lb)
        finally:
            close_lb(lb)


def test_unsolicited_bytes_on_an_idle_connection_close_it():
    sent = threading.Event()

    def handler(fs, cmd):
        name = next(iter(cmd), "")
        if name in HELLO_NAMES:
            return fs.mongos_hello(legacy=name != "hello")
        if name == "connectionStatus" and cmd.get("later"):
            def reply(conn, rid):
                conn.sendall(msg_frame({"ok": 1.0}, 1, rid))

                def stray():
                    try:
                        conn.sendall(msg_frame({"ok": 1.0, "stray": True}, 2, 0))
                    except OSError:
                        pass
                    sent.set()

                threading.Timer(0.3, stray).start()
            return reply
        return {"ok": 1.0}

    with FakeServer(handler, mongos=True) as fs:
        lb = start_mongolb_clean([fs.address], dict(IO_TEST_DEFAULTS))
        try:
            with connect(lb, 10) as s:
                kind, hdr, doc = request(s, {"connectionStatus": 1, "later": True, "$db": "admin"},
                                         91)
                assert kind == "reply" and hdr[2] == 91 and doc == {"ok": 1.0}, doc
                assert sent.wait(5)
                wait_for(lambda: log_lines(lb, r"unsolicited bytes from server"), 3,
                         what="the idle connection closed for unsolicited bytes")
                assert lb.status()["servers"][0]["pool"]["total"] == 0
                assert read_outcome(s, 0.3)[0] == "timeout"  # the client saw nothing of it
                kind, hdr, doc = request(s, {"connectionStatus": 1, "$db": "admin"}, 92)
                assert kind == "reply" and hdr[2] == 92 and doc == {"ok": 1.0}, doc
            assert server_type(lb, fs.address) == "Mongos"
            assert_serves(lb)
        finally:
            close_lb(lb)


@pytest.mark.parametrize("how", ["silent", "refused"])
def test_a_server_that_does_not_take_new_connections(how):
    """The monitor's hellos are answered, but a new pooled connection's hello (the one carrying
    client metadata) never is (silent: given up after connect_timeout_ms), or is refused (ok: 0,
    as a server refusing mongolb's credentials would): the server is marked unknown and checked
    again, and the client gets an error document by its deadline, never a dropped connection."""
    state = {"answer": False}

    def handler(fs, cmd):
        name = next(iter(cmd), "")
        if name in HELLO_NAMES:
            if "client" in cmd and not state["answer"]:
                if how == "silent":
                    return None
                return {"ok": 0.0, "code": 18, "codeName": "AuthenticationFailed",
                        "errmsg": "fake server: not this client"}
            return fs.mongos_hello(legacy=name != "hello")
        if name == "find":
            return {"cursor": {"id": Int64(0), "ns": "test.c", "firstBatch": [{"_id": 1}]},
                    "ok": 1.0}
        return {"ok": 1.0}

    cfg = dict(IO_TEST_DEFAULTS)
    cfg.update({"upstream.connect_timeout_ms": 1000,
                "upstream.server_selection_timeout_ms": 3000})
    with FakeServer(handler, mongos=True) as fs:
        lb = start_mongolb_clean([fs.address], cfg)
        try:
            before = lb.counters()
            with connect(lb, 15) as s:
                t0 = time.monotonic()
                kind, hdr, doc = request(s, {"find": "c", "filter": {}, "$db": "test"}, 101, 12.0)
                elapsed = time.monotonic() - t0
                assert kind == "reply", "no error document: connection %s" % kind
                assert hdr[2] == 101 and doc["ok"] == 0, doc
                # By the deadline: no server (133), no connection (202), or attempts exhausted (6).
                assert doc["code"] in (6, 133, 202), doc
                assert elapsed < 7.0, "answered after %.1fs" % elapsed
                if how == "silent":
                    assert elapsed >= 0.9, "answered after %.1fs, before any timeout" % elapsed
                    after = lb.counters()
                    assert after["backendConnectFailures"] > before["backendConnectFailures"]
                    assert log_lines(lb, r"marked unknown: connect timed out")
                else:
                    assert log_lines(lb, r"marked unknown: handshake refused")
                # The monitor finds the server again, and once it takes new connections the same
                # client is served.
                wait_for(lambda: server_type(lb, fs.address) == "Mongos", 5,
                         what="the server known again")
                state["answer"] = True
                kind, _, doc = request(s, {"find": "c", "filter": {}, "$db": "test"}, 102, 10.0)
                assert kind == "reply" and doc["ok"] == 1, doc
                assert doc["cursor"]["firstBatch"] == [{"_id": 1}]
            assert_serves(lb)
        finally:
            close_lb(lb)


@pytest.mark.parametrize("how", ["silent", "refused"])
def test_a_server_whose_checks_fail_gets_no_requests(how):
    """A server that accepts TCP and never answers (its monitor's hello times out after
    connect_timeout_ms), or answers hello with ok: 0: it stays Unknown with the reason in
    mongolbStatus, and requests go to the other server."""
    def refuse(fs, cmd):
        return {"ok": 0.0, "code": 13, "codeName": "Unauthorized", "errmsg": "fake: no"}

    reason = {"silent": "hello timed out", "refused": "hello failed"}[how]
    cfg = dict(IO_TEST_DEFAULTS)
    cfg["upstream.connect_timeout_ms"] = 1000
    handler = (lambda fs, cmd: None) if how == "silent" else refuse
    with FakeServer(mongos=True) as good, FakeServer(handler) as bad:
        lb = start_mongolb_clean([good.address, bad.address], cfg, expect_known=1)
        try:
            def bad_reason():
                s = {x["address"]: x for x in lb.status()["servers"]}[bad.address]
                return s["type"] == "Unknown" and reason in s.get("lastError", "")

            wait_for(bad_reason, 6, what="the server Unknown with lastError '%s'" % reason)
            for k in range(10):  # forwarded (mongolb answers ping itself)
                assert raw_command(lb.host, lb.port, {"connectionStatus": 1})["ok"] == 1
            names = [next(iter(c)) for c in bad.received]
            assert names and set(names) <= {"hello"}, names
            assert sum(1 for c in good.received if "connectionStatus" in c) == 10
            assert bad_reason()
            assert_serves(lb)
        finally:
            close_lb(lb)


def test_unsolicited_bytes_on_the_monitoring_connection():
    """A server that sends a frame nobody asked for after a monitor's hello reply: the check
    fails with that reason, the server is marked unknown, checked again at once and known again;
    the application's requests are served before and after."""
    state = {"strays": 0}

    def handler(fs, cmd):
        name = next(iter(cmd), "")
        if name in HELLO_NAMES and "client" not in cmd and state.get("armed") and \
                not state["strays"]:
            state["strays"] += 1
            hello = fs.mongos_hello(legacy=name != "hello")
            return lambda conn, rid: conn.sendall(msg_frame(hello, 1, rid) +
                                                  msg_frame({"ok": 1.0, "stray": True}, 2, 0))
        if name in HELLO_NAMES:
            return fs.mongos_hello(legacy=name != "hello")
        return {"ok": 1.0}

    with FakeServer(handler, mongos=True) as fs:
        lb = start_mongolb_clean([fs.address], dict(IO_TEST_DEFAULTS))
        try:
            assert raw_command(lb.host, lb.port, {"ping": 1})["ok"] == 1
            state["armed"] = True
            # One line for the event (the server was known): "marked unknown: <why>".
            wait_for(lambda: log_lines(lb, r"marked unknown: unexpected bytes on the monitoring "
                                           r"connection"), 5, what="the check failing")
            assert not log_lines(lb, r"check failed: unexpected bytes")
            wait_for(lambda: server_type(lb, fs.address) == "Mongos", 5,
                     what="the server known again")
            assert state["strays"] == 1
            assert_serves(lb)
        finally:
            close_lb(lb)


def test_kill_cursors_whose_owner_fails_reports_its_ids_unknown():
    """A killCursors split between two mongos routers, one of which drops the connection: the
    client gets ok: 1 with that router's cursors in cursorsUnknown and the other's killed."""
    with sim_and_mongolb(("--mongos", "2")) as (sim, lb):
        sim.command(0, {"insert": "kc", "documents": [{"_id": i} for i in range(20)]}, db="test")
        owned = {0: [], 1: []}
        for k in range(40):
            before = {x["index"]: x["cursorsOpen"] for x in sim.stats()["servers"]}
            r = lb.command({"find": "kc", "batchSize": 2}, db="test")
            assert r["ok"] == 1 and r["cursor"]["id"], r
            after = {x["index"]: x["cursorsOpen"] for x in sim.stats()["servers"]}
            owner = [i for i in after if after[i] == before[i] + 1]
            assert len(owner) == 1, (before, after)
            owned[owner[0]].append(int(r["cursor"]["id"]))
            if owned[0] and owned[1] and k >= 3:
                break
        assert owned[0] and owned[1], owned
        fail_command(sim, 0, ["killCursors"], closeConnection=True)
        try:
            ids = owned[0] + owned[1]
            r = lb.command({"killCursors": "kc", "cursors": [Int64(i) for i in ids]}, db="test")
        finally:
            fail_off(sim, 0)
        assert r["ok"] == 1, r
        assert sorted(int(x) for x in r["cursorsUnknown"]) == sorted(owned[0]), (r, owned)
        assert sorted(int(x) for x in r["cursorsKilled"]) == sorted(owned[1]), (r, owned)
        assert r["cursorsNotFound"] == [] and r["cursorsAlive"] == [], r
        opened = {x["index"]: x["cursorsOpen"] for x in sim.stats()["servers"]}
        assert opened == {0: len(owned[0]), 1: 0}, opened
        assert_serves(lb)


# --- 8. the command line -------------------------------------------------------------------------

def run_cli(*args):
    binary = os.environ.get("MONGOLB", os.path.join(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))), "build", "mongolb"))
    p = subprocess.run([binary] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_command_line():
    code, out, err = run_cli("--version")
    assert code == 0 and out.startswith("mongolb ") and out.strip() != "mongolb", (out, err)
    code, out, err = run_cli("-h")
    assert code == 0 and out.startswith("Usage: mongolb -c FILE") and "--check-config" in out
    for bad in ((), ("--no-such-option",), ("-c", "a.ini", "extra")):
        code, out, err = run_cli(*bad)
        assert code == 2 and "Usage: mongolb -c FILE" in err and out == "", (bad, err)
    code, out, err = run_cli("-c", "/nonexistent/mongolb.ini")
    assert code == 1 and "/nonexistent/mongolb.ini" in err, err
