#!/usr/bin/env bash
# Installs and builds the independent WebSocket peers that tests/it/interop.rs
# runs against wsecho:
#   - Go (gorilla/websocket, Debian package) -> target/peers/go-echo-{server,client}
#     (plain by default; TLS with -cert/-key [-client-ca] on the server, -ca [-cert -key]
#     on the client)
#   - Python `websockets` in a venv          -> target/peers/venv
#     (TLS: --cert/--key [--client-ca] on the server, --ca [--cert --key] on the client)
#   - Node `ws` (npm)                         -> tests/peers/node/node_modules
#     (TLS: --ca [--cert --key] on the client)
# Safe to re-run; a re-run only checks and rebuilds the (cached) Go programs.
# Then: cargo test --test it interop -- --include-ignored
set -euo pipefail

WEBSOCKETS_VERSION=17.4          # PyPI `websockets`, pinned
APT_PACKAGES=(golang-go golang-github-gorilla-websocket-dev)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/peers"

say() { echo "setup.sh: $*"; }
die() { echo "setup.sh: FAILED: $*" >&2; exit 1; }
trap 'echo "setup.sh: FAILED (line $LINENO: $BASH_COMMAND)" >&2' ERR

mkdir -p "$out"

# --- 1. Debian packages: Go and gorilla/websocket -------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
    say "apt-get update"
    apt-get update -q
    say "apt-get install -y ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
else
    say "apt packages present: ${APT_PACKAGES[*]}"
fi
command -v go >/dev/null || die "go not on PATH after installing golang-go"
[ -f /usr/share/gocode/src/github.com/gorilla/websocket/conn.go ] ||
    die "gorilla/websocket source missing from /usr/share/gocode"

# --- 2. Go peers, built offline against Debian's gorilla (see go/go.mod) ----------
say "go build -> $out/go-echo-server, $out/go-echo-client ($(go version))"
(
    cd "$here/go"
    export GO111MODULE=on GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local \
        CGO_ENABLED=0 GOPATH="$out/go-path" GOCACHE="$out/go-cache"
    go build -o "$out/go-echo-server" ./server
    go build -o "$out/go-echo-client" ./client
)

# --- 3. Python venv with `websockets` ---------------------------------------------
venv="$out/venv"
if "$venv/bin/python" -c "import websockets, sys; sys.exit(websockets.__version__ != '$WEBSOCKETS_VERSION')" 2>/dev/null; then
    say "python venv present: $venv (websockets $WEBSOCKETS_VERSION)"
else
    py="${PYTHON:-python3}"
    command -v "$py" >/dev/null || die "$py not found (set PYTHON=...)"
    say "creating venv $venv with $("$py" --version 2>&1)"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    say "pip install websockets==$WEBSOCKETS_VERSION"
    "$venv/bin/pip" install -q --disable-pip-version-check "websockets==$WEBSOCKETS_VERSION"
    "$venv/bin/python" -c "import websockets.sync.client, websockets.sync.server"
fi

# --- 4. Node `ws` (uses the machine's /usr/bin/node and npm, not Debian's npm) ----
command -v node >/dev/null || die "node not found (the machine's Node.js is expected on PATH)"
command -v npm >/dev/null || die "npm not found (the machine's npm is expected on PATH)"
if node -e "process.exit(require('$here/node/node_modules/ws/package.json').version.startsWith('8.') ? 0 : 1)" 2>/dev/null; then
    say "node ws present: $here/node/node_modules/ws"
else
    say "npm ci in $here/node ($(node --version), npm $(npm --version))"
    (cd "$here/node" && npm ci --no-audit --no-fund)
fi

say "done. Run: cargo test --test it interop -- --include-ignored"
