"""Starts and stops mongosim (build/mongosim) for integration tests.

    with start_sim("--replset", "rs0", "--members", "3") as sim:
        client = pymongo.MongoClient(sim.uri(0), directConnection=True)

The binary is $MONGOSIM or build/mongosim. Every simulator listens on ephemeral ports (--port 0)
so that tests can run in parallel; start_sim waits for the ready line mongosim prints on stdout.

A test that could run against a real deployment may ask for one through the environment:
MONGOSIM_URI_<MODE> (MODE is REPLSET, MONGOS or STANDALONE), e.g. MONGOSIM_URI_REPLSET=
"mongodb://a:27017,b:27017/?replicaSet=rs0". real_or_sim() returns that URI, or starts a
simulator and returns its URI. Simulator-only features (sim* commands) need a simulator.
"""

import json
import os
import select
import signal
import socket
import struct
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BINARY = os.path.join(ROOT, "build", "mongosim")


class SimError(RuntimeError):
    pass


def connect(host_port, timeout=5.0, tls_ca=None, tls_client=None):
    """A socket to host_port: plain, or TLS verified against tls_ca (with tls_client's certificate
    and key when given) when tls_ca is set."""
    s = socket.create_connection(host_port, timeout=timeout)
    if not tls_ca:
        return s
    import ssl
    ctx = ssl.create_default_context(cafile=tls_ca)
    if tls_client:
        ctx.load_cert_chain(tls_client)
    return ctx.wrap_socket(s, server_hostname=host_port[0])


_SALTED = {}


def scram_sha256_login(sock, user, password, source="admin", request_id=0x7FFF0000):
    """Logs a raw socket in with SCRAM-SHA-256 (RFC 5802/7677 as MongoDB speaks it: saslStart
    with skipEmptyExchange, then saslContinue; an empty last step when the server asks for one).
    hashlib and hmac only; the password must be printable ASCII (SASLprep is then the identity).
    The salted password is cached per (password, salt, count), as drivers cache it. Raises
    AssertionError when the server refuses the login or fails to prove it knows the password."""
    import base64
    import hashlib
    import hmac

    import bson

    def h(data):
        return hashlib.sha256(data).digest()

    def mac(key, data):
        return hmac.new(key, data, hashlib.sha256).digest()

    def call(doc, rid):
        doc = dict(doc)
        doc["$db"] = source
        send_msg(sock, doc, request_id=rid)
        _, reply, _ = recv_msg(sock)
        assert reply.get("ok") == 1, "login of %s@%s refused: %r" % (user, source, reply)
        return reply

    name = user.replace("=", "=3D").replace(",", "=2C")
    cnonce = base64.b64encode(os.urandom(24)).decode()
    first_bare = "n=%s,r=%s" % (name, cnonce)
    r = call({"saslStart": 1, "mechanism": "SCRAM-SHA-256",
              "payload": bson.Binary(("n,," + first_bare).encode()), "autoAuthorize": 1,
              "options": {"skipEmptyExchange": True}}, request_id)
    server_first = bytes(r["payload"]).decode()
    fields = dict(kv.split("=", 1) for kv in server_first.split(","))
    nonce, salt, iters = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
    assert nonce.startswith(cnonce), "the server's nonce does not extend ours"
    key = (password, salt, iters)
    if key not in _SALTED:
        _SALTED[key] = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iters)
    salted = _SALTED[key]
    client_key = mac(salted, b"Client Key")
    without_proof = "c=biws,r=%s" % nonce
    auth_message = ",".join((first_bare, server_first, without_proof)).encode()
    signature = mac(h(client_key), auth_message)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    r = call({"saslContinue": 1, "conversationId": r["conversationId"],
              "payload": bson.Binary(("%s,p=%s" % (without_proof, proof)).encode())},
             request_id + 1)
    expect = base64.b64encode(mac(mac(salted, b"Server Key"), auth_message)).decode()
    assert bytes(r["payload"]).decode() == "v=" + expect, "the server's signature is wrong"
    if not r.get("done"):
        r = call({"saslContinue": 1, "conversationId": r["conversationId"],
                  "payload": bson.Binary(b"")}, request_id + 2)
        assert r.get("done"), r


class Sim:
    """A running mongosim process."""

    def __init__(self, args, timeout=10.0, verbose=False, tls_ca=None, tls_client=None):
        binary = os.environ.get("MONGOSIM", DEFAULT_BINARY)
        if not os.path.exists(binary):
            raise SimError("mongosim not found at %s (run make)" % binary)
        args = list(args)
        if "--port" not in args:
            args += ["--port", "0"]
        if verbose:
            args.append("--verbose")
        self.args = args
        # With --tls-cert the simulator speaks TLS only: control commands then need these.
        self.tls_ca = tls_ca
        self.tls_client = tls_client
        self.proc = subprocess.Popen([binary] + args, stdout=subprocess.PIPE,
                                     stderr=None if verbose else subprocess.DEVNULL)
        self.ready = self._wait_ready(timeout)
        self.servers = self.ready["servers"]
        self.set_name = self.ready.get("setName")
        self.mode = self.ready.get("mode")

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise SimError("mongosim did not print its ready line within %.1fs" % timeout)
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = self.proc.wait()
                    raise SimError("mongosim exited with %s before it was ready" % code)
                buf += chunk
        line = buf.split(b"\n", 1)[0]
        ready = json.loads(line)
        if not ready.get("ready"):
            raise SimError("unexpected first line: %r" % line)
        return ready

    def host_port(self, i=0):
        host, port = self.servers[i].rsplit(":", 1)
        return host, int(port)

    def uri(self, i=None, **options):
        """mongodb:// URI of server i, or of every server when i is None (a replica set URI
        carries replicaSet=, a sharded cluster lists all routers)."""
        hosts = ",".join(self.servers) if i is None else self.servers[i]
        opts = dict(options)
        if i is None and self.set_name and "replicaSet" not in opts:
            opts["replicaSet"] = self.set_name
        if i is not None and "directConnection" not in opts:
            opts["directConnection"] = "true"
        q = "&".join("%s=%s" % (k, v) for k, v in opts.items())
        return "mongodb://%s/%s" % (hosts, "?" + q if q else "")

    def uri_as(self, user, password, i=None, **options):
        """uri() with credentials, for a simulator started with --auth and --auth-user:
        sim.uri_as("app", "pw", 0, authSource="test")."""
        from urllib.parse import quote_plus

        base = self.uri(i, **options)
        return base.replace("mongodb://", "mongodb://%s:%s@" % (quote_plus(user),
                                                               quote_plus(password)), 1)

    def command(self, i, cmd, db="admin", timeout=5.0):
        """Runs one command on server i over a raw socket (OP_MSG) and returns the reply as a
        dict. Needs no driver; used for the sim* control commands."""
        import bson  # PyMongo's bson package

        doc = dict(cmd)
        doc["$db"] = db
        with connect(self.host_port(i), timeout, self.tls_ca, self.tls_client) as s:
            send_msg(s, doc, request_id=1)
            return recv_msg(s)[1]

    def stats(self, i=0, reset=False):
        cmd = {"simStats": 1}
        if reset:
            cmd["reset"] = True
        return self.command(i, cmd)

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_sim(*args, **kwargs):
    return Sim(args, **kwargs)


def real_or_sim(mode, *args):
    """(uri, sim): MONGOSIM_URI_<MODE> if set (sim is None), else a new simulator's URI."""
    uri = os.environ.get("MONGOSIM_URI_" + mode.upper())
    if uri:
        return uri, None
    sim = start_sim(*args)
    return sim.uri(), sim


# --- raw wire helpers, for tests that must send what no driver sends ---------------------------

OP_REPLY, OP_QUERY, OP_GET_MORE, OP_KILL_CURSORS, OP_MSG = 1, 2004, 2005, 2007, 2013


def frame(opcode, payload, request_id=1, response_to=0):
    return struct.pack("<iiii", 16 + len(payload), request_id, response_to, opcode) + payload


def msg_payload(doc, flags=0):
    import bson

    return struct.pack("<I", flags) + b"\x00" + bson.BSON.encode(doc)


def send_msg(sock, doc, request_id=1, flags=0):
    sock.sendall(frame(OP_MSG, msg_payload(doc, flags), request_id))


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def recv_frame(sock):
    """Returns (header tuple (length, requestID, responseTo, opCode), body bytes)."""
    header = recv_exact(sock, 16)
    length, rid, rto, op = struct.unpack("<iiii", header)
    return (length, rid, rto, op), recv_exact(sock, length - 16)


def recv_msg(sock):
    """Reads one OP_MSG; returns (header, body dict, flags)."""
    import bson

    hdr, body = recv_frame(sock)
    assert hdr[3] == OP_MSG, hdr
    flags = struct.unpack("<I", body[:4])[0]
    assert body[4] == 0
    doc = bson.BSON(body[5:]).decode()
    return hdr, doc, flags


def query_payload(ns, doc, flags=0, skip=0, n_return=-1):
    import bson

    return (struct.pack("<i", flags) + ns.encode() + b"\x00" + struct.pack("<ii", skip, n_return)
            + bson.BSON.encode(doc))


def parse_reply(body):
    """Decodes an OP_REPLY body: (flags, cursor_id, starting_from, [docs])."""
    import bson

    flags, cursor_id, start, n = struct.unpack("<iqii", body[:20])
    docs = bson.decode_all(body[20:]) if n else []
    assert len(docs) == n
    return flags, cursor_id, start, docs


def closed_by_peer(sock, timeout=5.0):
    """True when the peer closes the connection (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


# --- CRC-32C and checksummed OP_MSG frames (added for the I/O-fault tests) ----------------------

def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli, reflected 0x82F63B78), as OP_MSG checksums use; crc32c(b"123456789")
    is 0xE3069283."""
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def msg_frame_checksummed(doc, flags=0, request_id=1):
    """An OP_MSG frame with flag bit 0 (checksumPresent) set besides `flags`, ending with the
    CRC-32C of everything before it (header included, with the final length)."""
    import bson

    flags |= 0x1
    payload = struct.pack("<I", flags) + b"\x00" + bson.BSON.encode(doc)
    head = struct.pack("<iiii", 16 + len(payload) + 4, request_id, 0, OP_MSG)
    body = head + payload
    return body + struct.pack("<I", crc32c(body))


def free_port_list(n):
    """n distinct loopback ports that were free a moment ago (nothing listens on them now)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
