#!/usr/bin/env bash
# The TLS comparison: wsecho `serve --tls-cert --tls-key` (started twice: the A/A column), the
# bare reference over rustls (`reference_server --tls`, default and 4 KiB read buffer) and the
# Go original over TLS (`go-echo-server -cert -key`), all with one fresh ECDSA P-256
# certificate; loadgen's client offers TLS 1.3 with TLS13_AES_128_GCM_SHA256 only and makes a
# full handshake every time. Then the stripped sizes of wsecho with and without the `tls`
# feature.
#
#   bash bench/tls.sh [--rounds 5] [--secs 3] [--idle-conns 2000] [--only small,large,handshake,idle]
#
# Scenarios and rows as in `loadgen compare` (bench/loadgen.rs); server CPU per operation is the
# server's utime + stime over the run (its task-clock) / operations. The servers run with
# glibc's per-thread cache off, as in docs/performance.md. ~6 min for 5 rounds.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"
cargo build --release --workspace
# The plain binary, for its size only (its own directory: a different feature set).
CARGO_TARGET_DIR="$target/no-tls" cargo build --release --no-default-features --bin wsecho
[ -x "$root/target/peers/go-echo-server" ] || bash tests/peers/setup.sh
command -v openssl >/dev/null || { echo "needs openssl (apt-get install -y openssl)" >&2; exit 1; }

GLIBC_TUNABLES=glibc.malloc.tcache_count=0 "$target/release/loadgen" compare --tls "$@"

echo
echo "stripped binaries, bytes (KiB):"
for f in "$target/release/wsecho" "$target/no-tls/release/wsecho" "$root/target/peers/go-echo-server"; do
    tmp=$(mktemp)
    strip -o "$tmp" "$f"
    bytes=$(stat -c %s "$tmp")
    rm -f "$tmp"
    printf '  %-60s %9d (%.1f KiB)\n' "${f#"$root"/}" "$bytes" "$(awk -v b="$bytes" 'BEGIN {print b / 1024}')"
done
