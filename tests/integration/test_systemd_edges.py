"""mongolb under a NOTIFY_SOCKET or watchdog environment that is wrong: what the operator sees.

- NOTIFY_SOCKET that is neither an absolute path nor an abstract name: one warning naming it,
  and the daemon runs as outside systemd;
- a notify socket nobody listens on (systemd gone, or a stale path): one warning for the first
  failed message, none for the later ones (READY=1, RELOADING=1, STATUS=...), and the daemon
  serves and reloads;
- WATCHDOG_USEC or WATCHDOG_PID that are not numbers: no watchdog pings, as sd_watchdog_enabled(3)
  would decide, while READY=1 is still sent.
"""

import os
import signal
import time

from harness import start_sim
from mongolb_harness import (IO_TEST_DEFAULTS, log_lines, raw_command, start_mongolb_clean,
                             stop_quietly, wait_for)
from test_systemd import FakeSystemd, NotifiedMongolb, Setup


def assert_clean(lb):
    """No sanitizer report in mongolb's log (make check runs these against the ASan build)."""
    log = lb.log()
    assert "AddressSanitizer" not in log and "runtime error:" not in log, log[-6000:]


def run_notified(notify_address, env=None):
    """A mongolb with NOTIFY_SOCKET = notify_address (and env) against one simulated mongos;
    returns (sim, lb)."""
    sim = start_sim("--mongos", "1")
    try:
        lb = start_mongolb_clean(sim.servers, dict(IO_TEST_DEFAULTS), NotifiedMongolb,
                                 notify_address=notify_address, env=env)
    except BaseException:
        sim.stop()
        raise
    return sim, lb


def test_notify_socket_that_is_not_a_path_is_refused_with_a_warning():
    for bad in ("relative/notify.sock", "@", "/" + "x" * 120):
        sim, lb = run_notified(bad)
        try:
            assert raw_command(lb.host, lb.port, {"ping": 1})["ok"] == 1
            lines = log_lines(lb, r"NOTIFY_SOCKET=.* is not a unix socket path or abstract name; "
                              r"not notifying systemd")
            assert len(lines) == 1 and bad[:40] in lines[0], lb.log_tail()
            assert not log_lines(lb, r"cannot notify systemd"), lb.log_tail()
        finally:
            assert stop_quietly(lb) == 0, lb.log_tail()
            sim.stop()
        assert_clean(lb)


def test_unreachable_notify_socket_is_logged_once():
    sd = FakeSystemd()
    gone = sd.address
    sd.close()  # the path no longer exists: every send fails
    sim, lb = run_notified(gone)
    try:
        wait_for(lambda: log_lines(lb, r"cannot notify systemd"), 10, what="the warning")
        assert raw_command(lb.host, lb.port, {"ping": 1})["ok"] == 1
        # A reload sends RELOADING=1 and READY=1 again: they fail silently.
        cfg = dict(IO_TEST_DEFAULTS)
        cfg["mongolb.log_level"] = "debug"
        lb._write_config(cfg)
        lb.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: log_lines(lb, r"reloaded "), 10, what="the reload")
        time.sleep(1.5)  # a janitor tick or two, which may send STATUS=
        lines = log_lines(lb, r"cannot notify systemd")
        assert len(lines) == 1, lines
        assert "No such file or directory" in lines[0] and "later failures are not logged" in \
            lines[0], lines
        assert raw_command(lb.host, lb.port, {"ping": 1})["ok"] == 1
    finally:
        assert stop_quietly(lb) == 0, lb.log_tail()
        sim.stop()
    assert_clean(lb)


def test_watchdog_variables_that_are_not_numbers_turn_it_off():
    for env in ({"WATCHDOG_USEC": "400ms"}, {"WATCHDOG_USEC": ""},
                {"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "self"},
                {"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "-%d" % os.getpid()},
                {"WATCHDOG_USEC": "99999999999999999999999"}):
        with Setup(env=env) as s:
            s.sd.wait(lambda m: m.get("READY") == "1", what="READY=1")
            time.sleep(0.8)  # four pings at 200 ms if the watchdog were on
            assert not s.sd.having("WATCHDOG"), (env, s.sd.poll())
            assert not log_lines(s.lb, r"systemd watchdog"), (env, s.lb.log_tail())
        assert s.lb.proc.returncode == 0, s.lb.log_tail()
        assert_clean(s.lb)
