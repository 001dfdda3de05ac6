"""Seed lists changed by a reload, at the edges of seeds.c:

- mongos mode: a server removed while a request is in flight on it, then listed again before its
  slot was released, comes back in the same slot (monitored, routed to), and the request in
  flight still gets its answer;
- replicaset mode: a seed dropped from the list stays while the replica set lists it, and the log
  says why.
"""

import re
import threading

import pymongo

from harness import start_sim
from mongolb_harness import IO_TEST_DEFAULTS, reload_with, wait_for
from test_srv import in_use, known, start_mongolb


def reload_seeds(lb, seeds, extra, expect):
    lb.seeds = list(seeds)
    cfg = dict(IO_TEST_DEFAULTS)
    cfg.update(extra)
    return reload_with(lb, cfg, expect)


def test_removed_mongos_listed_again_while_its_request_runs():
    with start_sim("--mongos", "2") as sim:
        a, b = sim.servers
        with start_mongolb([b], expect_known=1) as lb:
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=10000,
                                         socketTimeoutMS=20000)
            client.t.c.insert_many([{"i": i} for i in range(5)])
            # b answers slowly: a find holds one of its pooled connections for 1.5 s.
            assert sim.command(1, {"simSetLatency": {"server": 1, "ms": 1500}})["ok"] == 1
            out = {}

            def slow_find():
                try:
                    out["docs"] = list(client.t.c.find({}))
                except Exception as e:  # reported below
                    out["error"] = e

            t = threading.Thread(target=slow_find)
            t.start()
            # Let the find reach b before the reloads.
            wait_for(lambda: sim.stats()["servers"][1]["commands"].get("find", 0) >= 1, 5,
                     what="the find on b")
            reload_seeds(lb, [a], {}, re.escape(b) + r".*removed from the seeds \(reload\)")
            reload_seeds(lb, [a, b], {}, re.escape(b) + r".*added as a seed \(reload\)")
            t.join(15)
            assert not t.is_alive()
            assert "error" not in out, out
            assert len(out["docs"]) == 5
            assert sim.command(1, {"simSetLatency": {"server": 1, "ms": 0}})["ok"] == 1
            wait_for(lambda: known(lb) == sorted([a, b]), 15, what="b known again")
            assert in_use(lb) == sorted([a, b])
            # b kept its slot: it is listed once.
            assert [s["address"] for s in lb.status()["servers"]].count(b) == 1
            assert client.t.c.count_documents({}) == 5


def test_replicaset_seed_dropped_stays_a_member():
    with start_sim("--replset", "rs0", "--members", "3") as sim:
        cfg = {"upstream.mode": "replicaset", "upstream.replica_set": "rs0"}
        with start_mongolb(sim.servers, config=cfg, expect_known=3) as lb:
            line = reload_seeds(lb, sim.servers[:1], cfg,
                                r"no longer a seed, but stays while the replica set lists it")
            dropped = re.search(r"\[([^\]]+)\]", line).group(1)
            assert dropped in sim.servers[1:], line
            assert len(known(lb)) == 3
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            client.t.c.insert_one({"x": 1})
            assert client.t.c.count_documents({}) == 1
