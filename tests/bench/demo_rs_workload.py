#!/usr/bin/python3
"""The replica-set part of "make demo": PyMongo through mongolb in front of a replica set.

    demo_rs_workload.py --mongolb 127.0.0.1:PORT --sim 127.0.0.1:P0 --seeds 1

mongolb runs with mode = replicaset and was given one member as its seed. This script shows what
mongolb discovered (mongolbStatus), then runs writes, default reads, secondary reads, a tag-set
read and a write loop during a primary step-down through mongolb, as an application would. After
each step it prints the commands each member received (the simulator's simStats counters) and
checks where they went. It exits 1 with a message when a result or a routing expectation is
wrong.

Written for Debian's python3-pymongo (3.11); it uses nothing newer.
"""

import argparse
import sys
import threading
import time

import pymongo
from pymongo.read_preferences import Secondary

import demo_common
from demo_common import Failure, parallel

DOCS = 1000
FINDS = 60
CURSORS = 6
CURSOR_DOCS = 500
CURSOR_BATCH = 100
WRITERS = 4
FAILOVER_SECONDS = 2.0
STEP_DOWN_AFTER = 0.7





def table(header, rows, indent="    "):
    demo_common.table(header, rows, indent, text_columns=3)


def tags_str(tags):
    return ",".join("%s:%s" % kv for kv in sorted((tags or {}).items())) or "-"


class Demo:
    def __init__(self, mlb_addr, sim_addr):
        self.client = pymongo.MongoClient(
            "mongodb://%s/?appname=mongolb-rs-demo" % mlb_addr,
            serverSelectionTimeoutMS=10000, retryWrites=True)
        self.sim = pymongo.MongoClient("mongodb://%s/" % sim_addr, directConnection=True,
                                       serverSelectionTimeoutMS=10000)
        self.coll = self.client.demo.rs
        self.problems = []
        self.snap = self.sim_stats()

    def status(self):
        return self.client.admin.command("mongolbStatus")

    def sim_stats(self):
        st = self.sim.admin.command("simStats")
        return {s["host"]: s for s in st["servers"]}

    def members(self):
        """The members as mongolb reports them: address -> (type, tags)."""
        return {s["address"]: (s.get("type", "?"), s.get("tags", {}))
                for s in self.status()["servers"]}

    def step(self):
        """The insert/find/getMore commands each member received since the last call."""
        now = self.sim_stats()
        delta = {}
        for host, s in now.items():
            c1 = s.get("commands", {})
            c0 = self.snap.get(host, {}).get("commands", {})
            delta[host] = {k: c1.get(k, 0) - c0.get(k, 0) for k in ("insert", "find", "getMore")}
        self.snap = now
        return delta

    def show(self, title, delta, members=None):
        """Prints the title (lines separated by newlines) and one row per member."""
        members = members or self.members()
        print()
        for i, line in enumerate(title.split("\n")):
            print(("  " if i == 0 else "     ") + line)
        rows = []
        for host in sorted(delta, key=lambda h: list(members).index(h) if h in members else 9):
            typ, tags = members.get(host, ("?", {}))
            d = delta[host]
            rows.append([host, typ, tags_str(tags), d["insert"], d["find"], d["getMore"]])
        table(["member", "type (mongolb)", "tags", "inserts", "finds", "getMores"], rows)

    def expect(self, ok, what):
        print("    %s %s" % ("ok:" if ok else "FAILED:", what))
        if not ok:
            self.problems.append(what)


def discovery(demo, seeds):
    st = demo.status()
    print("Discovery. mongolb was given %d seed; it learnt the other members from that member's"
          % seeds)
    print("hello and now probes every member each heartbeat_interval_ms (1000 ms here). type comes")
    print("from hello, rtt is the average round trip, staleness the estimated lag of a secondary")
    print("behind the primary (for maxStalenessSeconds): the simulator replicates at once, so it")
    print("shows the floor of the estimate, one heartbeat interval.")
    print()
    rows = []
    for s in st["servers"]:
        rtt = s.get("rttMillis")
        stale = s.get("stalenessMillis")
        rows.append([s["address"], s.get("type", "?"), tags_str(s.get("tags")),
                     "%.2f" % rtt if rtt is not None else "-",
                     "%.0f" % stale if stale is not None else "-"])
    table(["member", "type", "tags", "rtt ms", "staleness ms"], rows, indent="  ")
    types = sorted(s.get("type") for s in st["servers"])
    ok = len(st["servers"]) == 3 and types == ["RSPrimary", "RSSecondary", "RSSecondary"]
    print()
    demo.expect(ok, "three members found from one seed: one RSPrimary, two RSSecondary")
    return ok


def writes(demo, primary):
    demo.coll.drop()
    demo.step()

    def insert(i):
        # 2 threads x 5 batches x 100 documents.
        for b in range(5):
            base = (i * 5 + b) * 100
            docs = [{"_id": k, "n": k, "text": "item %d" % k} for k in range(base, base + 100)]
            if len(demo.coll.insert_many(docs).inserted_ids) != 100:
                raise Failure("insert_many did not insert 100 documents")

    parallel(2, insert)
    d = demo.step()
    demo.show("1. Writes: %d documents with insert_many (10 inserts from 2 threads)." % DOCS, d)
    demo.expect(d[primary]["insert"] == 10 and
                sum(v["insert"] for h, v in d.items() if h != primary) == 0,
                "all 10 inserts ran on the primary")


def default_reads(demo, primary):
    def finds(i):
        for j in range(FINDS // 4):
            k = (i * 97 + j * 13) % DOCS
            doc = demo.coll.find_one({"_id": k})
            if doc is None or doc["n"] != k:
                raise Failure("find_one({_id: %d}) returned %r" % (k, doc))

    parallel(4, finds)
    d = demo.step()
    demo.show("2. Default reads: %d find_one by _id, no read preference (mongolb's default is "
              "primary)." % FINDS, d)
    demo.expect(d[primary]["find"] == FINDS and
                sum(v["find"] for h, v in d.items() if h != primary) == 0,
                "all %d finds ran on the primary" % FINDS)


def secondary_reads(demo, primary, secondaries):
    coll = demo.coll.with_options(read_preference=pymongo.ReadPreference.SECONDARY)

    def finds(i):
        for j in range(FINDS // 4):
            k = (i * 89 + j * 7) % DOCS
            doc = coll.find_one({"_id": k})
            if doc is None or doc["n"] != k:
                raise Failure("secondary find_one({_id: %d}) returned %r" % (k, doc))

    parallel(4, finds)
    d1 = demo.step()

    def cursors(i):
        lo = i * 100
        got = [d["n"] for d in coll.find({"n": {"$gte": lo, "$lt": lo + CURSOR_DOCS}},
                                         batch_size=CURSOR_BATCH)]
        if sorted(got) != list(range(lo, lo + CURSOR_DOCS)):
            raise Failure("secondary cursor %d returned %d documents, expected %d in order"
                          % (i, len(got), CURSOR_DOCS))

    parallel(CURSORS, cursors)
    d2 = demo.step()
    total = {h: {k: d1[h][k] + d2[h][k] for k in d1[h]} for h in d1}
    demo.show("3. Secondary reads (readPreference secondary): %d find_one, then %d cursors of %d"
              % (FINDS, CURSORS, CURSOR_DOCS)
              + "\ndocuments in batches of %d (a find and getMores each)." % CURSOR_BATCH, total)
    demo.expect(total[primary]["find"] == 0 and total[primary]["getMore"] == 0,
                "the primary served none of them")
    demo.expect(all(d1[h]["find"] > 0 for h in secondaries),
                "the find_one calls were spread over both secondaries (%s)"
                % " + ".join(str(d1[h]["find"]) for h in secondaries))
    # Every cursor needs the same number of getMores, so a member that ran k of the cursors'
    # finds must have received exactly k times that many getMores: a getMore sent to another
    # member would also have failed with CursorNotFound, and the cursor would be incomplete.
    finds = sum(d2[h]["find"] for h in secondaries)
    gms = sum(d2[h]["getMore"] for h in secondaries)
    per = gms // finds if finds else 0
    split = ", ".join("%d+%d" % (d2[h]["find"], d2[h]["getMore"]) for h in secondaries)
    demo.expect(finds == CURSORS and per > 0 and
                all(d2[h]["getMore"] == per * d2[h]["find"] for h in secondaries),
                "each cursor's %d getMores went to the member that ran its find\n"
                "        (cursor finds + getMores per secondary: %s)" % (per, split))


def tag_reads(demo, sf):
    coll = demo.coll.with_options(read_preference=Secondary(tag_sets=[{"dc": "sf"}]))
    for j in range(FINDS // 2):
        k = (j * 31) % DOCS
        doc = coll.find_one({"_id": k})
        if doc is None or doc["n"] != k:
            raise Failure("tagged find_one({_id: %d}) returned %r" % (k, doc))
    got = list(coll.find({}, batch_size=CURSOR_BATCH))
    if len(got) != DOCS:
        raise Failure("tagged cursor returned %d documents, expected %d" % (len(got), DOCS))
    d = demo.step()
    demo.show("4. Tag-set reads (secondary, tag set {dc: sf}): %d find_one and a cursor over "
              "%d documents." % (FINDS // 2, DOCS), d)
    demo.expect(d[sf]["find"] == FINDS // 2 + 1 and d[sf]["getMore"] > 0 and
                all(v["find"] == 0 and v["getMore"] == 0 for h, v in d.items() if h != sf),
                "only the dc:sf member (%s) served them" % sf)


def failover(demo, old_primary):
    coll = demo.client.demo.failover
    coll.drop()
    before = demo.status()
    dedup0 = demo.sim.admin.command("simStats").get("retriedWritesDeduplicated", 0)
    demo.step()
    stop = threading.Event()
    errors = []
    done = [0] * WRITERS
    slowest = [0.0] * WRITERS

    def writer(i):
        seq = i
        while not stop.is_set():
            t = time.monotonic()
            try:
                coll.insert_one({"seq": seq, "writer": i})
            except pymongo.errors.PyMongoError as e:
                errors.append("writer %d, seq %d: %s" % (i, seq, e))
                return
            slowest[i] = max(slowest[i], time.monotonic() - t)
            done[i] += 1
            seq += WRITERS

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(STEP_DOWN_AFTER)
    writes_before = sum(done)
    reply = demo.sim.admin.command("simStepDown", 1)
    new_primary = reply.get("primary")
    time.sleep(FAILOVER_SECONDS - STEP_DOWN_AFTER)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    d = demo.step()
    after = demo.status()
    members = demo.members()

    total = sum(done)
    seqs = sorted(doc["seq"] for doc in coll.find({}, {"seq": 1, "_id": 0}))
    expected = sorted(i + WRITERS * j for i in range(WRITERS) for j in range(done[i]))
    retries = after["counters"].get("retries", 0) - before["counters"].get("retries", 0)
    dedup = demo.sim.admin.command("simStats").get("retriedWritesDeduplicated", 0) - dedup0

    demo.show("5. Failover: %d threads insert_one in a loop (retryWrites=true) for %.1f s;"
              % (WRITERS, FAILOVER_SECONDS)
              + "\nthe primary steps down (simStepDown) after %.1f s. inserts counts the insert"
              % STEP_DOWN_AFTER
              + "\ncommands each member received, with any refused as not primary.", d, members)
    print("    step-down: primary %s -> %s; %d inserts before it, %d after, %d errors;"
          % (old_primary, new_primary, writes_before, total - writes_before, len(errors)))
    print("    the slowest insert took %.0f ms" % (max(slowest) * 1000))
    print("    mongolb retries during the loop: %d; retried writes the set had already applied "
          "(not applied twice): %d" % (retries, dedup))
    print("    documents: %d acknowledged, %d in the collection, %d distinct (%.1f inserts/s)"
          % (total, len(seqs), len(set(seqs)), total / elapsed))
    demo.expect(new_primary is not None and new_primary != old_primary and
                members.get(new_primary, ("",))[0] == "RSPrimary" and
                members.get(old_primary, ("",))[0] == "RSSecondary",
                "mongolb sees the new primary %s and the old one as a secondary" % new_primary)
    demo.expect(not errors, "no write failed" + ("" if not errors else ": " + errors[0]))
    demo.expect(total > writes_before and d.get(new_primary, {}).get("insert", 0) > 0,
                "writes continued on the new primary after the step-down")
    demo.expect(seqs == expected, "every acknowledged document is present exactly once")
    return new_primary, retries


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mongolb", required=True, help="host:port of mongolb (replicaset mode)")
    ap.add_argument("--sim", required=True, help="host:port of one simulated member")
    ap.add_argument("--seeds", type=int, default=1, help="how many seeds mongolb was given")
    args = ap.parse_args()

    demo = Demo(args.mongolb, args.sim)
    started = time.monotonic()
    try:
        if not discovery(demo, args.seeds):
            raise Failure("mongolb did not discover the replica set")
        members = demo.members()
        primary = [h for h, (t, _) in members.items() if t == "RSPrimary"][0]
        secondaries = [h for h, (t, _) in members.items() if t == "RSSecondary"]
        sf = [h for h, (_, tags) in members.items() if tags.get("dc") == "sf"]
        if len(sf) != 1:
            raise Failure("expected one member tagged dc:sf, found %d" % len(sf))
        print()
        print("Workload through mongolb at %s with PyMongo %s, which sees one mongos. Each table"
              % (args.mongolb, pymongo.version))
        print("counts the commands every member received during that step (the simulator's")
        print("simStats), and every result was checked.")
        writes(demo, primary)
        default_reads(demo, primary)
        secondary_reads(demo, primary, secondaries)
        tag_reads(demo, sf[0])
        new_primary, retries = failover(demo, primary)
    except (Failure, pymongo.errors.PyMongoError) as e:
        print("\nFAILED: the replica-set workload through mongolb went wrong: %s" % e)
        return 1

    counters = demo.status().get("counters", {})
    print()
    print("  mongolb counters: getMores routed %d, cursorNotFound %d, errors returned %d, "
          "retries %d" % (counters.get("getMoresRouted", 0), counters.get("cursorNotFound", 0),
                          counters.get("errorsReturned", 0), counters.get("retries", 0)))
    if counters.get("cursorNotFound", 0):
        demo.problems.append("mongolb saw %d CursorNotFound errors"
                             % counters["cursorNotFound"])
    print()
    if demo.problems:
        for p in demo.problems:
            print("FAILED: " + p)
        return 1
    print("OK: writes on the primary, reads where their preference asked, getMores on their "
          "cursor's member,")
    print("    and a step-down to %s with 0 failed writes (mongolb retries: %d) in %.1f s."
          % (new_primary, retries, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
