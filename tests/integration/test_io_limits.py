"""Limits of mongolb's I/O layer, as a user sees them: memory that stays bounded under huge or
unread frames, timeouts for slow, idle and stalled clients, the fd limit, max_clients, idle
backend connections, and the unix-socket listener's file.

Each test sets up its own simulator (mongosim) and mongolb and tears both down whatever happens,
bounds every wait, and sends traffic only to 127.0.0.1. Several use configuration keys and
mongolbStatus fields of the reworked connection layer ([mongolb] max_buffer_bytes,
client_frame_timeout_ms, client_write_timeout_ms, client_idle_timeout_ms; [upstream]
max_idle_time_ms; counters.clientsTimedOut, ...).
"""

import os
import resource
import select
import shutil
import socket
import struct
import tempfile
import threading
import time

import pymongo

from harness import OP_MSG, recv_msg, send_msg
from mongolb_harness import (CustomMongolb, SimAndMongolb, decode_msg_body, log_lines,
                             raw_command, read_outcome, rss_kb, run_mongolb_conf, stop_quietly,
                             wait_for)

MAX_RSS_KB = 200 * 1024


def connect(lb, timeout=5.0):
    return socket.create_connection((lb.host, lb.port), timeout=timeout)


def hello_ok(sock, timeout=5.0):
    """Sends hello on sock; True if an ok reply comes back."""
    try:
        sock.settimeout(timeout)
        send_msg(sock, {"hello": 1, "$db": "admin"}, request_id=3)
        return recv_msg(sock)[1].get("ok") == 1
    except (OSError, ConnectionError):
        return False


def is_closed_now(sock, wait=0.0):
    """True if the peer has closed sock (EOF or reset) within `wait` seconds; data is dropped."""
    deadline = time.monotonic() + wait
    while True:
        left = max(0.0, deadline - time.monotonic())
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            return False
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionError, OSError):
            return True
        if time.monotonic() >= deadline:
            return False


def assert_alive(lb):
    assert lb.proc.poll() is None, "mongolb died (exit status %s)" % lb.proc.returncode


class RssWatch:
    """Samples a process's VmRSS every 50 ms in a thread; .max_kb is the highest seen."""

    def __init__(self, pid):
        self.pid = pid
        self.max_kb = rss_kb(pid)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.max_kb = max(self.max_kb, rss_kb(self.pid))
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._t.join(2)
        return self.max_kb


# --- 6. memory bound: huge frames streamed by many clients ---------------------------------------

def test_many_huge_frames_keep_memory_bounded():
    cfg = {"mongolb.max_buffer_bytes": 67108864, "mongolb.client_frame_timeout_ms": 3000}
    with SimAndMongolb(("--mongos", "1"), cfg) as (sim, lb):
        sim.command(0, {"insert": "mem", "documents": [{"_id": 1}]}, db="test")
        stop = threading.Event()
        closed_at = {}
        chunk = b"\x00" * (256 * 1024)
        length = 48000000 - 1

        def sender(k):
            try:
                s = connect(lb)
            except OSError:
                closed_at[k] = time.monotonic()
                return
            try:
                s.settimeout(0.2)
                s.sendall(struct.pack("<iiii", length, k + 1, 0, OP_MSG))
                sent = 16
                while not stop.is_set() and sent < length:
                    try:
                        sent += s.send(chunk[:min(len(chunk), length - sent)])
                    except socket.timeout:
                        continue
                    except OSError:
                        closed_at[k] = time.monotonic()
                        return
                # Sent it all (or told to stop): see whether mongolb closes the connection.
                while not stop.is_set():
                    if is_closed_now(s, 0.2):
                        closed_at[k] = time.monotonic()
                        return
            finally:
                s.close()

        watch = RssWatch(lb.proc.pid)
        t0 = time.monotonic()
        threads = [threading.Thread(target=sender, args=(k,)) for k in range(20)]
        for t in threads:
            t.start()
        probe = None
        try:
            time.sleep(1.0)
            p0 = time.monotonic()
            try:
                r = raw_command(lb.host, lb.port, {"find": "mem", "filter": {}}, db="test",
                                timeout=5)
                probe = (time.monotonic() - p0, r.get("ok"))
            except (OSError, ConnectionError) as e:
                probe = (time.monotonic() - p0, repr(e))
            # Until every sender is closed (client_frame_timeout_ms = 3000), at most 7 s.
            while time.monotonic() - t0 < 7.0 and len(closed_at) < 20:
                if watch.max_kb > 3 * MAX_RSS_KB or lb.proc.poll() is not None:
                    break  # far over the bound already: stop feeding it
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(5)
            max_kb = watch.stop()
        assert_alive(lb)
        assert max_kb < MAX_RSS_KB, ("mongolb's RSS reached %d MB with 20 clients streaming "
                                     "48 MB frames" % (max_kb // 1024))
        assert probe and probe[1] == 1 and probe[0] < 5.0, "another client's find: %s" % (probe,)
        assert len(closed_at) == 20, ("%d of 20 clients still connected 7 s into frames that "
                                      "must arrive within 3 s" % (20 - len(closed_at)))


# --- 6. memory bound and the pool: clients that never read their replies -------------------------

def test_slow_readers_are_closed_and_do_not_hold_the_pool():
    cfg = {"mongolb.client_write_timeout_ms": 2000, "mongolb.max_buffer_bytes": 67108864,
           "upstream.max_pool_size": 5, "upstream.server_selection_timeout_ms": 15000}
    with SimAndMongolb(("--mongos", "1"), cfg) as (sim, lb):
        direct = pymongo.MongoClient(sim.uri(0), serverSelectionTimeoutMS=5000)
        try:
            big = "x" * (900 * 1024)
            for i in range(16):
                direct.test.big.insert_one({"_id": i, "pad": big})
            direct.test.small.insert_one({"_id": 1})
        finally:
            direct.close()
        before = lb.counters()
        watch = RssWatch(lb.proc.pid)
        slow = []
        client = None
        try:
            for k in range(20):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(5)
                s.connect((lb.host, lb.port))
                send_msg(s, {"find": "big", "filter": {}, "batchSize": 100, "$db": "test"},
                         request_id=100 + k)
                slow.append(s)
            time.sleep(0.3)
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=15000,
                                         socketTimeoutMS=15000, retryReads=False)
            t0 = time.monotonic()
            err = None
            try:
                doc = client.test.small.find_one({"_id": 1})
            except pymongo.errors.PyMongoError as e:
                doc, err = None, repr(e)
            took = time.monotonic() - t0
            assert doc == {"_id": 1}, "find behind 20 slow readers failed after %.1fs: %s" % (
                took, err)
            assert took < 10.0, "find behind 20 slow readers took %.1fs" % took
            wait_for(lambda: lb.counters().get("clientsTimedOut", 0) >
                     before.get("clientsTimedOut", 0), 5, what="counters.clientsTimedOut grows")
        finally:
            max_kb = watch.stop()
            for s in slow:
                s.close()
            if client is not None:
                client.close()
        assert_alive(lb)
        assert max_kb < MAX_RSS_KB, "mongolb's RSS reached %d MB" % (max_kb // 1024)


# --- 7. slowloris: frames that trickle in one byte a second --------------------------------------

def test_slowloris_connections_are_closed():
    cfg = {"mongolb.client_frame_timeout_ms": 1000, "mongolb.max_clients": 60}
    with SimAndMongolb(("--mongos", "1"), cfg) as (sim, lb):
        data = struct.pack("<iiii", 100, 1, 0, OP_MSG) + b"\x00" * 84
        socks = []
        try:
            for _ in range(50):
                socks.append(connect(lb))
            t0 = time.monotonic()
            closed_at = {}
            sent = 0
            next_byte = t0
            while time.monotonic() - t0 < 4.0 and len(closed_at) < len(socks):
                now = time.monotonic()
                if now >= next_byte:
                    for i, s in enumerate(socks):
                        if i in closed_at:
                            continue
                        try:
                            s.send(data[sent:sent + 1])
                        except OSError:
                            closed_at[i] = now - t0
                    sent += 1
                    next_byte += 1.0
                open_socks = [s for i, s in enumerate(socks) if i not in closed_at]
                r, _, _ = select.select(open_socks, [], [], 0.05)
                for s in r:
                    i = socks.index(s)
                    try:
                        gone = not s.recv(4096)
                    except OSError:
                        gone = True
                    if gone:
                        closed_at[i] = time.monotonic() - t0
            late = sorted(t for t in closed_at.values() if t > 3.0)
            assert len(closed_at) == 50, ("%d of 50 one-byte-a-second clients still connected "
                                          "after 4 s (client_frame_timeout_ms=1000)"
                                          % (50 - len(closed_at)))
            assert not late, "closed only after %s s" % late[:5]
        finally:
            for s in socks:
                s.close()
        assert_alive(lb)
        with connect(lb) as s:
            assert hello_ok(s), "a normal client could not connect after the slowloris"


# --- 11. the fd limit ----------------------------------------------------------------------------

def low_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def test_fd_limit_closes_excess_connections_and_recovers():
    with SimAndMongolb(("--mongos", "1"), mongolb_class=CustomMongolb,
                       preexec_fn=low_nofile) as (sim, lb):
        first = [connect(lb) for _ in range(10)]
        extra = []
        try:
            for s in first:
                assert hello_ok(s)
            assert raw_command(lb.host, lb.port, {"ping": 1})["ok"] == 1  # a pooled connection
            for _ in range(90):
                try:
                    extra.append(connect(lb, 2))
                except OSError:
                    pass
            # Every connection is either served or closed, none left hanging; some are closed.
            states = {"served": 0, "closed": 0, "hanging": 0}
            for s in extra:
                send_ok = True
                try:
                    s.settimeout(2.0)
                    send_msg(s, {"hello": 1, "$db": "admin"}, request_id=4)
                except OSError:
                    send_ok = False
                kind, _, body = read_outcome(s, 2.0) if send_ok else ("closed", None, None)
                if kind == "reply" and decode_msg_body(body)[0].get("ok") == 1:
                    states["served"] += 1
                elif kind == "timeout":
                    states["hanging"] += 1
                else:
                    states["closed"] += 1
            assert states["closed"] > 0, ("no extra connection was closed under a 64-fd limit: %s"
                                          % states)
            assert states["hanging"] == 0, "connections neither served nor closed: %s" % states
            lines = log_lines(lb, r"too many open files|EMFILE|fd limit|file descriptor")
            assert lines, "no log line about the fd limit"
            assert_alive(lb)
            for s in first:
                assert hello_ok(s), "one of the first clients is no longer served"
        finally:
            for s in extra:
                s.close()
        # Once connections are gone, new ones are accepted again.
        def new_client_ok():
            try:
                with connect(lb, 2) as s:
                    return hello_ok(s, 2.0)
            except OSError:
                return False

        wait_for(new_client_ok, 5, step=0.2, what="a new client accepted after the burst")
        for s in first:
            s.close()


# --- 12. the unix socket's file ------------------------------------------------------------------

def run_mongolb(listen, seeds, wait=3.0):
    """Starts mongolb with this listen value and waits up to `wait` seconds for it to exit.
    Returns (exit status or None if it was still running and had to be stopped, its output)."""
    return run_mongolb_conf("[mongolb]\nlisten = %s\nshutdown_timeout_ms = 1000\n[upstream]\n"
                            "seeds = %s\nheartbeat_interval_ms = 500\n" % (listen, seeds), wait)


def unix_hello_ok(path, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        return hello_ok(s, timeout)
    except OSError:
        return False
    finally:
        s.close()


def test_unix_listen_on_regular_file_refuses_to_start():
    d = tempfile.mkdtemp(prefix="mlb-sock-")
    try:
        path = os.path.join(d, "data.txt")
        with open(path, "w") as f:
            f.write("precious\n")
        code, out = run_mongolb("unix:" + path, "127.0.0.1:1")
        still = os.path.exists(path) and open(path).read() == "precious\n"
        assert code is not None, ("mongolb started on unix:%s, a regular file (file intact: %s)"
                                  % (path, still))
        assert code != 0, out
        assert still, "the regular file was removed or changed"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_unix_listen_second_instance_refuses_and_first_keeps_serving():
    d = tempfile.mkdtemp(prefix="mlb-sock-")
    path = os.path.join(d, "mongolb.sock")
    try:
        with SimAndMongolb(("--mongos", "1"), mongolb_class=CustomMongolb,
                           extra_listen=["unix:" + path]) as (sim, lb):
            assert unix_hello_ok(path), "the first mongolb does not serve on its unix socket"
            code, out = run_mongolb("unix:" + path, sim.servers[0])
            first_ok = unix_hello_ok(path)
            assert code is not None, ("a second mongolb started on the live socket %s (first "
                                      "still serves there: %s)" % (path, first_ok))
            assert code != 0, out
            assert first_ok, "the first mongolb no longer serves on its unix socket"
            assert_alive(lb)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_unix_socket_file_removed_on_exit():
    d = tempfile.mkdtemp(prefix="mlb-sock-")
    path = os.path.join(d, "mongolb.sock")
    try:
        ctx = SimAndMongolb(("--mongos", "1"), mongolb_class=CustomMongolb,
                            extra_listen=["unix:" + path])
        try:
            lb = ctx.lb
            assert unix_hello_ok(path)
            code = stop_quietly(lb)
            assert code == 0, lb.log_tail()
            assert not os.path.exists(path), "the socket file %s is left after exit" % path
        finally:
            ctx.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- 16. client_idle_timeout_ms ------------------------------------------------------------------

def test_idle_client_closed_active_one_kept():
    with SimAndMongolb(("--mongos", "1"), {"mongolb.client_idle_timeout_ms": 500}) as (sim, lb):
        with connect(lb) as idle, connect(lb) as active:
            assert hello_ok(idle) and hello_ok(active)
            t0 = time.monotonic()
            idle_closed = None
            answered = 0
            while time.monotonic() - t0 < 2.5:
                if idle_closed is None and is_closed_now(idle, 0.0):
                    idle_closed = time.monotonic() - t0
                send_msg(active, {"ping": 1, "$db": "admin"}, request_id=5)
                kind, _, body = read_outcome(active, 3.0)
                assert kind == "reply", "the active client was %s after %.1fs" % (
                    kind, time.monotonic() - t0)
                answered += 1
                time.sleep(0.2)
            if idle_closed is None and is_closed_now(idle, 0.0):
                idle_closed = time.monotonic() - t0
        assert idle_closed is not None, "an idle client was still connected after 2.5 s"
        assert idle_closed < 2.0, "idle client closed only after %.1fs" % idle_closed
        assert answered >= 5
        assert_alive(lb)


# --- 17. max_idle_time_ms of the backend pool ----------------------------------------------------

def test_idle_pool_connections_are_closed():
    with SimAndMongolb(("--mongos", "1"), {"upstream.max_idle_time_ms": 500}) as (sim, lb):
        sim.command(0, {"insert": "burst", "documents": [{"_id": 1}]}, db="test")
        sim.command(0, {"configureFailPoint": "failCommand", "mode": "alwaysOn",
                        "data": {"failCommands": ["find"], "blockConnection": True,
                                 "blockTimeMS": 300}})
        client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000, socketTimeoutMS=5000,
                                     maxPoolSize=10)
        try:
            errors = []

            def one():
                try:
                    assert client.test.burst.find_one({"_id": 1}) == {"_id": 1}
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))

            threads = [threading.Thread(target=one) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert not errors, errors
            sim.command(0, {"configureFailPoint": "failCommand", "mode": "off"})
            peak = lb.status()["servers"][0]["pool"]["total"]
            assert peak >= 2, "the burst opened only %d backend connections" % peak
            t0 = time.monotonic()
            try:
                wait_for(lambda: lb.status()["servers"][0]["pool"]["total"] == 0, 3, step=0.1,
                         what="pool.total 0")
            except AssertionError:
                raise AssertionError("pool.total still %d, %.1fs after the burst (peak %d, "
                                     "max_idle_time_ms=500)" % (
                                         lb.status()["servers"][0]["pool"]["total"],
                                         time.monotonic() - t0, peak))
        finally:
            client.close()
        assert_alive(lb)


# --- 19. max_clients -----------------------------------------------------------------------------

def test_max_clients_refuses_the_sixth_and_accepts_after_a_close():
    with SimAndMongolb(("--mongos", "1"), {"mongolb.max_clients": 5}) as (sim, lb):
        time.sleep(0.3)  # the harness's own status connection is gone
        five = []
        try:
            for _ in range(5):
                s = connect(lb)
                five.append(s)
                assert hello_ok(s), "one of the first five clients was not served"
            with connect(lb) as sixth:
                try:
                    send_msg(sixth, {"hello": 1, "$db": "admin"}, request_id=9)
                except OSError:
                    pass
                kind, _, body = read_outcome(sixth, 3.0)
                if kind == "reply":
                    doc, _ = decode_msg_body(body)
                    assert doc.get("ok") == 0, "the 6th client was served: %s" % doc
                else:
                    assert kind == "closed", "the 6th connection was neither refused nor closed"
            assert log_lines(lb, r"refus|max_clients"), "no log line about the refused client"
            five.pop().close()

            def new_client_ok():
                with connect(lb, 2) as s:
                    return hello_ok(s, 2.0)

            wait_for(new_client_ok, 3, step=0.1, what="a new client accepted after one closed")
            for s in five:
                assert hello_ok(s)
        finally:
            for s in five:
                s.close()
        assert_alive(lb)
