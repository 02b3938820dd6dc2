#!/usr/bin/env bash
# Idempotent setup for the browser end-to-end test (tests/it/browser.rs, e2e.mjs).
# Installs Debian's chromium (never a browser downloaded by a test tool) and
# playwright-core (pinned in package.json) into tests/peers/browser/node_modules.
# Uses the machine's own node/npm; Debian's npm package is NOT installed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export DEBIAN_FRONTEND=noninteractive

die() { echo "browser setup: FAILED: $*" >&2; exit 1; }

command -v node >/dev/null || die "node not found (expected the machine's node)"
command -v npm  >/dev/null || die "npm not found (expected the machine's npm)"

if [ ! -x /usr/bin/chromium ]; then
  echo "browser setup: installing Debian chromium"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update || die "apt-get update"
  $sudo apt-get install -y --no-install-recommends chromium fonts-dejavu-core fonts-wqy-zenhei \
    || die "apt-get install chromium"
fi
/usr/bin/chromium --version || die "/usr/bin/chromium does not run"

cd "$here"
want="$(node -p "require('./package.json').dependencies['playwright-core']")"
have="$(node -p "try{require('./node_modules/playwright-core/package.json').version}catch(e){''}")"
if [ "$have" != "$want" ]; then
  echo "browser setup: npm install playwright-core@$want"
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund || die "npm ci"
  else
    npm install --no-audit --no-fund || die "npm install"
  fi
fi
node -e "import('playwright-core').then(()=>console.log('browser setup: playwright-core', require('./node_modules/playwright-core/package.json').version, 'ok'))" \
  || die "playwright-core does not load"
