#!/usr/bin/env bash
# Fails if clang-format (with the project's .clang-format) would change any C file.
set -u
cd "$(dirname "$0")/.."
bad=()
for f in $(git ls-files '*.c' '*.h' 2>/dev/null; git ls-files --others --exclude-standard '*.c' '*.h' 2>/dev/null); do
  [ -f "$f" ] || continue
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "format-check: clang-format would change: ${bad[*]} (run 'make format')"
  exit 1
fi
echo "format-check: clean"
