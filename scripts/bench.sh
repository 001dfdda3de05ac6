#!/usr/bin/env bash
# Direct-versus-proxied benchmark, run by "make bench" after "make all".
#
# Starts one simulated mongos (build/mongosim --mongos 1) and mongolb in front of it, then runs
# build/mlbench for each workload (ping, find_id, cursor1000) with 1 and 64 client connections,
# once straight at the simulator and once through mongolb, and prints a table with the proxy's
# cost: throughput ratio and the p50 latency it adds. One mongos keeps the two paths comparable.
# A second row set runs the proxied workloads in front of three mongos. A third one reads from
# the secondaries of a simulated three-member replica set (--read-pref secondary): find_id and
# cursor1000 straight at one secondary, and through mongolb in replicaset mode, which spreads
# them over both secondaries. The TLS rows run the three workloads over TLS: straight at a
# TLS-only simulated mongos, and through mongolb with TLS on both legs (applications to mongolb,
# mongolb to the simulator), with certificates made for the run by tests/integration/tls_certs.py.
# mlbench opens its connections, handshakes included, before a run starts. A last section measures
# the simulator's own capacity with pipelined requests.
#
# Environment: BUILD (default build), BENCH_SECONDS (default 3) per run, BENCH_THREE=0 to skip
# the three-mongos rows, BENCH_RS=0 to skip the replica-set rows, BENCH_TLS=0 to skip the TLS
# rows.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

SECS=${BENCH_SECONDS:-3}
WARMUP_MS=300
lib_require mongosim mongolb mlbench
RESULTS="$LIB_TMP/results.jsonl"
: >"$RESULTS"
FAILED=0

# run_one LABEL TARGET URI PID MLBENCH_ARGS...: runs mlbench and appends its JSON, tagged with
# the row set (LABEL) and target, and the share of a CPU core that process PID used during the
# run, to $RESULTS. A failed run is recorded and reported at the end.
run_one() {
  local set=$1 target=$2 uri=$3 pid=$4
  shift 4
  local out rc=0 t0 t1 c0 c1
  t0=$(date +%s%N)
  c0=$(cpu_ticks "$pid")
  out=$("$MLBENCH" --uri "$uri" --warmup-ms "$WARMUP_MS" "$@" 2>"$LIB_TMP/mlbench.err") || rc=$?
  c1=$(cpu_ticks "$pid")
  t1=$(date +%s%N)
  if [ "$rc" -ge 2 ] || [ -z "$out" ]; then
    FAILED=1
    echo "  FAILED: mlbench $* against $target ($uri): $(tr '\n' ' ' <"$LIB_TMP/mlbench.err")" >&2
    out='{"failed":true}'
  elif [ "$rc" -eq 1 ]; then
    echo "  errors: mlbench $* against $target: $(head -n 1 "$LIB_TMP/mlbench.err")" >&2
  fi
  "$PY" -c 'import json, sys
r = json.loads(sys.argv[1])
r.update(set=sys.argv[2], target=sys.argv[3], args=sys.argv[4])
ticks, hz, ns = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
r["cpu"] = ticks / hz / (ns / 1e9) if ns > 0 else 0
print(json.dumps(r))' "$out" "$set" "$target" "$*" "$((c1 - c0))" "$CLK_TCK" "$((t1 - t0))" \
    >>"$RESULTS"
  printf '.'
}

echo "mongolb benchmark: ${SECS} s per run after ${WARMUP_MS} ms of warm-up, 127.0.0.1 only."
echo "Starting one simulated mongos and mongolb in front of it..."
start_sim sim1 --mongos 1
SIM1=$SIM_SERVERS
SIM1_PID=$SIM_PID
start_mongolb mlb1 "$SIM1"
MLB1=$MLB_ADDR
MLB1_PID=$MLB_PID
wait_mongolb_ready mlb1 "$MLB1" 1
"$MLBENCH" --uri "$SIM1" --setup --docs 1000 >/dev/null || die "could not load the benchmark data"

printf 'Running %d workloads x 2 connection counts x 2 targets ' 3
for wl in ping find_id cursor1000; do
  for conns in 1 64; do
    run_one one direct "$SIM1" "$SIM1_PID" --workload "$wl" --conns "$conns" --seconds "$SECS"
    run_one one mongolb "$MLB1" "$MLB1_PID" --workload "$wl" --conns "$conns" --seconds "$SECS"
  done
done
echo
RSS1=$(rss_kb "$MLB1_PID")
HWM1=$(awk '/^VmHWM:/ {print $2}' "/proc/$MLB1_PID/status" 2>/dev/null || echo 0)
STATUS1=$("$MLBENCH" --uri "$MLB1" --command '{"mongolbStatus": 1}' 2>/dev/null || echo '{}')

RSS3=""
STATUS3='{}'
if [ "${BENCH_THREE:-1}" != 0 ]; then
  echo "Starting three simulated mongos and a second mongolb in front of them..."
  start_sim sim3 --mongos 3
  SIM3=$SIM_SERVERS
  start_mongolb mlb3 "$SIM3"
  MLB3=$MLB_ADDR
  MLB3_PID=$MLB_PID
  wait_mongolb_ready mlb3 "$MLB3" 3
  "$MLBENCH" --uri "${SIM3%%,*}" --setup --docs 1000 >/dev/null ||
    die "could not load the benchmark data into the three-mongos simulator"
  printf 'Running the proxied workloads against three mongos '
  for wl in ping find_id cursor1000; do
    for conns in 1 64; do
      run_one three mongolb "$MLB3" "$MLB3_PID" --workload "$wl" --conns "$conns" --seconds "$SECS"
    done
  done
  echo
  RSS3=$(rss_kb "$MLB3_PID")
  STATUS3=$("$MLBENCH" --uri "$MLB3" --command '{"mongolbStatus": 1}' 2>/dev/null || echo '{}')
fi

RSS_RS=""
STATUS_RS='{}'
DIRECT_SEC=""
if [ "${BENCH_RS:-1}" != 0 ]; then
  echo "Starting a three-member replica set and mongolb in replicaset mode in front of it..."
  start_sim rs --replset rs0 --members 3
  RS_PRIMARY=${SIM_SERVERS%%,*}
  RS_REST=${SIM_SERVERS#*,}
  # Member 1 starts as a secondary; nothing here changes the primary.
  DIRECT_SEC=${RS_REST%%,*}
  RS_PID=$SIM_PID
  start_mongolb mlbrs "$RS_PRIMARY" "replica_set = rs0" replicaset
  MLBRS=$MLB_ADDR
  MLBRS_PID=$MLB_PID
  wait_mongolb_ready mlbrs "$MLBRS" 3 "rsprimary rssecondary"
  "$MLBENCH" --uri "$RS_PRIMARY" --setup --docs 1000 >/dev/null ||
    die "could not load the benchmark data into the replica set"
  printf 'Running secondary reads, direct to one secondary and through mongolb '
  for wl in find_id cursor1000; do
    for conns in 1 64; do
      run_one rs direct "$DIRECT_SEC" "$RS_PID" --workload "$wl" --conns "$conns" \
        --seconds "$SECS" --read-pref secondary
      run_one rs mongolb "$MLBRS" "$MLBRS_PID" --workload "$wl" --conns "$conns" \
        --seconds "$SECS" --read-pref secondary
    done
  done
  echo
  RSS_RS=$(rss_kb "$MLBRS_PID")
  STATUS_RS=$("$MLBENCH" --uri "$MLBRS" --command '{"mongolbStatus": 1}' 2>/dev/null || echo '{}')
fi

RSS_TLS=""
STATUS_TLS='{}'
if [ "${BENCH_TLS:-1}" != 0 ]; then
  echo "Starting a TLS-only simulated mongos and mongolb with TLS on both legs in front of it..."
  make_tls_certs
  start_sim simtls --mongos 1 --tls-cert "$TLS_SERVER_PEM"
  SIMTLS=$SIM_SERVERS
  SIMTLS_PID=$SIM_PID
  start_mongolb_tls mlbtls "$SIMTLS" "$TLS_CA" "$TLS_SERVER_PEM"
  MLBTLS=$MLB_ADDR
  MLBTLS_PID=$MLB_PID
  # wait_mongolb_ready passes only a URI to mlbench, so the URI carries the TLS options.
  wait_mongolb_ready mlbtls "mongodb://$MLBTLS/?tls=true&tlsCAFile=$TLS_CA" 1
  "$MLBENCH" --uri "$SIMTLS" --tls-ca "$TLS_CA" --setup --docs 1000 >/dev/null ||
    die "could not load the benchmark data into the TLS simulator"
  # One unmeasured pass with 64 connections fills mongolb's pool towards the simulator, so that
  # no backend handshake falls into a measured run either (the direct runs have none to make).
  "$MLBENCH" --uri "$MLBTLS" --tls-ca "$TLS_CA" --workload ping --conns 64 --seconds 0.5 \
    >/dev/null 2>&1 || true
  printf 'Running %d workloads x 2 connection counts x 2 targets over TLS ' 3
  for wl in ping find_id cursor1000; do
    for conns in 1 64; do
      run_one tls direct "$SIMTLS" "$SIMTLS_PID" --tls-ca "$TLS_CA" --workload "$wl" \
        --conns "$conns" --seconds "$SECS"
      run_one tls mongolb "$MLBTLS" "$MLBTLS_PID" --tls-ca "$TLS_CA" --workload "$wl" \
        --conns "$conns" --seconds "$SECS"
    done
  done
  echo
  RSS_TLS=$(rss_kb "$MLBTLS_PID")
  STATUS_TLS=$("$MLBENCH" --uri "$MLBTLS" --tls-ca "$TLS_CA" --command '{"mongolbStatus": 1}' \
    2>/dev/null || echo '{}')
fi

printf 'Measuring the simulator alone with pipelined requests '
for wl in ping find_id; do
  run_one capacity direct "$SIM1" "$SIM1_PID" --workload "$wl" --conns 4 --pipeline 32 --seconds "$SECS"
done
echo

"$PY" - "$RESULTS" "$RSS1" "$HWM1" "$STATUS1" "${RSS3:-}" "$STATUS3" "$RSS_RS" "$STATUS_RS" \
  "$DIRECT_SEC" "$RSS_TLS" "$STATUS_TLS" <<'EOF'
import json
import sys

results = [json.loads(l) for l in open(sys.argv[1])]
rss1, hwm1, status1, rss3, status3, rss_rs, status_rs, direct_sec, rss_tls, status_tls = \
    sys.argv[2:12]
status1, status3, status_rs = json.loads(status1), json.loads(status3), json.loads(status_rs)
status_tls = json.loads(status_tls)


def find(set_, target, wl, conns):
    for r in results:
        if r["set"] == set_ and r["target"] == target and r.get("workload") == wl \
                and r.get("conns") == conns:
            return r
    return None


def cells(r):
    if r is None or r.get("failed"):
        return ["FAILED", "", "", "", ""]
    err = str(r["errors"]) if r["errors"] else ""
    return ["{:,.0f}".format(r["ops_per_sec"]), str(r["p50_us"]), str(r["p99_us"]), err,
            "{:.2f}".format(r["cpu"])]


header = ["workload", "conns", "target", "ops/s", "p50 us", "p99 us", "errors", "cpu",
          "ops/s ratio", "p50 added us"]


def compare(set_, workloads, direct_name, proxied_name):
    """Rows of direct and proxied runs of a row set, the proxied ones with ratio and p50 added."""
    out = []
    for wl in workloads:
        for conns in [1, 64]:
            d = find(set_, "direct", wl, conns)
            p = find(set_, "mongolb", wl, conns)
            out.append([wl, str(conns), direct_name] + cells(d) + ["", ""])
            ratio = added = ""
            if d and p and not d.get("failed") and not p.get("failed") and d["ops_per_sec"]:
                ratio = "{:.2f}".format(p["ops_per_sec"] / d["ops_per_sec"])
                added = "{:+d}".format(p["p50_us"] - d["p50_us"])
            out.append([wl, str(conns), proxied_name] + cells(p) + [ratio, added])
    return out


rows = compare("one", ["ping", "find_id", "cursor1000"], "direct", "mongolb")
three = [r for r in results if r["set"] == "three"]
if three:
    rows.append(None)
    for wl in ["ping", "find_id", "cursor1000"]:
        for conns in [1, 64]:
            rows.append([wl, str(conns), "mongolb/3"] + cells(find("three", "mongolb", wl, conns))
                        + ["", ""])


def show(header, rows):
    widths = [len(h) for h in header]
    for r in rows:
        if r:
            widths = [max(w, len(c)) for w, c in zip(widths, r)]
    fmt = lambda r: "  ".join(c.rjust(w) if i >= 3 or i == 1 else c.ljust(w)
                              for i, (c, w) in enumerate(zip(r, widths)))
    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r) if r else "")


print()
print("Direct to one simulated mongos versus through mongolb (one request outstanding per")
print("connection, as drivers do). ratio = mongolb ops/s / direct ops/s; p50 added = the median")
print("latency mongolb adds. cursor1000: one op = a find plus getMores draining 1000 documents.")
print("cpu: the share of one core used during the run by the simulator (direct rows) or by")
print("mongolb (mongolb rows; the simulator behind it works as well).")
if three:
    print("mongolb/3 rows: mongolb in front of three simulated mongos (its own simulator).")
print()
show(header, rows)
print()


def requests(st):
    return ", ".join("{} {}".format(s["address"], s.get("requests", 0))
                     for s in st.get("servers", []))


if any(r["set"] == "rs" for r in results):
    print("Secondary reads ($readPreference {mode: secondary} on every find) from a simulated")
    print("three-member replica set: direct = straight at one secondary (%s); mongolb-rs ="
          % direct_sec)
    print("through mongolb in replicaset mode, which sends them to either secondary. The three")
    print("members share the simulator's one thread, so two secondaries give no more capacity.")
    print()
    show(header, compare("rs", ["find_id", "cursor1000"], "direct-sec", "mongolb-rs"))
    print()


if any(r["set"] == "tls" for r in results):
    print("Over TLS (1.2 or newer, the server's certificate and name verified; certificates made")
    print("for the run, EC P-256): direct-tls = straight at a TLS-only simulated mongos;")
    print("mongolb-tls = through mongolb with TLS on both legs (tls_mode = require towards the")
    print("client, [upstream] tls = true towards the simulator). Connections, handshakes included,")
    print("are opened before each run. ratio and p50 added compare with direct-tls; the goal is a")
    print("ratio of at least 0.8 at 64 connections. cpu as above (mongolb's own on mongolb-tls).")
    print()
    tls_rows = compare("tls", ["ping", "find_id", "cursor1000"], "direct-tls", "mongolb-tls")
    show(header, tls_rows)
    verdicts = []
    for r in tls_rows:
        if r[2] == "mongolb-tls" and r[1] == "64" and r[-2]:
            verdicts.append("{} {}".format(r[0], r[-2]))
    if verdicts:
        print("ratio at 64 connections (goal >= 0.80): " + ", ".join(verdicts))
    print()


c1 = status1.get("counters", {})
print("mongolb memory after the one-mongos runs: VmRSS {:,} kB (peak VmHWM {:,} kB; "
      "mongolbStatus rssKB {:,})".format(int(rss1 or 0), int(hwm1 or 0),
                                         int(status1.get("rssKB", 0))))
print("  requests {:,}, getMores routed {:,}, cursorNotFound {}, errors returned {}".format(
    c1.get("requests", 0), c1.get("getMoresRouted", 0), c1.get("cursorNotFound", 0),
    c1.get("errorsReturned", 0)))
if three:
    c3 = status3.get("counters", {})
    print("mongolb/3 memory: VmRSS {:,} kB; requests per mongos: {}".format(
        int(rss3 or 0), requests(status3)))
    print("  getMores routed {:,}, misroutes avoided {}, cursorNotFound {}".format(
        c3.get("getMoresRouted", 0), c3.get("misroutesAvoided", 0),
        c3.get("cursorNotFound", 0)))
if status_rs.get("servers"):
    crs = status_rs.get("counters", {})
    print("mongolb-rs memory: VmRSS {:,} kB; requests per member: {}".format(
        int(rss_rs or 0), ", ".join("{} ({}) {}".format(s["address"], s.get("type", "?"),
                                                       s.get("requests", 0))
                                    for s in status_rs["servers"])))
    print("  getMores routed {:,}, cursorNotFound {}, errors returned {}".format(
        crs.get("getMoresRouted", 0), crs.get("cursorNotFound", 0),
        crs.get("errorsReturned", 0)))
if status_tls.get("servers") is not None:
    ct = status_tls.get("counters", {})
    print("mongolb-tls memory: VmRSS {:,} kB; requests {:,}, backend connections opened {} (TLS "
          "handshakes), TLS handshake failures {}, errors returned {}".format(
              int(rss_tls or 0), ct.get("requests", 0), ct.get("backendConnects", 0),
              ct.get("tlsHandshakeFailures", 0), ct.get("errorsReturned", 0)))
print()
print("Simulator capacity (pipelined): 4 connections x 32 requests outstanding, straight at one")
print("simulated mongos, which runs on one thread (the issue asks for >= 100k ops/s on one core).")
print("'cpu' is the share of one core the simulator used during the run.")
print()
caprows = []
for wl in ["ping", "find_id"]:
    r = find("capacity", "direct", wl, 4)
    c = cells(r)
    verdict = ""
    if r and not r.get("failed"):
        verdict = "meets 100k" if r["ops_per_sec"] >= 100000 else "BELOW 100k"
    caprows.append([wl, "4x32", "direct"] + c + [verdict])
show(["workload", "conns", "target", "ops/s", "p50 us", "p99 us", "errors", "cpu", "target 100k"],
     caprows)
EOF

if [ "$FAILED" != 0 ]; then
  echo
  echo "Some runs FAILED (see the messages above); mongolb's log:" >&2
  tail -n 20 "$LIB_TMP/mlb1.log" >&2 || true
  if [ -s "$LIB_TMP/mlbtls.log" ]; then
    echo "The log of mongolb with TLS:" >&2
    tail -n 20 "$LIB_TMP/mlbtls.log" >&2 || true
  fi
  exit 1
fi
