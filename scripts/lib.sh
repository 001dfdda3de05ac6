# shellcheck shell=bash
# Shared helpers of scripts/bench.sh and scripts/demo.sh: start mongosim and mongolb on free
# loopback ports, wait until they are ready, and stop every process these scripts started.
#
# Source it after "set -euo pipefail". It uses BUILD (default build), the directory of the
# binaries, and PY (default /usr/bin/python3, Debian's Python, which has python3-pymongo).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in
/*) ;;
*) BUILD="$ROOT/$BUILD" ;;
esac
PY=${PY:-/usr/bin/python3}
MLBENCH="$BUILD/mlbench"

LIB_PIDS=()
# Set by start_sim and start_mongolb for the scripts that source this file.
SIM_PID="" SIM_SERVERS="" MLB_PID="" MLB_ADDR=""
export SIM_SERVERS MLB_ADDR
LIB_TMP=$(mktemp -d "${TMPDIR:-/tmp}/mongolb-run.XXXXXX")

# Stops the processes started here, by their process ids, and removes the temporary directory.
lib_cleanup() {
  local pid
  for pid in "${LIB_PIDS[@]+"${LIB_PIDS[@]}"}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${LIB_PIDS[@]+"${LIB_PIDS[@]}"}"; do
    # Give each process two seconds to exit after SIGTERM, then kill it.
    local i
    for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
      [ "$i" -lt 20 ] || kill -9 "$pid" 2>/dev/null || true
    done
    wait "$pid" 2>/dev/null || true
  done
  LIB_PIDS=()
  rm -rf "$LIB_TMP"
}
trap lib_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
  echo "error: $*" >&2
  exit 1
}

# Checks that the binaries and Python with pymongo are there.
lib_require() {
  local b
  for b in "$@"; do
    [ -x "$BUILD/$b" ] || die "$BUILD/$b is missing: run 'make' first"
  done
}

# Prints a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
  "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# start_sim NAME ARGS...: starts mongosim with ARGS on ephemeral ports, waits for its ready line
# and sets SIM_PID and SIM_SERVERS (comma-separated host:port list). Its log goes to
# $LIB_TMP/NAME.log.
start_sim() {
  local name=$1
  shift
  local out="$LIB_TMP/$name.out"
  "$BUILD/mongosim" "$@" --port 0 >"$out" 2>"$LIB_TMP/$name.log" &
  SIM_PID=$!
  LIB_PIDS+=("$SIM_PID")
  local i line=""
  for ((i = 0; i < 100; i++)); do
    line=$(head -n 1 "$out" 2>/dev/null || true)
    [[ $line == *'"ready"'* ]] && break
    kill -0 "$SIM_PID" 2>/dev/null || {
      tail -n 20 "$LIB_TMP/$name.log" >&2 || true
      die "mongosim $* exited before it was ready"
    }
    sleep 0.1
  done
  [[ $line == *'"ready"'* ]] || die "mongosim $* printed no ready line within 10 s"
  SIM_SERVERS=$("$PY" -c 'import json, sys
print(",".join(json.loads(sys.argv[1])["servers"]))' "$line")
}

# start_mongolb NAME SEEDS [EXTRA_INI_LINES [MODE]]: starts mongolb in front of SEEDS on a free
# port and sets MLB_PID and MLB_ADDR. EXTRA_INI_LINES go under [upstream]; MODE is mongos (the
# default) or replicaset, which needs a replica_set line among EXTRA_INI_LINES.
start_mongolb() {
  local name=$1 seeds=$2 extra=${3:-} mode=${4:-mongos}
  local port
  port=$(free_port)
  MLB_ADDR="127.0.0.1:$port"
  local conf="$LIB_TMP/$name.ini"
  printf '[mongolb]\nlisten = %s\nlog_level = warn\n[upstream]\nmode = %s\nseeds = %s\n%s\n' \
    "$MLB_ADDR" "$mode" "$seeds" "$extra" >"$conf"
  "$BUILD/mongolb" -c "$conf" 2>"$LIB_TMP/$name.log" &
  MLB_PID=$!
  LIB_PIDS+=("$MLB_PID")
}

# make_tls_certs: writes a set of test certificates (tests/integration/tls_certs.py, made with the
# openssl command line) into $LIB_TMP/certs and sets TLS_CA (the CA certificate) and TLS_SERVER_PEM
# (certificate and key for 127.0.0.1 and localhost, signed by TLS_CA).
TLS_CA="" TLS_SERVER_PEM=""
export TLS_CA TLS_SERVER_PEM
make_tls_certs() {
  local json
  mkdir -p "$LIB_TMP/certs"
  json=$("$PY" "$ROOT/tests/integration/tls_certs.py" "$LIB_TMP/certs") ||
    die "could not make the test certificates with tests/integration/tls_certs.py"
  TLS_CA=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["ca"])' "$json")
  TLS_SERVER_PEM=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["server"])' "$json")
}

# start_mongolb_tls NAME SEEDS CA CERT [EXTRA_INI_LINES]: as start_mongolb (mongos mode), with TLS
# on both legs: applications must speak TLS to it (tls_mode = require, with CERT as its certificate
# and key), and it speaks TLS to SEEDS, verifying them against CA. EXTRA_INI_LINES go under
# [upstream]. wait_mongolb_ready reaches it with a URI that says so:
#   wait_mongolb_ready NAME "mongodb://$MLB_ADDR/?tls=true&tlsCAFile=$CA" N
start_mongolb_tls() {
  local name=$1 seeds=$2 ca=$3 cert=$4 extra=${5:-}
  local port
  port=$(free_port)
  MLB_ADDR="127.0.0.1:$port"
  local conf="$LIB_TMP/$name.ini"
  {
    printf '[mongolb]\nlisten = %s\nlog_level = warn\n' "$MLB_ADDR"
    printf 'tls_mode = require\ntls_certificate_key_file = %s\n' "$cert"
    printf '[upstream]\nmode = mongos\nseeds = %s\ntls = true\ntls_ca_file = %s\n%s\n' \
      "$seeds" "$ca" "$extra"
  } >"$conf"
  "$BUILD/mongolb" -c "$conf" 2>"$LIB_TMP/$name.log" &
  MLB_PID=$!
  LIB_PIDS+=("$MLB_PID")
}

# wait_mongolb_ready NAME ADDR N [TYPES]: waits up to 15 s until mongolb answers hello (so it
# knows a backend) and mongolbStatus shows N servers with a measured round-trip time whose type is
# one of TYPES (space-separated, case-insensitive; default "mongos", for a replica set
# "rsprimary rssecondary").
wait_mongolb_ready() {
  local name=$1 addr=$2 want=$3 types=${4:-mongos} i status="" have=0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$MLB_PID" 2>/dev/null || {
      tail -n 20 "$LIB_TMP/$name.log" >&2 || true
      die "mongolb exited during startup (log above)"
    }
    if "$MLBENCH" --uri "$addr" --command '{"hello": 1}' >/dev/null 2>&1 &&
      status=$("$MLBENCH" --uri "$addr" --command '{"mongolbStatus": 1}' 2>/dev/null); then
      have=$("$PY" -c 'import json, sys
st = json.loads(sys.argv[1])
types = sys.argv[2].lower().split()
print(sum(1 for s in st.get("servers", [])
          if s.get("type", "").lower() in types and s.get("rttMillis") is not None))' \
        "$status" "$types")
      [ "$have" -ge "$want" ] && return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$LIB_TMP/$name.log" >&2 || true
  echo "last mongolbStatus: ${status:-none}" >&2
  die "mongolb at $addr did not see $want servers of type '$types' with a round-trip time" \
    "within 15 s ($have seen)"
}

# Prints the resident set size of a process in kilobytes (VmRSS), or 0.
rss_kb() {
  awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

# Prints the CPU time a process has used so far, user plus system, in clock ticks, or 0.
cpu_ticks() {
  # The command name in field 2 may hold spaces: count fields after its closing parenthesis.
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0
}
CLK_TCK=$(getconf CLK_TCK)
export CLK_TCK

# mlbench_record KEY VALUE TARGET WHERE PID SHOWN MLBENCH_ARGS...: runs $MLBENCH with
# MLBENCH_ARGS and appends its JSON to $RESULTS, tagged with KEY (VALUE, a whole number when KEY
# is round), the target and SHOWN (the arguments as the report names them), and the share of a CPU
# core that process PID used during the run. A failed run is recorded as {"failed": true}, sets
# FAILED=1 and is reported, naming the target as WHERE.
mlbench_record() {
  local key=$1 value=$2 target=$3 where=$4 pid=$5 shown=$6
  shift 6
  local out rc=0 t0 t1 c0 c1
  t0=$(date +%s%N)
  c0=$(cpu_ticks "$pid")
  out=$("$MLBENCH" "$@" 2>"$LIB_TMP/mlbench.err") || rc=$?
  c1=$(cpu_ticks "$pid")
  t1=$(date +%s%N)
  if [ "$rc" -ge 2 ] || [ -z "$out" ]; then
    # shellcheck disable=SC2034  # read by the script that sources this file
    FAILED=1
    echo "  FAILED: mlbench $shown against $where: $(tr '\n' ' ' <"$LIB_TMP/mlbench.err")" >&2
    out='{"failed":true}'
  elif [ "$rc" -eq 1 ]; then
    echo "  errors: mlbench $shown against $target: $(head -n 1 "$LIB_TMP/mlbench.err")" >&2
  fi
  "$PY" -c 'import json, sys
r = json.loads(sys.argv[1])
r[sys.argv[2]] = int(sys.argv[3]) if sys.argv[2] == "round" else sys.argv[3]
r.update(target=sys.argv[4], args=sys.argv[5])
ticks, hz, ns = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
r["cpu"] = ticks / hz / (ns / 1e9) if ns > 0 else 0
print(json.dumps(r))' "$out" "$key" "$value" "$target" "$shown" "$((c1 - c0))" "$CLK_TCK" \
    "$((t1 - t0))" >>"$RESULTS"
  printf '.'
}
