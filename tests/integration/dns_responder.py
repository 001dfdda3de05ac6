"""A tiny authoritative DNS responder on 127.0.0.1 (UDP and TCP, one port) for the SRV tests.

    with DnsResponder() as dns:
        dns.srv("_mongodb._tcp.cluster.mongolb.test", [("m1.mongolb.test", 27017)], ttl=60)
        dns.txt("cluster.mongolb.test", ["replicaSet=rs0"])
        dns.a("m1.mongolb.test", "127.0.0.1")
        ... mongolb with dns_server = 127.0.0.1:<dns.port> ...

It answers SRV, TXT, A and AAAA questions from its tables (which a test may change at any time),
with NXDOMAIN for a name it does not know and an empty answer for a type it has none of. Every
question it gets is counted in queries, so a test can wait for a poll. Standard library only.

As a real server may, it can also fail: dns.rcode(name, type, 2) answers SERVFAIL (any response
code), dns.drop(name, type, n) ignores the next n UDP questions (the resolver times out and asks
again), and an answer longer than 512 bytes asked over UDP comes back truncated (TC set, no
records), as from a server without EDNS, so that the resolver asks again over TCP (counted in
tcp_queries). dns.cname(name, target) answers every question for name with that CNAME alone.
"""

import socket
import struct
import threading

TYPE_A, TYPE_CNAME, TYPE_SRV, TYPE_TXT, TYPE_AAAA = 1, 5, 33, 16, 28
UDP_MAX = 512  # RFC 1035's limit of a UDP answer without EDNS


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def _read_name(msg, pos):
    labels = []
    while True:
        n = msg[pos]
        if n == 0:
            return ".".join(labels), pos + 1
        if n & 0xC0:
            raise ValueError("compressed question names are not expected")
        labels.append(msg[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n


class DnsResponder:
    def __init__(self):
        self.records = {}  # (lower name, type) -> [(rdata bytes, ttl)]
        self.names = set()
        self.queries = []  # (name, type) in arrival order
        self.tcp_queries = []  # the same, of the questions asked over TCP
        self.rcodes = {}  # (lower name, type) -> response code answered instead of the records
        self.drops = {}  # (lower name, type) -> how many more UDP questions go unanswered
        self.cnames = {}  # lower name -> the target its CNAME record names
        self.lock = threading.Lock()
        for _ in range(50):  # a UDP port whose TCP twin is free too
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        else:
            raise OSError("no free UDP and TCP port pair")
        self.tcp.listen(16)
        self.stopped = False
        self.threads = [threading.Thread(target=self._serve_udp, daemon=True),
                        threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self.threads:
            t.start()

    @property
    def server(self):
        return "127.0.0.1:%d" % self.port

    # --- the tables ---------------------------------------------------------------------------

    def _set(self, name, rtype, rdatas):
        key = (name.lower().rstrip("."), rtype)
        with self.lock:
            self.names.add(key[0])
            if rdatas:
                self.records[key] = rdatas
            else:
                self.records.pop(key, None)

    def srv(self, name, targets, ttl=60):
        """targets: [(host, port)]; an empty list leaves the name with no SRV record."""
        self._set(name, TYPE_SRV,
                  [(struct.pack("!HHH", 0, 5, port) + _encode_name(host), ttl)
                   for host, port in targets])

    def txt(self, name, records, ttl=60):
        """records: one entry per TXT record, each a string or a list of strings."""
        out = []
        for rec in records:
            strings = [rec] if isinstance(rec, str) else rec
            out.append((b"".join(bytes([len(s.encode())]) + s.encode() for s in strings), ttl))
        self._set(name, TYPE_TXT, out)

    def a(self, name, ip="127.0.0.1", ttl=60):
        self._set(name, TYPE_A, [(socket.inet_aton(ip), ttl)])

    def aaaa(self, name, ip="::1", ttl=60):
        self._set(name, TYPE_AAAA, [(socket.inet_pton(socket.AF_INET6, ip), ttl)])

    def cname(self, name, target, ttl=60):
        """Gives name a CNAME record: every question for it is answered with that record alone,
        as from a server that does not hold the target (no recursion)."""
        with self.lock:
            self.names.add(name.lower().rstrip("."))
            self.cnames[name.lower().rstrip(".")] = (target, ttl)

    def rcode(self, name, rtype, code):
        """Answers questions for (name, rtype) with response code `code` (2 SERVFAIL, 5 REFUSED)
        and no records; None goes back to the tables."""
        key = (name.lower().rstrip("."), rtype)
        with self.lock:
            if code is None:
                self.rcodes.pop(key, None)
            else:
                self.rcodes[key] = code

    def drop(self, name, rtype, n=1):
        """Leaves the next n UDP questions for (name, rtype) unanswered."""
        with self.lock:
            self.drops[(name.lower().rstrip("."), rtype)] = n

    def count(self, name, rtype=TYPE_SRV):
        with self.lock:
            return sum(1 for q in self.queries if q == (name.lower(), rtype))

    # --- answering ------------------------------------------------------------------------------

    def answer(self, msg, tcp=False):
        """The reply to one question, or None to leave it unanswered."""
        qid, flags, qd = struct.unpack("!HHH", msg[:6])
        name, pos = _read_name(msg, 12)
        qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
        question = msg[12:pos + 4]
        key = (name.lower(), qtype)
        with self.lock:
            self.queries.append(key)
            if tcp:
                self.tcp_queries.append(key)
            elif self.drops.get(key, 0) > 0:
                self.drops[key] -= 1
                return None
            known = key[0] in self.names
            rdatas = list(self.records.get(key, []))
            forced = self.rcodes.get(key)
            alias = self.cnames.get(key[0])
        rcode = 0 if known else 3  # NXDOMAIN
        if forced is not None:
            rcode, rdatas = forced, []
        elif alias:
            rdatas, qtype = [(_encode_name(alias[0]), alias[1])], TYPE_CNAME
        # QR, AA, RD copied, RA.
        out_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        out = struct.pack("!HHHHHH", qid, out_flags, 1, len(rdatas), 0, 0) + question
        for rdata, ttl in rdatas:
            out += struct.pack("!HHHIH", 0xC00C, qtype, 1, ttl, len(rdata)) + rdata
        if not tcp and len(out) > UDP_MAX:
            # Truncated: the header with TC (0x0200) and the question only.
            out = struct.pack("!HHHHHH", qid, out_flags | 0x0200, 1, 0, 0, 0) + question
        return out

    def _serve_udp(self):
        while not self.stopped:
            try:
                msg, peer = self.udp.recvfrom(4096)
                reply = self.answer(msg)
                if reply is not None:
                    self.udp.sendto(reply, peer)
            except (OSError, ValueError, struct.error, IndexError):
                if self.stopped:
                    return

    def _serve_tcp(self):
        while not self.stopped:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def _serve_conn(self, conn):
        with conn:
            try:
                while True:
                    head = conn.recv(2)
                    if len(head) < 2:
                        return
                    n = struct.unpack("!H", head)[0]
                    msg = b""
                    while len(msg) < n:
                        chunk = conn.recv(n - len(msg))
                        if not chunk:
                            return
                        msg += chunk
                    reply = self.answer(msg, tcp=True)
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except (OSError, ValueError, struct.error, IndexError):
                return

    def close(self):
        self.stopped = True
        for s in (self.udp, self.tcp):
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
