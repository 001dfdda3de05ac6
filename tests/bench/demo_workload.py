#!/usr/bin/python3
"""The workload of "make demo": an application using PyMongo through mongolb.

    demo_workload.py --mongolb 127.0.0.1:PORT --sim 127.0.0.1:P0

It talks to mongolb exactly as it would to one mongos, checks every answer, and then prints what
happened on the other side: how many requests each simulated mongos served (from mongolb's
mongolbStatus and from the simulator's own simStats counters), and mongolb's cursor counters.
It exits 1 with a message when a result or a routing expectation is wrong.

Written for Debian's python3-pymongo (3.11); it uses nothing newer.
"""

import argparse
import random
import sys
import threading
import time

import pymongo

from demo_common import Failure, parallel, table

DOCS = 2000
FINDS = 200
CURSOR_DOCS = 500
CURSOR_BATCH = 100




def workload(client):
    coll = client.demo.items
    coll.drop()
    steps = []

    t = time.monotonic()

    def insert(i):
        # 4 threads x 5 batches x 100 documents.
        for b in range(5):
            base = (i * 5 + b) * 100
            docs = [{"_id": k, "n": k, "group": k % 10, "text": "item %d" % k}
                    for k in range(base, base + 100)]
            res = coll.insert_many(docs)
            if len(res.inserted_ids) != 100:
                raise Failure("insert_many inserted %d documents, not 100"
                              % len(res.inserted_ids))

    parallel(4, insert)
    steps.append(("insert %d documents (20 insert_many calls from 4 threads)" % DOCS, t))

    t = time.monotonic()

    def finds(i):
        rnd = random.Random(i)
        for _ in range(FINDS // 8):
            k = rnd.randrange(DOCS)
            doc = coll.find_one({"_id": k})
            if doc is None or doc["n"] != k:
                raise Failure("find_one({_id: %d}) returned %r" % (k, doc))

    parallel(8, finds)
    steps.append(("%d find_one by _id from 8 threads" % FINDS, t))

    t = time.monotonic()

    def cursors(i):
        lo = i * 250
        got = [d["n"] for d in coll.find({"n": {"$gte": lo, "$lt": lo + CURSOR_DOCS}},
                                         batch_size=CURSOR_BATCH)]
        if sorted(got) != list(range(lo, lo + CURSOR_DOCS)):
            raise Failure("cursor %d returned %d documents, expected %d in order"
                          % (i, len(got), CURSOR_DOCS))

    parallel(6, cursors)
    steps.append(("6 cursors of %d documents in batches of %d (find + getMores), 6 threads"
                  % (CURSOR_DOCS, CURSOR_BATCH), t))

    t = time.monotonic()
    n = client.demo.command("count", "items")["n"]
    if n != DOCS:
        raise Failure("count returned %d, expected %d" % (n, DOCS))
    n = client.demo.command("count", "items", query={"group": 3})["n"]
    if n != DOCS // 10:
        raise Failure("count {group: 3} returned %d, expected %d" % (n, DOCS // 10))
    steps.append(("2 counts", t))

    t = time.monotonic()
    # Cursors handed from thread to thread, as a web application's paginated result is often
    # continued by another request: each thread opens a cursor (its find and first batch), then
    # finishes its neighbour's. The getMores then leave on whichever pooled connection the
    # finishing thread gets; behind an L4 balancer each connection is tied to one mongos, so a
    # getMore on another connection than its find would reach a mongos that does not know the
    # cursor. mongolb counts these as "misroutes avoided" and sends them to the cursor's owner.
    handed = [None] * 6
    first = [None] * 6
    ready = threading.Barrier(6)

    def handoff(i):
        lo = i * 300
        cur = coll.find({"n": {"$gte": lo, "$lt": lo + CURSOR_DOCS}}, batch_size=CURSOR_BATCH)
        first[i] = next(cur)["n"]
        handed[i] = cur
        ready.wait(30)
        j = (i + 1) % 6
        got = [first[j]] + [d["n"] for d in handed[j]]
        lo = j * 300
        if sorted(got) != list(range(lo, lo + CURSOR_DOCS)):
            raise Failure("handed-over cursor %d returned %d documents, expected %d"
                          % (j, len(got), CURSOR_DOCS))

    parallel(6, handoff)
    steps.append(("6 cursors each opened by one thread and finished by another", t))

    t = time.monotonic()

    def early_close(i):
        cur = coll.find({}, batch_size=CURSOR_BATCH)
        for _ in range(CURSOR_BATCH + 50):  # the first batch and half of the second
            next(cur)
        cur.close()  # the cursor is still open on its mongos: this sends killCursors

    parallel(3, early_close)
    steps.append(("3 cursors closed after 150 documents (killCursors)", t))
    return steps


def sim_commands(sim):
    st = sim.admin.command("simStats")
    return {s["host"]: s for s in st["servers"]}




def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mongolb", required=True, help="host:port of mongolb")
    ap.add_argument("--sim", required=True, help="host:port of one simulated mongos")
    ap.add_argument("--threshold", type=int, default=15, help="mongolb's local_threshold_ms")
    args = ap.parse_args()

    client = pymongo.MongoClient("mongodb://%s/?appname=mongolb-demo" % args.mongolb,
                                 serverSelectionTimeoutMS=10000)
    sim = pymongo.MongoClient("mongodb://%s/" % args.sim, directConnection=True,
                              serverSelectionTimeoutMS=10000)

    before = client.admin.command("mongolbStatus")
    sim.admin.command("simStats", reset=True)
    print("Running the workload through mongolb at %s with PyMongo %s:"
          % (args.mongolb, pymongo.version))
    started = time.monotonic()
    try:
        steps = workload(client)
    except (Failure, pymongo.errors.PyMongoError) as e:
        print("\nFAILED: the workload through mongolb went wrong: %s" % e)
        return 1
    ends = [t for _, t in steps[1:]] + [time.monotonic()]
    for (what, t0), t1 in zip(steps, ends):
        print("  %-78s %6.0f ms" % (what, (t1 - t0) * 1000))
    print("  all results checked: every document found, every cursor complete (%.1f s)"
          % (time.monotonic() - started))

    after = client.admin.command("mongolbStatus")
    simst = sim_commands(sim)
    before_req = {s["address"]: s.get("requests", 0) for s in before["servers"]}

    print()
    print("Where the requests went. Each simulated mongos adds the latency shown to every reply.")
    print("mongolb measures each one's round-trip time and spreads requests over those within")
    print("local_threshold_ms = %d ms of the fastest (two drawn at random, the one with fewer"
          % args.threshold)
    print("requests in flight wins), so the two near mongoses share the load and the far one,")
    print("outside the window, gets none. 'mongolb requests' is mongolb's count for this")
    print("workload; the other columns are the commands each simulated mongos received")
    print("(simStats), its heartbeats excluded.")
    print()
    rows = []
    served = {}
    for s in after["servers"]:
        addr = s["address"]
        sv = simst.get(addr, {})
        cmds = sv.get("commands", {})
        req = s.get("requests", 0) - before_req.get(addr, 0)
        served[addr] = (req, sv.get("latencyMs"))
        rtt = s.get("rttMillis")
        work = {k: v for k, v in cmds.items()
                if k.lower() not in ("hello", "ismaster", "simstats", "ping", "buildinfo")}
        other = ", ".join("%s %d" % (k, v) for k, v in sorted(work.items())
                          if k not in ("insert", "find", "getMore", "killCursors", "count"))
        rows.append([addr, "%s ms" % sv.get("latencyMs", "?"), s.get("type", "?"),
                     "%.1f" % rtt if rtt is not None else "-", req,
                     work.get("insert", 0), work.get("find", 0), work.get("getMore", 0),
                     work.get("killCursors", 0), work.get("count", 0), other or "-"])
    table(["mongos", "added latency", "type", "rtt ms", "mongolb requests", "insert", "find",
           "getMore", "killCursors", "count", "other"], rows)

    c0, c1 = before.get("counters", {}), after.get("counters", {})
    cur0, cur1 = before.get("cursors", {}), after.get("cursors", {})

    def delta(d0, d1, k):
        return d1.get(k, 0) - d0.get(k, 0)

    print()
    print("Cursors. A getMore or killCursors must reach the mongos that opened the cursor;")
    print("mongolb remembers each cursor's server and sends them there. 'misroutes avoided'")
    print("counts the getMores that came on another client connection than their cursor's find:")
    print("an L4 balancer (HAProxy, a Kubernetes Service) ties each connection to one mongos, so")
    print("it would have sent them to whatever mongos that connection had, and the application")
    print("would have seen 'cursor id ... not found' unless it happened to be the right one.")
    print()
    crow = [delta(cur0, cur1, "opened"), cur1.get("open", 0),
            delta(c0, c1, "getMoresRouted"), delta(c0, c1, "killCursorsRouted"),
            delta(c0, c1, "misroutesAvoided"), delta(c0, c1, "cursorNotFound")]
    table(["opened", "still open", "getMores routed", "killCursors routed",
           "misroutes avoided", "cursorNotFound"], [crow])

    problems = []
    lats = sorted(lat for _, lat in served.values() if lat is not None)
    if len(lats) != 3:
        problems.append("simStats did not report the three latencies")
    else:
        near = [a for a, (_, lat) in served.items() if lat is not None and
                lat - lats[0] < args.threshold]
        far = [a for a, (_, lat) in served.items() if lat is not None and
               lat - lats[0] > args.threshold]
        total = sum(served[a][0] for a in near)
        for a in far:
            if served[a][0] != 0:
                problems.append("the far mongos %s (%d ms) served %d requests; it is outside "
                                "the latency window and should be idle"
                                % (a, served[a][1], served[a][0]))
        for a in near:
            # With two servers sharing, each gets about half; a fifth is far below that and
            # would only happen if one of them took nearly everything.
            if total and served[a][0] < total // 5:
                problems.append("the near mongos %s served %d of %d requests; the load was not "
                                "spread" % (a, served[a][0], total))
        if len(near) != 2 or len(far) != 1:
            problems.append("expected two mongoses inside the latency window and one outside")
    if delta(c0, c1, "getMoresRouted") <= 0:
        problems.append("mongolb routed no getMore")
    if delta(c0, c1, "misroutesAvoided") <= 0:
        problems.append("no getMore came on another connection than its find: the handed-over "
                        "cursors did not show what an L4 balancer gets wrong")
    if delta(c0, c1, "cursorNotFound") != 0:
        problems.append("mongolb saw %d CursorNotFound errors" % delta(c0, c1, "cursorNotFound"))
    print()
    print("mongolb's resident memory: %s kB. Counters since it started: %d requests, "
          "%d answered locally." % (after.get("rssKB", "?"), c1.get("requests", 0),
                                    c1.get("repliesLocal", 0)))
    if problems:
        print()
        for p in problems:
            print("FAILED: " + p)
        return 1
    print()
    print("OK: the two near mongoses shared the requests, the far one stayed idle, and every "
          "getMore and")
    print("killCursors reached its cursor's mongos, %d of them arriving where an L4 balancer "
          "could have" % delta(c0, c1, "misroutesAvoided"))
    print("sent them elsewhere.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
