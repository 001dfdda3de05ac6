"""The admin HTTP listener ([admin] http_listen): /metrics in Prometheus text format (parsed and
checked here), counters that move with traffic, histograms that add up, /healthz and /readyz
with every backend down, a unix socket listener, bad HTTP requests that cost only their own
connection, the connection bound and timeout; and ping, buildInfo and mongolbStatus answered by
mongolb itself while every backend is down, through PyMongo."""

import os
import socket
import subprocess
import tempfile
import time

import pytest
from bson.int64 import Int64
from pymongo.errors import OperationFailure

from admin_harness import (client_for, finish, histogram_ok, http_connect, http_get,
                           parse_prometheus, read_response, start)
from harness import start_sim
from mongolb_harness import free_port, wait_for

def test_metrics_parse_and_move_with_traffic():
    with start_sim("--mongos", "2") as sim:
        lb = start(sim)
        try:
            before = lb.metrics()
            assert before.types["mongolb_requests_total"] == "counter"
            assert before.types["mongolb_request_duration_seconds"] == "histogram"
            assert before.types["mongolb_server_rtt_seconds"] == "gauge"
            c = client_for(lb)
            try:
                coll = c.test.metrics
                coll.insert_many([{"_id": i} for i in range(50)])
                got = [d["_id"] for d in coll.find({}, batch_size=10).sort("_id", 1)]
                assert got == list(range(50))
                c.admin.command("ping")
            finally:
                c.close()
            m = lb.metrics()
            requests = m.value("mongolb_requests_total")
            assert requests > before.value("mongolb_requests_total")
            # Every request is over: the per-class histograms together count each one once.
            total = 0
            for cls in ("read", "write", "getMore", "command"):
                total += histogram_ok(m, "mongolb_request_duration_seconds", **{"class": cls})
            assert total == requests, (total, requests)
            assert m.value("mongolb_request_duration_seconds_count", **{"class": "getMore"}) >= 4
            assert m.value("mongolb_request_duration_seconds_count", **{"class": "write"}) >= 1
            assert m.value("mongolb_request_duration_seconds_count", **{"class": "read"}) >= 1
            # Per server: every forwarded request once, on the server it went to.
            per_server = sum(histogram_ok(m, "mongolb_server_request_duration_seconds",
                                          server=s) for s in sim.servers)
            sent = sum(m.value("mongolb_server_requests_total", server=s) for s in sim.servers)
            assert per_server == sent and sent >= 6, (per_server, sent)
            assert m.value("mongolb_getmores_routed_total") >= 4
            assert m.value("mongolb_cursors_opened_total") >= 1
            assert m.value("mongolb_clients_accepted_total") >= 1
            for s in sim.servers:
                assert m.value("mongolb_server_up", server=s, type="Mongos") == 1
                assert m.get("mongolb_server_rtt_seconds", server=s) is not None
                assert m.get("mongolb_pool_open_connections", server=s) is not None
            assert m.value("mongolb_buffer_limit_bytes") > 0
        finally:
            finish(lb)


def test_errors_by_code_and_cursor_not_found():
    with start_sim("--mongos", "1") as sim:
        lb = start(sim)
        try:
            c = client_for(lb)
            try:
                for _ in range(3):
                    with pytest.raises(OperationFailure) as e:
                        c.test.command({"getMore": Int64(123456789), "collection": "x"})
                    assert e.value.code == 43
            finally:
                c.close()
            m = lb.metrics()
            assert m.value("mongolb_errors_total", code="43", codeName="CursorNotFound") == 3
            assert m.value("mongolb_cursors_not_found_total") == 3
        finally:
            finish(lb)


def test_healthz_and_readyz_with_every_backend_killed():
    sim = start_sim("--mongos", "2")
    try:
        lb = start(sim, {"upstream.connect_timeout_ms": 500})
        try:
            status, headers, body = lb.http("/healthz")
            assert (status, body) == (200, b"ok\n")
            assert headers["connection"] == "close"
            status, _, body = lb.http("/readyz")
            assert status == 200, body
            sim.stop()
            wait_for(lambda: lb.http("/readyz")[0] == 503, timeout=10, what="readyz 503")
            status, _, body = lb.http("/readyz")
            text = body.decode()
            assert text.startswith("no mongos is usable:"), text
            for s in sim.servers:
                assert s in text
            assert lb.http("/healthz")[0] == 200
            m = lb.metrics()
            assert m.value("mongolb_servers_lost_total") >= 2
            for s in sim.servers:
                assert m.value("mongolb_server_up", server=s, type="Unknown") == 0
            # HEAD and unknown paths
            status, _, body = lb.http("/healthz", method="HEAD")
            assert status == 200 and body == b""
            assert lb.http("/nope")[0] == 404
            assert lb.http("/metrics", method="POST")[0] == 405
        finally:
            finish(lb)
    finally:
        sim.stop()


def test_readyz_follows_the_read_preference():
    """In a replica set, readyz wants a server for the configured read preference: with
    secondary and only the primary left, it is not ready."""
    with start_sim("--replset", "rs0", "--members", "2") as sim:
        lb = start(sim, {"upstream.mode": "replicaset", "upstream.replica_set": "rs0",
                         "upstream.read_preference": "secondary"})
        try:
            assert lb.http("/readyz")[0] == 200
            primary = [i for i in range(2) if sim.command(i, {"hello": 1}).get("isWritablePrimary")]
            secondary = 1 - primary[0]
            sim.command(0, {"simKill": secondary})
            wait_for(lambda: lb.http("/readyz")[0] == 503, timeout=10, what="readyz 503")
            assert "read preference secondary" in lb.http("/readyz")[2].decode()
        finally:
            finish(lb)


def test_ping_build_info_and_status_with_every_backend_down():
    """A mongos answers ping without its shards; so does mongolb, through a driver, once every
    backend is down (and a client that connects only then gets its handshake too)."""
    sim = start_sim("--mongos", "1")
    try:
        lb = start(sim, {"upstream.connect_timeout_ms": 500})
        try:
            c = client_for(lb)
            try:
                assert c.admin.command("ping")["ok"] == 1
                info = c.admin.command("buildInfo")
                assert info["ok"] == 1 and info["version"].startswith("7.0")
                assert info["versionArray"][:2] == [7, 0]
                assert info["maxBsonObjectSize"] == 16 * 1024 * 1024
                sim.stop()
                wait_for(lambda: not lb.known_servers(), timeout=10, what="backend unknown")
                t0 = time.monotonic()
                assert c.admin.command("ping")["ok"] == 1
                assert c.admin.command("buildInfo")["version"].startswith("7.0")
                st = c.admin.command("mongolbStatus")
                assert st["ok"] == 1 and st["servers"][0]["type"] == "Unknown"
                assert time.monotonic() - t0 < 2.5, "local answers waited for a backend"
            finally:
                c.close()
            fresh = client_for(lb)
            try:
                assert fresh.admin.command("ping")["ok"] == 1
                assert fresh.admin.command({"mongolbStatus": 1})["ok"] == 1
            finally:
                fresh.close()
        finally:
            finish(lb)
    finally:
        sim.stop()


def test_ping_when_no_backend_was_ever_reachable():
    port = free_port()  # nothing listens there
    lb = start(["127.0.0.1:%d" % port], {"upstream.connect_timeout_ms": 500}, expect_known=0)
    try:
        c = client_for(lb, serverSelectionTimeoutMS=10000)
        try:
            assert c.admin.command("ping")["ok"] == 1
            info = c.admin.command("buildInfo")
            assert info["ok"] == 1 and info["mongolb"]["backendVersionKnown"] is False
            assert c.admin.command("mongolbStatus")["ok"] == 1
        finally:
            c.close()
        assert "no backend has answered yet" in lb.log()
        assert lb.http("/readyz")[0] == 503
    finally:
        finish(lb)


def test_unix_socket_listener():
    with start_sim("--mongos", "1") as sim:
        d = tempfile.mkdtemp(prefix="mlb-admin-")
        path = os.path.join(d, "admin.sock")
        lb = start(sim, {"admin.http_listen": "unix:" + path}, admin_http=False)
        try:
            status, _, body = http_get(path, "/healthz")
            assert (status, body) == (200, b"ok\n")
            status, headers, body = http_get(path, "/metrics")
            assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
            parse_prometheus(body.decode())
        finally:
            finish(lb)
            assert not os.path.exists(path), "the admin socket was not removed at exit"
            os.rmdir(d)


def test_an_admin_socket_replaced_by_someone_else_is_not_removed_at_exit():
    """As for a client listener (test_unix_socket.py): another instance took the admin socket's
    path over while mongolb ran; at exit mongolb leaves that file alone."""
    with start_sim("--mongos", "1") as sim:
        d = tempfile.mkdtemp(prefix="mlb-admin-")
        path = os.path.join(d, "admin.sock")
        lb = start(sim, {"admin.http_listen": "unix:" + path}, admin_http=False)
        newer = None
        try:
            assert http_get(path, "/healthz")[0] == 200
            os.unlink(path)
            newer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            newer.bind(path)
            newer.listen(1)
            finish(lb)
            assert os.path.exists(path), "mongolb removed an admin socket file it did not create"
        finally:
            if newer:
                newer.close()
            if os.path.exists(path):
                os.unlink(path)
            os.rmdir(d)


def test_bad_requests_close_only_their_connection():
    with start_sim("--mongos", "1") as sim:
        lb = start(sim)
        try:
            addr = ("127.0.0.1", lb.http_port)
            waiting = http_connect(addr)
            waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # not finished yet
            with http_connect(addr) as s:
                s.sendall(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
                assert read_response(s)[0] == 400
            with http_connect(addr) as s:
                s.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
                try:
                    status = read_response(s)[0]
                    assert status == 431
                except ConnectionResetError:
                    pass  # closed while we were still sending: also only this connection
            with http_connect(addr) as s:
                s.sendall(b"GET /metrics HTTP/2.0\r\n\r\n")
                assert read_response(s)[0] == 505
            with http_connect(addr) as s:
                s.sendall(b"GET /" + b"p" * 400 + b" HTTP/1.1\r\n\r\n")
                assert read_response(s)[0] == 414
            waiting.sendall(b"\r\n")
            status, _, body = read_response(waiting)
            assert (status, body) == (200, b"ok\n")
            waiting.close()
            assert lb.command({"ping": 1})["ok"] == 1
            assert "admin request refused: 400" in lb.log()
        finally:
            finish(lb)


def test_connection_bound_and_timeout():
    with start_sim("--mongos", "1") as sim:
        lb = start(sim, {"admin.http_max_connections": 2, "admin.http_timeout_ms": 500})
        try:
            addr = ("127.0.0.1", lb.http_port)
            a, b = http_connect(addr), http_connect(addr)
            time.sleep(0.1)
            with http_connect(addr) as c:
                c.settimeout(3)
                assert c.recv(100) == b"", "a third connection over the bound was served"
            # The two idle ones are closed by the timeout.
            for s in (a, b):
                s.settimeout(3)
                t0 = time.monotonic()
                assert s.recv(100) == b""
                assert time.monotonic() - t0 < 2.5
                s.close()
            assert lb.http("/healthz")[0] == 200
            log = lb.log()
            assert "http_max_connections (2) reached" in log
            assert "no whole request within http_timeout_ms" in log
        finally:
            finish(lb)


def test_remote_address_refused_without_http_allow_remote():
    d = tempfile.mkdtemp(prefix="mlb-admin-")
    path = os.path.join(d, "m.ini")
    binary = os.environ.get("MONGOLB") or os.path.join(
        os.path.dirname(__file__), "..", "..", "build", "mongolb")
    try:
        with open(path, "w") as f:
            f.write("[upstream]\nseeds = h:1\n[admin]\nhttp_listen = 0.0.0.0:9216\n")
        r = subprocess.run([binary, "--check-config", "-c", path], capture_output=True)
        assert r.returncode == 1
        assert b"http_listen: '0.0.0.0' is not a loopback address" in r.stderr, r.stderr
        with open(path, "a") as f:
            f.write("http_allow_remote = true\n")
        r = subprocess.run([binary, "--check-config", "-c", path], capture_output=True)
        assert r.returncode == 0, r.stderr
        with open(path, "w") as f:
            f.write("[upstream]\nseeds = h:1\n[admin]\nhttp_listen = [::1]:9216, "
                    "127.0.0.2:9216\n")
        r = subprocess.run([binary, "--check-config", "-c", path], capture_output=True)
        assert r.returncode == 0, r.stderr
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


def test_off_by_default():
    with start_sim("--mongos", "1") as sim:
        lb = start(sim, admin_http=False)
        try:
            assert "admin endpoints" not in lb.log()
        finally:
            finish(lb)
