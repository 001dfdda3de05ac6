"""mongolb's log as an operator reads it: log_format = json (every line one object), journald
priority prefixes when stderr is the journal's stream, a warning for every error mongolb
returns (with client, command, namespace, server and code) rate limited per code, the
slow-request line (and no document content in it), connects and disconnects at the same level,
and one closing line per closed connection."""

import json
import re
import socket
import struct
import time

import pymongo
import pytest
from bson.int64 import Int64
from pymongo.errors import OperationFailure

from admin_harness import client_for, finish
from admin_harness import start as start_admin
from harness import send_msg, start_sim
from mongolb_harness import wait_for

def start(sim, config=None, **kw):
    kw.setdefault("admin_http", False)
    return start_admin(sim, config, **kw)


def unknown_get_more(c, n=1):
    for _ in range(n):
        with pytest.raises(OperationFailure) as e:
            c.test.command({"getMore": Int64(987654321), "collection": "things"})
        assert e.value.code == 43


def test_json_format_parses_line_by_line():
    with start_sim("--mongos", "1") as sim:
        lb = start(sim, {"mongolb.log_format": "json"})
        try:
            c = client_for(lb)
            try:
                c.test.j.insert_one({"a": 1})
                unknown_get_more(c)
            finally:
                c.close()
            wait_for(lambda: "client disconnected" in lb.log(), timeout=5, what="disconnect")
        finally:
            finish(lb)
        lines = lb.log().splitlines()
        assert len(lines) > 5
        docs = [json.loads(line) for line in lines]  # every line is one JSON object
        for d in docs:
            assert {"ts", "level", "msg"} <= d.keys(), d
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", d["ts"])
            assert d["level"] in ("error", "warn", "info", "debug")
        errors = [d for d in docs if d["msg"] == "error returned"]
        assert len(errors) == 1, errors
        e = errors[0]
        assert e["level"] == "warn" and e["code"] == 43 and e["codeName"] == "CursorNotFound"
        assert e["command"] == "getMore" and e["ns"] == "test" and e["server"] == "-"
        assert e["conn"].startswith("c")
        assert any(d.get("conn", "").startswith("c") and d["msg"] == "accepted" for d in docs)


def test_journald_priority_prefixes():
    with start_sim("--mongos", "1") as sim:
        lb = start(sim, journal_stream=True)
        try:
            c = client_for(lb)
            try:
                unknown_get_more(c)
            finally:
                c.close()
        finally:
            finish(lb)
        lines = lb.log().splitlines()
        assert lines
        for line in lines:
            assert re.match(r"<[3467]>(error|warn |info |debug) ", line), line
        assert any(line.startswith("<4>warn ") and "error returned" in line for line in lines)
        assert any(line.startswith("<6>info ") for line in lines)
        # No timestamp of our own: the journal stamps each line.
        assert not any(re.search(r"\d{4}-\d\d-\d\dT\d\d:", line) for line in lines)


def test_journal_stream_of_another_file_is_ignored():
    """A JOURNAL_STREAM inherited by a process whose stderr goes elsewhere changes nothing."""
    with start_sim("--mongos", "1") as sim:
        lb = start(sim, env={"JOURNAL_STREAM": "1:2"})
        try:
            pass
        finally:
            finish(lb)
        for line in lb.log().splitlines():
            assert re.match(r"\d{4}-\d\d-\d\dT", line), line


def test_error_lines_are_rate_limited_per_code():
    with start_sim("--mongos", "1") as sim:
        lb = start(sim, {"mongolb.error_log_limit": 3})
        try:
            c = client_for(lb)
            try:
                unknown_get_more(c, 8)
                lines = [ln for ln in lb.log().splitlines() if "error returned" in ln]
                assert len(lines) == 3, lines
                line = lines[0]
                assert " warn " in line
                for field in ("command=getMore", "ns=test", "server=-", "code=43",
                              "codeName=CursorNotFound"):
                    assert field in line, line
                assert re.search(r"\[c\d+ 127\.0\.0\.1:\d+\]", line), line
                # Another code is limited on its own.
                with pytest.raises(OperationFailure):
                    c.test.command({"killCursors": "things",
                                    "cursors": [Int64(i) for i in range(100001)]})
                assert len([ln for ln in lb.log().splitlines()
                            if "error returned" in ln and "code=2 " in ln]) == 1
                # Once the 10 s window has passed, the next one says how many were left out.
                time.sleep(10.2)
                unknown_get_more(c)
                log = lb.log()
                assert re.search(r"5 more errors with code 43 were not logged in the last 10 s",
                                 log), log[-2000:]
                assert len([ln for ln in log.splitlines() if "error returned" in ln
                            and "code=43" in ln]) == 4
            finally:
                c.close()
        finally:
            finish(lb)


def test_error_line_names_the_server_of_a_backend_failure():
    with start_sim("--mongos", "1") as sim:
        lb = start(sim)
        try:
            c = client_for(lb, retryWrites=False)
            try:
                sim.command(0, {"configureFailPoint": "failCommand", "mode": {"times": 1},
                                "data": {"failCommands": ["insert"], "closeConnection": True}})
                with pytest.raises(pymongo.errors.PyMongoError):
                    c.test.fails.insert_one({"secret": "do-not-log-me"})
            finally:
                c.close()
            line = wait_for(lambda: [ln for ln in lb.log().splitlines()
                                     if "error returned" in ln], timeout=5)[0]
            assert "command=insert" in line and "ns=test.fails" in line, line
            assert "server=" + sim.servers[0] in line and "code=6 " in line, line
            assert "do-not-log-me" not in lb.log()
        finally:
            finish(lb)


def test_slow_request_line():
    with start_sim("--mongos", "1") as sim:
        lb = start(sim, {"mongolb.slow_request_ms": 150})
        try:
            c = client_for(lb)
            try:
                c.test.slow.insert_one({"secret": "do-not-log-me"})
                sim.command(0, {"configureFailPoint": "failCommand", "mode": {"times": 1},
                                "data": {"failCommands": ["find"], "blockConnection": True,
                                         "blockTimeMS": 300}})
                assert c.test.slow.find_one({"secret": "do-not-log-me"})
                c.test.slow.find_one({})  # fast: no line
            finally:
                c.close()
            lines = wait_for(lambda: [ln for ln in lb.log().splitlines()
                                      if "slow request" in ln], timeout=5)
            assert len(lines) == 1, lines
            line = lines[0]
            assert " info " in line
            assert "command=find" in line and "ns=test.slow" in line, line
            assert "server=" + sim.servers[0] in line and "outcome=ok" in line, line
            ms = int(re.search(r"durationMillis=(\d+)", line).group(1))
            assert ms >= 300
            assert "do-not-log-me" not in lb.log()
        finally:
            finish(lb)


def test_connects_and_disconnects_at_info_and_closing_logged_once():
    with start_sim("--mongos", "1") as sim:
        lb = start(sim)
        try:
            s = socket.create_connection((lb.host, lb.port), 5)
            port = s.getsockname()[1]
            send_msg(s, {"ping": 1, "$db": "admin"}, request_id=1)
            s.recv(65536)
            # A frame with a length below 16: the connection is closed, one line says why.
            s.sendall(struct.pack("<i", 8) + b"\x00" * 12)
            s.settimeout(5)
            assert s.recv(100) == b""
            s.close()
            wait_for(lambda: "127.0.0.1:%d] closing" % port in lb.log(), timeout=5)
            mine = [ln for ln in lb.log().splitlines() if "127.0.0.1:%d]" % port in ln]
            accepted = [ln for ln in mine if ln.endswith("accepted")]
            closing = [ln for ln in mine if "closing" in ln]
            assert len(accepted) == 1 and " info " in accepted[0], mine
            assert len(closing) == 1, mine
            assert " warn " in closing[0] and "message length" in closing[0], closing
            c = client_for(lb)
            c.admin.command("ping")
            c.close()
            wait_for(lambda: "closing: client disconnected" in lb.log(), timeout=5)
            line = [ln for ln in lb.log().splitlines() if "closing: client disconnected" in ln][0]
            assert " info " in line
        finally:
            finish(lb)
