#!/usr/bin/env bash
# Runs the integration tests: PyMongo (Debian's python3-pymongo under /usr/bin/python3, with
# pytest) over tests/integration, then the Node.js driver over tests/node/*.test.mjs with Node's
# built-in test runner. Both run even if the first fails; exits non-zero if either failed.
set -u
cd "$(dirname "$0")/.."

if [ ! -x "${MONGOSIM:-build/mongosim}" ]; then
  echo "run-integration: ${MONGOSIM:-build/mongosim} is missing (run make)" >&2
  exit 1
fi

rc=0
echo "integration: mongolb ${MONGOLB:-build/mongolb}, mongosim ${MONGOSIM:-build/mongosim}"
echo "integration: pytest tests/integration"
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration || rc=1

# The cursor, transaction, routing and failover suites once more with TLS on both legs
# (applications to mongolb, mongolb to the simulator): the harness turns it on for every Cluster.
TLS_SUITES=(test_proxy_basic test_proxy_cursors test_proxy_routing test_proxy_streams_txn
            test_proxy_failures test_failover_txn test_failover_replset test_rs_routing)
echo "integration: the same suites over TLS on both legs: ${TLS_SUITES[*]}"
tls_files=()
for t in "${TLS_SUITES[@]}"; do tls_files+=("tests/integration/$t.py"); done
MONGOLB_TEST_TLS=1 /usr/bin/python3 -m pytest -q -p no:cacheprovider "${tls_files[@]}" || rc=1

shopt -s nullglob
node_tests=(tests/node/*.test.mjs)
if [ ${#node_tests[@]} -gt 0 ]; then
  if [ ! -d node_modules/mongodb ]; then
    echo "run-integration: node_modules/mongodb is missing (run ./scripts/install-deps.sh)" >&2
    rc=1
  else
    echo "integration: node --test ${node_tests[*]}"
    node --test "${node_tests[@]}" || rc=1

    # The proxy, failover and replica-set files once more with TLS on both legs: the Node
    # harness (tests/node/mongolb_harness.mjs) turns it on for every cluster it starts.
    NODE_TLS_FILES=(tests/node/proxy.test.mjs tests/node/failover.test.mjs
                    tests/node/replset.test.mjs)
    echo "integration: the same Node files over TLS on both legs: ${NODE_TLS_FILES[*]}"
    MONGOLB_TEST_TLS=1 node --test "${NODE_TLS_FILES[@]}" || rc=1
  fi
fi

if [ $rc -eq 0 ]; then echo "integration: all passed"; else echo "integration: FAILED"; fi
exit $rc
