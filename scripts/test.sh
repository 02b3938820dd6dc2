#!/usr/bin/env bash
# Every test wsecho has, on a fresh Debian machine: installs what the tests need (Debian
# packages, a Python venv, npm packages), then runs formatting and lint checks, the unit and
# integration tests (the real-peer and browser ones included), and the Autobahn suites.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
step() { printf '\n== %s\n' "$*"; }

step "Debian packages"
packages=(golang-go golang-github-gorilla-websocket-dev chromium fonts-dejavu-core fonts-wqy-zenhei python3-venv qemu-user file util-linux valgrind tinyproxy squid microsocks clang gcc openssl systemd nginx)
missing=()
for p in "${packages[@]}"; do
  # python3-venv only matters where python3 is Debian's; a python3 with venv will do.
  if [ "$p" = python3-venv ] && python3 -m venv --help >/dev/null 2>&1; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "all present: ${packages[*]}"
fi

step "peers: Go gorilla, Python websockets, Node ws"
bash tests/peers/setup.sh
step "browser: Chromium and playwright-core"
bash tests/peers/browser/setup.sh

step "cargo fmt --check"
cargo fmt --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo clippy --no-default-features (no TLS)"
cargo clippy --workspace --all-targets --quiet --no-default-features -- -D warnings

step "cargo test --workspace (with the real-peer and browser tests; builds bench/ too)"
# Everything the tests need is installed above: a test that finds a prerequisite missing
# (it says so) fails here instead of passing without having tested anything.
export CI="${CI:-1}"
cargo test --workspace --no-fail-fast -- --include-ignored
echo "browser screenshot (CI artifact): $root/target/browser-e2e.png"

step "without the cargo feature tls: the plain binary, its tests, and the TLS flags refused"
no_tls="$root/target/no-tls"
CARGO_TARGET_DIR="$no_tls" cargo build --release --quiet --no-default-features
ls -l "$no_tls/release/wsecho"
# Each: the arguments, the exit status expected, and the words its message must hold.
refused() {
  local want="$1"; shift
  local out status=0
  out="$("$no_tls/release/wsecho" "$@" 2>&1)" || status=$?
  if [ "$status" != "$want" ] || ! grep -q "built without TLS (the cargo feature tls)" <<<"$out"; then
    echo "wsecho $* without TLS: expected exit $want naming the feature, got $status: $out" >&2
    exit 1
  fi
}
refused 2 serve --tls-cert cert.pem --tls-key key.pem
refused 2 dial --ca ca.pem ws://127.0.0.1:1/echo
refused 1 dial wss://127.0.0.1:1/echo
CARGO_TARGET_DIR="$no_tls" cargo test --workspace --quiet --no-default-features

step "Autobahn TestSuite, server and client"
bash scripts/conformance.sh

step "static builds for embedded boxes (x86_64 and aarch64 musl; aarch64 run under qemu-user)"
bash scripts/embedded.sh
