"""Error paths of the I/O modules that only a failure from inside can reach: an allocation that
fails, a socket call the kernel refuses, an OpenSSL step that cannot be done. mongolb's test-only
fault injection (src/fault.h: MONGOLB_FAULT="point:first[:count],...", read once at start, inert
unless set) makes those calls fail; each test asserts what a user or an operator sees: a refused
connection, a log line, an error document, a counter in mongolbStatus. Also here: the listener's
own failures (a busy port, a stale unix socket), the socket options of backend connections, and
max_lifetime_ms."""

import ctypes
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pymongo
import pytest

from harness import recv_msg, send_msg, start_sim
from mongolb_harness import (IO_TEST_DEFAULTS, CustomMongolb, SimAndMongolb, free_port,
                             read_outcome, run_mongolb_conf, start_mongolb_clean, stop_quietly,
                             wait_for)
from tls_certs import tls_certs  # noqa: F401  (a fixture)


class FaultMongolb(CustomMongolb):
    """A mongolb started with MONGOLB_FAULT (and any other environment) of the test's choice."""

    def __init__(self, seeds, config=None, env=None, **kw):
        self.env = dict(os.environ)
        self.env.update(env or {})
        super().__init__(seeds, config=config, **kw)

    def _start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", self.conf_path], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log,
                                     preexec_fn=self.preexec_fn, env=self.env)


def faulty(fault, sim_args=("--mongos", "1"), config=None, expect_known=None, **kw):
    return SimAndMongolb(sim_args, config=config, mongolb_class=FaultMongolb,
                         env={"MONGOLB_FAULT": fault}, expect_known=expect_known, **kw)


def count_lines(lb, text):
    return sum(1 for line in lb.log().splitlines() if text in line)


def hello(sock, request_id=7, timeout=5.0):
    sock.settimeout(timeout)
    send_msg(sock, {"hello": 1, "$db": "admin"}, request_id=request_id)
    return recv_msg(sock)[1]


def unix_hello(path, timeout=5.0):
    """hello's reply over a new connection to the unix socket at path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        return hello(s, timeout=timeout)


def refused_then_served(lb, log_text, what):
    """The next TCP connection is closed without a reply and logged once with log_text; the one
    after it is served."""
    s = socket.create_connection((lb.host, lb.port), timeout=5)
    try:
        kind, _, _ = read_outcome(s, timeout=5)
        assert kind == "closed", kind
    finally:
        s.close()
    wait_for(lambda: count_lines(lb, log_text) == 1, what=what)
    with socket.create_connection((lb.host, lb.port), timeout=5) as s2:
        assert hello(s2)["ok"] == 1


# --- the listener -------------------------------------------------------------------------------

def test_a_client_that_cannot_be_set_up_is_refused_and_the_listener_goes_on():
    """The second connection accepted cannot get its memory: it is closed at once with a log line
    and counted in clientsRefused; the listener keeps accepting."""
    # expect_known=0: the harness's first status probe (connection 1) succeeds at once.
    with faulty("client_alloc:2", expect_known=0) as (sim, lb):
        assert "MONGOLB_FAULT=client_alloc:2: fault injection is on" in lb.log()
        refused_then_served(lb, "cannot take a connection (not enough memory); closing it",
                            "the refusal's log line")
        assert lb.counters()["clientsRefused"] == 1


def test_accept_at_the_descriptor_limit_is_logged_and_the_listener_goes_on():
    """accept(2) fails as at the descriptor limit: the pending connection is closed (as libuv
    does), the log names the limit, fdLimitRefusals counts it, and later connections work."""
    with faulty("accept:2", expect_known=0) as (sim, lb):
        refused_then_served(lb, "accept: too many open files: the file descriptor limit",
                            "the accept failure's log line")
        assert lb.counters()["fdLimitRefusals"] == 1


def run_mongolb(conf_text, wait=3.0, env=None):
    """Runs mongolb on a configuration; (exit status or None if still running, output)."""
    return run_mongolb_conf(conf_text, wait, env)


def test_a_listen_port_in_use_fails_the_start_with_its_reason():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        code, out = run_mongolb("[mongolb]\nlisten = 127.0.0.1:%d\n[upstream]\nseeds = "
                                "127.0.0.1:1\n" % port)
    finally:
        busy.close()
    assert code == 1, out
    assert "listen 127.0.0.1:%d: address already in use" % port in out, out


def test_a_stale_unix_socket_is_replaced_and_removed_at_exit():
    """A socket file nobody accepts on (a crashed instance's) is removed before binding, with a
    log line; the new one serves, and at exit its file is removed."""
    d = tempfile.mkdtemp(prefix="mlb-sock-")
    path = os.path.join(d, "mongolb.sock")
    try:
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()  # the file stays; nobody listens on it
        assert os.path.exists(path)
        ctx = SimAndMongolb(("--mongos", "1"), mongolb_class=CustomMongolb,
                            extra_listen=["unix:" + path])
        try:
            lb = ctx.lb
            assert "listen unix:%s: removing a stale socket" % path in lb.log()
            assert unix_hello(path)["ok"] == 1
            assert stop_quietly(lb) == 0, lb.log_tail()
            assert not os.path.exists(path), "the socket file is left after exit"
        finally:
            ctx.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("case", ["missing directory", "path too long"])
def test_a_unix_path_that_cannot_be_bound_fails_the_start_with_its_reason(case):
    d = tempfile.mkdtemp(prefix="mlb-sock-")
    try:
        if case == "missing directory":
            path = os.path.join(d, "no-such-dir", "mongolb.sock")
            reason = "no such file or directory"
        else:
            path = os.path.join(d, "x" * 120 + ".sock")
            reason = "name too long"
        code, out = run_mongolb("[mongolb]\nlisten = 127.0.0.1:%d,unix:%s\n[upstream]\nseeds = "
                                "127.0.0.1:1\n" % (free_port(), path))
        assert code == 1, out
        if case == "missing directory":
            assert "listen unix:%s: %s" % (path, reason) in out, out
        else:  # the configuration's own check says so before anything is bound
            assert "a unix socket path has at most 107 characters" in out, out
        assert not os.path.exists(path)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_unix_client_that_cannot_be_set_up_is_refused():
    """As over TCP: the connection is closed with a log line and the listener goes on."""
    d = tempfile.mkdtemp(prefix="mlb-sock-")
    path = os.path.join(d, "mongolb.sock")
    try:
        # expect_known=0: the harness's first probe (over TCP) is connection 1.
        with SimAndMongolb(("--mongos", "1"), mongolb_class=FaultMongolb, expect_known=0,
                           env={"MONGOLB_FAULT": "client_alloc:2"},
                           extra_listen=["unix:" + path]) as (sim, lb):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                assert read_outcome(s, timeout=5)[0] == "closed"
            wait_for(lambda: count_lines(lb, "[unix:%s] cannot take a connection" % path) == 1,
                     what="the refusal's log line")
            assert unix_hello(path)["ok"] == 1
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_exit_leaves_a_socket_file_another_instance_made():
    """The file at a unix listener's path was replaced while mongolb ran (an operator removed it
    and another instance bound the path): at exit mongolb removes only its own file, so the
    other instance stays reachable."""
    d = tempfile.mkdtemp(prefix="mlb-sock-")
    path = os.path.join(d, "mongolb.sock")
    try:
        with SimAndMongolb(("--mongos", "1"), mongolb_class=CustomMongolb,
                           extra_listen=["unix:" + path]) as (sim, first):
            os.unlink(path)
            with SimAndMongolb(("--mongos", "1"), mongolb_class=CustomMongolb,
                               extra_listen=["unix:" + path]) as (sim2, second):
                assert stop_quietly(first) == 0, first.log_tail()
                assert os.path.exists(path), "the first mongolb removed the second one's socket"
                assert unix_hello(path)["ok"] == 1
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- backend connections ------------------------------------------------------------------------

def test_backend_connections_that_cannot_be_allocated_become_an_error_document():
    """No backend connection can get its memory: a find is tried three times, then the
    application gets HostUnreachable naming the reason, as a mongos would send; mongolb itself
    goes on answering."""
    with faulty("backend_alloc:1:0") as (sim, lb):
        client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000, retryReads=False)
        try:
            with pytest.raises(pymongo.errors.OperationFailure) as e:
                client.test.c.find_one()
            assert e.value.code == 6, e.value.details
            assert "cannot open a connection to %s: not enough memory" % sim.servers[0] \
                in e.value.details["errmsg"], e.value.details
            # What mongolb answers itself still works.
            assert client.admin.command("hello")["ok"] == 1
        finally:
            client.close()
        assert count_lines(lb, "cannot open a connection: not enough memory") >= 3
        assert lb.status()["ok"] == 1


def test_backend_connections_whose_connect_always_fails_are_tried_once_per_attempt():
    """connect() fails at once, every time (no route, no local port): each attempt of a request
    opens one connection, not one connection after another from inside the failure until the
    file descriptors run out."""
    with faulty("backend_connect:1:0") as (sim, lb):
        client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000, retryReads=False)
        try:
            with pytest.raises(pymongo.errors.OperationFailure) as e:
                client.test.c.find_one()
            assert e.value.code == 6, e.value.details
            assert client.admin.command("hello")["ok"] == 1
        finally:
            client.close()
        counters = lb.status()["counters"]
        # Three attempts for the find, three for the driver's endSessions at close.
        assert counters["backendConnects"] <= 6, counters
        assert counters["fdLimitRefusals"] == 0, counters


@pytest.mark.parametrize("fault,line", [
    ("backend_alloc:1", "cannot open a connection: not enough memory"),
    ("backend_connect:1", "cannot open a connection: address not available"),
    ("backend_sockopt:1", "cannot set keepalive/TCP_USER_TIMEOUT: invalid argument"),
    ("backend_read:1", "marked unknown: cannot read"),
    ("backend_hello:1", "marked unknown: handshake could not be sent"),
])
def test_a_backend_connection_failing_once_is_logged_and_the_request_still_succeeds(fault, line):
    """One backend connection fails as it is opened (memory, connect, socket options, reading,
    its hello): the log says why, and the application's find still succeeds, on a connection
    opened again (a connection that could not be introduced marks the server unknown until its
    next check, and the request waits for it)."""
    with faulty(fault) as (sim, lb):
        client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000, retryReads=False)
        try:
            sim_direct = pymongo.MongoClient("mongodb://%s/" % sim.servers[0], directConnection=True)
            sim_direct.test.c.insert_one({"_id": 1})
            sim_direct.close()
            assert client.test.c.find_one({"_id": 1}) == {"_id": 1}
        finally:
            client.close()
        wait_for(lambda: count_lines(lb, line) == 1, what="the log line %r" % line)


# --- monitors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fault,line", [
    ("monitor_alloc:1", "check failed: out of memory"),
    ("monitor_connect:1", "check failed: address not available"),
    ("monitor_read:1", "check failed: cannot read"),
    # The second hello (the first check after the server became known) cannot be sent: the one
    # line for a known server's failed check is the one that marks it unknown.
    ("monitor_write:2", "marked unknown: broken pipe"),
])
def test_a_check_failing_once_is_logged_and_the_next_one_recovers(fault, line):
    """A check fails as its connection is set up or its hello sent: the log says why, and the
    server is known again after the next check, so requests reach it."""
    with faulty(fault) as (sim, lb):
        wait_for(lambda: count_lines(lb, line) == 1, what="the log line %r" % line)
        lb.wait_known(1)
        client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
        try:
            assert client.test.c.count_documents({}) == 0
        finally:
            client.close()


def test_a_seed_that_does_not_resolve_is_reported_and_the_others_serve():
    """A seed whose name does not resolve stays Unknown with the resolver's reason in
    mongolbStatus and in the log; the other seed serves."""
    sim = start_sim("--mongos", "1")
    try:
        bad = "nosuch.invalid:27017"
        lb = start_mongolb_clean([sim.servers[0], bad], IO_TEST_DEFAULTS, expect_known=1)
        try:
            def bad_error():
                for srv in lb.status()["servers"]:
                    if srv["address"] == bad:
                        assert srv["type"] == "Unknown"
                        return srv.get("lastError") or ""
                raise AssertionError("the seed %s is missing from mongolbStatus" % bad)
            wait_for(lambda: bad_error().startswith("cannot resolve nosuch.invalid: "),
                     what="the resolver's error in lastError")
            assert count_lines(lb, "check failed: cannot resolve nosuch.invalid") >= 1
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                assert client.test.c.count_documents({}) == 0
            finally:
                client.close()
        finally:
            stop_quietly(lb)
    finally:
        sim.stop()


# --- backend socket options and max_lifetime_ms -------------------------------------------------

def sockets_of(pid):
    """Duplicates of the TCP sockets process pid holds (pidfd_getfd(2)), as socket objects."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError) as e:
        pytest.skip("pidfd_open is not available: %s" % e)
    socks = []
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(438, pidfd, int(name), 0)  # SYS_pidfd_getfd on x86-64 and arm64
            if fd < 0:
                err = ctypes.get_errno()
                for s in socks:
                    s.close()
                pytest.skip("pidfd_getfd refused: %s" % os.strerror(err))
            s = socket.socket(fileno=fd)
            if s.family in (socket.AF_INET, socket.AF_INET6) and s.type == socket.SOCK_STREAM:
                socks.append(s)
            else:
                s.close()
    finally:
        os.close(pidfd)
    return socks


def peer_port(s):
    try:
        return s.getpeername()[1]
    except OSError:  # a listener
        return None


@pytest.mark.parametrize("keepalive_s,user_timeout_ms", [(7, 4321), (0, 0)])
def test_backend_connections_carry_keepalive_and_tcp_user_timeout(keepalive_s, user_timeout_ms):
    """Pooled connections to a server have SO_KEEPALIVE with tcp_keepalive_s as the idle time and
    TCP_USER_TIMEOUT as tcp_user_timeout_ms (0 turns both off), read from mongolb's own
    sockets."""
    cfg = {"upstream.tcp_keepalive_s": keepalive_s,
           "upstream.tcp_user_timeout_ms": user_timeout_ms}
    with SimAndMongolb(("--mongos", "1"), config=cfg) as (sim, lb):
        client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
        try:
            assert client.test.c.count_documents({}) == 0
            assert lb.status()["servers"][0]["pool"]["total"] == 1
            sim_port = int(sim.servers[0].rsplit(":", 1)[1])
            socks = sockets_of(lb.proc.pid)
            try:
                to_sim = [s for s in socks if peer_port(s) == sim_port]
                # The monitoring connection and the pooled one.
                assert len(to_sim) == 2, [peer_port(s) for s in socks]
                tuned = [s for s in to_sim
                         if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
                         == user_timeout_ms
                         and s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
                         == (1 if keepalive_s else 0)]
                assert tuned, "no connection to the server has the configured options"
                if keepalive_s:
                    assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
                               == keepalive_s for s in tuned)
            finally:
                for s in socks:
                    s.close()
        finally:
            client.close()


def test_a_pooled_connection_older_than_max_lifetime_ms_is_replaced():
    """With max_lifetime_ms = 1500, requests reuse a pooled connection and the connection is
    replaced once it is older than that (on release, on being taken from the pool, or by the
    janitor while idle), so a stream of requests over 4 s opens a few connections, not one per
    request; an idle pool past the lifetime is emptied."""
    cfg = {"upstream.max_lifetime_ms": 1500, "mongolb.log_level": "debug"}
    with SimAndMongolb(("--mongos", "1"), config=cfg) as (sim, lb):
        client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000, maxPoolSize=1)
        try:
            before = lb.counters()["backendConnects"]
            finds = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < 4.0 or finds < 20:
                client.test.c.find_one()
                finds += 1
                time.sleep(0.01)
            opened = lb.counters()["backendConnects"] - before
            assert 2 <= opened <= finds // 4, (opened, finds)
            assert count_lines(lb, "closing: max_lifetime_ms reached") >= 1
            # Idle past its lifetime, the pooled connection is closed by the janitor.
            wait_for(lambda: lb.status()["servers"][0]["pool"]["total"] == 0, timeout=10,
                     what="the pool to be emptied")
            assert client.test.c.find_one() is None
        finally:
            client.close()


# --- TLS towards the servers --------------------------------------------------------------------

@pytest.mark.parametrize("fault,line", [
    ("monitor_tls:1", "check failed: TLS: cannot prepare a connection"),
    ("backend_tls:1", "marked unknown: TLS: not enough memory"),
])
def test_a_tls_connection_that_cannot_be_prepared_is_logged_and_recovers(tls_certs, fault, line):
    """The first TLS connection of a monitor, or of the pool, cannot get its SSL object: the log
    says so, and requests succeed once the connection is made again."""
    from test_proxy_tls import server_side, tls_sim

    with tls_sim(tls_certs, "--mongos", "1") as sim:
        lb = FaultMongolb(sim.servers, config=dict(IO_TEST_DEFAULTS, **server_side(tls_certs)),
                          env={"MONGOLB_FAULT": fault})
        try:
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                client.test.c.insert_one({"_id": 1})
                assert client.test.c.find_one() == {"_id": 1}
            finally:
                client.close()
            wait_for(lambda: count_lines(lb, line) == 1, what="the log line %r" % line)
        finally:
            assert stop_quietly(lb) == 0, lb.log_tail()


def test_a_tls_context_that_cannot_be_created_stops_the_start(tls_certs):
    """mongolb cannot make its TLS context towards the servers: it does not start, and says
    why; --check-config says the same."""
    conf = ("[mongolb]\nlisten = 127.0.0.1:%d\n[upstream]\nseeds = 127.0.0.1:2\ntls = true\n"
            "tls_ca_file = %s\n" % (free_port(), tls_certs.ca))
    code, out = run_mongolb(conf, env={"MONGOLB_FAULT": "tls_context:1"})
    assert code == 1, out
    assert "cannot create the TLS context towards the servers (out of memory)" in out, out
