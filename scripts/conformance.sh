#!/usr/bin/env bash
# Runs the Autobahn TestSuite against wsecho on both sides, with the runner in ../shared:
#   the server suite against `wsecho serve`, the client suite against examples/autobahn_client.
# Prints both summaries; exits non-zero if any case FAILED on either side.
# Reports: target/conformance-server/index.html, target/conformance-client/index.html.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="${WSECHO_SHARED:-$root/../shared}"
[ -d "$shared/conformance" ] || { echo "conformance: no $shared/conformance (set WSECHO_SHARED)"; exit 1; }
cd "$root"
cargo build --release --quiet --bin wsecho --example autobahn_client || exit 1

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/wsecho serve --addr "127.0.0.1:$port" --quiet 2>target/conformance-serve.log &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done

echo "== Autobahn server suite against wsecho serve"
bash "$shared/conformance/run.sh" "ws://127.0.0.1:$port/echo" target/conformance-server
server_rc=$?
kill -0 $server 2>/dev/null || { echo "conformance: wsecho serve died during the suite"; server_rc=1; }

echo "== Autobahn client suite against examples/autobahn_client"
bash "$shared/conformance/client.sh" target/conformance-client -- ./target/release/examples/autobahn_client '{url}'
client_rc=$?

[ $server_rc = 0 ] && [ $client_rc = 0 ]
