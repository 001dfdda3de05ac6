"""SRV seeds when DNS misbehaves, and the TXT and host-list rules at their edges.

Each test runs mongolb with seeds = mongodb+srv://cluster.mongolb.test against the DNS responder
of dns_responder.py and checks what an operator sees: the log line naming the failure, the server
set mongolb routes to, and that requests work once DNS is fixed. Covered: SERVFAIL for the SRV or
the TXT question, a lost UDP answer, an answer too long for UDP (fetched again over TCP) naming
more hosts than mongolb takes, duplicate records, the TXT options mongolb refuses in each mode,
a TXT record over 4096 bytes, a poll that leaves out hosts outside the domain or finds none
inside it, a host whose address dns_server does not know, and a reload that tries to change the
SRV name.
"""

import re
import signal

import pymongo
import pytest

from dns_responder import TYPE_A, TYPE_AAAA, TYPE_SRV, TYPE_TXT, DnsResponder
from harness import start_sim
from mongolb_harness import wait_for
from test_srv import (SRV_HOST, SRV_NAME, in_use, known, log_has, port_of, publish, srv_config,
                      start_mongolb)

SERVFAIL = 2


@pytest.fixture
def dns():
    with DnsResponder() as d:
        yield d


def count_log(lb, pattern):
    return len(re.findall(pattern, lb.log()))


def test_srv_servfail_of_srv_then_of_txt_until_fixed(dns):
    """A server failure for either question fails the whole lookup with a line naming it; no
    server is used until both answer."""
    with start_sim("--mongos", "1") as sim:
        publish(dns, sim, [0])
        dns.rcode(SRV_NAME, TYPE_SRV, SERVFAIL)
        dns.rcode(SRV_HOST, TYPE_TXT, SERVFAIL)
        cfg = srv_config(dns, **{"upstream.heartbeat_interval_ms": 500,
                                 "upstream.server_selection_timeout_ms": 1000})
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=cfg, expect_known=0) as lb:
            wait_for(lambda: log_has(lb, r"cannot resolve the (SRV records|TXT record).*; no "
                                     r"server is known yet, trying again in 500 ms"), 10,
                     what="the SERVFAIL line")
            assert in_use(lb) == []
            dns.rcode(SRV_NAME, TYPE_SRV, None)
            wait_for(lambda: log_has(lb, r"cannot resolve the TXT record of "
                                     r"cluster\.mongolb\.test: "), 10, what="the TXT failure")
            assert in_use(lb) == [], "a lookup whose TXT question failed was used"
            dns.rcode(SRV_HOST, TYPE_TXT, None)
            wait_for(lambda: len(known(lb)) == 1, 10, what="the lookup once DNS is fixed")
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            client.t.c.insert_one({"x": 1})
            assert client.t.c.count_documents({}) == 1


def test_srv_lost_udp_answer_is_asked_again(dns):
    """The first SRV question goes unanswered: c-ares' timer asks again and the lookup succeeds,
    with no failure logged."""
    with start_sim("--mongos", "1") as sim:
        want = publish(dns, sim, [0])
        dns.drop(SRV_NAME, TYPE_SRV, 1)
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=srv_config(dns),
                           expect_known=1) as lb:
            assert known(lb) == want
            assert dns.count(SRV_NAME) >= 2, dns.queries
            assert not log_has(lb, r"cannot resolve"), lb.log_tail()


def test_srv_answer_over_tcp_with_more_hosts_than_slots(dns):
    """66 SRV records (one a duplicate) do not fit a UDP answer: the responder truncates it and
    c-ares asks again over TCP. mongolb takes the first 64 distinct hosts and says which it left
    out. A poll that then swaps one host finds every slot held (the removed host's slot is
    released by the janitor), logs it, and adds the new host at a later poll."""
    with start_sim("--mongos", "1") as sim:
        port = port_of(sim.servers[0])
        names = ["h%d.mongolb.test" % i for i in range(65)]
        for n in names + ["h99.mongolb.test"]:
            dns.a(n, "127.0.0.1")
        records = [(n, port) for n in names]
        records.insert(1, (names[0], port))  # a duplicate, dropped without a word
        dns.srv(SRV_NAME, records, ttl=1)
        cfg = srv_config(dns, **{"upstream.srv_rescan_ms": 400,
                                 "upstream.heartbeat_interval_ms": 5000})
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=cfg, expect_known=0) as lb:
            wait_for(lambda: len(in_use(lb)) == 64, 15, what="64 servers in use")
            assert (SRV_NAME.lower(), TYPE_SRV) in dns.tcp_queries, "no question over TCP"
            assert log_has(lb, r"names more than 64 hosts; h64\.mongolb\.test:%d and later "
                           r"ones are left out" % port)
            assert "h64.mongolb.test:%d" % port not in in_use(lb)
            assert len(set(in_use(lb))) == 64
            # h63 leaves, h99 arrives (in the records' first 64).
            records = [(n, port) for n in names[:63]] + [("h99.mongolb.test", port)]
            dns.srv(SRV_NAME, records, ttl=1)
            wait_for(lambda: log_has(lb, r"cannot add h99\.mongolb\.test:%d: all 64 server "
                                     r"slots are in use; it is left out" % port), 10,
                     what="the full-slots line")
            wait_for(lambda: "h99.mongolb.test:%d" % port in in_use(lb), 15,
                     what="h99 added once the slot is free")
            assert "h63.mongolb.test:%d" % port not in in_use(lb)
            assert len(in_use(lb)) == 64
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=10000)
            client.t.c.insert_one({"x": 1})


def test_srv_txt_options_refused_in_mongos_mode(dns):
    """loadBalanced=true, a replica set name in mongos mode and a TXT record over 4096 bytes
    each stop the lookup with their own line, until the record is fixed."""
    with start_sim("--mongos", "1") as sim:
        publish(dns, sim, [0])
        dns.txt(SRV_HOST, ["loadBalanced=true"])
        cfg = srv_config(dns, **{"upstream.heartbeat_interval_ms": 500})
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=cfg, expect_known=0) as lb:
            wait_for(lambda: log_has(lb, r"the TXT record of cluster\.mongolb\.test sets "
                                     r"loadBalanced=true: mongolb does not route to "
                                     r"load-balanced clusters"), 10, what="the loadBalanced line")
            dns.txt(SRV_HOST, ["replicaSet=rs0"])
            wait_for(lambda: log_has(lb, r"names replica set rs0, but mode = mongos; set mode = "
                                     r"replicaset"), 10, what="the replicaSet line")
            dns.txt(SRV_HOST, [["authSource=admin&" + "x" * 238] + ["y" * 255] * 16])
            wait_for(lambda: log_has(lb, r"the TXT record of cluster\.mongolb\.test is longer "
                                     r"than 4096 bytes"), 10, what="the too-long line")
            assert (SRV_HOST, TYPE_TXT) in dns.tcp_queries
            assert in_use(lb) == []
            dns.txt(SRV_HOST, ["loadBalanced=false"])
            wait_for(lambda: len(known(lb)) == 1, 10, what="the lookup once TXT is fixed")


def test_srv_replicaset_mode_needs_a_set_name(dns):
    """In replicaset mode with no replica_set, a lookup without a TXT replicaSet is refused;
    with replica_set set, a TXT record naming another set is logged and the key wins."""
    with start_sim("--replset", "rs0", "--members", "3") as sim:
        publish(dns, sim, [0])
        cfg = srv_config(dns, **{"upstream.mode": "replicaset",
                                 "upstream.heartbeat_interval_ms": 500})
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=cfg, expect_known=0) as lb:
            wait_for(lambda: log_has(lb, r"mode = replicaset needs the replica set's name: set "
                                     r"replica_set, since the TXT record of "
                                     r"cluster\.mongolb\.test names none"), 10,
                     what="the refusal")
            assert in_use(lb) == []
            dns.txt(SRV_HOST, ["replicaSet=rs0"])
            wait_for(lambda: len(known(lb)) == 3, 15, what="the members, found from m0")
            assert log_has(lb, r"no polling in replicaset mode")

        dns.txt(SRV_HOST, ["replicaSet=other"])
        cfg["upstream.replica_set"] = "rs0"
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=cfg, expect_known=3) as lb:
            assert log_has(lb, r"the TXT record names replica set other; replica_set = rs0 is "
                           r"used")
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            client.t.c.insert_one({"x": 1})


def test_srv_poll_leaves_out_hosts_outside_the_domain(dns):
    """After the first lookup a poll only leaves out a host outside the domain (with a line);
    a poll with no host inside it changes nothing."""
    with start_sim("--mongos", "2") as sim:
        first = publish(dns, sim, [0, 1])
        cfg = srv_config(dns, **{"upstream.srv_rescan_ms": 300,
                                 "upstream.heartbeat_interval_ms": 500})
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=cfg, expect_known=2) as lb:
            assert known(lb) == sorted(first)
            dns.a("evil.example.org")
            dns.srv(SRV_NAME, [("m0.mongolb.test", port_of(sim.servers[0])),
                               ("evil.example.org", port_of(sim.servers[1]))], ttl=1)
            wait_for(lambda: log_has(lb, r"names evil\.example\.org, which is outside "
                                     r"cluster\.mongolb\.test's domain: left out"), 10,
                     what="the left-out line")
            wait_for(lambda: in_use(lb) == [first[0]], 10, what="m1 removed")
            dns.srv(SRV_NAME, [("evil.example.org", port_of(sim.servers[1]))], ttl=1)
            wait_for(lambda: log_has(lb, r"_mongodb\._tcp\.cluster\.mongolb\.test names no host "
                                     r"inside cluster\.mongolb\.test's domain; keeping the 1 "
                                     r"servers in use"), 10, what="the empty poll's line")
            assert in_use(lb) == [first[0]]
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            client.t.c.insert_one({"x": 1})


def test_srv_host_without_an_address_at_dns_server(dns):
    """A host dns_server has no address for is logged; it stays a server mongolb cannot reach,
    and the others serve."""
    with start_sim("--mongos", "1") as sim:
        port = port_of(sim.servers[0])
        dns.a("m0.mongolb.test")
        dns.srv(SRV_NAME, [("m0.mongolb.test", port), ("ghost.mongolb.test", port)])
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=srv_config(dns),
                           expect_known=1) as lb:
            wait_for(lambda: log_has(lb, r"no address for ghost\.mongolb\.test from "
                                     r"dns_server: "), 5, what="the no-address line")
            assert known(lb) == ["m0.mongolb.test:%d" % port]
            assert "ghost.mongolb.test:%d" % port in in_use(lb)
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            client.t.c.insert_one({"x": 1})


def test_reload_cannot_change_the_srv_name_or_switch_to_a_list(dns):
    """seeds = mongodb+srv:// stays as started: a reload naming a plain list or another SRV name
    keeps the running seeds (and dns_server with them) as restart-only keys, named in the log,
    and the rest of the file still applies. Before, a switch to a list refused the whole reload
    with an error about dns_server."""
    with start_sim("--mongos", "2") as sim:
        want = publish(dns, sim, [0])
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=srv_config(dns),
                           expect_known=1) as lb:
            kept = (r"reload: seeds needs a restart; kept mongodb\+srv://cluster\.mongolb\.test "
                    r"\(the file now says %s\)")
            cases = ((sim.servers[1], {"upstream.tls": "false", "upstream.max_pool_size": 7}),
                     ("mongodb+srv://other.mongolb.test",
                      srv_config(dns, **{"upstream.max_pool_size": 9})))
            for seeds, cfg in cases:
                n = count_log(lb, r"reloaded ")
                lb.seeds = [seeds]
                lb._write_config(cfg)
                lb.proc.send_signal(signal.SIGHUP)
                wait_for(lambda: count_log(lb, r"reloaded ") > n, 10, what="the reload")
                assert log_has(lb, kept % re.escape(seeds)), lb.log_tail()
                assert log_has(lb, r"reload: max_pool_size \d+ -> %d" %
                               cfg["upstream.max_pool_size"]), lb.log_tail()
                assert in_use(lb) == want
            assert log_has(lb, r"reload: dns_server needs a restart; kept 127\.0\.0\.1:\d+ "
                           r"\(the file now says \(none\)\)")
            assert not log_has(lb, r"keeping the running configuration"), lb.log_tail()
            n = count_log(lb, r"needs a restart")
            lb.seeds = ["mongodb+srv://" + SRV_HOST]
            lb._write_config(srv_config(dns))
            lb.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: count_log(lb, r"reloaded .*: \d+ keys? changed, 0 kept") , 10,
                     what="the reload")
            assert count_log(lb, r"needs a restart") == n
            assert in_use(lb) == want
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            client.t.c.insert_one({"x": 1})


def test_srv_a_records_are_asked_of_dns_server(dns):
    """With dns_server the hosts' addresses come from it: each host's A question reaches it."""
    with start_sim("--mongos", "1") as sim:
        publish(dns, sim, [0])
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=srv_config(dns),
                           expect_known=1):
            assert dns.count("m0.mongolb.test", TYPE_A) >= 1


def test_srv_host_with_only_an_ipv6_address(dns):
    """A host dns_server knows only an AAAA record for is reached over IPv6 (the simulator
    listens on ::1 only)."""
    with start_sim("--mongos", "1", "--host", "::1") as sim:
        port = port_of(sim.servers[0])
        dns.aaaa("v6.mongolb.test", "::1")
        dns.srv(SRV_NAME, [("v6.mongolb.test", port)])
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=srv_config(dns),
                           expect_known=1) as lb:
            assert known(lb) == ["v6.mongolb.test:%d" % port]
            assert dns.count("v6.mongolb.test", TYPE_AAAA) >= 1
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            client.t.c.insert_one({"x": 1})
            assert client.t.c.count_documents({}) == 1


def test_srv_txt_answer_holding_only_a_cname_means_no_options(dns):
    """The TXT question answered with a CNAME alone (no TXT record in the answer) is a name
    without options, not a failure."""
    with start_sim("--mongos", "1") as sim:
        want = publish(dns, sim, [0])
        dns.cname(SRV_HOST, "elsewhere.example.org")
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=srv_config(dns),
                           expect_known=1) as lb:
            assert known(lb) == want
            assert dns.count(SRV_HOST, TYPE_TXT) >= 1
            assert not log_has(lb, r"TXT"), lb.log_tail()


def test_srv_host_name_too_long_once_escaped(dns):
    """Labels of control bytes are legal DNS but come out of c-ares escaped (\\001): an answer
    naming such a host, longer than a host name may be, fails the first lookup with a line
    saying so."""
    with start_sim("--mongos", "1") as sim:
        port = port_of(sim.servers[0])
        dns.a("m0.mongolb.test")
        odd = ".".join(["\x01" * 60] * 3) + ".mongolb.test"
        dns.srv(SRV_NAME, [("m0.mongolb.test", port), (odd, port)])
        with start_mongolb(["mongodb+srv://" + SRV_HOST], config=srv_config(dns),
                           expect_known=0) as lb:
            wait_for(lambda: log_has(lb, r"_mongodb\._tcp\.cluster\.mongolb\.test names a host "
                                     r"name longer than 255; no server is known yet"), 10,
                     what="the refusal")
            assert in_use(lb) == []
            dns.srv(SRV_NAME, [("m0.mongolb.test", port)])
            wait_for(lambda: len(known(lb)) == 1, 10, what="the lookup once DNS is fixed")
