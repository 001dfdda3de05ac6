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

from harness import recv_msg, send_msg
from mongolb_harness import (DEFAULT_BINARY, CustomMongolb, SimAndMongolb, read_outcome,
                             stop_quietly, wait_for)


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


# --- the listener -------------------------------------------------------------------------------

def test_a_client_that_cannot_be_set_up_is_refused_and_the_listener_goes_on():
    """The second connection accepted cannot get its memory: it is closed at once with a log line
    and counted in clientsRefused; the listener keeps accepting."""
    # expect_known=0: the harness's first status probe (connection 1) succeeds at once.
    with faulty("client_alloc:2", expect_known=0) as (sim, lb):
        assert "MONGOLB_FAULT=client_alloc:2: fault injection is on" in lb.log()
        s = socket.create_connection((lb.host, lb.port), timeout=5)
        try:
            kind, _, _ = read_outcome(s, timeout=5)
            assert kind == "closed", kind
        finally:
            s.close()
        wait_for(lambda: count_lines(lb, "cannot take a connection (not enough memory); closing "
                                         "it") == 1, what="the refusal's log line")
        with socket.create_connection((lb.host, lb.port), timeout=5) as s2:
            assert hello(s2)["ok"] == 1
        assert lb.counters()["clientsRefused"] == 1


def test_accept_at_the_descriptor_limit_is_logged_and_the_listener_goes_on():
    """accept(2) fails as at the descriptor limit: the pending connection is closed (as libuv
    does), the log names the limit, fdLimitRefusals counts it, and later connections work."""
    with faulty("accept:2", expect_known=0) as (sim, lb):
        s = socket.create_connection((lb.host, lb.port), timeout=5)
        try:
            kind, _, _ = read_outcome(s, timeout=5)
            assert kind == "closed", kind
        finally:
            s.close()
        wait_for(lambda: count_lines(lb, "accept: too many open files: the file descriptor limit")
                 == 1, what="the accept failure's log line")
        with socket.create_connection((lb.host, lb.port), timeout=5) as s2:
            assert hello(s2)["ok"] == 1
        assert lb.counters()["fdLimitRefusals"] == 1


def run_mongolb(conf_text, wait=3.0, env=None):
    """Runs mongolb on a configuration; (exit status or None if still running, output)."""
    d = tempfile.mkdtemp(prefix="mlb-conf-")
    try:
        conf = os.path.join(d, "mongolb.ini")
        with open(conf, "w") as f:
            f.write(conf_text)
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.Popen([os.environ.get("MONGOLB", DEFAULT_BINARY), "-c", conf],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=full_env)
        try:
            out, _ = proc.communicate(timeout=wait)
            return proc.returncode, out.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            proc.terminate()
            out, _ = proc.communicate(timeout=15)
            return None, out.decode("utf-8", "replace")
    finally:
        shutil.rmtree(d, ignore_errors=True)


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
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                assert hello(s)["ok"] == 1
            assert stop_quietly(lb) == 0, lb.log_tail()
            assert not os.path.exists(path), "the socket file is left after exit"
        finally:
            ctx.close()
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
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(path)
                    assert hello(s)["ok"] == 1
    finally:
        shutil.rmtree(d, ignore_errors=True)
