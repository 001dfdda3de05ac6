#!/usr/bin/env bash
# Runs the libFuzzer targets built by `make fuzz-build`, one line per target.
#
#   scripts/fuzz.sh smoke SECONDS BINDIR TARGET...
#       Each target over its seed corpus (tests/fuzz/corpus/TARGET), then fuzzing for at most
#       SECONDS in all. What it finds goes to a scratch directory that is removed afterwards, so
#       the seeds stay as committed. This is what `make check` runs.
#   scripts/fuzz.sh run SECONDS BINDIR TARGET...
#       Each target for SECONDS, from the seeds and build/fuzz/corpus/TARGET, which keeps what it
#       finds for the next run.
#
# A crash, a timeout, a leak or a sanitizer report fails the run: the input is kept under
# build/fuzz/artifacts/, the end of libFuzzer's log is shown with the command that replays it.
set -u
cd "$(dirname "$0")/.."

if [ $# -lt 4 ] || { [ "$1" != smoke ] && [ "$1" != run ]; }; then
  echo "usage: $0 smoke|run SECONDS BINDIR TARGET..." >&2
  exit 2
fi
mode=$1 secs=$2 bindir=$3
shift 3

work_root=build/fuzz
artifacts=$work_root/artifacts
mkdir -p "$artifacts" "$work_root/logs"
# Leaks count as failures; UBSan stops at the first report (the targets are built with
# -fno-sanitize-recover too) and prints where.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=()
for t in "$@"; do
  bin=$bindir/$t
  seeds=tests/fuzz/corpus/$t
  log=$work_root/logs/$t.log
  if [ ! -x "$bin" ]; then
    echo "fuzz $mode: $t: FAILED: $bin is missing (make fuzz-build)"
    failed+=("$t")
    continue
  fi
  if [ "$mode" = smoke ]; then
    corpus=$(mktemp -d "$work_root/smoke-$t.XXXXXX")
  else
    corpus=$work_root/corpus/$t
    mkdir -p "$corpus"
  fi
  nseeds=$(find "$seeds" -type f 2>/dev/null | wc -l)
  # libFuzzer runs every input of both directories first, then mutates; new inputs go to the first
  # directory only.
  start=$(date +%s)
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$t-" "$corpus" "$seeds" >"$log" 2>&1
  rc=$?
  elapsed=$(( $(date +%s) - start ))
  [ "$mode" = smoke ] && rm -rf "$corpus"

  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n1)
  if [ $rc -eq 0 ] && grep -q '^Done [0-9]* runs' "$log"; then
    printf 'fuzz %s: %-16s ok: %s runs in %ss over %s seeds, %s\n' \
      "$mode" "$t" "${runs:-?}" "$elapsed" "$nseeds" "${cov:-no coverage line}"
  else
    printf 'fuzz %s: %-16s FAILED (exit %s) after %ss; log: %s\n' "$mode" "$t" "$rc" "$elapsed" "$log"
    # The report and its stack, from the first line that names the problem to the summary.
    report=$(sed -n '/ERROR: \|runtime error\|check failed\|deadly signal\|ALARM\|out-of-memory/,/^SUMMARY/p' "$log" | head -n 60)
    if [ -n "$report" ]; then printf '%s\n' "$report"; else tail -n 40 "$log"; fi | sed 's/^/    /'
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
    if [ -n "$input" ]; then
      echo "    input: $input"
      echo "    replay: $bin $input"
    fi
    failed+=("$t")
  fi
done

# One line with the counts (targets that passed and failed), for make check's summary.
./scripts/summary.sh add "fuzz-$mode" $(($# - ${#failed[@]})) ${#failed[@]} 0
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz $mode: failing targets: ${failed[*]}"
  exit 1
fi
