#!/usr/bin/env bash
# The memory and scale part of "make bench" (issue 12's goals that do not depend on how busy the
# machine is), run by "make bench-idle" and at the end of "make bench":
#   - 10,000 idle clients after hello (tests/bench/idle_clients.py): mongolb's RSS before, with
#     them connected, and after they left, and the bytes each one costs;
#   - find by _id through mongolb with 64, 1,000 and 5,000 client connections and the default
#     max_pool_size, to show that throughput has no cliff when clients outnumber backend
#     connections, with mongolb's CPU time per request.
# Environment: BUILD (default build), IDLE_CLIENTS (default 10000), BENCH_SECONDS (default 3).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

SECS=${BENCH_SECONDS:-3}
N_IDLE=${IDLE_CLIENTS:-10000}
lib_require mongosim mongolb mlbench
# Every idle client is a descriptor here and one in mongolb.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((N_IDLE + 200)) ] || die "ulimit -n is $(ulimit -n): too low for $N_IDLE clients"

start_sim idle-sim --mongos 1
port=$(free_port)
MLB_ADDR="127.0.0.1:$port"
conf="$LIB_TMP/idle.ini"
printf '[mongolb]\nlisten = %s\nlog_level = warn\nmax_clients = %d\n[upstream]\nseeds = %s\n' \
  "$MLB_ADDR" $((N_IDLE + 6000)) "$SIM_SERVERS" >"$conf"
"$BUILD/mongolb" -c "$conf" 2>"$LIB_TMP/idle-mongolb.log" &
MLB_PID=$!
LIB_PIDS+=("$MLB_PID")
wait_mongolb_ready idle-mongolb "$MLB_ADDR" 1

echo "Idle clients (after hello), mongolb's RSS from /proc/PID/status:"
"$PY" "$ROOT/tests/bench/idle_clients.py" --port "$port" --pid "$MLB_PID" --clients "$N_IDLE" |
  sed 's/^/  /'

echo "Many clients, find by _id, max_pool_size 100 (${SECS} s each); mlbench runs one thread per"
echo "connection, so direct access slows down with thousands of connections too:"
"$MLBENCH" --uri "$MLB_ADDR" --setup --docs 1000 >/dev/null
printf '  %-6s %12s %12s %8s %12s %12s %10s\n' conns direct_ops/s mongolb_ops/s ratio \
  mlb_p50_us mlb_p99_us cpu_us/op
for n in 64 1000 5000; do
  direct=$("$MLBENCH" --uri "${SIM_SERVERS%%,*}" --conns "$n" --seconds "$SECS" --warmup-ms 300 \
    --workload find_id 2>"$LIB_TMP/mlbench.err") || die "mlbench --conns $n: $(cat "$LIB_TMP/mlbench.err")"
  c0=$(cpu_ticks "$MLB_PID")
  out=$("$MLBENCH" --uri "$MLB_ADDR" --conns "$n" --seconds "$SECS" --warmup-ms 300 \
    --workload find_id 2>"$LIB_TMP/mlbench.err") || die "mlbench --conns $n: $(cat "$LIB_TMP/mlbench.err")"
  c1=$(cpu_ticks "$MLB_PID")
  "$PY" -c 'import json, sys
d, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ticks, hz = int(sys.argv[4]), int(sys.argv[5])
cpu_us = ticks / hz * 1e6 / max(r["ops"], 1)
print("  %-6s %12d %12d %8.2f %12d %12d %10.1f" % (sys.argv[3], d["ops_per_sec"], r["ops_per_sec"],
      r["ops_per_sec"] / max(d["ops_per_sec"], 1), r["p50_us"], r["p99_us"], cpu_us))' \
    "$direct" "$out" "$n" "$((c1 - c0))" "$CLK_TCK"
done
