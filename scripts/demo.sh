#!/usr/bin/env bash
# The demo of "make demo": three simulated mongos at different distances, mongolb in front of
# them, and a PyMongo application (tests/bench/demo_workload.py) that uses mongolb as its one
# mongos. It shows which mongos served the requests and that cursors stayed on their server.
#
# Two mongoses are near (10 and 15 ms, inside local_threshold_ms = 15 of the fastest) and share
# the requests; the third is far (50 ms) and gets none. Cursors are handed between threads, so
# that getMores arrive on other connections than their finds (the "misroutes avoided").
#
# A second part puts mongolb in replicaset mode in front of a simulated three-member replica set,
# seeded with one member, and runs tests/bench/demo_rs_workload.py: discovery, writes, reads by
# read preference and tag set, and a primary step-down during a write loop.
#
# Environment: BUILD (default build).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

lib_require mongosim mongolb mlbench
"$PY" -c 'import pymongo' 2>/dev/null ||
  die "$PY cannot import pymongo: run scripts/install-deps.sh (python3-pymongo)"

echo "== mongolb demo =="
echo "Starting three simulated mongos that add 10, 15 and 50 ms to every reply..."
start_sim sim --mongos 3 --latency 10,15,50
SIM0=${SIM_SERVERS%%,*}
echo "  mongos: ${SIM_SERVERS//,/ }"

echo "Starting mongolb in front of them (local_threshold_ms = 15, the default)..."
start_mongolb mlb "$SIM_SERVERS" "local_threshold_ms = 15"
echo "  mongolb: $MLB_ADDR (an application would use mongodb://$MLB_ADDR)"
echo "Waiting until mongolb has measured the round-trip time of all three..."
wait_mongolb_ready mlb "$MLB_ADDR" 3
echo

# Fails the demo, with the tail of mongolb's log, if the workload failed (rc != 0) or mongolb
# died during it. $1: the workload's exit code, $2: what to call it, $3: the mongolb log's name.
check_run() {
  local rc=$1 what=$2 log="$LIB_TMP/$3.log"
  if ! kill -0 "$MLB_PID" 2>/dev/null; then
    echo "FAILED: mongolb exited during $what; its log:" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
  if [ "$rc" != 0 ]; then
    echo >&2
    echo "$what FAILED (see above). The last lines of mongolb's log:" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
}

rc=0
"$PY" "$ROOT/tests/bench/demo_workload.py" --mongolb "$MLB_ADDR" --sim "$SIM0" --threshold 15 ||
  rc=$?
check_run "$rc" "the demo" mlb

echo
echo "== mongolb in front of a replica set =="
echo "Starting a simulated replica set rs0 of three members tagged dc:ny / dc:ny,rack:2 / dc:sf..."
start_sim rs --replset rs0 --members 3 --tags 'dc=ny;dc=ny,rack=2;dc=sf'
RS0=${SIM_SERVERS%%,*}
echo "  members: ${SIM_SERVERS//,/ }"
echo "Starting mongolb in replicaset mode with ONE seed, $RS0..."
start_mongolb mlbrs "$RS0" $'replica_set = rs0\nread_preference = primary\nheartbeat_interval_ms = 1000' \
  replicaset
echo "  mongolb: $MLB_ADDR (an application would use mongodb://$MLB_ADDR, as for a mongos)"
echo "Waiting until mongolb has discovered and measured all three members..."
wait_mongolb_ready mlbrs "$MLB_ADDR" 3 "rsprimary rssecondary"
echo

rc=0
"$PY" "$ROOT/tests/bench/demo_rs_workload.py" --mongolb "$MLB_ADDR" --sim "$RS0" --seeds 1 || rc=$?
check_run "$rc" "the replica-set demo" mlbrs
