#!/usr/bin/env python3
"""The bounded chaos soak of "make soak" (scripts/soak.sh): real drivers through mongolb while
servers die, hang, freeze and step down, then an audit of every acknowledged write.

Two simulated deployments run side by side, each with its own mongolb in front:

  ms  mongosim --mongos 3                  mongolb mode = mongos
  rs  mongosim --replset rs0 --members 3   mongolb mode = replicaset (seeded with one member)

One mongosim process is one deployment whose servers share one in-memory store, so the three
routers (or members) of a deployment cannot be three processes: separate processes would not see
each other's writes and the audit would be meaningless. Faults of one server therefore use the
simulator's own commands (simKill/simRevive, simStepDown, simSetLatency, failCommand), and SIGSTOP
freezes the whole deployment at once.

Traffic, for SOAK_SECONDS minus a reserve for setup and the audit (see phase_seconds):
  PyMongo threads   retryable inserts (client _id, and server-made _id), retryable $inc,
                    non-retryable inserts (a raw insert command, no txnNumber), with_transaction
                    pairs (with a cursor read inside), find/aggregate cursors with small batches
                    iterated to the end, and secondaryPreferred cursors/reads in the replica set
  Node.js workers   one node process per deployment (tests/soak/node_worker.mjs) doing the same
                    with withTransaction and cursors; it prints its counts as JSON at the end
  chaos             one thread per deployment; every 1-3 s one event: kill a server and revive it
                    1-4 s later, hang one (replies held 3 s, longer than mongolb's probe timeout),
                    slow one (30-150 ms), freeze the whole simulator (SIGSTOP 1-3 s), a failCommand
                    failpoint (dropped connections or error codes), and in the replica set a
                    step-down or a kill of the primary

Afterwards every fault is healed and everything is read back through mongolb (and counted
directly on the simulator as a cross-check). Exit status 1 when a write was lost or duplicated, a
transaction was torn or split across servers, a getMore was misrouted, a cursor returned wrong
data, mongolb crashed or did not stop cleanly, a worker hung, or unexpected errors exceed
SOAK_MAX_UNEXPECTED_ERRORS (default 0; what is "expected" is explained in the report).

Environment: SOAK_SECONDS (default 180, the whole run), MONGOLB, MONGOSIM (default build/...),
NODE (default node), SOAK_SEED (random seed), SOAK_DIR (where logs go; default a temporary
directory, kept when the run fails or SOAK_KEEP=1), SOAK_MAX_UNEXPECTED_ERRORS (default 0),
SOAK_NODE=0 to skip the Node.js workers, SOAK_VERBOSE=1 to print chaos events as they happen.
"""

import collections
import datetime
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import bson  # noqa: E402  (PyMongo's)
import pymongo  # noqa: E402
import pymongo.client_session  # noqa: E402
from bson.raw_bson import RawBSONDocument  # noqa: E402
from pymongo import monitoring  # noqa: E402
from pymongo.read_preferences import SecondaryPreferred  # noqa: E402

from harness import recv_msg, send_msg  # noqa: E402  (raw OP_MSG helpers, no driver)

# --- settings ---------------------------------------------------------------------------------

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))
MONGOLB = os.environ.get("MONGOLB") or os.path.join(ROOT, "build", "mongolb")
MONGOSIM = os.environ.get("MONGOSIM") or os.path.join(ROOT, "build", "mongosim")
NODE = os.environ.get("NODE", "node")
SEED = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1 << 30))
MAX_UNEXPECTED = int(os.environ.get("SOAK_MAX_UNEXPECTED_ERRORS", "0"))
USE_NODE = os.environ.get("SOAK_NODE", "1") != "0"
VERBOSE = os.environ.get("SOAK_VERBOSE", "0") == "1"

SEED_DOCS = 200        # documents of the read-only collection the cursors read
BATCH = 10             # cursor batch size: 19 getMores per cursor
PROBE_TIMEOUT_MS = 2000  # mongolb's connect_timeout_ms, which also bounds a heartbeat
HANG_MS = 3000         # reply delay of a "hung" server: longer than PROBE_TIMEOUT_MS
SELECTION_TIMEOUT_MS = 15000  # mongolb's server_selection_timeout_ms
DRAIN_SECONDS = 35     # how long workers may take to finish their last operation (> the
                       # drivers' 30 s socket timeout)
HARD_LIMIT_EXTRA = 45  # a run still going SOAK_SECONDS + this is stopped (something hangs)
# PyMongo's with_transaction retries for up to 120 s; bound it so a stuck transaction shows up
# as an error within the run instead of outliving it.
pymongo.client_session._WITH_TRANSACTION_RETRY_TIME_LIMIT = 30


def phase_seconds():
    """Traffic and chaos get the budget minus a reserve for setup, drain and the audit."""
    reserve = min(25.0, SOAK_SECONDS / 3.0)
    return max(10.0, SOAK_SECONDS - reserve)


def log(msg):
    sys.stdout.write("[soak %6.1fs] %s\n" % (time.monotonic() - T0, msg))
    sys.stdout.flush()


T0 = time.monotonic()

# --- processes --------------------------------------------------------------------------------

CHILDREN = []          # every process started here, stopped by cleanup() by pid
FROZEN = set()         # pids currently SIGSTOPped
SETPRIV = shutil.which("setpriv")  # util-linux


def spawn(args, **kw):
    """Starts a child in its own session (Ctrl-C on the terminal reaches only this script, which
    then stops the children in order) with a parent-death signal (if this script is SIGKILLed,
    the children die with it). setpriv sets it and execs the program, so the pid is the
    program's; preexec_fn would not be safe here, PyMongo's threads already run."""
    if SETPRIV:
        args = [SETPRIV, "--pdeathsig", "KILL", "--"] + list(args)
    p = subprocess.Popen(args, start_new_session=True, **kw)
    CHILDREN.append(p)
    return p


def stop_proc(p, timeout=10.0):
    if p.poll() is not None:
        return p.returncode
    if p.pid in FROZEN:
        os.kill(p.pid, signal.SIGCONT)
        FROZEN.discard(p.pid)
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None


def cleanup():
    for pid in list(FROZEN):
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
    FROZEN.clear()
    for p in reversed(CHILDREN):
        try:
            stop_proc(p, 5.0)
        except Exception:  # noqa: BLE001
            pass


def raw_command(host, port, cmd, db="admin", timeout=5.0):
    doc = dict(cmd)
    doc["$db"] = db
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        send_msg(s, doc, request_id=1)
        return recv_msg(s)[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SimCluster:
    """One mongosim process (one deployment) and the faults the chaos loop applies to it."""

    def __init__(self, name, args, outdir):
        self.name = name
        self.errlog = open(os.path.join(outdir, "%s-mongosim.log" % name), "wb")
        self.proc = spawn([MONGOSIM] + list(args) + ["--port", "0"], stdout=subprocess.PIPE,
                          stderr=self.errlog, stdin=subprocess.DEVNULL)
        line = self._ready_line(10.0)
        ready = json.loads(line)
        self.servers = ready["servers"]
        self.set_name = ready.get("setName")
        self.dead = set()      # indices currently killed
        self.lock = threading.Lock()

    def _ready_line(self, timeout):
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            r, _, _ = select.select([fd], [], [], max(0.0, left))
            if not r:
                raise RuntimeError("mongosim %s printed no ready line" % self.name)
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("mongosim %s exited before it was ready" % self.name)
            buf += chunk
        return buf.split(b"\n", 1)[0]

    def addr(self, i):
        h, p = self.servers[i].rsplit(":", 1)
        return h, int(p)

    def command(self, cmd, avoid=None, at=None, timeout=5.0):
        """A control command on server `at`, or on any live server other than `avoid`."""
        if at is not None:
            return raw_command(*self.addr(at), cmd, timeout=timeout)
        last = None
        for i in range(len(self.servers)):
            if i == avoid or i in self.dead:
                continue
            try:
                return raw_command(*self.addr(i), cmd, timeout=timeout)
            except OSError as e:
                last = e
        raise last or RuntimeError("no live server to send %r to" % cmd)

    def stats(self):
        return self.command({"simStats": 1})

    def primary(self):
        for s in self.stats()["servers"]:
            if s["role"] == "primary":
                return s["index"]
        return None

    def kill(self, i):
        r = self.command({"simKill": i}, avoid=i)
        assert r.get("ok") == 1, r
        self.dead.add(i)

    def revive(self, i):
        deadline = time.monotonic() + 10
        while True:
            r = self.command({"simRevive": i}, avoid=i)
            if r.get("ok") == 1:
                self.dead.discard(i)
                return
            if time.monotonic() > deadline:
                raise RuntimeError("simRevive %d: %r" % (i, r))
            time.sleep(0.1)

    def set_latency(self, i, ms):
        r = self.command({"simSetLatency": {"server": i, "ms": ms}}, avoid=i)
        assert r.get("ok") == 1, r

    def failpoint(self, i, mode, data=None):
        cmd = {"configureFailPoint": "failCommand", "mode": mode}
        if data:
            cmd["data"] = data
        r = self.command(cmd, at=i)
        assert r.get("ok") == 1, r

    def freeze(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        FROZEN.add(self.proc.pid)

    def thaw(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        FROZEN.discard(self.proc.pid)

    def heal(self):
        """Undoes every fault: thaws, revives, clears latencies and failpoints."""
        if self.proc.pid in FROZEN:
            self.thaw()
        for i in sorted(self.dead):
            self.revive(i)
        for i in range(len(self.servers)):
            self.set_latency(i, 0)
            self.failpoint(i, "off")


class Mongolb:
    def __init__(self, name, seeds, outdir, extra):
        self.name = name
        self.log_path = os.path.join(outdir, "%s-mongolb.log" % name)
        self.conf_path = os.path.join(outdir, "%s-mongolb.ini" % name)
        self.port = free_port()
        upstream = {"seeds": ",".join(seeds), "heartbeat_interval_ms": 500,
                    "connect_timeout_ms": PROBE_TIMEOUT_MS,
                    "server_selection_timeout_ms": SELECTION_TIMEOUT_MS}
        upstream.update(extra)
        with open(self.conf_path, "w") as f:
            f.write("[mongolb]\nlisten = 127.0.0.1:%d\nlog_level = info\n" % self.port)
            f.write("[upstream]\n")
            for k, v in upstream.items():
                f.write("%s = %s\n" % (k, v))
        self._log = open(self.log_path, "ab")
        self.proc = spawn([MONGOLB, "-c", self.conf_path], stdin=subprocess.DEVNULL,
                          stdout=self._log, stderr=self._log)
        self.uri = "mongodb://127.0.0.1:%d/" % self.port
        self.exit_code = None
        self.crashed_at = None

    def status(self, timeout=5.0):
        return raw_command("127.0.0.1", self.port, {"mongolbStatus": 1}, timeout=timeout)

    def wait_known(self, n, types=None, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("mongolb %s exited with %s:\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            try:
                st = self.status(2.0)
                known = [s for s in st["servers"] if s["type"] != "Unknown" and
                         (types is None or s["type"] in types)]
                if len(known) >= n:
                    return st
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mongolb %s did not know %d servers in %.0fs:\n%s"
                                   % (self.name, n, timeout, self.log_tail()))
            time.sleep(0.1)

    def rss_kb(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit_code = "hung after SIGTERM (killed)"
                return self.exit_code
            self.exit_code = self.proc.returncode
        elif self.exit_code is None:
            self.exit_code = "died during the run: %s" % self.proc.returncode
        self._log.close()
        return self.exit_code


# --- recording --------------------------------------------------------------------------------

class Events:
    """The chaos timeline: (cluster, kind, target, t_start, t_end, detail), wall-clock seconds."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, cluster, kind, target, t0, t1, detail=""):
        with self.lock:
            self.items.append(dict(cluster=cluster, kind=kind, target=target, t0=t0, t1=t1,
                                   detail=detail))
        if VERBOSE:
            log("chaos %s: %s %s (%.1fs) %s" % (cluster, kind, target, t1 - t0, detail))

    # Events after which mongolb rightly forgets cursors: the server's connections failed
    # (kill, failpoint closing connections or answering a shutdown code) or its heartbeat
    # timed out (hang, whole-simulator freeze). Their window runs until the server is back and
    # mongolb has had a heartbeat (0.5 s) and a probe timeout to notice.
    CURSOR_LOSING = {"kill", "kill-primary", "kill-secondary", "hang", "freeze-all",
                     "failpoint-close", "failpoint-shutdown"}

    def _slack(self):
        return 0.5 + PROBE_TIMEOUT_MS / 1000.0 + 0.5

    def cursor_losing_overlap(self, cluster, t_open, t_err):
        """The cursor-losing event of `cluster` that best explains a cursor open from t_open that
        failed at t_err: one whose window contains t_err if any, else the latest overlapping."""
        slack = self._slack()
        best = None
        with self.lock:
            for e in self.items:
                if e["cluster"] != cluster or e["kind"] not in self.CURSOR_LOSING:
                    continue
                if not (e["t0"] - 0.2 <= t_err and t_open <= e["t1"] + slack):
                    continue
                contains = e["t0"] - 0.2 <= t_err <= e["t1"] + slack
                key = (contains, e["t0"])
                if best is None or key > best[0]:
                    best = (key, e)
        return best[1] if best else None

    def in_window(self, cluster, t, kinds=None):
        slack = self._slack()
        kinds = kinds or self.CURSOR_LOSING
        with self.lock:
            return any(e["cluster"] == cluster and e["kind"] in kinds and
                       e["t0"] - 0.2 <= t <= e["t1"] + slack for e in self.items)


class WorkerStats:
    """What one worker did: operations by kind and outcome, op ids with their outcome, errors."""

    def __init__(self, lang, cluster, kind, name):
        self.lang, self.cluster, self.kind, self.name = lang, cluster, kind, name
        self.ops = collections.Counter()      # (op_kind, "ok"/"failed") -> n
        self.writes = {}                       # op id -> [op_kind, status]
        self.txninfo = {}                      # txn op id -> (lsid hex, first, last txnNumber)
        self.errors = []
        self.counter_ok = 0                    # acknowledged $inc on this worker's counter
        self.counter_failed = 0
        self.counter_id = None
        self.in_flight = None                  # (op_kind, op id, since) of the current op

    def error(self, op_kind, exc, t0, op=None):
        labels = sorted(getattr(exc, "_error_labels", None) or [])
        code = getattr(exc, "code", None)
        details = getattr(exc, "details", None) or {}
        code_name = details.get("codeName") if isinstance(details, dict) else None
        if code is None and isinstance(details, dict):
            code = details.get("code")  # NotMasterError (PyMongo 3.x) has no .code
        if code is None and isinstance(details, dict) and details.get("writeErrors"):
            we = details["writeErrors"][0]
            code = we.get("code")
        self.errors.append(dict(lang=self.lang, cluster=self.cluster, worker=self.kind,
                                op_kind=op_kind, type=type(exc).__name__, code=code,
                                codeName=code_name, labels=labels,
                                msg=str(exc)[:300], t0=t0, t1=time.time(), op=op))


class CommandCounter(monitoring.CommandListener):
    """Counts the commands the driver sent (getMores included) and the failed ones by code."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = collections.Counter()
        self.fail = collections.Counter()
        self.cnf_times = []  # when a getMore failed with a plain CursorNotFound

    def started(self, event):
        with self.lock:
            self.sent[event.command_name] += 1

    def succeeded(self, event):
        pass

    def failed(self, event):
        f = event.failure if isinstance(event.failure, dict) else {}
        code = f.get("code", f.get("errtype", "network"))
        key = "%s:%s" % (event.command_name, code)
        with self.lock:
            if event.command_name == "getMore" and code == 43:
                if "its server" in str(f.get("errmsg", "")):
                    key += ":server-failed"
                else:
                    self.cnf_times.append(time.time())
            self.fail[key] += 1


# --- PyMongo workers --------------------------------------------------------------------------

def new_op():
    return uuid.uuid4().hex


def py_insert_worker(ctx, st, rnd):
    """Retryable writes: inserts with a client _id, inserts whose _id the server makes, and
    $inc on this worker's own counter document."""
    coll = ctx.db.writes
    counters = ctx.db.counters
    while not ctx.stop.is_set():
        r = rnd.random()
        t0 = time.time()
        if r < 0.2:
            st.in_flight = ("py.inc", None, t0)
            try:
                counters.update_one({"_id": st.counter_id}, {"$inc": {"n": 1}})
                st.counter_ok += 1
                st.ops["py.inc", "ok"] += 1
            except pymongo.errors.PyMongoError as e:
                st.counter_failed += 1
                st.ops["py.inc", "failed"] += 1
                st.error("py.inc", e, t0)
            continue
        op = new_op()
        if r < 0.6:
            kind = "py.ins.cid"
            doc = {"_id": "c-" + op, "op": op, "k": kind}
        else:
            kind = "py.ins.sid"
            doc = RawBSONDocument(bson.BSON.encode({"op": op, "k": kind}))
        st.writes[op] = [kind, "pending"]
        st.in_flight = (kind, op, t0)
        try:
            coll.insert_one(doc)
            st.writes[op][1] = "ok"
            st.ops[kind, "ok"] += 1
        except pymongo.errors.PyMongoError as e:
            st.writes[op][1] = "failed"
            st.ops[kind, "failed"] += 1
            st.error(kind, e, t0, op)
    st.in_flight = None


def py_raw_insert_worker(ctx, st, rnd):
    """Writes that are not retryable: an insert command without txnNumber (db.command), which
    mongolb must never send twice. The server makes the _id, so a second execution would show
    as a second document with the same op."""
    while not ctx.stop.is_set():
        op = new_op()
        kind = "py.raw"
        st.writes[op] = [kind, "pending"]
        t0 = time.time()
        st.in_flight = (kind, op, t0)
        try:
            res = ctx.db.command("insert", "writes", documents=[{"op": op, "k": kind}])
            if res.get("n") == 1 and not res.get("writeErrors"):
                st.writes[op][1] = "ok"
                st.ops[kind, "ok"] += 1
            else:
                st.writes[op][1] = "failed"
                st.ops[kind, "failed"] += 1
                err = pymongo.errors.OperationFailure(
                    "insert reply n=%s writeErrors=%s" % (res.get("n"), res.get("writeErrors")),
                    code=(res.get("writeErrors") or [{}])[0].get("code"), details=res)
                st.error(kind, err, t0, op)
        except pymongo.errors.PyMongoError as e:
            st.writes[op][1] = "failed"
            st.ops[kind, "failed"] += 1
            st.error(kind, e, t0, op)
        time.sleep(rnd.uniform(0, 0.01))
    st.in_flight = None


def py_txn_worker(ctx, st, rnd):
    """with_transaction: a pair of inserts (server-made _ids, the same op) around a cursor read
    with batchSize 2 (so getMores run inside the transaction and are in the simulator's log)."""
    coll = ctx.db.writes
    seed = ctx.db.seed
    while not ctx.stop.is_set():
        op = new_op()
        kind = "py.txn"
        st.writes[op] = [kind, "pending"]
        t0 = time.time()
        st.in_flight = (kind, op, t0)

        def body(s, op=op):
            coll.insert_one(RawBSONDocument(bson.BSON.encode({"op": op, "k": kind, "pair": "a"})),
                            session=s)
            got = list(seed.find({}, batch_size=2, session=s).limit(6))
            if len(got) != 6:
                ctx.bad_cursor(st, "find in transaction returned %d of 6" % len(got))
            coll.insert_one(RawBSONDocument(bson.BSON.encode({"op": op, "k": kind, "pair": "b"})),
                            session=s)

        try:
            with ctx.client.start_session() as s:
                lsid = s.session_id["id"].hex()
                first = s._server_session.transaction_id + 1
                try:
                    s.with_transaction(body)
                finally:
                    st.txninfo[op] = (lsid, first, s._server_session.transaction_id, t0,
                                      time.time())
            st.writes[op][1] = "ok"
            st.ops[kind, "ok"] += 1
        except pymongo.errors.PyMongoError as e:
            st.writes[op][1] = "failed"
            st.ops[kind, "failed"] += 1
            st.error(kind, e, t0, op)
    st.in_flight = None


def py_cursor_worker(ctx, st, rnd, secondary=False):
    """Cursors with batchSize 10 over the 200 seed documents, iterated to the end (19 getMores
    each): find and aggregate, on the primary or, with secondary=True, secondaryPreferred."""
    seed = ctx.db.seed
    if secondary:
        seed = seed.with_options(read_preference=SecondaryPreferred())
    while not ctx.stop.is_set():
        t0 = time.time()
        use_agg = rnd.random() < 0.3
        kind = ("py.secread" if secondary else "py.cursor") + (".agg" if use_agg else ".find")
        st.in_flight = (kind, None, t0)
        try:
            if use_agg:
                cur = seed.aggregate([{"$match": {}}], batchSize=BATCH)
            else:
                cur = seed.find({}, batch_size=BATCH)
            ids = [d["_id"] for d in cur]
            if sorted(ids) != list(range(SEED_DOCS)):
                ctx.bad_cursor(st, "%s returned %d documents (%d distinct), expected %d"
                               % (kind, len(ids), len(set(ids)), SEED_DOCS))
            st.ops[kind, "ok"] += 1
            if secondary and rnd.random() < 0.5:
                t0 = time.time()
                ctx.db.writes.with_options(read_preference=SecondaryPreferred()).find_one(
                    {"k": "py.ins.cid"})
                st.ops["py.secread.find_one", "ok"] += 1
        except pymongo.errors.PyMongoError as e:
            st.ops[kind, "failed"] += 1
            st.error(kind, e, t0)
    st.in_flight = None


class PyContext:
    def __init__(self, cluster, uri):
        self.cluster = cluster
        self.listener = CommandCounter()
        self.client = pymongo.MongoClient(uri, retryWrites=True, retryReads=True,
                                          serverSelectionTimeoutMS=20000, socketTimeoutMS=30000,
                                          connectTimeoutMS=5000, maxPoolSize=40,
                                          event_listeners=[self.listener])
        self.db = self.client.soak
        self.stop = threading.Event()
        self.bad = []

    def bad_cursor(self, st, what):
        self.bad.append(dict(cluster=self.cluster, worker=st.name, what=what, t=time.time()))


# --- the stats poller and RSS sampler ---------------------------------------------------------

class SimPoller(threading.Thread):
    """Every 2 s: simTxnLog, then simStats with reset (the transaction log holds 10,000 entries a
    server), summed over the run. Events between the two commands are missing from the
    transaction log only, which can hide a split transaction but never invent one."""

    def __init__(self, sim, stop):
        super().__init__(daemon=True)
        self.sim, self.stop = sim, stop
        self.cmds = collections.defaultdict(collections.Counter)  # server -> command -> n
        self.txn = collections.defaultdict(list)  # (lsid, txnNumber) -> [(server, cmd)]
        self.dedup = 0
        self.cursors_timed_out = 0
        self.polls = self.failed_polls = 0
        self.lock = threading.Lock()

    def poll_once(self):
        try:
            lg = self.sim.command({"simTxnLog": 1}, timeout=3.0)
            stt = self.sim.command({"simStats": 1, "reset": True}, timeout=3.0)
        except (OSError, RuntimeError):
            self.failed_polls += 1
            return
        with self.lock:
            self.polls += 1
            for s in lg["servers"]:
                for e in s["entries"]:
                    if e["inTxn"]:
                        self.txn[(e["lsid"], e["txnNumber"])].append((s["index"], e["cmd"]))
            for s in stt["servers"]:
                for k, v in s["commands"].items():
                    self.cmds[s["index"]][k] += int(v)
                self.cursors_timed_out += int(s.get("cursorsTimedOut", 0))
            self.dedup += int(stt.get("retriedWritesDeduplicated", 0))

    def run(self):
        while not self.stop.wait(2.0):
            self.poll_once()


class Sampler(threading.Thread):
    """VmRSS of each mongolb every second, and whether it is still running."""

    def __init__(self, lbs, stop):
        super().__init__(daemon=True)
        self.lbs, self.stop = lbs, stop
        self.rss = {lb.name: [] for lb in lbs}  # name -> [(t, kB)]

    def run(self):
        while True:
            now = time.monotonic() - T0
            for lb in self.lbs:
                if lb.proc.poll() is not None:
                    if lb.crashed_at is None:
                        lb.crashed_at = now
                    continue
                kb = lb.rss_kb()
                if kb is not None:
                    self.rss[lb.name].append((now, kb))
            if self.stop.wait(1.0):
                return


# --- chaos ------------------------------------------------------------------------------------

class Chaos(threading.Thread):
    def __init__(self, sim, events, stop, rnd):
        super().__init__(daemon=True)
        self.sim, self.events, self.stop, self.rnd = sim, events, stop, rnd
        self.replset = sim.set_name is not None
        self.counts = collections.Counter()
        self.failures = []

    def pause(self, lo, hi):
        self.stop.wait(self.rnd.uniform(lo, hi))

    def run(self):
        self.stop.wait(2.0)  # let the workers get going
        while not self.stop.is_set():
            try:
                self.one_event()
            except Exception as e:  # noqa: BLE001  (a chaos step that failed is reported)
                self.failures.append("%s: %r" % (self.sim.name, e))
                try:
                    self.sim.heal()
                except Exception:  # noqa: BLE001
                    pass
            self.pause(1.0, 3.0)

    def one_event(self):
        sim, rnd = self.sim, self.rnd
        n = len(sim.servers)
        if self.replset:
            choices = [("kill-primary", 3), ("kill-secondary", 2), ("stepdown", 3), ("hang", 2),
                       ("slow", 1), ("freeze-all", 1), ("failpoint", 2)]
        else:
            choices = [("kill", 5), ("hang", 2), ("slow", 1), ("freeze-all", 1),
                       ("failpoint", 2)]
        kind = rnd.choices([c for c, _ in choices], [w for _, w in choices])[0]
        target = rnd.randrange(n)
        if kind in ("kill-primary", "kill-secondary", "stepdown") or (
                self.replset and kind in ("hang", "failpoint")):
            p = sim.primary()
            if kind == "kill-secondary":
                target = rnd.choice([i for i in range(n) if i != p])
            elif p is not None and (kind != "hang" or rnd.random() < 0.5):
                target = p
        self.counts[kind] += 1
        t0 = time.time()
        if kind in ("kill", "kill-primary", "kill-secondary"):
            sim.kill(target)
            self.stop.wait(rnd.uniform(1.0, 4.0))
            sim.revive(target)
            self.events.add(sim.name, kind, target, t0, time.time())
        elif kind == "stepdown":
            r = sim.command({"simStepDown": 1})
            self.events.add(sim.name, kind, target, t0, time.time(),
                            "new primary %s" % r.get("primary"))
        elif kind == "hang":
            sim.set_latency(target, HANG_MS)
            self.stop.wait(rnd.uniform(1.5, 3.0))
            sim.set_latency(target, 0)
            # Replies held before the reset still leave HANG_MS after their request.
            self.events.add(sim.name, kind, target, t0, time.time() + HANG_MS / 1000.0)
        elif kind == "slow":
            ms = rnd.randint(30, 150)
            sim.set_latency(target, ms)
            self.stop.wait(rnd.uniform(2.0, 5.0))
            sim.set_latency(target, 0)
            self.events.add(sim.name, kind, target, t0, time.time(), "%d ms" % ms)
        elif kind == "freeze-all":
            sim.freeze()
            try:
                time.sleep(rnd.uniform(1.0, 3.0))
            finally:
                sim.thaw()
            self.events.add(sim.name, kind, "all", t0, time.time())
        elif kind == "failpoint":
            cmds = ["insert", "update", "find", "aggregate", "getMore", "commitTransaction"]
            variant = rnd.choice(["close", "shutdown", "notprimary"] if self.replset
                                 else ["close", "shutdown"])
            data = {"failCommands": cmds}
            if variant == "close":
                data["closeConnection"] = True
            elif variant == "shutdown":
                data["errorCode"] = 91  # ShutdownInProgress: retryable; mongolb drops the pool
            else:
                data["errorCode"] = 10107  # NotWritablePrimary: "did not run", mongolb re-routes
                data["failCommands"] = ["insert", "update"]
            times = rnd.randint(1, 4)
            sim.failpoint(target, {"times": times}, data)
            self.stop.wait(rnd.uniform(1.0, 3.0))
            sim.failpoint(target, "off")
            self.events.add(sim.name, "failpoint-" + variant, target, t0, time.time(),
                            "times %d" % times)


# --- node workers -----------------------------------------------------------------------------

def start_node(cluster, uri, seconds, outdir, seed):
    out = os.path.join(outdir, "%s-node-ops.json" % cluster)
    stdout = open(os.path.join(outdir, "%s-node.stdout" % cluster), "wb")
    stderr = open(os.path.join(outdir, "%s-node.stderr" % cluster), "wb")
    args = [NODE, os.path.join(HERE, "node_worker.mjs"), "--uri", uri, "--cluster", cluster,
            "--seconds", "%.1f" % seconds, "--grace", str(DRAIN_SECONDS), "--out", out,
            "--seed-docs", str(SEED_DOCS), "--batch", str(BATCH), "--seed", str(seed)]
    if cluster == "rs":
        args.append("--secondary")
    p = spawn(args, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=ROOT)
    return dict(proc=p, out=out, stdout=stdout.name, stderr=stderr.name, cluster=cluster)


def collect_node(n):
    """Reads what a node worker reported; returns (summary, ops file contents) or raises."""
    p = n["proc"]
    try:
        p.wait(DRAIN_SECONDS + 10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise RuntimeError("node worker %s hung past its grace period" % n["cluster"])
    with open(n["stdout"]) as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip().startswith("{")]
    if p.returncode != 0 or not lines:
        with open(n["stderr"]) as f:
            err = f.read()[-2000:]
        raise RuntimeError("node worker %s exited with %s: %s" % (n["cluster"], p.returncode, err))
    summary = json.loads(lines[-1])
    with open(n["out"]) as f:
        detail = json.load(f)
    return summary, detail


# --- the audit --------------------------------------------------------------------------------

def read_back(lb_uri):
    """Every document of soak.writes and soak.counters, through mongolb (3 attempts)."""
    last = None
    for _ in range(3):
        client = pymongo.MongoClient(lb_uri, serverSelectionTimeoutMS=20000,
                                     socketTimeoutMS=60000)
        try:
            db = client.soak
            writes = list(db.writes.find({}, {"op": 1, "k": 1, "pair": 1}, batch_size=5000))
            counters = {d["_id"]: d.get("n", 0) for d in db.counters.find({})}
            return writes, counters
        except pymongo.errors.PyMongoError as e:
            last = e
            time.sleep(1)
        finally:
            client.close()
    raise last


def direct_count(sim):
    """The number of soak.writes documents, asked of the simulator directly (not via mongolb)."""
    idx = sim.primary() if sim.set_name else 0
    h, p = sim.addr(idx if idx is not None else 0)
    client = pymongo.MongoClient("mongodb://%s:%d/?directConnection=true" % (h, p),
                                 serverSelectionTimeoutMS=10000)
    try:
        return client.soak.writes.count_documents({})
    finally:
        client.close()


def txn_history(poller, info):
    """The simulator's log of the transactions one with_transaction used: {txnNumber: [(server,
    command)]} for txnNumbers first..last of its lsid."""
    if not info or info[0] is None:
        return {}
    lsid, first, last = info[:3]
    out = {}
    with poller.lock:
        for n in range(int(first or 0), int(last or 0) + 1):
            e = poller.txn.get((lsid, n))
            if e:
                out[n] = list(e)
    return out


def audit_writes(cluster, records, txninfo, poller, docs, counters_found, counter_expect):
    """records: op -> (kind, status) from every worker of the cluster. Returns a dict."""
    by_op = collections.defaultdict(list)
    for d in docs:
        if "op" in d:
            by_op[d["op"]].append(d)
    res = dict(lost=[], dup=[], torn=[], phantom=[], acked=0, unknown_applied=0,
               unknown_absent=0, per_kind=collections.Counter())
    for op, (kind, status) in records.items():
        got = by_op.get(op, [])
        res["per_kind"][kind, status] += 1
        if kind.endswith(".txn"):
            pairs = collections.Counter(d.get("pair") for d in got)
            if pairs["a"] > 1 or pairs["b"] > 1:
                hist = txn_history(poller, txninfo.get(op))
                committed = {n: sorted({srv for srv, c in e if c == "commitTransaction"})
                             for n, e in hist.items()}
                res["dup"].append(dict(cluster=cluster, kind=kind, op=op, status=status,
                                       pairs=dict(pairs), lsid=(txninfo.get(op) or [None])[0],
                                       commits_by_txnNumber=committed, log=hist))
            elif pairs["a"] != pairs["b"]:
                res["torn"].append(dict(cluster=cluster, kind=kind, op=op, status=status,
                                        pairs=dict(pairs)))
            elif status == "ok" and pairs["a"] == 0:
                res["lost"].append(dict(cluster=cluster, kind=kind, op=op, status=status))
            n = pairs["a"]
        else:
            if len(got) > 1:
                res["dup"].append(dict(cluster=cluster, kind=kind, op=op, status=status,
                                       copies=len(got)))
            elif status == "ok" and not got:
                res["lost"].append(dict(cluster=cluster, kind=kind, op=op, status=status))
            n = len(got)
        if status == "ok":
            res["acked"] += 1
        elif n:
            res["unknown_applied"] += 1
        else:
            res["unknown_absent"] += 1
    for op in by_op:
        if op not in records:
            res["phantom"].append(dict(cluster=cluster, op=op, copies=len(by_op[op])))
    for cid, (ok, failed) in counter_expect.items():
        n = counters_found.get(cid, 0)
        if n < ok:
            res["lost"].append(dict(cluster=cluster, kind="inc", counter=cid,
                                    what="n=%d < acknowledged %d" % (n, ok)))
        elif n > ok + failed:
            res["dup"].append(dict(cluster=cluster, kind="inc", counter=cid,
                                   what="n=%d > acknowledged %d + failed %d" % (n, ok, failed)))
    return res


def analyse_txn_log(cluster, poller):
    """In-transaction commands per (lsid, txnNumber) and the servers that received them (the
    simulator logs every command that carries a txnNumber except getMore). A statement (find,
    insert) on a server other than the transaction's first one is a misrouted transaction
    command; commit/abort elsewhere is counted apart (retried after the pinned server failed,
    or after a step-down)."""
    split, commit_elsewhere, txns = [], 0, 0
    with poller.lock:
        items = list(poller.txn.items())
    for key, entries in items:
        txns += 1
        stmt = [(srv, c) for srv, c in entries if c not in ("commitTransaction",
                                                             "abortTransaction")]
        servers = {srv for srv, _ in stmt}
        first = stmt[0][0] if stmt else None
        if len(servers) > 1:
            split.append((cluster, key, entries))
        if first is not None and any(c in ("commitTransaction", "abortTransaction") and
                                     srv != first for srv, c in entries):
            commit_elsewhere += 1
    return dict(split=split, commit_elsewhere=commit_elsewhere, txns=txns)


# Errors after which a non-retryable write may or may not have run: network errors, and a
# server shutting down or stepping down while it ran.
NETWORKISH = {6, 7, 89, 91, 9001, 11600, 11602, 189, 262}
# "Not writable primary": the command did not run; README says mongolb re-routes it.
NOT_RUN = {10107, 13435, 13436}


def classify(err, events):
    """-> (class, reason). class: expected | unexpected | misroute | duplicate."""
    code, msg, labels = err.get("code"), err.get("msg") or "", err.get("labels") or []
    kind, cluster = err["op_kind"], err["cluster"]
    etype = err.get("type", "")
    cursor_op = ".cursor." in kind or ".secread." in kind
    if code == 43 or "CursorNotFound" in etype:
        if kind.endswith(".txn") and "TransientTransactionError" not in labels:
            return "unexpected", ("CursorNotFound inside a transaction without the "
                                  "TransientTransactionError label: with_transaction cannot "
                                  "retry")
        if "its server" in msg:
            return "expected", "CursorNotFound: the cursor's server failed during its getMore"
        ev = events.cursor_losing_overlap(cluster, err["t0"], err["t1"])
        if ev:
            return "expected", ("CursorNotFound: forgotten after its server failed (%s)"
                                % ev["kind"])
        return "misroute", "CursorNotFound with no server failure during the cursor's life"
    if cursor_op and code == 6 and "getMore of cursor" in msg:
        # mongolb's answer (since the I/O rewrite) when the cursor's server fails under a getMore
        return "expected", "getMore: the cursor's server failed during it (HostUnreachable)"
    if code == 11000 and kind.endswith(("ins.cid", ".txn")):
        return "duplicate", "DuplicateKey: a retried write was executed a second time"
    if "UnknownTransactionCommitResult" in labels:
        return "expected", "transaction commit outcome unknown (UnknownTransactionCommitResult)"
    if cursor_op and (code in (91, 11600) or (code == 6 and (" answered 91" in msg or
                                                            " answered 11600" in msg))) and \
            events.in_window(cluster, err["t1"], {"failpoint-shutdown"}):
        # mongolb relays a server's "shutting down" as HostUnreachable (a state-change code would
        # make the driver drop its whole pool to mongolb), with the server's answer in the text.
        return "expected", "cursor's server answered a getMore with ShutdownInProgress"
    if code in NOT_RUN and not kind.endswith(".txn"):
        return "unexpected", ("%s %s: the command did not run, mongolb should have sent it to "
                              "the new primary" % (code, err.get("codeName") or ""))
    if kind.endswith(".raw") and "RetryableWriteError" not in labels and (
            code in NETWORKISH or "AutoReconnect" in etype or "Network" in etype or
            "Timeout" in etype):
        return "expected", "non-retryable write failed during a fault: outcome unknown"
    return "unexpected", "%s %s %s%s" % (etype, code if code is not None else "",
                                         err.get("codeName") or "",
                                         " [%s]" % ",".join(labels) if labels else "")


def log_lines_between(lb, t0, t1, words):
    """mongolb log lines stamped within [t0, t1] (wall clock) that contain one of words."""
    out = []
    for line in lb.log_text().splitlines():
        try:
            t = datetime.datetime.strptime(line[:24], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            continue
        if t0 <= t <= t1 and any(w in line for w in words):
            out.append(line)
    return out


def explain_dup_txn(item):
    """Why a transaction's pair is there twice, from the simulator's transaction log."""
    commits = item.get("commits_by_txnNumber") or {}
    moved = {n: srv for n, srv in commits.items() if len(srv) > 1}
    ran = [n for n, srv in commits.items() if srv]
    if moved and len(ran) > 1:
        n, srv = next(iter(moved.items()))
        return ("txnNumber %s was committed on server %s, then its commit was retried on server(s)"
                " %s, which did not know the transaction and answered NoSuchTransaction with"
                " TransientTransactionError, so the driver ran the transaction again (txnNumbers"
                " %s all committed). mongosim records outcomes deployment-wide and answers a"
                " commit retried with its recoveryToken from that record, as a real mongos does,"
                " so this is a real duplicate: look at how the retried commit was routed."
                % (n, srv[0], srv[1:], sorted(ran, key=int)))
    return "two attempts of the same with_transaction committed (txnNumbers %s)" % sorted(ran)


# --- main -------------------------------------------------------------------------------------

class Interrupted(Exception):
    pass


def _on_signal(signum, frame):
    raise Interrupted("signal %d" % signum)


def fmt_table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        out.append("  ".join(str(c).rjust(w) if isinstance(c, (int, float)) else str(c).ljust(w)
                             for c, w in zip(r, widths)))
    return "\n".join(out)


def main():
    # Installed explicitly: a shell starting this in the background would otherwise leave
    # SIGINT ignored, and Ctrl-C / kill -INT must stop the soak and everything it started.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    for b in (MONGOLB, MONGOSIM):
        if not os.access(b, os.X_OK):
            print("soak: %s is missing: run make (or set MONGOLB/MONGOSIM)" % b, file=sys.stderr)
            return 2
    outdir = os.environ.get("SOAK_DIR") or tempfile.mkdtemp(prefix="mongolb-soak-")
    os.makedirs(outdir, exist_ok=True)
    rnd = random.Random(SEED)
    phase = phase_seconds()
    log("seed %d, %.0f s of traffic and chaos (SOAK_SECONDS=%g), logs in %s"
        % (SEED, phase, SOAK_SECONDS, outdir))
    log("mongolb %s, mongosim %s" % (MONGOLB, MONGOSIM))
    failed_reasons = []
    report = {}

    def watchdog():
        # Normal runs end well within SOAK_SECONDS; this only fires if something hangs.
        if not done.wait(SOAK_SECONDS + HARD_LIMIT_EXTRA):
            log("still running %.0f s after the start: stopping (time bound)"
                % (SOAK_SECONDS + HARD_LIMIT_EXTRA))
            failed_reasons.append("exceeded the time bound (a hang: see the logs)")
            os.kill(os.getpid(), signal.SIGTERM)

    done = threading.Event()
    threading.Thread(target=watchdog, daemon=True).start()
    try:
        ok = run(outdir, rnd, phase, failed_reasons, report)
    except (Interrupted, KeyboardInterrupt) as e:
        log("interrupted (%s): stopping everything" % (e or "Ctrl-C"))
        ok = False
        failed_reasons.append("interrupted")
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        ok = False
        failed_reasons.append("soak error (traceback above)")
    finally:
        done.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup()
    with open(os.path.join(outdir, "report.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    if ok:
        print("\nSOAK PASSED (seed %d)" % SEED)
        if os.environ.get("SOAK_KEEP") != "1" and not os.environ.get("SOAK_DIR"):
            shutil.rmtree(outdir, ignore_errors=True)
        else:
            print("logs kept in %s" % outdir)
        return 0
    print("\nSOAK FAILED (seed %d): %s" % (SEED, "; ".join(failed_reasons)))
    print("logs kept in %s" % outdir)
    return 1


def run(outdir, rnd, phase, failed_reasons, report):
    events = Events()
    sims, lbs = {}, {}
    log("starting mongosim --mongos 3 and mongosim --replset rs0 --members 3")
    sims["ms"] = SimCluster("ms", ["--mongos", "3"], outdir)
    sims["rs"] = SimCluster("rs", ["--replset", "rs0", "--members", "3"], outdir)
    lbs["ms"] = Mongolb("ms", sims["ms"].servers, outdir, {"mode": "mongos"})
    lbs["rs"] = Mongolb("rs", sims["rs"].servers[:1], outdir,
                        {"mode": "replicaset", "replica_set": "rs0"})
    lbs["ms"].wait_known(3)
    lbs["rs"].wait_known(3, types=("RSPrimary", "RSSecondary"))
    log("mongolb ms on %s, rs on %s: every server known" % (lbs["ms"].uri, lbs["rs"].uri))

    # Workers, per deployment.
    kinds = {"ms": [("insert", 2), ("raw", 1), ("txn", 2), ("cursor", 2)],
             "rs": [("insert", 2), ("raw", 1), ("txn", 2), ("cursor", 1), ("secread", 2)]}
    ctxs, stats = {}, []
    for c, lb in lbs.items():
        ctx = ctxs[c] = PyContext(c, lb.uri)
        db = ctx.db
        db.writes.drop()
        db.seed.drop()
        db.counters.drop()
        db.seed.insert_many([{"_id": i, "v": "x" * 50} for i in range(SEED_DOCS)])
        db.writes.insert_one({"_id": "marker", "k": "marker"})
        for kind, n in kinds[c]:
            for j in range(n):
                st = WorkerStats("py", c, kind, "py.%s.%s.%d" % (c, kind, j))
                if kind == "insert":
                    st.counter_id = "py-%s-%d" % (c, j)
                    db.counters.insert_one({"_id": st.counter_id, "n": 0})
                stats.append(st)
        for j in range(2):
            db.counters.insert_one({"_id": "node-%d" % j, "n": 0})
    log("seeded %d documents per deployment; starting workers and chaos" % SEED_DOCS)

    stop_chaos = threading.Event()
    stop_bg = threading.Event()
    sampler = Sampler(list(lbs.values()), stop_bg)
    stop_poll = threading.Event()
    pollers = {c: SimPoller(s, stop_poll) for c, s in sims.items()}
    nodes = []
    if USE_NODE:
        for c, lb in lbs.items():
            nodes.append(start_node(c, lb.uri, phase, outdir, rnd.randrange(1 << 30)))
    sampler.start()
    for p in pollers.values():
        p.start()
    fns = {"insert": py_insert_worker, "raw": py_raw_insert_worker, "txn": py_txn_worker,
           "cursor": py_cursor_worker,
           "secread": lambda ctx, st, r: py_cursor_worker(ctx, st, r, secondary=True)}
    threads = []
    for st in stats:
        t = threading.Thread(target=fns[st.kind], args=(ctxs[st.cluster], st,
                                                        random.Random(rnd.random())), daemon=True)
        t.start()
        threads.append((t, st))
    chaos = [Chaos(sims[c], events, stop_chaos, random.Random(rnd.random())) for c in sims]
    for ch in chaos:
        ch.start()

    t_end = time.monotonic() + phase
    next_note = time.monotonic() + 15
    while time.monotonic() < t_end:
        time.sleep(0.5)
        if any(lb.proc.poll() is not None for lb in lbs.values()):
            log("a mongolb exited during the run: stopping early")
            break
        if time.monotonic() >= next_note:
            next_note += 15
            done = sum(sum(v for (k, s), v in st.ops.items()) for st in stats)
            rss = ", ".join("%s %s kB" % (n, v[-1][1] if v else "?")
                            for n, v in sampler.rss.items())
            log("%d Python operations so far; chaos events %d; mongolb RSS %s"
                % (done, len(events.items), rss))

    log("traffic phase over: stopping chaos and workers, healing every fault")
    stop_chaos.set()
    for ctx in ctxs.values():
        ctx.stop.set()
    for ch in chaos:
        ch.join(15)
    for s in sims.values():
        try:
            s.heal()
        except Exception as e:  # noqa: BLE001
            failed_reasons.append("could not heal %s: %r" % (s.name, e))
    hung = []
    drain_deadline = time.monotonic() + DRAIN_SECONDS
    for t, st in threads:
        t.join(max(0.1, drain_deadline - time.monotonic()))
        if t.is_alive():
            hung.append("%s stuck in %s since %.0f s" % (st.name, st.in_flight,
                                                         time.time() - st.in_flight[2])
                        if st.in_flight else st.name)
    node_results = []
    for n in nodes:
        try:
            node_results.append(collect_node(n))
        except RuntimeError as e:
            failed_reasons.append(str(e))
    # mongolb must see every server again before the audit.
    for c, lb in lbs.items():
        if lb.proc.poll() is None:
            try:
                lb.wait_known(3, types=None if c == "ms" else ("RSPrimary", "RSSecondary"),
                              timeout=20)
            except RuntimeError as e:
                failed_reasons.append("after healing: %s" % str(e).splitlines()[0])
    # The last simulator counts and mongolb counters, before the audit's own reads add to them.
    stop_poll.set()
    for p in pollers.values():
        p.join(10)
        p.poll_once()
    final_status = {}
    for c, lb in lbs.items():
        try:
            final_status[c] = lb.status()
        except OSError as e:
            final_status[c] = {"error": repr(e)}

    # --- the audit ---
    records = {c: {} for c in sims}
    txninfo = {c: {} for c in sims}
    counter_expect = {c: {} for c in sims}
    cnf_times = {c: [] for c in sims}     # plain CursorNotFound getMore failures, any driver
    errors = []
    requests = collections.Counter()      # (lang, cluster, op kind, outcome) -> n
    cmd_sent = collections.Counter()
    cmd_failed = collections.Counter()
    for st in stats:
        for op, (kind, status) in st.writes.items():
            records[st.cluster][op] = (kind, status)
        txninfo[st.cluster].update(st.txninfo)
        if st.counter_id:
            counter_expect[st.cluster][st.counter_id] = (st.counter_ok, st.counter_failed)
        for (k, outcome), v in st.ops.items():
            requests["python", st.cluster, k, outcome] += v
        errors.extend(st.errors)
    for c, ctx in ctxs.items():
        with ctx.listener.lock:
            for k, v in ctx.listener.sent.items():
                cmd_sent["python", c, k] += v
            for k, v in ctx.listener.fail.items():
                cmd_failed["python", c, k] += v
            cnf_times[c].extend(ctx.listener.cnf_times)
    bad_cursors = [b for ctx in ctxs.values() for b in ctx.bad]
    node_summaries = []
    for summary, detail in node_results:
        c = summary["cluster"]
        node_summaries.append(summary)
        for row in detail["ops"]:
            op, kind, status = row[:3]
            records[c][op] = (kind, status)
            if len(row) >= 8:
                txninfo[c][op] = tuple(row[3:8])
        for cid, (ok, failed) in detail["counters"].items():
            counter_expect[c][cid] = (ok, failed)
        for k, v in summary["requests"].items():
            kind, outcome = k.rsplit(":", 1)
            requests["node", c, kind, outcome] += v
        for k, v in summary["commands"].items():
            cmd_sent["node", c, k] += v
        for k, v in summary["commandsFailed"].items():
            cmd_failed["node", c, k] += v
        cnf_times[c].extend(detail.get("cnfTimes", []))
        errors.extend(detail["errors"])
        bad_cursors.extend(detail.get("badCursors", []))
        hung.extend(summary.get("hung", []))

    audits, txnlogs, direct = {}, {}, {}
    for c, lb in lbs.items():
        txnlogs[c] = analyse_txn_log(c, pollers[c])
        try:
            docs, counters = read_back(lb.uri)
        except Exception as e:  # noqa: BLE001
            failed_reasons.append("could not read %s back through mongolb: %r" % (c, e))
            continue
        audits[c] = audit_writes(c, records[c], txninfo[c], pollers[c], docs, counters,
                                 counter_expect[c])
        audits[c]["docs"] = len(docs)
        try:
            direct[c] = direct_count(sims[c])
        except Exception as e:  # noqa: BLE001
            direct[c] = "error %r" % e
        if direct[c] != len(docs):
            failed_reasons.append("%s: %d documents through mongolb, %s directly"
                                  % (c, len(docs), direct[c]))

    stop_bg.set()
    sampler.join(3)
    for ctx in ctxs.values():
        ctx.client.close()
    exit_codes = {c: lb.stop() for c, lb in lbs.items()}

    # --- classify errors ---
    classes = collections.Counter()
    by_reason = collections.Counter()
    for e in errors:
        cl, reason = classify(e, events)
        e["class"], e["reason"] = cl, reason
        classes[cl] += 1
        by_reason[cl, e["lang"], e["cluster"], reason] += 1

    # --- misrouted getMores ---
    routing = {}
    for c in lbs:
        ctr = final_status.get(c, {}).get("counters", {})
        local = int(ctr.get("cursorNotFound", 0))
        plain = len(cnf_times[c])
        refused = max(0, plain - local)
        outside = sum(1 for t in cnf_times[c] if not events.in_window(c, t))
        unexplained = sum(1 for e in errors if e["cluster"] == c and e["class"] == "misroute")
        routing[c] = dict(local=local, plain=plain, refused=refused, outside=outside,
                          unexplained=unexplained,
                          misrouted=max(unexplained, min(refused, outside)))

    # --- report ---
    print()
    print("=" * 100)
    print("mongolb chaos soak: %.0f s of traffic and chaos, seed %d" % (phase, SEED))
    print("=" * 100)
    agg = collections.defaultdict(lambda: [0, 0])
    for (lang, c, kind, outcome), v in requests.items():
        agg[lang, c, kind][0 if outcome == "ok" else 1] += v
    rows = [(lang, c, kind, ok, bad) for (lang, c, kind), (ok, bad) in sorted(agg.items())]
    print("\nOperations by worker kind (a logical operation each: a cursor read to its end counts"
          "\nonce, a with_transaction once however often it ran; wire commands are below)")
    print(fmt_table(rows + [("total", "", "", sum(r[3] for r in rows), sum(r[4] for r in rows))],
                    ("driver", "cluster", "operation", "ok", "failed")))
    rows = []
    for (lang, c, name), v in sorted(cmd_sent.items()):
        if name in ("insert", "update", "find", "aggregate", "getMore", "commitTransaction",
                    "abortTransaction", "killCursors"):
            fails = collections.Counter()
            for (l2, c2, k), n in cmd_failed.items():
                if l2 == lang and c2 == c and k.split(":")[0] == name:
                    fails[k.split(":", 1)[1]] += n
            rows.append((lang, c, name, v, sum(fails.values()),
                         " ".join("%s:%d" % kv for kv in sorted(fails.items()))))
    print("\nWire commands the drivers sent to mongolb (command monitoring), and the replies that"
          "\nwere errors (by code; the driver may have retried them, so most are not app-visible)")
    print(fmt_table(rows, ("driver", "cluster", "command", "sent", "failed", "failures by code")))

    print("\nApp-visible errors (operations that raised), by class")
    rows = [(cl, lang, c, reason, v) for (cl, lang, c, reason), v in
            sorted(by_reason.items(), key=lambda x: (x[0][0], -x[1]))]
    print(fmt_table(rows, ("class", "driver", "cluster", "error", "n")) if rows else "  none")
    print("""  expected   = outcomes the drivers' specifications leave to the application during a
               failover: a non-retryable write whose server failed after it may have run
               (mongolb never sends it twice), a cursor whose server failed under its getMore
               (HostUnreachable, or CursorNotFound "its server failed" from older builds) or
               was forgotten with its failed server (CursorNotFound), a commit whose outcome is
               unknown. Not a failure.
  unexpected = an operation mongolb promises to absorb failed (a retryable write or read, a
               with_transaction). Fails the run above SOAK_MAX_UNEXPECTED_ERRORS=%d: chaos
               impairs one of three servers at a time for <= 4 s, and freezes a whole
               deployment for <= 3 s, far below server_selection_timeout_ms = %d, so README's
               retry table covers every one of these operations.
  misroute   = CursorNotFound although no server of the deployment failed while the cursor
               was open (counted under misrouted getMores below).
  duplicate  = DuplicateKey on a retried insert or transaction: a retry executed again.""" %
          (MAX_UNEXPECTED, SELECTION_TIMEOUT_MS))

    lost = sum(len(a["lost"]) for a in audits.values())
    dup = sum(len(a["dup"]) for a in audits.values()) + classes["duplicate"]
    torn = sum(len(a["torn"]) for a in audits.values())
    phantom = sum(len(a["phantom"]) for a in audits.values())
    print("\nWrites audit (everything read back through mongolb after healing every fault)")
    rows = []
    for c, a in audits.items():
        rows.append((c, a["docs"], direct.get(c), a["acked"], a["unknown_applied"],
                     a["unknown_absent"], len(a["lost"]), len(a["dup"]), len(a["torn"]),
                     len(a["phantom"])))
    print(fmt_table(rows, ("cluster", "docs via mongolb", "docs direct", "acknowledged",
                           "failed+applied", "failed+absent", "lost", "duplicated", "torn txn",
                           "phantom")))
    print("""  acknowledged: writes whose operation succeeded (insert, raw insert, with_transaction
  pair); failed+applied / failed+absent: writes whose operation raised, found / not found.
  lost = acknowledged but missing (or a counter below its acknowledged $incs); duplicated = an
  op id present twice (server-made _ids, so a second execution is a second document), a
  transaction pair present twice, a counter above acknowledged + failed $incs, or DuplicateKey
  on a retry (%d); torn = half a pair; phantom = an op id no worker wrote.
  docs direct: the same collection counted on the simulator without mongolb.""" %
          classes["duplicate"])
    for c, a in audits.items():
        for item in (a["lost"] + a["dup"] + a["torn"] + a["phantom"])[:10]:
            shown = {k: v for k, v in item.items() if k != "log"}
            print("    %s" % json.dumps(shown, default=str)[:1000])
            if "commits_by_txnNumber" in item:
                print("      why: %s" % explain_dup_txn(item))
                info = txninfo[c].get(item["op"])
                if info and len(info) >= 5:
                    for line in log_lines_between(lbs[c], info[3] - 0.5, info[4] + 0.5,
                                                  ("commitTransaction", "marked unknown"))[:8]:
                        print("      mongolb: %s" % line)

    print("\nmongolb RSS (VmRSS of each mongolb, sampled every second)")
    rows = []
    step = max(1, max(len(v) for v in sampler.rss.values()) // 10)
    for name, samples in sampler.rss.items():
        kb = [v for _, v in samples]
        if kb:
            rows.append((name, len(kb), min(kb), max(kb), kb[-1],
                         " ".join(str(v) for _, v in samples[::step])))
    print(fmt_table(rows, ("mongolb", "samples", "min kB", "max kB", "last kB",
                           "timeline kB (every %d s)" % step)))

    print("\nCursors and routing")
    mis_total = sum(r["misrouted"] for r in routing.values())
    split = sum(len(t["split"]) for t in txnlogs.values())
    rows = []
    for c in lbs:
        fs = final_status.get(c, {})
        ctr = fs.get("counters", {})
        cur = fs.get("cursors", {})
        gm_sim = sum(v.get("getMore", 0) for v in pollers[c].cmds.values())
        gm_app = sum(v for (lang, cc, k), v in cmd_sent.items() if cc == c and k == "getMore")
        r = routing[c]
        rows.append((c, gm_app, ctr.get("getMoresRouted"), gm_sim, r["local"], r["refused"],
                     r["outside"], r["unexplained"], r["misrouted"], ctr.get("misroutesAvoided"),
                     cur.get("idCollisions")))
    print(fmt_table(rows, ("cluster", "getMores sent", "routed", "reached sims",
                           "CNF by mongolb", "CNF by a sim", "CNF outside faults",
                           "app CNF unexplained", "misrouted", "misroutes avoided",
                           "id collisions")))
    print("""  getMores sent: by the drivers (command monitoring); routed: mongolb's getMoresRouted;
  reached sims: the simulators' getMore counts (simStats, summed every 2 s).
  CNF by mongolb: CursorNotFound mongolb answered itself for a cursor it no longer knows
  (mongolbStatus counters.cursorNotFound). CNF by a sim: getMores that failed with a plain
  CursorNotFound (drivers' command monitoring; "its server failed" ones excluded) minus CNF by
  mongolb = getMores a simulator did not recognise. Simulated cursor ids are random 63-bit
  numbers per server, so every getMore sent to a server that did not open the cursor is one
  of these; the only legitimate other source is a server restarted (simKill/simRevive) under
  a live cursor. CNF outside faults: plain CursorNotFound failures at a time when no server
  of that deployment was down, hung, frozen or failpointed. app CNF unexplained: app-visible
  CursorNotFound with no such fault during the cursor's life.
  misrouted = max(app CNF unexplained, min(CNF by a sim, CNF outside faults)): 0 when no
  simulator ever refused a cursor.""")
    print("  misrouted getMores: %d; transactions with statements on 2 servers (simTxnLog): %d;"
          " transactions committed/aborted on another server than their statements: %d;"
          " retried writes the simulator deduplicated: %d; simulator cursors timed out: %d"
          % (mis_total, split, sum(t["commit_elsewhere"] for t in txnlogs.values()),
             sum(p.dedup for p in pollers.values()),
             sum(p.cursors_timed_out for p in pollers.values())))
    for c, t in txnlogs.items():
        for _, (lsid, n), entries in t["split"][:5]:
            print("    %s: transaction lsid %s txnNumber %s: %s" % (
                c, lsid, n, ", ".join("%s on server %d" % (cmd, srv) for srv, cmd in entries)))
            for op, info in txninfo[c].items():
                if info and info[0] == lsid and int(info[1]) <= n <= int(info[2]) and \
                        len(info) >= 5:
                    for line in log_lines_between(lbs[c], info[3] - 0.5, info[4] + 0.5,
                                                  ("pin", "forgot", "marked unknown"))[:6]:
                        print("      mongolb: %s" % line)
                    break
        if t["split"]:
            print("      (the statements after the failure reached another server: mongolb forgot"
                  " the transaction's pin with the failed server and routed the next statement"
                  " as a new write, where README says it answers NoSuchTransaction itself)")
    if bad_cursors:
        print("  cursors that returned wrong data: %d, e.g. %s" % (len(bad_cursors),
                                                                bad_cursors[:3]))

    print("\nChaos events (servers: %s)" % "; ".join(
        "%s %s" % (c, " ".join("%d=%s" % (i, a) for i, a in enumerate(s.servers)))
        for c, s in sims.items()))
    ev_count = collections.Counter((e["cluster"], e["kind"]) for e in events.items)
    print(fmt_table([(c, k, v) for (c, k), v in sorted(ev_count.items())],
                    ("cluster", "event", "n")))
    chaos_fail = [f for ch in chaos for f in ch.failures]
    for f in chaos_fail:
        print("  chaos step failed: %s" % f)

    print("\nmongolb")
    for c, lb in lbs.items():
        fs = final_status.get(c, {})
        ctr = fs.get("counters", {})
        text = lb.log_text()
        levels = collections.Counter()
        for line in text.splitlines():
            parts = line.split()
            if len(parts) > 2:
                levels[parts[1]] += 1
        print("  %s: exit %s; requests %s, retries %s, errors returned %s, backend connects %s"
              " (failed %s), bad frames %s; log lines by level %s; log %s"
              % (c, exit_codes[c], ctr.get("requests"), ctr.get("retries"),
                 ctr.get("errorsReturned"), ctr.get("backendConnects"),
                 ctr.get("backendConnectFailures"), ctr.get("badFrames"), dict(levels),
                 lb.log_path))
        for bad in ("AddressSanitizer", "runtime error:", "Segmentation", "Assertion"):
            if bad in text:
                failed_reasons.append("mongolb %s log mentions %r" % (c, bad))
        if lb.crashed_at is not None:
            failed_reasons.append("mongolb %s exited during the run (at %.0f s)"
                                  % (c, lb.crashed_at))

    # --- verdict ---
    unexpected = classes["unexpected"]
    for c, code in exit_codes.items():
        if code != 0:
            failed_reasons.append("mongolb %s: exit %s (crash or unclean stop)" % (c, code))
    if lost:
        failed_reasons.append("%d lost writes" % lost)
    if dup:
        failed_reasons.append("%d duplicated writes" % dup)
    if torn:
        failed_reasons.append("%d torn transactions" % torn)
    if phantom:
        failed_reasons.append("%d writes nobody made" % phantom)
    if mis_total:
        failed_reasons.append("%d misrouted getMores" % mis_total)
    if split:
        failed_reasons.append("%d transactions split across servers" % split)
    if bad_cursors:
        failed_reasons.append("%d cursors returned wrong data" % len(bad_cursors))
    if hung:
        failed_reasons.append("hung workers: %s" % "; ".join(hung))
    if unexpected > MAX_UNEXPECTED:
        failed_reasons.append("%d unexpected app-visible errors (threshold %d)"
                              % (unexpected, MAX_UNEXPECTED))
    if chaos_fail:
        failed_reasons.append("%d chaos steps failed" % len(chaos_fail))

    with open(os.path.join(outdir, "errors.jsonl"), "w") as f:
        for e in errors:
            f.write(json.dumps(e, default=str) + "\n")
    with open(os.path.join(outdir, "events.jsonl"), "w") as f:
        for e in events.items:
            f.write(json.dumps(e) + "\n")
    report.update(dict(seed=SEED, phase=phase,
                       requests={"|".join(k): v for k, v in requests.items()},
                       errors=dict(classes), lost=lost, duplicated=dup, torn=torn,
                       misrouted=mis_total, routing=routing,
                       audits={c: {k: v for k, v in a.items() if k != "per_kind"}
                               for c, a in audits.items()},
                       rss={n: [v for _, v in s] for n, s in sampler.rss.items()},
                       exit_codes=exit_codes, failed=failed_reasons, node=node_summaries,
                       final_status=final_status))
    return not failed_reasons

if __name__ == "__main__":
    sys.exit(main())
