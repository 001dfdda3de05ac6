"""A tiny scripted MongoDB-speaking server for tests that need hello replies no simulator gives
(a replica set listing 70 hosts, a membership that keeps changing).

    with FakeServer(lambda srv, cmd: {...reply...}) as fs:
        fs.address          # "127.0.0.1:PORT"

The handler gets (server, command dict) for every OP_MSG and every OP_QUERY on a $cmd
collection and returns the reply document (or None: no reply, or FakeServer.CLOSE: drop the
connection, or a callable, called as f(socket, request_id) to write whatever it likes on that
connection: a frame of bad length, extra frames, bytes later from a timer). Without a handler,
hello/isMaster get fs.hello() (fs.mongos_hello() with mongos=True) and every other command an
error. fs.received lists every command received, in order. Listens on 127.0.0.1 only; one thread
per connection; close() stops everything.
"""

import datetime
import socket
import struct
import threading

import bson
from bson.objectid import ObjectId

from harness import OP_MSG, OP_QUERY, OP_REPLY

HELLO_NAMES = ("hello", "ismaster", "isMaster")


def msg_frame(doc, request_id, response_to, flags=0):
    """The bytes of an OP_MSG frame carrying doc (a reply when response_to is a request's id)."""
    payload = struct.pack("<I", flags) + b"\x00" + bson.BSON.encode(doc)
    return struct.pack("<iiii", 16 + len(payload), request_id, response_to, OP_MSG) + payload


class FakeServer:
    CLOSE = object()

    def __init__(self, handler=None, set_name="rs0", mongos=False):
        self.handler = handler
        self.set_name = set_name
        self.mongos = mongos
        self.received = []  # every command, in order of arrival
        self.election_id = ObjectId("7fffffff0000000000000001")
        self.set_version = 1
        self.hosts = None  # None: just itself
        self.hellos = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._conns = []
        self._threads = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)

    # --- replies -------------------------------------------------------------------------

    def hello(self, legacy=False):
        """A replica-set primary's hello: setName, hosts (self.hosts or just itself)."""
        with self.lock:
            hosts = list(self.hosts) if self.hosts is not None else [self.address]
            set_version = self.set_version
        doc = {
            "isWritablePrimary" if not legacy else "ismaster": True,
            "helloOk": True,
            "setName": self.set_name,
            "setVersion": set_version,
            "electionId": self.election_id,
            "hosts": hosts,
            "primary": self.address,
            "me": self.address,
            "maxBsonObjectSize": 16777216,
            "maxMessageSizeBytes": 48000000,
            "maxWriteBatchSize": 100000,
            "localTime": datetime.datetime.utcnow(),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": False,
            "ok": 1.0,
        }
        return doc

    def mongos_hello(self, legacy=False):
        """A mongos router's hello (msg "isdbgrid", no setName)."""
        return {
            "isWritablePrimary" if not legacy else "ismaster": True,
            "msg": "isdbgrid",
            "maxBsonObjectSize": 16777216,
            "maxMessageSizeBytes": 48000000,
            "maxWriteBatchSize": 100000,
            "localTime": datetime.datetime.utcnow(),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": False,
            "ok": 1.0,
        }

    def _reply_for(self, cmd, legacy):
        name = next(iter(cmd), "")
        with self.lock:
            self.received.append(cmd)
            if name in HELLO_NAMES:
                self.hellos += 1
        if self.handler is not None:
            return self.handler(self, cmd)
        if name in HELLO_NAMES:
            legacy = legacy or name != "hello"
            return self.mongos_hello(legacy) if self.mongos else self.hello(legacy=legacy)
        if name in ("ping", "connectionStatus"):
            return {"ok": 1.0}
        return {"ok": 0.0, "errmsg": "fake server: no such command: %s" % name, "code": 59,
                "codeName": "CommandNotFound"}

    # --- network -------------------------------------------------------------------------

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(0.2)
            with self.lock:
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            with self.lock:
                self._threads.append(t)

    def _recv_exact(self, conn, n):
        data = b""
        while len(data) < n:
            if self._stop.is_set():
                return None
            try:
                chunk = conn.recv(n - len(data))
            except socket.timeout:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def _serve(self, conn):
        rid = 1000
        try:
            while not self._stop.is_set():
                head = self._recv_exact(conn, 16)
                if head is None:
                    return
                length, request_id, _, opcode = struct.unpack("<iiii", head)
                if length < 16 or length > 48000000:
                    return
                body = self._recv_exact(conn, length - 16)
                if body is None:
                    return
                if opcode == OP_MSG:
                    flags = struct.unpack("<I", body[:4])[0]
                    if body[4] != 0:
                        return
                    cmd = bson.BSON(body[5:5 + struct.unpack("<i", body[5:9])[0]]).decode()
                    reply = self._reply_for(cmd, legacy=False)
                    if reply is FakeServer.CLOSE:
                        return
                    if callable(reply):
                        reply(conn, request_id)
                        continue
                    if reply is None or flags & 0x2:
                        continue
                    payload = struct.pack("<I", 0) + b"\x00" + bson.BSON.encode(reply)
                    rid += 1
                    out = struct.pack("<iiii", 16 + len(payload), rid, request_id, OP_MSG) + payload
                elif opcode == OP_QUERY:
                    ns_end = body.index(b"\x00", 4)
                    q = body[ns_end + 9:]
                    cmd = bson.BSON(q[:struct.unpack("<i", q[:4])[0]]).decode()
                    if "$query" in cmd:
                        cmd = cmd["$query"]
                    reply = self._reply_for(cmd, legacy=True)
                    if reply is FakeServer.CLOSE:
                        return
                    if callable(reply):
                        reply(conn, request_id)
                        continue
                    if reply is None:
                        continue
                    doc = bson.BSON.encode(reply)
                    payload = struct.pack("<iqii", 0, 0, 0, 1) + doc
                    rid += 1
                    out = struct.pack("<iiii", 16 + len(payload), rid, request_id,
                                      OP_REPLY) + payload
                else:
                    return
                conn.sendall(out)
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(2.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
