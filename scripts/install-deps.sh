#!/usr/bin/env bash
# Installs what mongolb needs to build and test on Debian 12, idempotently: Debian packages through
# apt-get (only those not already installed), and the pinned npm packages of package.json when
# node_modules does not match the lock file. Safe to run before every build.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential pkg-config libuv1-dev libbson-dev libssl-dev libinih-dev check
      clang clang-format libclang-rt-14-dev libc-ares-dev libzstd-dev libsnappy-dev
      zlib1g-dev haproxy strace python3 python3-pymongo python3-pytest python3-pytest-xdist python3-zstandard
      python3-snappy nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# nodejs/npm may come from elsewhere than Debian on a developer's machine: keep what works.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  tmp=()
  for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${#missing[@]} Debian packages with apt-get (a first run on a fresh"
  echo "  machine takes a few minutes; later runs skip this): ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Node.js driver and mongosh, pinned by package-lock.json. The stamp avoids a reinstall when
# nothing changed.
if [ -f package-lock.json ]; then
  stamp=node_modules/.mongolb-lock-stamp
  if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
    echo "install-deps: installing the Node.js driver and mongosh for the tests with npm ci (about a"
    echo "  minute the first time; later runs skip this)..."
    npm ci --no-audit --no-fund --loglevel=error
    echo "install-deps: npm packages installed"
    cp package-lock.json "$stamp"
  fi
fi
