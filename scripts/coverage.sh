#!/usr/bin/env bash
# make coverage: line coverage of src/ from every suite, with gcov.
#
# Builds mongolb and the unit suites that need no simulator with gcov instrumentation in their own
# tree ($COV_BUILD, default build/cov; -O0 -g --coverage, without GCC's format-truncation
# warnings, which only -O0 raises, on log prefixes cut on purpose), clears the counters, runs those unit
# suites and then the integration suites (PyMongo and Node.js, scripts/run-integration.sh) against
# that mongolb (MONGOLB=build/cov/mongolb; mongosim is the normal build, $MONGOSIM or
# build/mongosim), and prints the line coverage of each file of src/ and the total. Every process
# adds its counts to the same .gcda files as it exits, so a mongolb that is killed rather than
# stopped adds nothing; the harnesses stop it with SIGTERM.
#
# The report is printed even when a suite failed; the exit status is then non-zero. Not part of
# make check. Run it through `make coverage`, which builds build/mongosim first.
set -u
cd "$(dirname "$0")/.." || exit 2

COV=${COV_BUILD:-build/cov}
COV_FLAGS="-O0 -g --coverage -Wno-format-truncation"

# The unit suites that need no simulator: mongosim's own (tests/sim) are not part of src/, and a
# simulator being changed must not stop the coverage of the daemon.
unit_bins=()
for f in tests/unit/check_*.c; do
  grep -qE '#include "(sim|store|sim_[a-z_]+)\.h"' "$f" && continue
  unit_bins+=("$COV/tests/$(basename "$f" .c)")
done

echo "coverage: building $COV/mongolb and ${#unit_bins[@]} unit suites with $COV_FLAGS"
# SIMLIB_OBJS= links the suites without libmongosim.a (none of these needs it).
if ! make --no-print-directory -j"$(nproc)" B="$COV" CFLAGS="$COV_FLAGS" LDFLAGS=--coverage \
  SIMLIB_OBJS= "$COV/mongolb" "${unit_bins[@]}"; then
  echo "coverage: the instrumented build failed" >&2
  exit 1
fi
if [ ! -x "${MONGOSIM:-build/mongosim}" ]; then
  echo "coverage: ${MONGOSIM:-build/mongosim} is missing (run make, or set MONGOSIM)" >&2
  exit 1
fi

# Counters from an earlier run would add up with this one's.
find "$COV" -name '*.gcda' -delete

rc=0
echo "coverage: unit suites"
UNIT_RUNNER=unit-cov ./scripts/run-unit.sh "${unit_bins[@]}" || rc=1
echo "coverage: integration suites against $COV/mongolb"
MONGOLB="$COV/mongolb" ./scripts/run-integration.sh || rc=1

# gcov's summary per source file: "File 'src/x.c'" then "Lines executed:P% of N".
report=$(for f in src/*.c; do
  gcov -n -o "$COV/obj/src" "$f" 2>/dev/null
done)
echo
echo "coverage: lines of src/ executed by the unit and integration suites"
printf '%s\n' "$report" | awk '
  /^File / { file = $2; gsub(/\047/, "", file); next }
  /^Lines executed:/ && file ~ /^src\/[^\/]*\.c$/ && !(file in seen) {
    seen[file] = 1
    split($2, a, ":"); pct = a[2]; sub(/%/, "", pct); n = $4
    hit = int(pct * n / 100 + 0.5)
    files[++nf] = file; lines[file] = n; hits[file] = hit
    total += n; covered += hit
  }
  END {
    for (i = 1; i <= nf; i++) {
      f = files[i]
      printf "  %-22s %5d of %5d lines  %6.2f%%\n", f, hits[f], lines[f], \
        lines[f] ? 100 * hits[f] / lines[f] : 0
    }
    printf "  %-22s %5d of %5d lines  %6.2f%%\n", "total", covered, total, \
      total ? 100 * covered / total : 0
  }'
[ $rc -eq 0 ] || echo "coverage: some suites failed (above); the figures count what ran"
exit $rc
