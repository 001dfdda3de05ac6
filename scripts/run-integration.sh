#!/usr/bin/env bash
# Runs the integration tests: PyMongo (Debian's python3-pymongo under /usr/bin/python3, with
# pytest) over tests/integration, then the Node.js driver over tests/node/*.test.mjs with Node's
# built-in test runner. Both run even if the first fails; exits non-zero if either failed.
#
# Each run ends with its counts, "RUNNER: N passed, N failed, N skipped" (pytest, pytest-tls,
# pytest-auth-tls, node, node-tls), taken from pytest's JUnit XML and node's TAP reports by scripts/summary.sh,
# which also records every skipped test by name for make check's summary: against a real cluster
# (MONGOLB_TEST_SEEDS) the tests that need the simulator are skipped, and the summary says which.
set -u
cd "$(dirname "$0")/.."

reports=$(mktemp -d "${TMPDIR:-/tmp}/mongolb-integration.XXXXXX")
trap 'rm -rf "$reports"' EXIT
# Node's own reporter on the terminal as before (spec on a terminal, TAP otherwise), and TAP in a
# file to count from.
node_reporter=tap
[ -t 1 ] && node_reporter=spec
node_test() {
  local name=$1 status
  shift
  node --test --test-reporter="$node_reporter" --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$reports/$name.tap" "$@"
  status=$?
  ./scripts/summary.sh node "$name" "$reports/$name.tap" $status
  return $status
}
pytest_run() {
  local name=$1 status
  shift
  /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider "${xdist[@]}" --junitxml="$reports/$name.xml" \
    "$@"
  status=$?
  ./scripts/summary.sh pytest "$name" "$reports/$name.xml" $status
  return $status
}

# The tests spend most of their time waiting on timers and sockets, so two pytest workers (Debian's
# python3-pytest-xdist) halve the wall-clock time on two cores; every test starts its own
# simulator and mongolb on ephemeral ports, so they do not share state. PYTEST_WORKERS=0 runs them
# in one process.
xdist=()
workers=${PYTEST_WORKERS:-2}
if [ "$workers" != 0 ] && /usr/bin/python3 -c 'import xdist' 2>/dev/null; then
  xdist=(-n "$workers")
fi

if [ ! -x "${MONGOSIM:-build/mongosim}" ]; then
  echo "run-integration: ${MONGOSIM:-build/mongosim} is missing (run make)" >&2
  exit 1
fi

rc=0
echo "integration: mongolb ${MONGOLB:-build/mongolb}, mongosim ${MONGOSIM:-build/mongosim}"
echo "integration: pytest tests/integration"
pytest_run pytest tests/integration || rc=1

# The cursor, transaction, routing and failover suites once more with TLS on both legs
# (applications to mongolb, mongolb to the simulator): the harness turns it on for every Cluster.
TLS_SUITES=(test_proxy_basic test_proxy_cursors test_proxy_routing test_proxy_streams_txn
            test_proxy_failures test_failover_txn test_failover_replset test_rs_routing)
echo "integration: the same suites over TLS on both legs: ${TLS_SUITES[*]}"
tls_files=()
for t in "${TLS_SUITES[@]}"; do tls_files+=("tests/integration/$t.py"); done
MONGOLB_TEST_TLS=1 pytest_run pytest-tls "${tls_files[@]}" || rc=1

# The same suites with authentication as well (issue 10: they pass with [auth] mode = passthrough
# and TLS on): mongosim --auth, mongolb in passthrough with a service user, and every connection
# of the tests, drivers and raw sockets alike, logged in as a root user (mongolb_harness.py).
# About 30 s, so the whole list runs rather than a subset.
echo "integration: the same suites with auth (passthrough) and TLS on both legs"
MONGOLB_TEST_AUTH=passthrough MONGOLB_TEST_TLS=1 pytest_run pytest-auth-tls "${tls_files[@]}" ||
  rc=1

shopt -s nullglob
node_tests=(tests/node/*.test.mjs)
if [ ${#node_tests[@]} -eq 0 ]; then
  ./scripts/summary.sh add node 0 0 0
  ./scripts/summary.sh add node-tls 0 0 0
else
  if [ ! -d node_modules/mongodb ]; then
    echo "run-integration: node_modules/mongodb is missing (run ./scripts/install-deps.sh)" >&2
    rc=1
    ./scripts/summary.sh add node 0 1 0
    ./scripts/summary.sh add node-tls 0 1 0
  else
    echo "integration: node --test ${node_tests[*]}"
    node_test node "${node_tests[@]}" || rc=1

    # The proxy, failover and replica-set files once more with TLS on both legs: the Node
    # harness (tests/node/mongolb_harness.mjs) turns it on for every cluster it starts.
    NODE_TLS_FILES=(tests/node/proxy.test.mjs tests/node/failover.test.mjs
                    tests/node/replset.test.mjs)
    echo "integration: the same Node files over TLS on both legs: ${NODE_TLS_FILES[*]}"
    MONGOLB_TEST_TLS=1 node_test node-tls "${NODE_TLS_FILES[@]}" || rc=1
  fi
fi

if [ $rc -eq 0 ]; then echo "integration: all passed"; else echo "integration: FAILED"; fi
exit $rc
