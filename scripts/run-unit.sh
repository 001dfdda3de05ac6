#!/usr/bin/env bash
# Runs every Check suite binary given on the command line and prints one closing line with the
# totals, "RUNNER: N passed, N failed, N skipped" (RUNNER is $UNIT_RUNNER, "unit" by default),
# recorded for make check's summary by scripts/summary.sh. A suite that skips cases of its own
# (check_spec_cases.c: data cases mongolb's behaviour does not apply to) prints one line
# "SKIP NAME: REASON" for each; they count as skipped and are listed by name. Exits non-zero if
# any suite failed.
set -u
runner=${UNIT_RUNNER:-unit}
summary=$(dirname "$0")/summary.sh
pass=0; fail=0; skipped=0; bad=()
for t in "$@"; do
  out=$(CK_FORK=yes "$t" 2>&1); rc=$?
  printf '%s\n' "$out" | sed "s|^|  $(basename "$t"): |"
  line=$(printf '%s\n' "$out" | grep -E '^[0-9]+%: Checks: ' | tail -n1)
  n=$(printf '%s' "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
  f=$(printf '%s' "$line" | sed -E 's/.*Failures: ([0-9]+), Errors: ([0-9]+).*/\1+\2/')
  [ -n "$n" ] || n=0
  [ -n "$f" ] || f=0
  f=$((f)); pass=$((pass + n - f)); fail=$((fail + f))
  if [ $rc -ne 0 ]; then bad+=("$(basename "$t")"); [ "$f" -gt 0 ] || fail=$((fail + 1)); fi
  while IFS= read -r name; do
    skipped=$((skipped + 1))
    "$summary" skip "$runner" "$name"
  done < <(printf '%s\n' "$out" | sed -n 's/^SKIP //p')
done
"$summary" add "$runner" "$pass" "$fail" "$skipped"
[ ${#bad[@]} -eq 0 ] || { echo "failing suites: ${bad[*]}"; exit 1; }
