"""mongolb's unix sockets (listen = unix:/path), as an operator and a neighbour process see them:

- the socket gets unix_socket_mode (0660 by default, no longer 0666) and unix_socket_group, and a
  reload changes both in place;
- a group that does not exist stops the start with a line naming it, and leaves no socket file;
- a socket another process (not a mongolb) listens on is neither unlinked nor taken over;
- a stale socket (nobody listens) is replaced;
- at exit the socket file is removed, unless someone replaced it meanwhile.

test_io_limits.py covers a regular file at the path and a second mongolb on a live socket.
"""

import grp
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile

import pytest

from mongolb_harness import (CustomMongolb, SimAndMongolb, log_lines, stop_quietly, wait_for)
from test_io_limits import run_mongolb, unix_hello_ok


@pytest.fixture
def tmpdir_short():
    # sun_path holds 107 characters: keep the directory short.
    d = tempfile.mkdtemp(prefix="mlb-us-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def other_group():
    """A group this process may give files to: a supplementary one when there is one (so that
    the change is visible), else its own."""
    mine = os.getegid()
    for g in os.getgroups():
        if g != mine:
            return g
    return mine


def test_default_mode_is_0660_and_a_reload_changes_it(tmpdir_short):
    path = os.path.join(tmpdir_short, "m.sock")
    with SimAndMongolb(("--mongos", "1"), mongolb_class=CustomMongolb,
                       extra_listen=["unix:" + path]) as (sim, lb):
        assert mode_of(path) == 0o660, oct(mode_of(path))
        assert unix_hello_ok(path)
        gid = other_group()
        cfg = {"mongolb.shutdown_timeout_ms": 1000, "mongolb.unix_socket_mode": "0600",
               "mongolb.unix_socket_group": grp.getgrgid(gid).gr_name}
        lb._write_config(cfg)
        lb.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: mode_of(path) == 0o600, 5, what="the socket's mode changed by a reload")
        assert os.lstat(path).st_gid == gid
        assert log_lines(lb, r"reload: unix_socket_mode 0660 -> 0600")
        assert unix_hello_ok(path), "the socket no longer serves after the reload"


def test_mode_and_group_by_number_at_start(tmpdir_short):
    path = os.path.join(tmpdir_short, "m.sock")
    gid = other_group()
    with SimAndMongolb(("--mongos", "1"), {"mongolb.unix_socket_mode": "0666",
                                           "mongolb.unix_socket_group": str(gid)},
                       mongolb_class=CustomMongolb, extra_listen=["unix:" + path]) as (sim, lb):
        assert mode_of(path) == 0o666, oct(mode_of(path))
        assert os.lstat(path).st_gid == gid
        assert unix_hello_ok(path)


def test_unknown_group_stops_the_start(tmpdir_short):
    path = os.path.join(tmpdir_short, "m.sock")
    code, out = run_mongolb("unix:%s\nunix_socket_group = no-such-group-mlb" % path,
                            "127.0.0.1:1")
    assert code not in (None, 0), out
    assert "unix_socket_group: there is no group named 'no-such-group-mlb'" in out, out
    assert not os.path.exists(path), "a socket file was left behind"


def test_a_live_socket_of_another_process_is_left_alone(tmpdir_short):
    path = os.path.join(tmpdir_short, "m.sock")
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    other.listen(4)
    try:
        ino = os.lstat(path).st_ino
        code, out = run_mongolb("unix:" + path, "127.0.0.1:1")
        assert code not in (None, 0), out
        assert "another process is listening on it" in out, out
        # The file is the other process's still, and it still takes connections.
        assert os.lstat(path).st_ino == ino
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(path)
        conn, _ = other.accept()
        conn.close()
        c.close()
    finally:
        other.close()


def test_a_stale_socket_is_replaced_and_removed_at_exit(tmpdir_short):
    path = os.path.join(tmpdir_short, "m.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: what a crashed process leaves
    ctx = SimAndMongolb(("--mongos", "1"), mongolb_class=CustomMongolb,
                        extra_listen=["unix:" + path])
    try:
        lb = ctx.lb
        assert log_lines(lb, r"removing a stale socket")
        assert unix_hello_ok(path)
        assert stop_quietly(lb) == 0, lb.log_tail()
        assert not os.path.exists(path), "the socket file is left after exit"
    finally:
        ctx.close()


def test_a_socket_replaced_by_someone_else_is_not_removed_at_exit(tmpdir_short):
    path = os.path.join(tmpdir_short, "m.sock")
    ctx = SimAndMongolb(("--mongos", "1"), mongolb_class=CustomMongolb,
                        extra_listen=["unix:" + path])
    try:
        lb = ctx.lb
        assert unix_hello_ok(path)
        # Another instance took the path over (e.g. after removing what it thought was stale).
        os.unlink(path)
        newer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        newer.bind(path)
        newer.listen(1)
        try:
            assert stop_quietly(lb) == 0, lb.log_tail()
            assert os.path.exists(path), "mongolb removed a socket file it did not create"
        finally:
            newer.close()
    finally:
        ctx.close()


def test_check_config_names_a_bad_mode(tmpdir_short):
    conf = os.path.join(tmpdir_short, "m.ini")
    with open(conf, "w") as f:
        f.write("[mongolb]\nunix_socket_mode = 0999\n[upstream]\nseeds = 127.0.0.1:1\n")
    binary = os.environ.get("MONGOLB", os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "build",
        "mongolb"))
    r = subprocess.run([binary, "--check-config", "-c", conf], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert "unix_socket_mode: '0999' is not an octal mode" in r.stderr, r.stderr
