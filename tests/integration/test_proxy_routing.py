"""Where mongolb sends requests: the low-latency servers share the reads and a slow one gets none;
a mongos killed mid-run costs at most the requests in flight on it; a revived one is used again."""

import threading
import time

import pymongo
from pymongo.errors import NotMasterError, OperationFailure

from mongolb_harness import Cluster, cluster, wait_for  # noqa: F401  (cluster is a fixture)


def client_for(lb, **kw):
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(lb.uri, **kw)


def reads_per_server(cluster):
    finds = cluster.command_counts("find")
    gms = cluster.command_counts("getMore")
    return {i: finds[i] + gms[i] for i in finds}


def test_slow_mongos_gets_no_reads():
    c = Cluster(sim_args=("--mongos", "3", "--latency", "0,0,80"))
    try:
        c.need_sim()
        slow = c.sim.servers[2]
        # mongolb has measured every server's round trip (the slow one's includes its 80 ms).
        def rtts_known():
            st = c.lb.status()
            return st if all(s["rttMillis"] is not None for s in st["servers"]) else None

        st = wait_for(rtts_known, what="round-trip times known")
        rtt = {s["address"]: s["rttMillis"] for s in st["servers"]}
        assert rtt[slow] >= 50, rtt
        client = client_for(c.lb)
        try:
            coll = client.test_latency.docs
            coll.insert_many([{"_id": i} for i in range(10)])
            c.sim_stats(reset=True)
            for _ in range(200):
                assert len(list(coll.find({"_id": {"$lt": 3}}))) == 3
            for _ in range(10):  # a few multi-batch cursors too
                assert len(list(coll.find({}, batch_size=2))) == 10
        finally:
            client.close()
        reads = reads_per_server(c)
        assert reads[0] > 0 and reads[1] > 0, reads
        assert reads[2] == 0, reads
        assert c.command_counts("find")[0] + c.command_counts("find")[1] == 210
    finally:
        code = c.close()
        print("\n----- mongolb stderr -----\n" + c.lb.log_tail(80))
    assert code == 0, "mongolb exited with %s after SIGTERM" % code


THREADS = 8
DOCS = 250
BATCH = 50


def test_killed_mongos_costs_only_requests_in_flight(cluster):
    cluster.need_sim()
    victim = cluster.sim.servers[1]
    client = client_for(cluster.lb, retryReads=False)
    try:
        coll = client.test_kill_mongos.docs
        coll.insert_many([{"_id": i} for i in range(DOCS)])
        lock = threading.Lock()
        results = []  # (thread, started, ok, error)
        kill_done = [None]  # monotonic time when simKill returned
        stop = threading.Event()

        def reader(t):
            after_kill = 0
            while not stop.is_set() and after_kill < 6:
                started = time.monotonic()
                try:
                    n = sum(1 for _ in coll.find({}, batch_size=BATCH))
                    res = (t, started, n == DOCS, None if n == DOCS else "got %d docs" % n)
                except Exception as e:  # noqa: BLE001
                    res = (t, started, False, e)
                with lock:
                    results.append(res)
                if kill_done[0] is not None and started > kill_done[0]:
                    after_kill += 1

        threads = [threading.Thread(target=reader, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        try:
            # Let every thread get going, and the victim own some cursors, before the kill.
            wait_for(lambda: len(results) >= 2 * THREADS, timeout=30,
                     what="reads before the kill")
            wait_for(lambda: cluster.command_counts("find")[1] > 0, what="finds on the victim")
            cluster.sim_command({"simKill": 1}, i=0)
            kill_done[0] = time.monotonic()
            for th in threads:
                th.join(60)
        finally:
            stop.set()
            for th in threads:
                th.join(10)
        assert not any(th.is_alive() for th in threads), "reader threads hung"

        failures = [r for r in results if not r[2]]
        # Each thread had at most one request (one cursor) in flight on the victim.
        assert len(failures) <= THREADS, failures
        for t in range(THREADS):
            assert sum(1 for r in failures if r[0] == t) <= 1, failures
        # Failures are error documents from mongolb, never a dropped client connection.
        for r in failures:
            assert isinstance(r[3], (OperationFailure, NotMasterError)), failures
        # Every cursor started after the kill read all its documents from the remaining two.
        late = [r for r in results if r[1] > kill_done[0]]
        assert len(late) >= THREADS * 6
        assert [r for r in late if not r[2]] == []

        wait_for(lambda: cluster.lb.server_type(victim) == "Unknown",
                 what="mongolb marking the killed server unknown")
        st = cluster.lb.status()
        assert st["counters"]["cursorNotFound"] <= THREADS

        # Revived, it gets traffic again.
        wait_for(lambda: cluster.sim_command({"simRevive": 1}, i=0).get("ok") == 1,
                 what="simRevive")
        wait_for(lambda: cluster.lb.server_type(victim) == "Mongos", timeout=15,
                 what="mongolb seeing the revived server")
        cluster.sim_stats(reset=True)

        def victim_used():
            for _ in range(20):
                assert len(list(coll.find({"_id": {"$lt": 5}}))) == 5
            return cluster.command_counts("find")[1] > 0

        wait_for(victim_used, timeout=15, what="finds on the revived server")
    finally:
        client.close()
