"""Helpers for the tests of mongolb's operator surface (test_admin_http.py, test_logs.py): a
mongolb with an [admin] section and an environment of its own, a raw HTTP/1.1 client over TCP or
a unix socket, and a small parser of the Prometheus text format 0.0.4 that checks what it reads."""

import os
import re
import socket
import subprocess

import pymongo

from mongolb_harness import Mongolb, free_port, stop_quietly

# Defaults for these tests: a quick graceful stop and short selection waits.
BASE = {"mongolb.shutdown_timeout_ms": 1000, "upstream.server_selection_timeout_ms": 3000}


class AdminMongolb(Mongolb):
    """A Mongolb whose config may carry "admin.key" entries; with admin_http=True it serves the
    admin endpoints on a free loopback port (self.http_port). env adds environment variables,
    and journal_stream=True sets JOURNAL_STREAM to the dev:ino of its stderr file, as systemd
    does."""

    def __init__(self, seeds, config=None, admin_http=True, env=None, journal_stream=False, **kw):
        self.admin_http = admin_http
        self.extra_env = dict(env or {})
        self.journal_stream = journal_stream
        self.http_port = None
        super().__init__(seeds, config=config, **kw)

    def _write_config(self, extra):
        extra = dict(extra)
        admin = {k.split(".", 1)[1]: v for k, v in extra.items() if k.startswith("admin.")}
        rest = {k: v for k, v in extra.items() if not k.startswith("admin.")}
        if self.admin_http and "http_listen" not in admin:
            self.http_port = free_port()
            admin["http_listen"] = "127.0.0.1:%d" % self.http_port
        super()._write_config(rest)
        if admin:
            with open(self.conf_path, "a") as f:
                f.write("[admin]\n")
                for k, v in admin.items():
                    f.write("%s = %s\n" % (k, v))

    def _start(self):
        self._log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        env.update(self.extra_env)
        if self.journal_stream:
            st = os.fstat(self._log.fileno())
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        self.proc = subprocess.Popen([self.binary, "-c", self.conf_path], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, env=env)

    def http(self, path, **kw):
        return http_get(("127.0.0.1", self.http_port), path, **kw)

    def metrics(self):
        status, _, body = self.http("/metrics")
        assert status == 200, (status, body)
        return parse_prometheus(body.decode())


def start(sim_or_seeds, config=None, **kw):
    """An AdminMongolb with BASE updated by config, in front of a simulator or a seed list."""
    cfg = dict(BASE)
    cfg.update(config or {})
    seeds = sim_or_seeds.servers if hasattr(sim_or_seeds, "servers") else sim_or_seeds
    return AdminMongolb(seeds, cfg, **kw)


def client_for(lb, **kw):
    """A PyMongo client of lb that gives up selecting a server after 5 s."""
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(lb.uri, **kw)


def http_connect(addr, timeout=5.0):
    """A socket to addr: (host, port) or a unix socket path."""
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    return s


def read_response(s, head_only=False):
    """Reads a whole response (the server closes after it): (status, headers dict, body). A
    response to HEAD has Content-Length but no body."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3}) ", lines[0])
    assert m, "not an HTTP status line: %r" % lines[0]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers and not head_only:
        assert len(body) == int(headers["content-length"]), "body length != Content-Length"
    return int(m.group(1)), headers, body


def http_get(addr, path, method="GET", timeout=5.0):
    with http_connect(addr, timeout) as s:
        s.sendall(("%s %s HTTP/1.1\r\nHost: mongolb\r\nUser-Agent: test\r\n\r\n"
                   % (method, path)).encode())
        return read_response(s, head_only=method == "HEAD")


_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


class Metrics:
    """Parsed exposition: samples[(name, frozenset of (label, value))] = float, and types."""

    def __init__(self):
        self.samples = {}
        self.types = {}
        self.helps = {}

    def get(self, name, **labels):
        return self.samples.get((name, frozenset(labels.items())))

    def value(self, name, default=0.0, **labels):
        v = self.get(name, **labels)
        return default if v is None else v

    def series(self, name):
        """[(labels dict, value)] of every sample of name."""
        return [(dict(k[1]), v) for k, v in self.samples.items() if k[0] == name]


def parse_prometheus(text):
    """Parses text format 0.0.4 strictly enough to catch mistakes: each family has one HELP and
    one TYPE line before its samples, sample names belong to the family declared (histograms:
    _bucket, _sum, _count), label syntax is valid, no sample appears twice."""
    m = Metrics()
    current = None
    assert text.endswith("\n"), "the exposition must end with a newline"
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert _NAME.match(name), line
            assert name not in m.helps, "HELP twice for " + name
            m.helps[name] = help_
            current = name
            continue
        if line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name == current, "TYPE %s does not follow its HELP" % name
            assert name not in m.types, "TYPE twice for " + name
            m.types[name] = typ
            continue
        assert not line.startswith("#"), "unexpected comment: " + line
        sm = _SAMPLE.match(line)
        assert sm, "not a sample line: %r" % line
        name, labels_text, value = sm.group(1), sm.group(3) or "", sm.group(4)
        family = name
        if m.types.get(current) == "histogram":
            assert name in (current + "_bucket", current + "_sum", current + "_count"), line
            family = current
        assert family == current, "sample %s outside its family (%s)" % (name, current)
        if m.types[family] == "counter":
            assert name.endswith("_total"), "counter %s does not end with _total" % name
        labels = {}
        pos = 0
        while pos < len(labels_text):
            lm = _LABEL.match(labels_text, pos)
            assert lm, "bad labels in %r" % line
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        key = (name, frozenset(labels.items()))
        assert key not in m.samples, "sample twice: " + line
        m.samples[key] = float(value)
    return m


def histogram_ok(m, name, **labels):
    """Checks one histogram series: buckets cumulative (never decreasing as le grows), the +Inf
    bucket equal to _count. Returns _count."""
    buckets = []
    for lab, v in m.series(name + "_bucket"):
        le = lab.pop("le")
        if lab == labels:
            buckets.append((float("inf") if le == "+Inf" else float(le), v))
    assert buckets, "no buckets for %s %s" % (name, labels)
    buckets.sort()
    values = [v for _, v in buckets]
    assert values == sorted(values), "buckets of %s %s decrease: %s" % (name, labels, buckets)
    assert buckets[-1][0] == float("inf")
    count = m.get(name + "_count", **labels)
    assert count == buckets[-1][1], "%s %s: +Inf %s != _count %s" % (name, labels,
                                                                   buckets[-1][1], count)
    assert m.get(name + "_sum", **labels) is not None
    return count


def finish(lb):
    """Stops lb (SIGTERM) and checks that it exited cleanly with no sanitizer report."""
    code = stop_quietly(lb)
    log = lb.log()
    assert code == 0 and "AddressSanitizer" not in log and "runtime error:" not in log, (
        "mongolb exited with %s:\n%s" % (code, lb.log_tail(60)))
