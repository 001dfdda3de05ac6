"""SIGHUP reloads that do what they can, as an operator sees them in the log and in behaviour:

- one file with live changes (log_level, max_pool_size, a timeout, heartbeat_interval_ms) and
  changes that need a restart (listen, mode and replica_set): the live ones apply, the others are
  named with the value kept, and mongolb still listens where it did;
- a smaller max_pool_size closes the connections above it and bounds the pool from then on;
- a file with a mistake keeps everything, the valid lines included;
- a reloadable key that only makes sense with a kept one (an [upstream] TLS file without
  tls = true) refuses the reload as a whole, with the reason;
- seeds added and removed (seeds.c) in the same SIGHUP as a restart-only change.

Every mongolb must exit 0 on SIGTERM at the end.
"""

import re
import socket
import threading

import pymongo

from harness import start_sim
from mongolb_harness import (IO_TEST_DEFAULTS, SimAndMongolb, free_port, log_lines,
                             ping_logged_at_debug, raw_command, reload_with, start_mongolb_clean,
                             stop_quietly, wait_for)


def pool_of(lb):
    return lb.status()["servers"][0]["pool"]


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def parallel_finds(lb, n):
    """n finds at once through n driver connections (each held by the server's latency)."""
    client = pymongo.MongoClient(lb.uri, maxPoolSize=n, serverSelectionTimeoutMS=10000)
    errors = []

    def one():
        try:
            list(client.test.c.find({}))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    try:
        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        client.close()
    assert not errors, errors


def test_live_and_restart_only_changes_in_one_sighup():
    with SimAndMongolb(("--mongos", "1")) as (sim, lb):
        port = lb.port
        other = free_port()
        changes = {"mongolb.log_level": "debug", "mongolb.listen": "127.0.0.1:%d" % other,
                   "upstream.max_pool_size": 50, "upstream.heartbeat_interval_ms": 700,
                   "upstream.server_selection_timeout_ms": 1234, "upstream.mode": "replicaset",
                   "upstream.replica_set": "rs0"}
        line = reload_with(lb, changes, r"reloaded .*: \d+ keys? changed, \d+ kept")
        assert re.search(r": 4 keys changed, 3 kept until a restart", line), line
        # Each restart-only key is named with the value it keeps ...
        assert log_lines(lb, r"reload: listen needs a restart; kept 127\.0\.0\.1:%d "
                             r"\(the file now says 127\.0\.0\.1:%d\)" % (port, other))
        assert log_lines(lb, r"reload: \[upstream\] mode needs a restart; kept mongos")
        assert log_lines(lb, r"reload: replica_set needs a restart; kept \(none\)")
        # ... and each live change is logged with its old and new value.
        for key, old, new in (("log_level", "info", "debug"), ("max_pool_size", "100", "50"),
                              ("heartbeat_interval_ms", "500", "700"),
                              ("server_selection_timeout_ms", "5000", "1234")):
            assert log_lines(lb, r"reload: %s %s -> %s$" % (key, old, new)), key
        # The live changes took effect, the restart-only ones did not.
        assert ping_logged_at_debug(lb)
        assert listening(port) and not listening(other)
        assert lb.status()["mode"] == "mongos"
        # Nothing else changed, so nothing else was logged as changed.
        assert len(log_lines(lb, r"reload: \S+ .* -> ")) == 4, log_lines(lb, r"reload: ")
        # The same file again changes nothing, and says so.
        line = reload_with(lb, changes, r"reloaded .*: \d+ keys? changed")
        assert ": 0 keys changed, 3 kept" in line, line


def test_a_smaller_pool_closes_connections_above_it():
    with SimAndMongolb(("--mongos", "1")) as (sim, lb):
        assert sim.command(0, {"simSetLatency": {"server": 0, "ms": 300}})["ok"] == 1
        parallel_finds(lb, 8)
        assert pool_of(lb)["total"] >= 6, pool_of(lb)
        reload_with(lb, {"upstream.max_pool_size": 2}, r"reload: max_pool_size 100 -> 2")
        wait_for(lambda: pool_of(lb)["total"] <= 2, 5, what="the pool down to 2")
        # From now on the pool stays within 2: the other requests wait for a connection.
        waits = pool_of(lb)["waits"]
        parallel_finds(lb, 6)
        pool = pool_of(lb)
        assert pool["total"] <= 2 and pool["waits"] > waits, pool


def test_a_bad_file_keeps_everything():
    with SimAndMongolb(("--mongos", "1")) as (sim, lb):
        good = open(lb.conf_path).read()
        bad = good.replace("[mongolb]\n", "[mongolb]\nlog_level = debug\nmax_clients = lots\n", 1)
        bad = bad.replace("[upstream]\n", "[upstream]\nmax_pool_size = 7\n", 1)
        line = reload_with(lb, None, r"reload: keeping the running configuration", raw=bad)
        assert "max_clients" in line, line
        assert not log_lines(lb, r"reload: \S+ .* -> "), "a key of a bad file was applied"
        assert not ping_logged_at_debug(lb)
        # A reloadable key that needs a restart-only one (TLS files without tls = true, which is
        # kept) refuses the whole reload, naming the reason.
        cfg = {"mongolb.log_level": "debug", "upstream.tls": "true",
               "upstream.tls_allow_invalid_hostnames": "true"}
        line = reload_with(lb, cfg, r"reload: keeping the running configuration")
        assert "tls_allow_invalid_hostnames" in line, line
        assert log_lines(lb, r"reload: tls needs a restart; kept false")
        assert not ping_logged_at_debug(lb)
        assert raw_command(lb.host, lb.port, {"ping": 1})["ok"] == 1


def test_seeds_added_and_removed_next_to_a_restart_only_change():
    sim = start_sim("--mongos", "2")
    try:
        lb = start_mongolb_clean([sim.servers[0]], dict(IO_TEST_DEFAULTS))
        try:
            port = lb.port
            lb.seeds = list(sim.servers)  # what _write_config writes as seeds
            reload_with(lb, {"mongolb.listen": "127.0.0.1:%d" % free_port()},
                        r"reloaded .*: \d+ keys? changed")
            assert log_lines(lb, r"reload: seeds %s -> %s,%s$"
                             % (sim.servers[0], sim.servers[0], sim.servers[1]))
            assert log_lines(lb, r"reload: listen needs a restart")
            lb.wait_known(2, 10)
            assert listening(port)
            # And removed again: the server leaves mongolbStatus (its slot is released).
            lb.seeds = [sim.servers[1]]
            reload_with(lb, {}, r"reload: seeds ")
            wait_for(lambda: [s["address"] for s in lb.status()["servers"]
                              if not s.get("removed")] == [sim.servers[1]], 10,
                     what="only the second mongos left")
            assert raw_command(lb.host, lb.port, {"ping": 1})["ok"] == 1
        finally:
            assert stop_quietly(lb) == 0, lb.log_tail()
    finally:
        sim.stop()
