#!/usr/bin/env bash
# Installs what the browser end-to-end tests (test/e2e/browser_test.go) need and a fresh Debian
# machine lacks: Debian's chromium (playwright's own browser download does not work offline) and
# the npm packages pinned in test/e2e/testdata/browser (hls.js, dash.js, playwright-core).
# Idempotent and silent when everything is present; node and npm must be installed.
set -euo pipefail

dir="$(cd "$(dirname "$0")/.." && pwd)/test/e2e/testdata/browser"

need_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "browser-deps: need root to run: $*" >&2; exit 1; fi
}

# One install at a time: test binaries and a developer's shell may run this together.
if command -v flock >/dev/null; then
  exec 9>"${TMPDIR:-/tmp}/gopcast-browser-deps.lock"
  flock 9
fi

if [ ! -x /usr/bin/chromium ]; then
  echo "browser-deps: installing chromium from Debian's packages"
  need_root apt-get update -q
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 chromium
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser-deps: installing Node.js and npm from Debian's packages"
  need_root apt-get update -q
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 nodejs npm
fi

# node_modules is stale when package.json or the lock changed after the last install; npm writes
# node_modules/.package-lock.json on every install, so its age tells.
stamp="$dir/node_modules/.package-lock.json"
stale=0
if [ ! -f "$stamp" ]; then
  stale=1
else
  for f in "$dir/package.json" "$dir/package-lock.json"; do
    if [ -f "$f" ] && [ "$f" -nt "$stamp" ]; then stale=1; fi
  done
fi
if [ "$stale" = 1 ]; then
  echo "browser-deps: installing npm packages in ${dir#"$PWD/"}"
  cd "$dir"
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  else
    npm install --no-audit --no-fund --loglevel=error
  fi
  touch "$stamp"
fi
