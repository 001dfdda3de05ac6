"""mongolb under systemd's Type=notify, seen from the service manager's side: each test runs the
daemon with NOTIFY_SOCKET pointing at a Python unix datagram socket standing in for systemd, and
checks the messages it receives (sd_notify(3)):

- READY=1 once mongolb listens and knows a server suitable for the default read preference, or
  after server_selection_timeout_ms when none answers (a sidecar of a cluster that is down still
  starts);
- RELOADING=1 with MONOTONIC_USEC=, then READY=1, around a SIGHUP reload (a bad file included);
- STATUS= lines with the servers up and the clients, when they change;
- WATCHDOG=1 at half of WATCHDOG_USEC, only when WATCHDOG_PID is unset or names mongolb;
- STOPPING=1 on SIGTERM, then a clean exit;
- an abstract socket name ('@...') works as a path does.

Also checks systemd/mongolb.service with systemd-analyze when the machine has it.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from harness import start_sim
from mongolb_harness import (IO_TEST_DEFAULTS, CustomMongolb, free_port, log_lines, raw_command,
                             start_mongolb_clean, stop_quietly, wait_for)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeSystemd:
    """A unix datagram socket that collects what mongolb sends to $NOTIFY_SOCKET."""

    def __init__(self, abstract=False):
        self.tmp = tempfile.mkdtemp(prefix="mongolb-notify-")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "mongolb-test-notify-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = os.path.join(self.tmp, "notify.sock")
            self.sock.bind(self.address)
        self.messages = []  # each a dict of the assignments of one datagram, with "_t" its arrival

    def poll(self):
        self.sock.setblocking(False)
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            fields["_t"] = time.monotonic()
            self.messages.append(fields)

    def wait(self, pred, timeout=10.0, start=0, what="a notify message"):
        """Waits for a message (from index start) that pred accepts; returns its index."""
        def found():
            for i, m in enumerate(self.poll()[start:], start):
                if pred(m):
                    return i + 1  # never 0, so that wait_for sees it as found
            return None
        return wait_for(found, timeout, what=what) - 1

    def having(self, key, value=None):
        return [m for m in self.poll() if key in m and (value is None or m[key] == value)]

    def close(self):
        self.sock.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class NotifiedMongolb(CustomMongolb):
    """A mongolb started with NOTIFY_SOCKET (and the watchdog variables) in its environment.
    watchdog_pid "self" sets WATCHDOG_PID to mongolb's own pid (through a shell that execs it)."""

    def __init__(self, seeds, notify_address, env=None, watchdog_pid=None, **kw):
        self.notify_env = dict(os.environ)
        self.notify_env.pop("WATCHDOG_USEC", None)
        self.notify_env.pop("WATCHDOG_PID", None)
        self.notify_env["NOTIFY_SOCKET"] = notify_address
        self.notify_env.update(env or {})
        self.watchdog_pid = watchdog_pid
        super().__init__(seeds, **kw)

    def _start(self):
        self._log = open(self.log_path, "ab")
        argv = [self.binary, "-c", self.conf_path]
        if self.watchdog_pid == "self":
            argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh"] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, env=self.notify_env)


class Setup:
    def __init__(self, sim_args=("--mongos", "1"), config=None, seeds=None, abstract=False,
                 **kw):
        self.sd = FakeSystemd(abstract)
        self.sim = start_sim(*sim_args) if sim_args else None
        cfg = dict(IO_TEST_DEFAULTS)
        cfg.update(config or {})
        try:
            self.lb = start_mongolb_clean(seeds or self.sim.servers, cfg, NotifiedMongolb,
                                          notify_address=self.sd.address, **kw)
        except BaseException:
            self.close_sim()
            raise

    def close_sim(self):
        if self.sim:
            self.sim.stop()
        self.sd.close()

    def close(self):
        try:
            code = stop_quietly(self.lb)
            print("\n----- mongolb exit status %s; stderr tail -----\n%s"
                  % (code, self.lb.log_tail(60)))
        finally:
            self.close_sim()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_ready_once_listening_and_a_server_is_known():
    with Setup(("--mongos", "2")) as s:
        i = s.sd.wait(lambda m: m.get("READY") == "1", what="READY=1")
        ready = s.sd.messages[i]
        # Exactly one READY=1 at start, with a status line in the same datagram.
        assert len(s.sd.having("READY")) == 1
        assert re.match(r"\d of 2 servers up, \d+ clients?$", ready["STATUS"]), ready
        assert not ready["STATUS"].startswith("0 of"), ready
        # By then mongolb accepts connections and serves.
        assert raw_command(s.lb.host, s.lb.port, {"ping": 1})["ok"] == 1
        assert log_lines(s.lb, r"ready: a server suitable for the default read preference")


def test_ready_waits_for_a_primary_in_replicaset_mode():
    sim = start_sim("--replset", "3")
    try:
        with Setup(None, seeds=sim.servers,
                   config={"upstream.mode": "replicaset", "upstream.replica_set": sim.set_name,
                           "upstream.server_selection_timeout_ms": 20000}) as s:
            s.sd.wait(lambda m: m.get("READY") == "1", what="READY=1")
            st = s.lb.status()
            assert any(x["type"] == "RSPrimary" for x in st["servers"]), st["servers"]
            assert "primary " in s.sd.having("READY")[0]["STATUS"]
    finally:
        sim.stop()


def test_ready_after_server_selection_timeout_when_no_server_answers():
    dead = "127.0.0.1:%d" % free_port()
    with Setup(None, seeds=[dead], expect_known=0,
               config={"upstream.server_selection_timeout_ms": 1500}) as s:
        i = s.sd.wait(lambda m: m.get("READY") == "1", what="READY=1 without a server")
        assert s.sd.messages[i]["STATUS"].startswith("0 of 1 servers up"), s.sd.messages[i]
        assert log_lines(s.lb, r"ready: no server suitable .* after 1500 ms")
        # A ping is answered by the running process (a request needing a server would wait).
        assert s.lb.proc.poll() is None


def test_reload_sends_reloading_then_ready():
    with Setup() as s:
        s.sd.wait(lambda m: m.get("READY") == "1", what="READY=1")
        n = len(s.sd.poll())
        cfg = dict(IO_TEST_DEFAULTS)
        cfg["mongolb.log_level"] = "debug"
        s.lb._write_config(cfg)
        before = time.monotonic()
        s.lb.proc.send_signal(signal.SIGHUP)
        i = s.sd.wait(lambda m: m.get("RELOADING") == "1", start=n, what="RELOADING=1")
        msg = s.sd.messages[i]
        # MONOTONIC_USEC is CLOCK_MONOTONIC, the clock Python's time.monotonic() reads.
        usec = int(msg["MONOTONIC_USEC"])
        assert abs(usec / 1e6 - before) < 30, (usec, before)
        s.sd.wait(lambda m: m.get("READY") == "1", start=i + 1, what="READY=1 after the reload")
        wait_for(lambda: log_lines(s.lb, r"reloaded "), 5, what="the reload logged")
        # A file that does not load keeps everything, and still ends with READY=1.
        with open(s.lb.conf_path, "w") as f:
            f.write("[mongolb\n")
        n = len(s.sd.poll())
        s.lb.proc.send_signal(signal.SIGHUP)
        i = s.sd.wait(lambda m: m.get("RELOADING") == "1", start=n, what="RELOADING=1")
        s.sd.wait(lambda m: m.get("READY") == "1", start=i + 1, what="READY=1 after a bad file")
        assert raw_command(s.lb.host, s.lb.port, {"ping": 1})["ok"] == 1


def test_status_follows_servers_and_clients():
    with Setup(("--mongos", "2")) as s:
        s.sd.wait(lambda m: m.get("STATUS", "").startswith("2 of 2 servers up"),
                  what="STATUS with both servers up")
        # A client that stays connected shows up (the janitor's tick sends changes, at most one
        # a second).
        c = socket.create_connection((s.lb.host, s.lb.port))
        try:
            s.sd.wait(lambda m: re.match(r"2 of 2 servers up, 1 client$", m.get("STATUS", "")),
                      what="STATUS with one client")
            # A server that goes is counted out.
            r = s.sim.command(1, {"simKill": 0})
            assert r.get("ok") == 1, r
            s.sd.wait(lambda m: m.get("STATUS", "").startswith("1 of 2 servers up"),
                      what="STATUS with one server down")
        finally:
            c.close()
        # Unchanged text is not sent again.
        time.sleep(2.5)
        statuses = [m["STATUS"] for m in s.sd.poll() if "STATUS" in m]
        for a, b in zip(statuses, statuses[1:]):
            assert a != b, statuses


def test_watchdog_pings_at_half_the_interval():
    with Setup(env={"WATCHDOG_USEC": "400000"}) as s:
        s.sd.wait(lambda m: m.get("READY") == "1", what="READY=1")
        first = s.sd.wait(lambda m: m.get("WATCHDOG") == "1", what="WATCHDOG=1")
        time.sleep(2.0)
        pings = [m["_t"] for m in s.sd.poll()[first:] if m.get("WATCHDOG") == "1"]
        # 200 ms apart: about ten in two seconds; a loaded machine may delay some, never add.
        assert len(pings) >= 4, pings
        assert log_lines(s.lb, r"systemd watchdog: pinging every 200 ms")


def test_watchdog_of_another_process_is_left_alone():
    with Setup(env={"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}) as s:
        s.sd.wait(lambda m: m.get("READY") == "1", what="READY=1")
        time.sleep(1.0)
        assert not s.sd.having("WATCHDOG"), s.sd.poll()


def test_watchdog_pid_naming_mongolb_itself():
    with Setup(env={"WATCHDOG_USEC": "400000"}, watchdog_pid="self") as s:
        s.sd.wait(lambda m: m.get("WATCHDOG") == "1", what="WATCHDOG=1")


def test_stopping_on_sigterm_then_a_clean_exit():
    with Setup(abstract=True) as s:
        s.sd.wait(lambda m: m.get("READY") == "1", what="READY=1 on an abstract socket")
        n = len(s.sd.poll())
        s.lb.proc.send_signal(signal.SIGTERM)
        assert s.lb.proc.wait(10) == 0
        i = s.sd.wait(lambda m: m.get("STOPPING") == "1", start=n, what="STOPPING=1")
        later = s.sd.poll()[i:]
        assert any(m.get("STATUS", "").startswith("shutting down") for m in later), later


def test_without_notify_socket_nothing_changes():
    """Outside systemd the daemon starts, serves and stops as before, and logs no warning."""
    sim = start_sim("--mongos", "1")
    try:
        lb = start_mongolb_clean(sim.servers, dict(IO_TEST_DEFAULTS), CustomMongolb)
        try:
            assert raw_command(lb.host, lb.port, {"ping": 1})["ok"] == 1
        finally:
            assert stop_quietly(lb) == 0
        assert not log_lines(lb, r"notify|watchdog"), lb.log_tail()
    finally:
        sim.stop()


def test_unit_file_is_valid():
    unit = os.path.join(ROOT, "systemd", "mongolb.service")
    text = open(unit).read()
    assert re.search(r"^Type=notify$", text, re.M)
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M)
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    for key in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                "PrivateTmp=yes"):
        assert key in text, key
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed: only the unit's keys were checked")
    tmp = tempfile.mkdtemp(prefix="mongolb-unit-")
    try:
        # The unit names /usr/local/bin/mongolb, which verify wants to exist: point it at ours.
        binary = os.path.abspath(os.environ.get("MONGOLB", os.path.join(ROOT, "build",
                                                                        "mongolb")))
        path = os.path.join(tmp, "mongolb.service")
        with open(path, "w") as f:
            f.write(text.replace("/usr/local/bin/mongolb", binary))
        r = subprocess.run([analyze, "verify", path], capture_output=True, text=True, timeout=60)
        problems = [line for line in (r.stdout + r.stderr).splitlines()
                    if "mongolb.service" in line and "network-online" not in line]
        assert not problems, r.stdout + r.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
