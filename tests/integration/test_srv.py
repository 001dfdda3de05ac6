"""SRV seeds and live seed changes.

seeds = mongodb+srv://cluster.mongolb.test against the tiny DNS responder of dns_responder.py
(mongolb asks it through dns_server): the first lookup, TXT options, the parent-domain rule, a
re-poll that adds and removes a mongos, a name that does not resolve; and a reload (SIGHUP) whose
seeds line adds one mongos and removes another that holds an open cursor.
"""

import contextlib
import re
import signal
import time

import pymongo
import pytest

from dns_responder import DnsResponder
from harness import start_sim
from mongolb_harness import start_mongolb as _start_mongolb
from mongolb_harness import wait_for

SRV_HOST = "cluster.mongolb.test"
SRV_NAME = "_mongodb._tcp." + SRV_HOST


@contextlib.contextmanager
def start_mongolb(seeds, **kw):
    """mongolb, which must then stop cleanly: exit status 0 and no sanitizer report (the ASan
    build of make check)."""
    lb = _start_mongolb(seeds, **kw)
    try:
        yield lb
    finally:
        lb.cleanup()
    log = lb.log()
    assert lb.proc.returncode == 0, log[-3000:]
    assert "AddressSanitizer" not in log and "runtime error:" not in log, log[-6000:]


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def in_use(lb):
    """Addresses of the servers mongolb routes to (known or not), removed ones left out."""
    return sorted(s["address"] for s in lb.status()["servers"] if not s.get("removed"))


def known(lb):
    return sorted(s["address"] for s in lb.status()["servers"]
                  if not s.get("removed") and s["type"] != "Unknown")


def finds_on(sim, i):
    """How many finds simulator server i has run."""
    for s in sim.stats()["servers"]:
        if s["index"] == i:
            return int(s["commands"].get("find", 0))
    return 0


def log_has(lb, pattern):
    return re.search(pattern, lb.log()) is not None


def srv_config(dns, **extra):
    cfg = {"upstream.dns_server": dns.server, "upstream.tls": "false",
           "upstream.server_selection_timeout_ms": 3000}
    cfg.update(extra)
    return cfg


def publish(dns, sim, indices, names=None):
    """SRV records naming sim servers `indices` as mN.mongolb.test, each with an A record."""
    targets = []
    for i in indices:
        name = (names or {}).get(i, "m%d.mongolb.test" % i)
        dns.a(name, "127.0.0.1")
        targets.append((name, port_of(sim.servers[i])))
    dns.srv(SRV_NAME, targets, ttl=1)
    return ["%s:%d" % t for t in targets]


@pytest.fixture
def dns():
    with DnsResponder() as d:
        yield d


def test_srv_first_lookup_finds_two_mongos(dns):
    with start_sim("--mongos", "3") as sim:
        want = publish(dns, sim, [0, 1])
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=srv_config(dns),
                           expect_known=2) as lb:
            assert known(lb) == sorted(want)
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            client.t.c.insert_many([{"i": i} for i in range(10)])
            assert client.t.c.count_documents({}) == 10
            assert dns.count(SRV_HOST, 16) >= 1, "the TXT record was not asked for"
            assert log_has(lb, r"2 of 2 hosts in use")


def test_srv_txt_options(dns):
    """TXT replicaSet names the set in replicaset mode (replica_set left unset); authSource is
    accepted; an option the specification does not allow there, or two TXT records, are refused
    with a log line until DNS is fixed."""
    with start_sim("--replset", "rs0", "--members", "3") as sim:
        primary = sim.servers[0]
        dns.a("m0.mongolb.test")
        dns.srv(SRV_NAME, [("m0.mongolb.test", port_of(primary))])
        dns.txt(SRV_HOST, [["replicaSet=rs0&", "authSource=admin"]])  # one record, two strings
        with start_mongolb(["mongodb+srv://" + SRV_HOST],
                           config=srv_config(dns, **{"upstream.mode": "replicaset"}),
                           expect_known=3) as lb:
            assert log_has(lb, r"replica set rs0, from the TXT record")
            assert log_has(lb, r"authSource=admin")
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            client.t.c.insert_one({"x": 1})

    with start_sim("--mongos", "1") as sim:
        publish(dns, sim, [0])
        dns.txt(SRV_HOST, ["ssl=false"])
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=srv_config(dns),
                           expect_known=0) as lb:
            wait_for(lambda: log_has(lb, r"sets 'ssl', but only authSource, replicaSet and "
                                     r"loadBalanced"), 5, what="the TXT refusal")
            assert in_use(lb) == []
            dns.txt(SRV_HOST, ["authSource=admin", "replicaSet=x"])  # two records
            wait_for(lambda: log_has(lb, r"has 2 TXT records; at most one"), 5,
                     what="the two-records refusal")
            assert in_use(lb) == []
            dns.txt(SRV_HOST, [])
            wait_for(lambda: len(known(lb)) == 1, 10, what="the lookup once TXT is fixed")


def test_srv_host_outside_domain_refused(dns):
    with start_sim("--mongos", "2") as sim:
        dns.a("evil.example.org")
        dns.a("m0.mongolb.test")
        dns.srv(SRV_NAME, [("m0.mongolb.test", port_of(sim.servers[0])),
                           ("evil.example.org", port_of(sim.servers[1]))])
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=srv_config(dns),
                           expect_known=0) as lb:
            wait_for(lambda: log_has(lb, r"names evil\.example\.org, which is outside "
                                     r"cluster\.mongolb\.test's domain: refused"), 5,
                     what="the refusal")
            time.sleep(1.0)
            assert in_use(lb) == [], "a host of a refused answer was used"
            # A name that only ends like the domain is no better.
            dns.srv(SRV_NAME, [("m0.mongolb.test", port_of(sim.servers[0])),
                               ("xmongolb.test", port_of(sim.servers[1]))])
            wait_for(lambda: log_has(lb, r"names xmongolb\.test, which is outside"), 5,
                     what="the second refusal")
            assert in_use(lb) == []


def test_srv_repoll_adds_and_removes_a_mongos(dns):
    with start_sim("--mongos", "3") as sim:
        first = publish(dns, sim, [0, 1])
        with start_mongolb(["mongodb+srv://" + SRV_HOST],
                           config=srv_config(dns, **{"upstream.srv_rescan_ms": 300}),
                           expect_known=2) as lb:
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            client.t.c.insert_many([{"i": i} for i in range(50)])
            cursor = client.t.c.find({}, batch_size=2)
            next(cursor)
            # m0 and m1 leave, m2 arrives: every open cursor's server is gone.
            second = publish(dns, sim, [2])
            wait_for(lambda: known(lb) == second, 10, what="the poll's new server set")
            assert in_use(lb) == second
            for addr in first:
                assert log_has(lb, re.escape(addr) + r".*removed from the seeds \(SRV poll\)")
            with pytest.raises(pymongo.errors.OperationFailure) as exc:
                list(cursor)
            assert exc.value.code == 43
            assert client.t.c.count_documents({}) == 50
            # A failed poll keeps what is in force.
            dns.srv(SRV_NAME, [])
            wait_for(lambda: log_has(lb, r"keeping the 1 servers in use"), 5,
                     what="the failed poll's log line")
            assert known(lb) == second
            # And m0 comes back.
            third = publish(dns, sim, [0, 2])
            wait_for(lambda: known(lb) == sorted(third), 10, what="m0 back")
            assert lb.proc.poll() is None


def test_srv_unresolvable_name_keeps_trying(dns):
    with start_sim("--mongos", "1") as sim:
        with start_mongolb(["mongodb+srv://" + SRV_HOST],
                           config=srv_config(dns, **{"upstream.server_selection_timeout_ms": 800,
                                                     "upstream.heartbeat_interval_ms": 500}),
                           expect_known=0) as lb:
            wait_for(lambda: log_has(lb, r"cannot resolve the SRV records "
                                     r"_mongodb\._tcp\.cluster\.mongolb\.test"), 5,
                     what="the failure's log line")
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=3000)
            with pytest.raises(pymongo.errors.PyMongoError):
                client.t.c.insert_one({"x": 1})
            n = dns.count(SRV_NAME)
            wait_for(lambda: dns.count(SRV_NAME) > n, 5, what="another attempt")
            publish(dns, sim, [0])
            wait_for(lambda: len(known(lb)) == 1, 10, what="the name resolving at last")
            client.t.c.insert_one({"x": 1})


def test_srv_tls_on_by_default(dns):
    """Without [upstream] tls, mongodb+srv:// means TLS: the plaintext simulator is then reached
    over TLS and stays unknown."""
    with start_sim("--mongos", "1") as sim:
        publish(dns, sim, [0])
        cfg = srv_config(dns, **{"upstream.connect_timeout_ms": 1000})
        del cfg["upstream.tls"]
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=cfg, expect_known=0) as lb:
            wait_for(lambda: in_use(lb), 5, what="the lookup")
            wait_for(lambda: lb.status()["servers"][0].get("lastError"), 10,
                     what="a failed check")
            assert known(lb) == []
            # The same records with tls = false are used at once (test_srv_first_lookup...).
            assert log_has(lb, r"m0\.mongolb\.test:\d+\] check failed"), lb.log_tail()


def test_srv_config_errors(tmp_path):
    import subprocess
    from mongolb_harness import mongolb_binary
    cases = {
        "seeds = mongodb+srv://a.b.c:27017": "takes no port",
        "seeds = mongodb+srv://a.b.c,d.e.f": "names one host",
        "seeds = mongodb+srv://a.b.c/?tls=false": "options go in their own keys",
        "seeds = a:1\nsrv_service_name = x": "only for seeds = mongodb+srv",
        "seeds = mongodb+srv://a.b.c\nsrv_service_name = a.b": "is not a service name",
        "seeds = mongodb+srv://a.b.c\nmode = replicaset\nsrv_max_hosts = 2": "replica set",
        # c-ares would refuse it only at start, after --check-config had called it valid.
        "seeds = mongodb+srv://a.b.c\ndns_server = localhost:53": "is not an IP address",
    }
    for body, want in cases.items():
        f = tmp_path / "m.ini"
        f.write_text("[upstream]\n" + body + "\n")
        r = subprocess.run([mongolb_binary(), "--check-config", "-c", str(f)],
                           capture_output=True, text=True)
        assert r.returncode != 0 and want in (r.stdout + r.stderr), (body, r.stdout, r.stderr)


# --- seeds changed by a reload -----------------------------------------------------------------

def test_reload_adds_a_mongos_and_removes_one_with_an_open_cursor():
    with start_sim("--mongos", "3") as sim:
        a, b, c = sim.servers
        with start_mongolb([a, b], expect_known=2) as lb:
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            client.t.c.insert_many([{"i": i} for i in range(40)])
            # Cursors until one lives on b, the server the reload removes (the simulator counts
            # the finds each server ran).
            on_b = None
            for _ in range(100):
                before = finds_on(sim, 1)
                cur = client.t.c.find({}, batch_size=2)
                next(cur)
                if finds_on(sim, 1) > before:
                    on_b = cur
                    break
            assert on_b is not None, "no find reached b"
            on_a = client.t.c.find({}, batch_size=2)
            lb.seeds = [a, c]
            lb._write_config({})
            lb.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: in_use(lb) == sorted([a, c]), 10, what="the reloaded seeds")
            wait_for(lambda: known(lb) == sorted([a, c]), 10, what="c known")
            assert log_has(lb, re.escape(b) + r".*removed from the seeds \(reload\)")
            assert log_has(lb, re.escape(c) + r".*added as a seed \(reload\)")
            # The cursor on b ends with CursorNotFound, as from a mongos whose cursor is gone.
            with pytest.raises(pymongo.errors.OperationFailure) as exc:
                list(on_b)
            assert exc.value.code == 43
            del on_a
            assert client.t.c.count_documents({}) == 40
            assert lb.proc.poll() is None
