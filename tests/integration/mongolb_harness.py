"""Starts and stops mongolb (build/mongolb) in front of a mongosim cluster for integration tests.

    with start_sim("--mongos", "3") as sim, start_mongolb(sim.servers) as lb:
        client = pymongo.MongoClient(lb.uri)
        lb.status()          # db.adminCommand({mongolbStatus: 1}) over a raw socket

The binary is $MONGOLB or build/mongolb. Each mongolb gets a temporary config listening on a free
loopback port and pointing at the given seeds; start_mongolb waits until mongolbStatus shows every
seed as a known server. mongolb's stderr goes to a file in the temporary directory; stop() sends
SIGTERM and waits, and the `cluster` fixture prints that log when a test fails.

To run the tests against a real sharded cluster instead of the simulator, set
MONGOLB_TEST_SEEDS=host:port,host:port (its mongos routers). Tests then skip what needs the
simulator (sim* commands, failpoints, per-server command counts): see Cluster.need_sim().
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from harness import connect, recv_msg, scram_sha256_login, send_msg, start_sim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BINARY = os.path.join(ROOT, "build", "mongolb")


def mongolb_binary():
    """The mongolb under test: $MONGOLB (the ASan build in make check, the gcov build in make
    coverage) or build/mongolb."""
    return os.environ.get("MONGOLB", DEFAULT_BINARY)


class MongolbError(RuntimeError):
    pass


def wait_for(pred, timeout=10.0, step=0.02, what="condition"):
    """Polls pred until it returns a truthy value; returns it, or fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("%s not met within %.1fs" % (what, timeout))
        time.sleep(step)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_command(host, port, cmd, db="admin", timeout=5.0, tls_ca=None, tls_client=None,
                login=None):
    """Runs one command over a fresh raw socket (OP_MSG, TLS when tls_ca is given) and returns
    the reply document; logged in first with SCRAM-SHA-256 when login = (user, password,
    source)."""
    doc = dict(cmd)
    doc["$db"] = db
    with connect((host, port), timeout, tls_ca, tls_client) as s:
        if login:
            scram_sha256_login(s, *login)
        send_msg(s, doc, request_id=1)
        return recv_msg(s)[1]


class Mongolb:
    """A running mongolb process."""

    def __init__(self, seeds, config=None, expect_known=None, timeout=15.0, tls_ca=None,
                 tls_client=None, admin=None):
        self.binary = mongolb_binary()
        if not os.path.exists(self.binary):
            raise MongolbError("mongolb not found at %s (run make)" % self.binary)
        self.seeds = list(seeds)
        # With tls_mode = require, status() and uri speak TLS, verified against tls_ca.
        self.tls_ca = tls_ca
        self.tls_client = tls_client
        # With [auth] on, status() logs in first as admin = (user, password, authSource).
        self.admin = admin
        self.tmp = tempfile.mkdtemp(prefix="mongolb-test-")
        self.log_path = os.path.join(self.tmp, "mongolb.stderr")
        self.conf_path = os.path.join(self.tmp, "mongolb.ini")
        self.proc = None
        self._log = None
        want = len(self.seeds) if expect_known is None else expect_known
        last = None
        for _ in range(3):  # the free port may be taken between probing and binding it
            self.port = free_port()
            self._write_config(config or {})
            self._start()
            try:
                self.wait_known(want, timeout)
                return
            except MongolbError as e:
                last = e
                if self.proc.poll() is None:
                    self.stop()
                    raise
                self._close_log()
        raise last

    @property
    def host(self):
        return "127.0.0.1"

    @property
    def uri(self):
        """The URI applications use: with the admin credentials when there are some."""
        if self.admin:
            user, password, source = self.admin
            return self.uri_as(user, password, authSource=source)
        return self.base_uri()

    def base_uri(self):
        if self.tls_ca:
            uri = "mongodb://127.0.0.1:%d/?tls=true&tlsCAFile=%s" % (self.port, self.tls_ca)
            if self.tls_client:
                uri += "&tlsCertificateKeyFile=%s" % self.tls_client
            return uri
        return "mongodb://127.0.0.1:%d/" % self.port

    def _write_config(self, extra):
        sections = {
            "mongolb": {"listen": "127.0.0.1:%d" % self.port, "log_level": "info"},
            "upstream": {"mode": "mongos", "seeds": ",".join(self.seeds),
                         "heartbeat_interval_ms": "500"},
            "cursors": {},
            "auth": {},
        }
        for key, value in extra.items():  # "section.key": value
            section, name = key.split(".", 1)
            sections[section][name] = str(value)
        with open(self.conf_path, "w") as f:
            for section, keys in sections.items():
                if not keys:
                    continue
                f.write("[%s]\n" % section)
                for k, v in keys.items():
                    f.write("%s = %s\n" % (k, v))

    def _start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", self.conf_path], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log)

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def log(self):
        if getattr(self, "_saved_log", None) is not None:
            return self._saved_log
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=60):
        return "\n".join(self.log().splitlines()[-lines:])

    def connect(self, timeout=5.0, login=True):
        """A raw socket to mongolb: TLS when mongolb requires it (tls_ca given), logged in as the
        admin user when there is one (MONGOLB_TEST_AUTH) unless login is False."""
        s = connect((self.host, self.port), timeout, self.tls_ca, self.tls_client)
        if login and self.admin:
            try:
                scram_sha256_login(s, *self.admin)
            except BaseException:
                s.close()
                raise
        return s

    def command(self, cmd, db="admin", timeout=5.0, login=True):
        """One command over a fresh raw socket to mongolb (TLS when it requires it), logged in as
        the admin user when there is one unless login is False."""
        return raw_command(self.host, self.port, cmd, db=db, timeout=timeout, tls_ca=self.tls_ca,
                           tls_client=self.tls_client,
                           login=self.admin if login else None)

    def uri_as(self, user, password, **options):
        """uri with credentials (quoted), plus URI options such as authSource."""
        from urllib.parse import quote_plus

        base = self.base_uri()
        sep = "&" if "?" in base else "?"
        opts = "&".join("%s=%s" % (k, v) for k, v in options.items())
        uri = base.replace("mongodb://", "mongodb://%s:%s@" % (quote_plus(user),
                                                               quote_plus(password)), 1)
        return uri + (sep + opts if opts else "")

    def status(self, timeout=5.0):
        """mongolbStatus over a raw socket (no driver involved); with admin credentials, through
        PyMongo logged in as that user."""
        if self.admin:
            import pymongo
            import pymongo.errors

            user, password, source = self.admin
            try:
                with pymongo.MongoClient(self.uri_as(user, password, authSource=source),
                                         serverSelectionTimeoutMS=int(timeout * 1000),
                                         connectTimeoutMS=int(timeout * 1000)) as c:
                    return c.admin.command("mongolbStatus")
            except pymongo.errors.ConnectionFailure as e:
                raise ConnectionError(str(e))
        return raw_command(self.host, self.port, {"mongolbStatus": 1}, timeout=timeout,
                           tls_ca=self.tls_ca, tls_client=self.tls_client)

    def counters(self):
        return self.status()["counters"]

    def known_servers(self, st=None):
        st = st or self.status()
        return [s for s in st["servers"] if s["type"] != "Unknown"]

    def server_type(self, address):
        for s in self.status()["servers"]:
            if s["address"] == address:
                return s["type"]
        raise KeyError(address)

    def wait_known(self, n, timeout=15.0):
        """Waits until mongolb answers and knows n servers (type other than Unknown)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise MongolbError("mongolb exited with %s before it was ready:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                st = self.status(timeout=2.0)
                if len(self.known_servers(st)) >= n:
                    return st
            except (OSError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise MongolbError("mongolb did not know %d servers within %.1fs:\n%s"
                                   % (n, timeout, self.log_tail()))
            time.sleep(0.05)

    def stop(self, timeout=15.0):
        """SIGTERM, then wait; returns the exit code (kills and fails past the timeout)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._close_log()
                raise MongolbError("mongolb did not stop within %.1fs of SIGTERM:\n%s"
                                   % (timeout, self.log_tail()))
        self._close_log()
        return self.proc.returncode

    def cleanup(self):
        try:
            self.stop()
        finally:
            self._saved_log = self.log()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


def start_mongolb(seeds, config=None, **kw):
    return Mongolb(seeds, config=config, **kw)


def real_seeds():
    """The real cluster's mongos routers from MONGOLB_TEST_SEEDS, or None."""
    v = os.environ.get("MONGOLB_TEST_SEEDS", "").strip()
    return [s.strip() for s in v.split(",") if s.strip()] or None


_TLS_CERTS = None


# MONGOLB_TEST_AUTH=passthrough runs every Cluster with authentication: the simulator with --auth
# and a root user, mongolb in passthrough mode with that user as service_user, and lb.uri, status()
# and the raw sockets of lb.connect() and lb.command() logged in as it (harness.py's
# scram_sha256_login; login=False for a socket that must stay anonymous).
AUTH_USER, AUTH_PWD = "admin", "s3cret"
_AUTH_DIR = None


def auth_everywhere():
    """The (sim args, mongolb config, admin) of MONGOLB_TEST_AUTH=passthrough, or None."""
    global _AUTH_DIR
    if os.environ.get("MONGOLB_TEST_AUTH") != "passthrough":
        return None
    if _AUTH_DIR is None:
        _AUTH_DIR = tempfile.mkdtemp(prefix="mongolb-test-auth-")
        with open(os.path.join(_AUTH_DIR, "service.password"), "w") as f:
            f.write(AUTH_PWD + "\n")
        os.chmod(os.path.join(_AUTH_DIR, "service.password"), 0o600)
    config = {"auth.mode": "passthrough", "auth.service_user": AUTH_USER,
              "auth.service_password_file": os.path.join(_AUTH_DIR, "service.password"),
              "auth.admin_users": "%s@admin" % AUTH_USER}
    return (("--auth", "--auth-user", "%s:%s" % (AUTH_USER, AUTH_PWD)), config,
            (AUTH_USER, AUTH_PWD, "admin"))


def tls_everywhere():
    """The certificates to use when MONGOLB_TEST_TLS=1 asks for TLS on both legs (applications to
    mongolb, mongolb to the simulator), made once per test run; None otherwise. make check runs
    the cursor, transaction and failover suites a second time that way."""
    global _TLS_CERTS
    if os.environ.get("MONGOLB_TEST_TLS") != "1":
        return None
    if _TLS_CERTS is None:
        from tls_certs import make_certs
        _TLS_CERTS = make_certs(tempfile.mkdtemp(prefix="mongolb-test-tls-"))
    return _TLS_CERTS


class Cluster:
    """mongolb in front of either a new simulator or the real cluster of MONGOLB_TEST_SEEDS."""

    def __init__(self, sim_args=("--mongos", "3"), config=None, seed_indices=None,
                 expect_known=None):
        """seed_indices: which simulator servers mongolb is given as seeds (all by default; a
        replica set needs only one, the others are discovered). expect_known: how many servers
        mongolb must know before the cluster is ready (the number of seeds by default)."""
        self.sim = None
        self.lb = None
        seeds = real_seeds()
        certs = tls_everywhere()
        tls = {}
        if certs:
            config = dict(config or {})
            config.update({"mongolb.tls_mode": "require",
                           "mongolb.tls_certificate_key_file": certs.server,
                           "upstream.tls": "true", "upstream.tls_ca_file": certs.ca})
            tls = {"tls_ca": certs.ca}
            sim_args = tuple(sim_args) + ("--tls-cert", certs.server)
        auth = auth_everywhere()
        admin = {}
        if auth and seeds is None:
            sim_args = tuple(sim_args) + auth[0]
            config = dict(config or {})
            config.update(auth[1])
            admin = {"admin": auth[2]}
        try:
            if seeds is None:
                self.sim = start_sim(*sim_args, **tls)
                seeds = self.sim.servers
                if seed_indices is not None:
                    seeds = [seeds[i] for i in seed_indices]
            self.seeds = seeds
            self.lb = start_mongolb(seeds, config=config, expect_known=expect_known, **tls,
                                    **admin)
        except BaseException:
            self.close()
            raise

    @property
    def is_sim(self):
        return self.sim is not None

    def need_sim(self):
        if not self.is_sim:
            pytest.skip("needs mongosim (MONGOLB_TEST_SEEDS points at a real cluster)")

    def sim_command(self, cmd, i=None):
        """A control command on a live simulator server (the first one not killed if i is None)."""
        self.need_sim()
        if i is not None:
            return self.sim.command(i, cmd)
        last = None
        for j in range(len(self.sim.servers)):
            try:
                return self.sim.command(j, cmd)
            except OSError as e:
                last = e
        raise last

    def sim_stats(self, reset=False):
        cmd = {"simStats": 1}
        if reset:
            cmd["reset"] = True
        return self.sim_command(cmd)

    def command_counts(self, name, stats=None):
        """{server index: how many `name` commands it received} from simStats."""
        stats = stats or self.sim_stats()
        return {s["index"]: int(s["commands"].get(name, 0)) for s in stats["servers"]}

    def close(self):
        """Stops both; returns mongolb's exit status (None if it never started)."""
        code = None
        try:
            if self.lb is not None:
                self.lb.cleanup()
                code = self.lb.proc.returncode
        finally:
            if self.sim is not None:
                self.sim.stop()
        return code


@pytest.fixture
def cluster():
    """mongosim --mongos 3 (or MONGOLB_TEST_SEEDS) behind a fresh mongolb. mongolb's stderr is
    printed at teardown; pytest shows it only for a test that failed."""
    c = Cluster()
    try:
        yield c
    finally:
        code = c.close()
        print("\n----- mongolb stderr (%s) -----\n%s" % (c.lb.log_path, c.lb.log_tail(80)))
    # Every test ends with a graceful stop: SIGTERM, exit status 0, no sanitizer report.
    log = c.lb.log()
    if code != 0 or "AddressSanitizer" in log or "runtime error:" in log:
        pytest.fail("mongolb exited with %s after SIGTERM:\n%s" % (code, c.lb.log_tail(80)))


# --- helpers added for the I/O-fault tests (test_io_faults.py, test_io_limits.py) ---------------

def stop_quietly(lb, timeout=5.0):
    """Stops a Mongolb whatever state it is in (SIGTERM, then SIGKILL past timeout), keeps its log
    for log()/log_tail() and removes its directory. Returns the exit status; never raises."""
    code = None
    try:
        if lb.proc is not None and lb.proc.poll() is None:
            lb.proc.send_signal(signal.SIGTERM)
            try:
                lb.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                lb.proc.kill()
                lb.proc.wait()
        code = lb.proc.returncode if lb.proc is not None else None
    finally:
        lb._close_log()
        lb._saved_log = lb.log()
        shutil.rmtree(lb.tmp, ignore_errors=True)
    return code


def rss_kb(pid):
    """VmRSS of a process in kB from /proc/<pid>/status (0 once it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def log_lines(lb, pattern):
    """mongolb's log lines matching the regular expression (case-insensitive)."""
    import re

    rx = re.compile(pattern, re.I)
    return [line for line in lb.log().splitlines() if rx.search(line)]


def peer_log_lines(lb, sock_or_port):
    """Log lines whose connection prefix names this client (by its local TCP port)."""
    port = sock_or_port if isinstance(sock_or_port, int) else sock_or_port.getsockname()[1]
    return log_lines(lb, r"\[c\d+ 127\.0\.0\.1:%d\]" % port)


class CustomMongolb(Mongolb):
    """A Mongolb with more listen addresses besides its TCP port (e.g. "unix:/path") and/or a
    preexec_fn for its process (e.g. a lower RLIMIT_NOFILE)."""

    def __init__(self, seeds, config=None, extra_listen=(), preexec_fn=None, **kw):
        self.extra_listen = list(extra_listen)
        self.preexec_fn = preexec_fn
        super().__init__(seeds, config=config, **kw)

    def _write_config(self, extra):
        extra = dict(extra)
        if self.extra_listen:
            extra["mongolb.listen"] = ",".join(["127.0.0.1:%d" % self.port] + self.extra_listen)
        super()._write_config(extra)

    def _start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", self.conf_path], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log,
                                     preexec_fn=self.preexec_fn)


def start_mongolb_clean(seeds, config=None, mongolb_class=None, **kw):
    """Like start_mongolb, but a mongolb that fails to start (e.g. it refuses a configuration
    key) leaves no temporary directory behind."""
    cls = mongolb_class or Mongolb
    lb = cls.__new__(cls)
    try:
        lb.__init__(seeds, config=config, **kw)
    except BaseException:
        if getattr(lb, "proc", None) is not None and lb.proc.poll() is None:
            lb.proc.kill()
            lb.proc.wait()
        if hasattr(lb, "_log"):
            lb._close_log()
        if getattr(lb, "tmp", None):
            shutil.rmtree(lb.tmp, ignore_errors=True)
        raise
    return lb


# Defaults for the I/O-fault tests: a quick graceful stop and short selection waits.
IO_TEST_DEFAULTS = {"mongolb.shutdown_timeout_ms": 1000,
                    "upstream.server_selection_timeout_ms": 5000}


def run_threads(threads, what="threads", timeout=60):
    """Starts the threads, waits for each up to timeout seconds, and fails if one still runs."""
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout)
    assert not any(th.is_alive() for th in threads), "%s hung" % what


def run_mongolb_conf(conf_text, wait=3.0, env=None):
    """Runs mongolb on a configuration written to a temporary directory and waits up to `wait`
    seconds for it to exit. Returns (exit status, or None if it was still running and had to be
    stopped; its output)."""
    d = tempfile.mkdtemp(prefix="mlb-conf-")
    try:
        conf = os.path.join(d, "mongolb.ini")
        with open(conf, "w") as f:
            f.write(conf_text)
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.Popen([mongolb_binary(), "-c", conf],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=full_env)
        try:
            out, _ = proc.communicate(timeout=wait)
            return proc.returncode, out.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            return None, out.decode("utf-8", "replace")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def reload_with(lb, config, expect, raw=None):
    """Rewrites mongolb's configuration (IO_TEST_DEFAULTS updated by config, or the raw text),
    sends SIGHUP and waits for a new log line matching expect; returns it."""
    seen = len(log_lines(lb, expect))
    if raw is None:
        cfg = dict(IO_TEST_DEFAULTS)
        cfg.update(config)
        lb._write_config(cfg)
    else:
        with open(lb.conf_path, "w") as f:
            f.write(raw)
    lb.proc.send_signal(signal.SIGHUP)
    return wait_for(lambda: log_lines(lb, expect)[seen:], 10, what="a log line /%s/" % expect)[0]


PING_DEBUG = r"OP_MSG admin\.ping"


def ping_logged_at_debug(lb):
    """Sends a ping; True if mongolb logged it at debug level."""
    before = len(log_lines(lb, PING_DEBUG))
    assert raw_command(lb.host, lb.port, {"ping": 1})["ok"] == 1
    time.sleep(0.2)  # the log line is written before the reply; this is only slack for stderr
    return len(log_lines(lb, PING_DEBUG)) > before


class SimAndMongolb:
    """mongolb (started with IO_TEST_DEFAULTS updated by config) in front of a new simulator.
    Always cleans up with stop_quietly (never raises on a crashed or hung mongolb) and prints
    mongolb's log tail, which pytest shows for a failed test."""

    def __init__(self, sim_args=("--mongos", "1"), config=None, mongolb_class=None, **kw):
        cfg = dict(IO_TEST_DEFAULTS)
        cfg.update(config or {})
        self.sim = start_sim(*sim_args)
        self.lb = None
        try:
            self.lb = start_mongolb_clean(self.sim.servers, cfg, mongolb_class, **kw)
        except BaseException:
            self.sim.stop()
            raise

    def close(self):
        try:
            if self.lb is not None:
                code = stop_quietly(self.lb)
                print("\n----- mongolb exit status %s; stderr tail -----\n%s"
                      % (code, self.lb.log_tail(60)))
        finally:
            self.sim.stop()

    def __enter__(self):
        return self.sim, self.lb

    def __exit__(self, *exc):
        self.close()


def read_outcome(sock, timeout=5.0):
    """Waits for one frame from the peer: ("reply", header, body bytes), ("closed", None, None)
    when the connection is closed or reset, or ("timeout", None, None)."""
    from harness import recv_frame

    sock.settimeout(timeout)
    try:
        hdr, body = recv_frame(sock)
        return "reply", hdr, body
    except socket.timeout:
        return "timeout", None, None
    except (ConnectionError, OSError):
        return "closed", None, None


def decode_msg_body(body):
    """The body document of an OP_MSG body (after the header); a trailing checksum is ignored."""
    import struct

    import bson

    flags = struct.unpack("<I", body[:4])[0]
    assert body[4] == 0, "first section is not kind 0"
    n = struct.unpack("<i", body[5:9])[0]
    return bson.BSON(body[5:5 + n]).decode(), flags
