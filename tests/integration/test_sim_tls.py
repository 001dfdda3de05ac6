"""mongosim's TLS listener (--tls-cert, --tls-ca, --tls-require-client-cert) seen through PyMongo
and Python's ssl module: what drivers accept from it is what mongolb's backend side will meet.
Certificates are made for the session by tls_certs.py."""

import os
import socket
import ssl
import struct
import subprocess
import time
import urllib.parse
import warnings

import bson
import pymongo
import pytest
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from harness import (DEFAULT_BINARY, OP_MSG, Sim, closed_by_peer, frame, msg_payload, recv_msg,
                     send_msg, start_sim)
from tls_certs import tls_certs  # noqa: F401 (a pytest fixture)


class LoggedSim(Sim):
    """A simulator whose stderr is kept in a file, for tests that read its log lines."""

    def __init__(self, args, log_path, timeout=10.0, tls_ca=None):
        binary = os.environ.get("MONGOSIM", DEFAULT_BINARY)
        self.args = list(args) + ["--port", "0"]
        self.log_path = str(log_path)
        # What Sim.command needs to reach a TLS-only simulator, where the harness supports it.
        self.tls_ca = tls_ca
        self.tls_client = None
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([binary] + self.args, stdout=subprocess.PIPE,
                                         stderr=log)
        self.ready = self._wait_ready(timeout)
        self.servers = self.ready["servers"]
        self.set_name = self.ready.get("setName")
        self.mode = self.ready.get("mode")

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_log(self, text, timeout=5.0):
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError("%r not in the simulator's log:\n%s" % (text, self.log()))
            time.sleep(0.02)


def tls_uri(sim, certs, i=None, **options):
    """A TLS URI for server i (direct) or for the whole deployment."""
    opts = {"tls": "true", "tlsCAFile": urllib.parse.quote(certs.ca, safe=""),
            "serverSelectionTimeoutMS": "5000"}
    opts.update(options)
    return sim.uri(i, **opts)


def failing_client(host, port, **kw):
    """A direct client that gives up quickly: for connections that are meant to fail."""
    return pymongo.MongoClient(host, port, directConnection=True, serverSelectionTimeoutMS=1500,
                               connectTimeoutMS=1500, **kw)


def expect_refused(client):
    """The client cannot run a command; returns the error message."""
    try:
        with pytest.raises(ServerSelectionTimeoutError) as e:
            client.admin.command("ping")
        return str(e.value)
    finally:
        client.close()


def stop_cleanly(sim):
    """Stops the simulator and checks it exited by itself with 0 (a sanitizer report or a crash
    would give another status)."""
    assert sim.stop() == 0


def raw_tls(sim, certs, i=0, server_hostname="localhost", **ctx_kw):
    """A TLS socket (Python's ssl module) to server i, verified against the test CA."""
    ctx = ssl.create_default_context(cafile=certs.ca)
    for k, v in ctx_kw.items():
        setattr(ctx, k, v)
    sock = socket.create_connection(sim.host_port(i), timeout=5)
    return ctx.wrap_socket(sock, server_hostname=server_hostname)


def test_pymongo_crud_and_cursors_over_tls_on_two_mongoses(tls_certs):
    with start_sim("--mongos", "2", "--tls-cert", tls_certs.server) as sim:
        # The ready line is the same as without TLS.
        assert sim.mode == "mongos" and len(sim.servers) == 2
        client = pymongo.MongoClient(tls_uri(sim, tls_certs))
        try:
            coll = client.shop.items
            coll.insert_many([{"_id": i, "qty": i % 7, "pad": "x" * 200} for i in range(3000)])
            coll.update_one({"_id": 5}, {"$set": {"tag": "t"}})
            assert coll.find_one({"_id": 5})["tag"] == "t"
            # Small batches: the cursor is read with many getMores over the same TLS connection.
            ids = [d["_id"] for d in coll.find({}, {"_id": 1}).sort("_id", 1).batch_size(50)]
            assert ids == list(range(3000))
            assert coll.database.command("count", "items", query={"qty": 3})["n"] == 429
            # A large document and a batch of about 16 MB: replies far larger than one TLS
            # record or one chunk of the simulator's encryption.
            coll.insert_one({"_id": "big", "blob": b"\x01" * (8 << 20)})
            assert len(coll.find_one({"_id": "big"})["blob"]) == 8 << 20
            wide = client.shop.wide
            wide.insert_many([{"_id": i, "pad": "y" * 8000} for i in range(2500)])
            got = list(wide.find().batch_size(2500))
            assert len(got) == 2500 and all(len(d["pad"]) == 8000 for d in got)
            coll.delete_many({"qty": 0})
        finally:
            client.close()
        # Both routers serve the same store, each over TLS, and each by its host names:
        # 127.0.0.1 (SAN IP) and localhost (SAN DNS).
        for i in range(2):
            for host in ("127.0.0.1", "localhost"):
                port = sim.host_port(i)[1]
                c = pymongo.MongoClient(host, port, directConnection=True, tls=True,
                                        tlsCAFile=tls_certs.ca, serverSelectionTimeoutMS=5000)
                try:
                    assert c.admin.command("hello")["msg"] == "isdbgrid"
                    assert c.shop.command("count", "items")["n"] == 3000 - 429 + 1
                finally:
                    c.close()
        stop_cleanly(sim)


def test_tls_versions(tls_certs, tmp_path):
    sim = LoggedSim(["--standalone", "--tls-cert", tls_certs.server], tmp_path / "sim.log")
    try:
        with raw_tls(sim, tls_certs) as s:
            assert s.version() == "TLSv1.3"
            send_msg(s, {"hello": 1, "$db": "admin"})
            assert recv_msg(s)[1]["isWritablePrimary"] is True
        with raw_tls(sim, tls_certs, maximum_version=ssl.TLSVersion.TLSv1_2) as s:
            assert s.version() == "TLSv1.2"
            send_msg(s, {"ping": 1, "$db": "admin"})
            assert recv_msg(s)[1]["ok"] == 1.0
        # TLS 1.1 is refused by the server. The client context must be told to allow it at all.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ssl.SSLError, ValueError):
            pytest.skip("this Python cannot offer TLS 1.1")
        with socket.create_connection(sim.host_port(0), timeout=5) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError)) as e:
                ctx.wrap_socket(raw).close()
        if "NO_PROTOCOLS_AVAILABLE" in str(e.value):
            pytest.skip("this Python cannot offer TLS 1.1")
        sim.wait_log("TLS handshake failed: unsupported protocol")
    finally:
        stop_cleanly(sim)


def test_plaintext_client_is_closed(tls_certs, tmp_path):
    sim = LoggedSim(["--mongos", "1", "--tls-cert", tls_certs.server], tmp_path / "sim.log")
    try:
        # A MongoDB message where a TLS ClientHello should be: the connection is closed, with a
        # log line naming OpenSSL's reason.
        with socket.create_connection(sim.host_port(0), timeout=5) as s:
            send_msg(s, {"hello": 1, "$db": "admin"})
            assert closed_by_peer(s)
        sim.wait_log("TLS handshake failed")
        assert "plaintext client on a TLS-only port" in sim.log()
        # A driver without tls=true cannot use the server.
        expect_refused(failing_client(*sim.host_port(0)))
        # The listener still serves TLS clients.
        c = pymongo.MongoClient(tls_uri(sim, tls_certs, 0))
        assert c.admin.command("ping")["ok"] == 1.0
        c.close()
    finally:
        stop_cleanly(sim)


def test_client_side_verification_failures(tls_certs):
    # The server certificate does not chain to the client's CA.
    with start_sim("--mongos", "1", "--tls-cert", tls_certs.server) as sim:
        msg = expect_refused(failing_client(*sim.host_port(0), tls=True,
                                            tlsCAFile=tls_certs.other_ca))
        assert "certificate verify failed" in msg
        stop_cleanly(sim)
    # An expired certificate: refused unless the client allows invalid certificates.
    with start_sim("--mongos", "1", "--tls-cert", tls_certs.expired) as sim:
        msg = expect_refused(failing_client(*sim.host_port(0), tls=True,
                                            tlsCAFile=tls_certs.ca))
        assert "expired" in msg
        c = failing_client(*sim.host_port(0), tls=True, tlsCAFile=tls_certs.ca,
                           tlsAllowInvalidCertificates=True)
        assert c.admin.command("ping")["ok"] == 1.0
        c.close()
        stop_cleanly(sim)
    # A certificate for another host name: refused unless host names are not checked.
    with start_sim("--mongos", "1", "--tls-cert", tls_certs.wrong_host) as sim:
        host, port = sim.host_port(0)
        for h in (host, "localhost"):
            msg = expect_refused(failing_client(h, port, tls=True, tlsCAFile=tls_certs.ca))
            assert "match" in msg, msg
        c = failing_client(host, port, tls=True, tlsCAFile=tls_certs.ca,
                           tlsAllowInvalidHostnames=True)
        assert c.admin.command("ping")["ok"] == 1.0
        c.close()
        stop_cleanly(sim)


def test_required_client_certificate(tls_certs, tmp_path):
    sim = LoggedSim(["--mongos", "2", "--tls-cert", tls_certs.server, "--tls-ca", tls_certs.ca,
                     "--tls-require-client-cert"], tmp_path / "sim.log")
    try:
        host, port = sim.host_port(0)
        # No certificate: refused by the server.
        expect_refused(failing_client(host, port, tls=True, tlsCAFile=tls_certs.ca))
        sim.wait_log("peer did not return a certificate")
        # A certificate from an unrelated CA: refused by the server's verification.
        expect_refused(failing_client(host, port, tls=True, tlsCAFile=tls_certs.ca,
                                      tlsCertificateKeyFile=tls_certs.other_client))
        sim.wait_log("certificate verify failed (client certificate: unable to get local "
                     "issuer certificate)")
        # The right certificate works, on every router.
        client = pymongo.MongoClient(tls_uri(sim, tls_certs, tlsCertificateKeyFile=urllib.parse.
                                             quote(tls_certs.client, safe="")))
        try:
            coll = client.test.c
            coll.insert_many([{"_id": i} for i in range(500)])
            assert [d["_id"] for d in coll.find().sort("_id", -1).batch_size(7)][:3] == \
                [499, 498, 497]
        finally:
            client.close()
    finally:
        stop_cleanly(sim)


def test_optional_client_certificate(tls_certs, tmp_path):
    # With --tls-ca alone a certificate is checked when sent, and its absence is accepted.
    sim = LoggedSim(["--standalone", "--tls-cert", tls_certs.server, "--tls-ca", tls_certs.ca],
                    tmp_path / "sim.log")
    try:
        host, port = sim.host_port(0)
        for kw in ({}, {"tlsCertificateKeyFile": tls_certs.client}):
            c = failing_client(host, port, tls=True, tlsCAFile=tls_certs.ca, **kw)
            assert c.admin.command("ping")["ok"] == 1.0
            c.close()
        expect_refused(failing_client(host, port, tls=True, tlsCAFile=tls_certs.ca,
                                      tlsCertificateKeyFile=tls_certs.other_client))
        sim.wait_log("certificate verify failed")
    finally:
        stop_cleanly(sim)


def test_replica_set_over_tls(tls_certs):
    with start_sim("--replset", "rs0", "--members", "3", "--tls-cert", tls_certs.server) as sim:
        assert sim.set_name == "rs0"
        # A direct connection to one member (a secondary): its hello lists every member.
        direct = pymongo.MongoClient(tls_uri(sim, tls_certs, 1))
        try:
            hello = direct.admin.command("hello")
            assert hello["setName"] == "rs0"
            assert hello["secondary"] is True
            assert hello["hosts"] == sim.servers
            assert hello["me"] == sim.servers[1]
        finally:
            direct.close()
        # The whole set discovered from one seed, every member over TLS.
        seed = pymongo.MongoClient(
            "mongodb://%s/?replicaSet=rs0&tls=true&tlsCAFile=%s" % (
                sim.servers[0], urllib.parse.quote(tls_certs.ca, safe="")),
            serverSelectionTimeoutMS=5000, heartbeatFrequencyMS=500)
        try:
            seed.test.c.insert_many([{"_id": i} for i in range(100)])
            sec = seed.test.get_collection(
                "c", read_preference=pymongo.read_preferences.Secondary())
            assert len(list(sec.find().batch_size(10))) == 100
            deadline = time.monotonic() + 5
            while len(seed.nodes) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(seed.nodes) == 3
        finally:
            seed.close()
        stop_cleanly(sim)


def test_slow_reader_gets_a_large_reply_whole(tls_certs):
    with start_sim("--standalone", "--tls-cert", tls_certs.server) as sim:
        client = pymongo.MongoClient(tls_uri(sim, tls_certs, 0))
        pad = "y" * 8000
        client.shop.wide.insert_many([{"_id": i, "pad": pad} for i in range(1500)])
        # A small receive buffer and a client that does not read for a while: the kernel stops
        # taking the 12 MB reply, so the server's writes complete later, chunk by chunk.
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        raw.settimeout(10)
        raw.connect(sim.host_port(0))
        ctx = ssl.create_default_context(cafile=tls_certs.ca)
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            send_msg(s, {"find": "wide", "batchSize": 1500, "$db": "shop"})
            time.sleep(0.5)
            # The server keeps serving other connections meanwhile.
            assert client.admin.command("ping")["ok"] == 1.0
            reply = recv_msg(s)[1]
            batch = reply["cursor"]["firstBatch"]
            assert len(batch) == 1500 and batch[-1] == {"_id": 1499, "pad": pad}
            # The connection is still in step afterwards.
            send_msg(s, {"ping": 1, "$db": "admin"}, request_id=2)
            assert recv_msg(s)[1]["ok"] == 1.0
        client.close()
        stop_cleanly(sim)


def test_close_notify_is_answered(tls_certs, tmp_path):
    sim = LoggedSim(["--standalone", "--tls-cert", tls_certs.server, "--verbose"],
                    tmp_path / "sim.log")
    try:
        s = raw_tls(sim, tls_certs)
        send_msg(s, {"ping": 1, "$db": "admin"})
        assert recv_msg(s)[1]["ok"] == 1.0
        # unwrap() sends close_notify and returns only once the server's close_notify came.
        plain = s.unwrap()
        assert closed_by_peer(plain)
        plain.close()
        sim.wait_log("the client sent close_notify")
    finally:
        stop_cleanly(sim)


class MemTLS:
    """A TLS client driven by hand through Python's memory BIOs, so that a test decides how the
    ciphertext is cut into socket writes, or damages it."""

    def __init__(self, sim, certs):
        self.sock = socket.create_connection(sim.host_port(0), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        ctx = ssl.create_default_context(cafile=certs.ca)
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")

    def send_pending(self, piece=None):
        data = self.out.read()
        step = piece or len(data) or 1
        for i in range(0, len(data), step):
            self.sock.sendall(data[i:i + step])
            if piece:
                time.sleep(0.001)

    def receive(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.inc.write(data)

    def handshake(self, piece=None):
        while True:
            try:
                self.tls.do_handshake()
                self.send_pending(piece)
                return
            except ssl.SSLWantReadError:
                self.send_pending(piece)
                self.receive()

    def read(self, n):
        buf = b""
        while len(buf) < n:
            try:
                buf += self.tls.read(n - len(buf))
            except ssl.SSLWantReadError:
                self.receive()
        return buf

    def recv_frame(self):
        header = self.read(16)
        length = struct.unpack("<i", header[:4])[0]
        return header + self.read(length - 16)


def test_handshake_and_frames_arrive_in_pieces(tls_certs):
    with start_sim("--standalone", "--tls-cert", tls_certs.server) as sim:
        t = MemTLS(sim, tls_certs)
        # The ClientHello and Finished a few bytes per socket write: OpenSSL asks for more
        # (WANT_READ) many times before the handshake is done.
        t.handshake(piece=7)
        # Three pipelined requests in one TLS record, written in small pieces...
        reqs = b"".join(frame(OP_MSG, msg_payload({"ping": 1, "$db": "admin"}), request_id=i)
                        for i in (1, 2, 3))
        t.tls.write(reqs)
        t.send_pending(piece=11)
        for i in (1, 2, 3):
            reply = t.recv_frame()
            assert int.from_bytes(reply[8:12], "little") == i
        # ...and one request of 3 MB, spread over many records.
        doc = {"insert": "c", "documents": [{"_id": 1, "b": b"z" * (3 << 20)}], "$db": "t"}
        t.tls.write(frame(OP_MSG, msg_payload(doc), request_id=9))
        t.send_pending()
        reply = t.recv_frame()
        assert bson.BSON(reply[21:]).decode()["n"] == 1
        t.sock.close()
        stop_cleanly(sim)


def test_corrupt_record_closes_only_that_connection(tls_certs, tmp_path):
    sim = LoggedSim(["--standalone", "--tls-cert", tls_certs.server], tmp_path / "sim.log")
    try:
        other = raw_tls(sim, tls_certs)
        t = MemTLS(sim, tls_certs)
        t.handshake()
        t.tls.write(frame(OP_MSG, msg_payload({"ping": 1, "$db": "admin"})))
        data = bytearray(t.out.read())
        data[-3] ^= 0x55  # inside the record's authentication tag
        t.sock.sendall(bytes(data))
        assert closed_by_peer(t.sock)
        t.sock.close()
        sim.wait_log("TLS error: ")
        assert "bad record mac" in sim.log() or "decrypt" in sim.log()
        # Another connection of the same server is untouched.
        send_msg(other, {"ping": 1, "$db": "admin"})
        assert recv_msg(other)[1]["ok"] == 1.0
        other.close()
    finally:
        stop_cleanly(sim)


def test_delayed_replies_dropped_connections_and_kill_over_tls(tls_certs):
    with start_sim("--replset", "rs0", "--members", "3", "--latency", "80",
                   "--tls-cert", tls_certs.server) as sim:
        # Latency: replies leave from a timer, through the same encryption.
        c = pymongo.MongoClient(tls_uri(sim, tls_certs, 0), retryReads=True)
        c.admin.command("ping")
        t0 = time.monotonic()
        c.admin.command("ping")
        assert time.monotonic() - t0 >= 0.08
        # failCommand closeConnection: the connection is dropped, the driver retries the read.
        c.test.c.insert_one({"_id": 1})
        c.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
                         "data": {"failCommands": ["count"], "closeConnection": True}})
        with pytest.raises(AutoReconnect):
            c.test.command("count", "c")
        assert c.test.command("count", "c")["n"] == 1
        c.close()
        # simKill sent to the member being killed: its reply still arrives, then the
        # connection closes.
        m2 = pymongo.MongoClient(tls_uri(sim, tls_certs, 2))
        assert m2.admin.command({"simKill": 2})["ok"] == 1.0
        m2.close()
        m0 = pymongo.MongoClient(tls_uri(sim, tls_certs, 0))
        assert m0.admin.command({"simRevive": 2})["ok"] == 1.0
        m0.close()
        m2 = pymongo.MongoClient(tls_uri(sim, tls_certs, 2))
        assert m2.admin.command("hello")["me"] == sim.servers[2]
        m2.close()
        stop_cleanly(sim)


def test_bad_tls_options_are_refused(tls_certs, tmp_path):
    binary = os.environ.get("MONGOSIM", DEFAULT_BINARY)

    def run(*args):
        return subprocess.run([binary, "--standalone", "--port", "0"] + list(args),
                              capture_output=True, text=True, timeout=10)

    # Client-certificate options without --tls-cert, or a requirement without a CA.
    assert run("--tls-ca", tls_certs.ca).returncode == 2
    assert run("--tls-cert", tls_certs.server, "--tls-require-client-cert").returncode == 2
    # Files that are missing or hold no usable key.
    r = run("--tls-cert", str(tmp_path / "missing.pem"))
    assert r.returncode == 1 and "--tls-cert" in r.stderr
    r = run("--tls-cert", tls_certs.ca)
    assert r.returncode == 1 and "private key" in r.stderr
    r = run("--tls-cert", tls_certs.server, "--tls-ca", str(tmp_path / "missing.pem"))
    assert r.returncode == 1 and "--tls-ca" in r.stderr
