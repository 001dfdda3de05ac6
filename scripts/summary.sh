#!/usr/bin/env bash
# Counts for make check's closing lines. Each test runner reports what it ran; `make check` sets
# CHECK_SUMMARY to a file where those reports add up, and prints them at the end:
#
#   scripts/summary.sh add RUNNER PASSED FAILED SKIPPED
#       Prints "RUNNER: N passed, N failed, N skipped" and records it in $CHECK_SUMMARY (if set).
#   scripts/summary.sh skip RUNNER NAME...
#       Records the name of a skipped test (with its reason), for the list at the end.
#   scripts/summary.sh pytest RUNNER JUNIT_XML PYTEST_STATUS
#       Counts a pytest run from its --junitxml report (errors count as failures) and records its
#       skipped tests by name. A run that failed without a failed test (it could not collect, or
#       it crashed) counts one failure.
#   scripts/summary.sh node RUNNER TAP_FILE NODE_STATUS
#       The same for node --test from its TAP report: failed and cancelled tests fail; a skipped
#       test or a skipped suite (whose tests never run, so node's own totals leave them out)
#       counts as one skipped, by name.
#   scripts/summary.sh report RUNNER...
#       Prints the skipped tests by name, one line per runner, then the total alone on the last
#       line: "check: N passed, N failed, N skipped". A runner that reported nothing counts one
#       failure. Exits 1 if anything failed.
#
# $CHECK_SUMMARY holds one record per line, fields separated by tabs: "count RUNNER P F S" or
# "skip RUNNER NAME".
set -u
cd "$(dirname "$0")/.." || exit 2

record() {
  if [ -n "${CHECK_SUMMARY:-}" ]; then
    mkdir -p "$(dirname "$CHECK_SUMMARY")"
    local IFS=$'\t'
    printf '%s\n' "$*" >>"$CHECK_SUMMARY"
  fi
}

is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }

cmd=${1:-}
shift || true
case "$cmd" in
add)
  if [ $# -ne 4 ] || ! is_count "$2" || ! is_count "$3" || ! is_count "$4"; then
    echo "usage: $0 add RUNNER PASSED FAILED SKIPPED" >&2
    exit 2
  fi
  echo "$1: $2 passed, $3 failed, $4 skipped"
  record count "$1" "$2" "$3" "$4"
  ;;
skip)
  [ $# -ge 2 ] || { echo "usage: $0 skip RUNNER NAME..." >&2; exit 2; }
  runner=$1
  shift
  record skip "$runner" "$(printf '%s' "$*" | tr '\t\n' '  ')"
  ;;
pytest | node)
  [ $# -eq 3 ] || { echo "usage: $0 $cmd RUNNER REPORT STATUS" >&2; exit 2; }
  runner=$1 report=$2 status=$3
  # Prints "P F S" on the first line, then one skipped test per line.
  parsed=$(/usr/bin/python3 - "$cmd" "$report" <<'EOF'
import re
import sys
import xml.etree.ElementTree as ET

kind, path = sys.argv[1], sys.argv[2]
passed = failed = 0
skipped = []
try:
    if kind == "pytest":
        root = ET.parse(path).getroot()
        for case in root.iter("testcase"):
            # "tests.integration.test_x" or "test_x" and "test_y[param]" -> test_x.py::test_y
            module = case.get("classname", "").split(".")[-1]
            name = "%s.py::%s" % (module, case.get("name", "?")) if module else case.get("name")
            outcome = [c for c in case if c.tag in ("failure", "error", "skipped")]
            if any(c.tag in ("failure", "error") for c in outcome):
                failed += 1
            elif outcome:
                reason = outcome[0].get("message", "").strip()
                skipped.append("%s: %s" % (name, reason) if reason else name)
            else:
                passed += 1
    else:
        # node --test TAP: "# Subtest: NAME" opens a test at its indentation, then
        # "ok N - NAME # SKIP reason" / "not ok N - NAME"; "# pass", "# fail", "# cancelled"
        # close the run. A skipped suite's tests never run: it counts as one skipped.
        stack = []
        totals = {}
        for line in open(path, encoding="utf-8", errors="replace"):
            line = line.rstrip("\n")
            m = re.match(r"^( *)# Subtest: (.*)$", line)
            if m:
                depth = len(m.group(1)) // 4
                del stack[depth:]
                stack.append(m.group(2))
                continue
            m = re.match(r"^( *)ok \d+ - (.*?) # SKIP ?(.*)$", line)
            if m:
                depth = len(m.group(1)) // 4
                path_names = stack[:depth] + [m.group(2)]
                reason = m.group(3).strip()
                name = " > ".join(path_names)
                skipped.append("%s: %s" % (name, reason) if reason else name)
                continue
            m = re.match(r"^# (pass|fail|cancelled) (\d+)$", line)
            if m:
                totals[m.group(1)] = int(m.group(2))
        passed = totals.get("pass", 0)
        failed = totals.get("fail", 0) + totals.get("cancelled", 0)
except (OSError, ET.ParseError) as e:
    print("0 0 0")
    print("!%s" % e)
    sys.exit(0)
print("%d %d %d" % (passed, failed, len(skipped)))
for s in skipped:
    print(s)
EOF
)
  read -r p f s <<<"$(printf '%s\n' "$parsed" | head -n1)"
  if ! is_count "${p:-}" || ! is_count "${f:-}" || ! is_count "${s:-}"; then
    p=0 f=0 s=0
    parsed=$'0 0 0\n!the report could not be parsed'
  fi
  problem=$(printf '%s\n' "$parsed" | sed -n '2,$p' | sed -n 's/^!//p')
  # A run that failed, or left no report, must show a failure whatever its report says.
  if [ -n "$problem" ] && [ "$f" -eq 0 ]; then
    f=1
    echo "$runner: no report to count ($problem): counted as one failure"
  elif [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
    echo "$runner: exited with status $status without a failed test: counted as one failure"
  fi
  "$0" add "$runner" "$p" "$f" "$s"
  printf '%s\n' "$parsed" | sed -n '2,$p' | grep -v '^!' | while IFS= read -r name; do
    [ -n "$name" ] && "$0" skip "$runner" "$name"
  done
  ;;
report)
  file=${CHECK_SUMMARY:-}
  if [ -z "$file" ]; then
    echo "usage: CHECK_SUMMARY=FILE $0 report RUNNER..." >&2
    exit 2
  fi
  [ -f "$file" ] || : >"$file"
  /usr/bin/python3 - "$file" "$@" <<'EOF'
import os
import sys

path, expected = sys.argv[1], sys.argv[2:]
counts = {}   # runner -> [passed, failed, skipped], in the order reported
skips = {}    # name -> runners that skipped it
for line in open(path, encoding="utf-8", errors="replace"):
    f = line.rstrip("\n").split("\t")
    if f[0] == "count" and len(f) == 5:
        c = counts.setdefault(f[1], [0, 0, 0])
        for i in range(3):
            c[i] += int(f[2 + i])
    elif f[0] == "skip" and len(f) >= 3:
        skips.setdefault("\t".join(f[2:]), []).append(f[1])
# The expected runners in their order, then any other that reported (a step that failed
# without counting, e.g. format-check).
ordered = {r: counts.get(r) for r in expected}
ordered.update((r, c) for r, c in counts.items() if r not in ordered)
counts = ordered
seeds = os.environ.get("MONGOLB_TEST_SEEDS", "").strip()
total_skipped = sum(c[2] for c in counts.values() if c)
if skips:
    where = " against MONGOLB_TEST_SEEDS=%s" % seeds if seeds else ""
    print("check: %d skipped%s, by name:" % (total_skipped, where))
    for name, runners in skips.items():
        print("  skipped (%s): %s" % (", ".join(runners), name))
tp = tf = ts = 0
for r, c in counts.items():
    if c is None:
        print("%s: did not report (it failed before counting): counted as 1 failed" % r)
        tf += 1
        continue
    print("%s: %d passed, %d failed, %d skipped" % (r, c[0], c[1], c[2]))
    tp, tf, ts = tp + c[0], tf + c[1], ts + c[2]
print("check: %d passed, %d failed, %d skipped" % (tp, tf, ts))
sys.exit(1 if tf else 0)
EOF
  ;;
*)
  echo "usage: $0 add|skip|pytest|node|report ..." >&2
  exit 2
  ;;
esac
