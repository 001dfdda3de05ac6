#!/usr/bin/env bash
# The bounded chaos soak of "make soak" (not part of "make check"): two simulated deployments
# (three mongos; a three-member replica set), a mongolb in front of each, PyMongo threads and
# Node.js workers through them while servers are killed, hung, frozen and stepped down; then an
# audit of every acknowledged write. tests/soak/soak.py does the work and documents it.
#
# Environment: SOAK_SECONDS (default 180: the whole run, of which all but ~25 s is traffic),
# MONGOLB and MONGOSIM (the binaries; default $BUILD/mongolb and $BUILD/mongosim, BUILD
# defaulting to build), NODE (default node), PY (default /usr/bin/python3), SOAK_SEED to repeat
# a run's choices, SOAK_DIR / SOAK_KEEP=1 to keep the logs, SOAK_MAX_UNEXPECTED_ERRORS,
# SOAK_NODE=0 to run without Node.js, SOAK_VERBOSE=1 to print chaos events as they happen.
# Exit status 0 when the audit found nothing, 1 otherwise, 2 on a setup problem.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in
/*) ;;
*) BUILD="$ROOT/$BUILD" ;;
esac
export MONGOLB=${MONGOLB:-$BUILD/mongolb}
export MONGOSIM=${MONGOSIM:-$BUILD/mongosim}
PY=${PY:-/usr/bin/python3}

for b in "$MONGOLB" "$MONGOSIM"; do
  [ -x "$b" ] || {
    echo "error: $b is missing: run 'make' first (or set MONGOLB/MONGOSIM)" >&2
    exit 2
  }
done
"$PY" -c 'import pymongo' 2>/dev/null || {
  echo "error: $PY cannot import pymongo: run scripts/install-deps.sh" >&2
  exit 2
}
if [ "${SOAK_NODE:-1}" != 0 ]; then
  if ! command -v "${NODE:-node}" >/dev/null || [ ! -d "$ROOT/node_modules/mongodb" ]; then
    echo "error: node or node_modules/mongodb missing: run scripts/install-deps.sh" \
      "(or SOAK_NODE=0)" >&2
    exit 2
  fi
fi
# exec: the Python orchestrator receives Ctrl-C and SIGTERM itself and stops every process it
# started (they run in their own sessions, and die with it even if it is SIGKILLed).
exec "$PY" "$ROOT/tests/soak/soak.py"
