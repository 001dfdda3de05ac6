#!/usr/bin/env bash
# Authentication benchmark, run by "make bench-auth" and at the end of "make bench".
#
# What issue 10 asks of authentication's cost: backend connections log in once per pooled
# connection, not per request, so requests with auth on stay within 5% of auth off at 64
# connections; and a login through mongolb costs no more than a direct login plus one round trip.
#
# Starts two simulated mongos, one without authentication and one with --auth and two users
# (admin, root; bench@bench, readWrite on bench), and mongolb in front of them: mode = off in front
# of the first, mode = passthrough and mode = service in front of the second. Then:
#   - ping and find_id with 64 connections, each connection logged in once before the run (mlbench
#     --user), against five targets: direct-off, direct-auth, mongolb-off, mongolb-pass,
#     mongolb-svc. The targets run in turn, round after round (A B C D E, A B C D E, ...), and the
#     table shows the median of the rounds of each, to damp the noise of a small shared machine;
#   - the cost of a whole login (mlbench --workload login: connect, hello, SCRAM-SHA-256, close),
#     one connection at a time, direct and through mongolb, next to a ping's round trip.
# A mode mongolb does not accept (its --check-config fails) or that does not come up has its rows
# printed as "skipped: <reason>".
#
# Environment: BUILD (default build), BENCH_AUTH_SECONDS (default 1) per run, BENCH_AUTH_ROUNDS
# (default 3).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

SECS=${BENCH_AUTH_SECONDS:-1}
ROUNDS=${BENCH_AUTH_ROUNDS:-3}
WARMUP_MS=300
lib_require mongosim mongolb mlbench
RESULTS="$LIB_TMP/auth-results.jsonl"
: >"$RESULTS"
FAILED=0

# The benchmark's users. The passwords are made up for the run and live only in its temporary
# directory (the password file is mode 600, as mongolb requires).
ADMIN_PW=adminpw
BENCH_PW=benchpw
PWFILE="$LIB_TMP/service.password"
(umask 077 && printf '%s\n' "$ADMIN_PW" >"$PWFILE")

# Every target's name, and for each its address, the process whose CPU share is recorded, the
# mlbench arguments that log in (none without auth), and why it is skipped (empty when it runs).
declare -A ADDR PIDOF CREDS SKIP
TARGETS=(direct-off direct-auth mongolb-off mongolb-pass mongolb-svc)

# run_one ROUND TARGET MLBENCH_ARGS...: runs mlbench against TARGET and appends its JSON, tagged
# with the target and round, and the share of a core that TARGET's process used, to $RESULTS.
run_one() {
  local round=$1 target=$2
  shift 2
  # CREDS holds several words (or none) on purpose.
  # shellcheck disable=SC2086
  mlbench_record round "$round" "$target" "$target" "${PIDOF[$target]}" "$*" \
    --uri "${ADDR[$target]}" ${CREDS[$target]} --warmup-ms "$WARMUP_MS" "$@"
}

# start_auth_mongolb TARGET NAME SEEDS AUTH_LINES: starts mongolb with an [auth] section in front
# of SEEDS, after checking the configuration with --check-config, and waits until it is ready
# (logged in as admin, who may read mongolbStatus). Sets ADDR and PIDOF of TARGET, or SKIP with
# the reason when mongolb refuses the configuration or does not come up.
start_auth_mongolb() {
  local target=$1 name=$2 seeds=$3 auth=$4 conf check
  conf="$LIB_TMP/$name.check.ini"
  printf '[mongolb]\nlisten = 127.0.0.1:1\n[upstream]\nmode = mongos\nseeds = %s\n[auth]\n%s\n' \
    "$seeds" "$auth" >"$conf"
  if ! check=$("$BUILD/mongolb" --check-config -c "$conf" 2>&1); then
    SKIP[$target]="mongolb refuses the configuration: $(head -n 1 <<<"$check")"
    return 0
  fi
  start_mongolb "$name" "$seeds" "$(printf '[auth]\n%s' "$auth")"
  ADDR[$target]=$MLB_ADDR
  PIDOF[$target]=$MLB_PID
  # wait_mongolb_ready dies when mongolb does not come up: run it in a subshell to keep going.
  if ! (wait_mongolb_ready "$name" "mongodb://admin:$ADMIN_PW@$MLB_ADDR/?authSource=admin" 1) \
    2>"$LIB_TMP/$name.wait"; then
    SKIP[$target]="mongolb did not come up: $(grep -m 1 '^error' "$LIB_TMP/$name.wait" ||
      tail -n 1 "$LIB_TMP/$name.wait")"
  fi
}

echo "mongolb authentication benchmark: ${ROUNDS} rounds of ${SECS} s per run after" \
  "${WARMUP_MS} ms of warm-up, 127.0.0.1 only."
echo "Starting two simulated mongos (without and with --auth) and mongolb in front of them..."
start_sim simoff --mongos 1
ADDR[direct-off]=$SIM_SERVERS
PIDOF[direct-off]=$SIM_PID
CREDS[direct-off]=""
start_sim simauth --mongos 1 --auth --auth-user "admin:$ADMIN_PW" \
  --auth-user "bench@bench:$BENCH_PW:readWrite@bench"
ADDR[direct-auth]=$SIM_SERVERS
PIDOF[direct-auth]=$SIM_PID
BENCH_CREDS="--user bench --password $BENCH_PW --auth-source bench --mechanism SCRAM-SHA-256"
CREDS[direct-auth]=$BENCH_CREDS

start_mongolb mlboff "${ADDR[direct-off]}"
ADDR[mongolb-off]=$MLB_ADDR
PIDOF[mongolb-off]=$MLB_PID
CREDS[mongolb-off]=""
wait_mongolb_ready mlboff "$MLB_ADDR" 1

# passthrough: bench logs in as itself, and mongolb's server connections log in as bench too;
# admin (root) reads the verifiers with usersInfo and may read mongolbStatus.
start_auth_mongolb mongolb-pass mlbpass "${ADDR[direct-auth]}" "$(printf '%s\n' \
  "mode = passthrough" "service_user = admin" "service_password_file = $PWFILE" \
  "admin_users = admin@admin")"
CREDS[mongolb-pass]=$BENCH_CREDS

# service: bench and admin log in to mongolb with verifiers from an auth_file (mongolb
# --make-verifier); every server connection logs in as admin.
AUTHFILE="$LIB_TMP/users.auth"
if (umask 077 && { printf '%s\n' "$BENCH_PW" | "$BUILD/mongolb" --make-verifier bench@bench &&
  printf '%s\n' "$ADMIN_PW" | "$BUILD/mongolb" --make-verifier admin@admin; } >"$AUTHFILE") \
  2>"$LIB_TMP/make-verifier.err"; then
  start_auth_mongolb mongolb-svc mlbsvc "${ADDR[direct-auth]}" "$(printf '%s\n' \
    "mode = service" "auth_file = $AUTHFILE" "service_user = admin" \
    "service_password_file = $PWFILE" "admin_users = admin@admin")"
else
  SKIP[mongolb-svc]="mongolb --make-verifier failed: $(head -n 1 "$LIB_TMP/make-verifier.err")"
fi
CREDS[mongolb-svc]=$BENCH_CREDS

RUN=()
for t in "${TARGETS[@]}"; do
  if [ -n "${SKIP[$t]:-}" ]; then
    echo "  $t skipped: ${SKIP[$t]}"
  else
    RUN+=("$t")
  fi
done

"$MLBENCH" --uri "${ADDR[direct-off]}" --setup --docs 1000 >/dev/null ||
  die "could not load the benchmark data"
# shellcheck disable=SC2086
"$MLBENCH" --uri "${ADDR[direct-auth]}" $BENCH_CREDS --setup --docs 1000 >/dev/null ||
  die "could not load the benchmark data into the simulator with --auth"

# One unmeasured pass with 64 connections through each mongolb fills its pool towards the
# simulator (in passthrough, bench's own pool), so that no backend login falls into a measured run.
for t in "${RUN[@]}"; do
  case $t in
  mongolb-*)
    # shellcheck disable=SC2086
    "$MLBENCH" --uri "${ADDR[$t]}" ${CREDS[$t]} --workload find_id --conns 64 --seconds 0.5 \
      --warmup-ms 0 >/dev/null 2>&1 || true
    ;;
  esac
done

printf 'Running ping and find_id at 64 connections on %d targets, %d rounds ' "${#RUN[@]}" \
  "$ROUNDS"
for ((r = 1; r <= ROUNDS; r++)); do
  for wl in ping find_id; do
    for t in "${RUN[@]}"; do
      run_one "$r" "$t" --workload "$wl" --conns 64 --seconds "$SECS"
    done
  done
done
echo

printf 'Running logins (connect, hello, SCRAM-SHA-256, close) and pings, one connection, %d rounds ' \
  "$ROUNDS"
for ((r = 1; r <= ROUNDS; r++)); do
  for t in "${RUN[@]}"; do
    run_one "$r" "$t" --workload login --conns 1 --seconds "$SECS"
  done
  for t in "${RUN[@]}"; do
    case $t in
    direct-auth | mongolb-pass | mongolb-svc)
      run_one "$r" "$t" --workload ping --conns 1 --seconds "$SECS"
      ;;
    esac
  done
done
echo

STATUS_PASS='{}' STATUS_SVC='{}'
for t in mongolb-pass mongolb-svc; do
  [ -z "${SKIP[$t]:-}" ] || continue
  st=$("$MLBENCH" --uri "mongodb://admin:$ADMIN_PW@${ADDR[$t]}/?authSource=admin" \
    --command '{"mongolbStatus": 1}' 2>/dev/null || echo '{}')
  if [ "$t" = mongolb-pass ]; then STATUS_PASS=$st; else STATUS_SVC=$st; fi
done

SKIPS=$(for t in "${TARGETS[@]}"; do printf '%s\t%s\n' "$t" "${SKIP[$t]:-}"; done)
"$PY" - "$RESULTS" "$STATUS_PASS" "$STATUS_SVC" "$SKIPS" <<'EOF'
import json
import statistics
import sys

results = [json.loads(l) for l in open(sys.argv[1])]
status = {"mongolb-pass": json.loads(sys.argv[2]), "mongolb-svc": json.loads(sys.argv[3])}
skips = dict(l.split("\t", 1) for l in sys.argv[4].splitlines() if "\t" in l)


def runs(target, wl, conns):
    return [r for r in results if r["target"] == target and r.get("workload") == wl
            and r.get("conns") == conns and not r.get("failed")]


def med(target, wl, conns):
    """The median of the rounds: ops/s, p50, p99, cpu, errors (summed), rounds; None if none."""
    rs = runs(target, wl, conns)
    if not rs:
        return None
    m = lambda k: statistics.median(r[k] for r in rs)
    return {"ops": m("ops_per_sec"), "p50": m("p50_us"), "p99": m("p99_us"), "cpu": m("cpu"),
            "errors": sum(r["errors"] for r in rs), "n": len(rs),
            "all": [r["ops_per_sec"] for r in rs]}


def show(header, rows):
    widths = [len(h) for h in header]
    for r in rows:
        if r:
            widths = [max(w, len(c)) for w, c in zip(widths, r)]
    fmt = lambda r: "  ".join(c.rjust(w) if i >= 2 else c.ljust(w)
                              for i, (c, w) in enumerate(zip(r, widths)))
    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r) if r else "")


def cells(target, wl, conns):
    if skips.get(target):
        return ["skipped", "", "", "", "", ""]
    m = med(target, wl, conns)
    if m is None:
        return ["FAILED", "", "", "", "", ""]
    return ["{:,.0f}".format(m["ops"]), "{:.0f}".format(m["p50"]), "{:.0f}".format(m["p99"]),
            str(m["errors"]) if m["errors"] else "", "{:.2f}".format(m["cpu"]),
            " ".join("{:.0f}".format(x / 1000) for x in m["all"])]


def paired_ratio(target, base, wl, conns):
    """The median over the rounds of (target's ops/s / base's ops/s in the same round): runs of
    one round are next to each other in time, so they share the load of the machine."""
    qs = []
    for rnd in sorted({r["round"] for r in results}):
        a = [r for r in runs(target, wl, conns) if r["round"] == rnd]
        b = [r for r in runs(base, wl, conns) if r["round"] == rnd]
        if a and b and b[0]["ops_per_sec"]:
            qs.append(a[0]["ops_per_sec"] / b[0]["ops_per_sec"])
    return statistics.median(qs) if qs else None


# Which run is auth-on and which auth-off it compares with.
BASE = {"direct-auth": "direct-off", "mongolb-pass": "mongolb-off", "mongolb-svc": "mongolb-off"}
TARGETS = ["direct-off", "direct-auth", "mongolb-off", "mongolb-pass", "mongolb-svc"]

print()
print("Auth on versus auth off, 64 connections, one request outstanding on each (median of the")
print("rounds; 'rounds k' lists each round's thousands of ops/s). Every connection logged in once")
print("before its run. direct-off / direct-auth: straight at the simulator without / with --auth")
print("(bench@bench, readWrite); mongolb-off: mode = off in front of the first; mongolb-pass:")
print("mode = passthrough, mongolb-svc: mode = service, in front of the second. ratio = ops/s with")
print("auth / ops/s of the same path without (direct-auth/direct-off, mongolb-*/mongolb-off), taken")
print("in each round (the two runs are next to each other in time) and the median of those kept.")
print("cpu: share of one core used by the simulator (direct) or mongolb (mongolb rows).")
print()
header = ["workload", "target", "ops/s", "p50 us", "p99 us", "errors", "cpu", "rounds k",
          "ratio", "goal"]
rows, verdicts = [], []
for wl in ["ping", "find_id"]:
    for t in TARGETS:
        ratio = goal = ""
        q = paired_ratio(t, BASE[t], wl, 64) if t in BASE and not skips.get(t) else None
        if q is not None:
            ratio = "{:.3f}".format(q)
            if t.startswith("mongolb"):
                goal = "meets" if q >= 0.95 else "MISSES"
                verdicts.append("{} {} {:.3f} ({})".format(wl, t, q, goal))
        rows.append([wl, t] + cells(t, wl, 64) + [ratio, goal])
    rows.append(None)
show(header, rows[:-1])
print()
if verdicts:
    print("goal: auth on >= 0.95 x auth off at 64 connections: " + "; ".join(verdicts))
for t in ["mongolb-pass", "mongolb-svc"]:
    if skips.get(t):
        print("{}: skipped: {}".format(t, skips[t]))
print()

print("Login cost, one connection at a time: login = connect, hello, saslStart, saslContinue")
print("(SCRAM-SHA-256, skipEmptyExchange; mlbench caches the ClientKey as drivers do, so no PBKDF2")
print("on the client after the first), close. The *-off rows connect and say hello only. ping =")
print("one ping's round trip on an open, logged-in connection. Medians of the rounds.")
print()
PHASES = ["connect", "hello", "saslStart", "saslContinue"]


def phase(target, name):
    """The median over the rounds of one step's p50 (mlbench's phases_p50_us), or ''."""
    vs = [r["phases_p50_us"][name] for r in runs(target, "login", 1)
          if name in r.get("phases_p50_us", {})]
    return "{:.0f}".format(statistics.median(vs)) if vs and not skips.get(target) else ""


rows = []
for t in TARGETS:
    lg = cells(t, "login", 1)
    pg = cells(t, "ping", 1) if t in ("direct-auth", "mongolb-pass", "mongolb-svc") else None
    rows.append([t, lg[0], lg[1], lg[2], lg[3]] + [phase(t, n) for n in PHASES] +
                [pg[1] if pg else ""])
show(["target", "logins/s", "login p50 us", "login p99 us", "errors"] + PHASES +
     ["ping p50 us"], rows)
print("connect .. saslContinue: the median time of each step of a login (TCP connect, hello,")
print("saslStart, saslContinue with the proof); the close is only in the login's total.")
print()
d, pd = med("direct-auth", "login", 1), med("direct-auth", "ping", 1)
for t in ["mongolb-pass", "mongolb-svc"]:
    m, pm = med(t, "login", 1), med(t, "ping", 1)
    if skips.get(t):
        print("{}: skipped: {}".format(t, skips[t]))
        continue
    if not (d and pd and m):
        print("{}: login comparison FAILED (a run is missing)".format(t))
        continue
    diff = m["p50"] - d["p50"]
    print("{}: login p50 {:.0f} us - direct login p50 {:.0f} us = {:+.0f} us; one ping round trip "
          "(p50): {:.0f} us direct, {} us through mongolb".format(
              t, m["p50"], d["p50"], diff, pd["p50"], "{:.0f}".format(pm["p50"]) if pm else "?"))
    print("  goal (difference <= one round trip): {} against the direct round trip, {} against the "
          "round trip through mongolb".format(
              "meets" if diff <= pd["p50"] else "MISSES",
              ("meets" if diff <= pm["p50"] else "MISSES") if pm else "?"))
print()

for t, st in status.items():
    a = st.get("auth")
    if not a:
        continue
    c = st.get("counters", {})
    pools = []
    for s in st.get("servers", []):
        for u in s.get("pool", {}).get("users", []):
            pools.append("{} {}".format(u.get("user") or "(service)", u.get("total", 0)))
    print("{} (mode {}): logins {:,}, login failures {}, server logins {:,}, verifier fetches {}, "
          "requests {:,}, server connections opened {:,}; pool per user: {}".format(
              t, a.get("mode"), a.get("logins", 0), a.get("loginFailures", 0),
              a.get("backendLogins", 0), a.get("verifierFetches", 0), c.get("requests", 0),
              c.get("backendConnects", 0), ", ".join(pools) or "-"))
    if a.get("logins"):
        print("  per login: {:.2f} verifier fetches (usersInfo to a server), {:.3f} server logins"
              .format(a.get("verifierFetches", 0) / a["logins"],
                      a.get("backendLogins", 0) / a["logins"]))
EOF

if [ "$FAILED" != 0 ]; then
  echo
  echo "Some runs FAILED (see the messages above); the logs of mongolb:" >&2
  for n in mlboff mlbpass mlbsvc; do
    if [ -s "$LIB_TMP/$n.log" ]; then
      echo "--- $n" >&2
      tail -n 20 "$LIB_TMP/$n.log" >&2 || true
    fi
  done
  exit 1
fi
