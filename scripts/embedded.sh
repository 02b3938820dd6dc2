#!/usr/bin/env bash
# Builds the static binaries for embedded boxes (TLS included: ring needs gcc and clang) and
# checks the aarch64 one under qemu-user: serve + dial echo over ws://, and, once serve takes
# --tls-cert, over wss:// with a test CA and server certificate that openssl makes here:
#   target/x86_64-unknown-linux-musl/release/wsecho   (static-pie, musl)
#   target/aarch64-unknown-linux-musl/release/wsecho  (static, musl, linked by rust-lld)
# A target that rustup cannot fetch is skipped with a line saying so; anything else that
# fails, fails the script.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
status=0

have_target() {
  rustup target list --installed 2>/dev/null | grep -qx "$1" && return 0
  local out
  if out=$(rustup target add "$1" 2>&1); then return 0; fi
  echo "embedded: SKIPPED the $1 build: 'rustup target add $1' failed: $(echo "$out" | tail -n 1)"
  return 1
}

# Under qemu-aarch64: `serve --tls-cert --tls-key` and `dial --ca … wss://127.0.0.1:PORT/echo`
# echo two lines, and the server stops with status 0 on Ctrl-C. The CA and the server's
# ECDSA P-256 certificate (SAN IP:127.0.0.1) are made by openssl in a temporary directory.
tls_echo() {
  local bin=$1 dir port server got server_rc
  command -v openssl >/dev/null || { echo "embedded: FAILED: openssl missing (apt-get install openssl)"; return 1; }
  dir=$(mktemp -d) || return 1
  if ! {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key" &&
    openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=wsecho embedded test CA" -days 1 \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
      -out "$dir/ca.pem" &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/server.key" &&
    openssl req -new -key "$dir/server.key" -subj "/CN=localhost" -out "$dir/server.csr" &&
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$dir/server.ext" &&
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 1 -extfile "$dir/server.ext" -out "$dir/server.pem"
  } >"$dir/openssl.log" 2>&1; then
    echo "embedded: FAILED: openssl could not make the test certificates:"; cat "$dir/openssl.log"
    rm -rf "$dir"; return 1
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  qemu-aarch64 "$bin" serve --addr "127.0.0.1:$port" --quiet \
    --tls-cert "$dir/server.pem" --tls-key "$dir/server.key" 2>target/embedded-serve-tls.log &
  server=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
  got=$(printf 'hello over wss\nzweite Zeile ü\n' |
    timeout 20 qemu-aarch64 "$bin" dial --stdin --ca "$dir/ca.pem" "wss://127.0.0.1:$port/echo" 2>"$dir/dial.log")
  kill -INT $server; wait $server; server_rc=$?
  if [ "$got" = $'hello over wss\nzweite Zeile ü' ] && [ $server_rc = 0 ]; then
    echo "embedded: aarch64 serve --tls-cert + dial --ca wss:// under qemu echoed 2 lines and stopped with status 0"
    rm -rf "$dir"; return 0
  fi
  echo "embedded: FAILED: aarch64 wss:// echo under qemu (got '$got', server status $server_rc)"
  echo "--- dial stderr ---"; cat "$dir/dial.log"
  echo "--- serve log (target/embedded-serve-tls.log) ---"; cat target/embedded-serve-tls.log
  rm -rf "$dir"; return 1
}

for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  have_target "$target" || continue
  # rust-lld links musl targets with the C runtime Rust ships for them: no cross gcc needed.
  linker_var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_LINKER"
  # ring (the crypto under TLS) compiles C and assembly for the target: the host's gcc
  # serves x86_64 musl, clang cross-compiles for aarch64 (cc passes it --target).
  cc_var="CC_${target//-/_}"
  case "$target" in
    x86_64-*) cc=gcc ;;
    *) cc=clang ;;
  esac
  command -v "$cc" >/dev/null || { echo "embedded: FAILED: $cc missing (apt-get install $cc)"; status=1; continue; }
  if ! env "$linker_var=rust-lld" "$cc_var=$cc" cargo build --release --quiet --target "$target" --bin wsecho; then
    echo "embedded: FAILED to build for $target"; status=1; continue
  fi
  bin="target/$target/release/wsecho"
  echo "embedded: built $bin ($(stat -c %s "$bin") bytes; $(file -b "$bin" | cut -d, -f1-2))"
done

bin=target/aarch64-unknown-linux-musl/release/wsecho
if [ -x "$bin" ]; then
  command -v qemu-aarch64 >/dev/null || { echo "embedded: FAILED: qemu-aarch64 missing (apt-get install qemu-user)"; exit 1; }
  version=$(qemu-aarch64 "$bin" --version) || { echo "embedded: FAILED: aarch64 --version"; exit 1; }
  echo "embedded: aarch64 under qemu: $version"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  qemu-aarch64 "$bin" serve --addr "127.0.0.1:$port" --quiet 2>target/embedded-serve.log &
  server=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
  got=$(printf 'hello from aarch64\nzweite Zeile ü\n' | timeout 20 qemu-aarch64 "$bin" dial --stdin "ws://127.0.0.1:$port/echo" 2>/dev/null)
  kill -INT $server; wait $server; server_rc=$?
  if [ "$got" = $'hello from aarch64\nzweite Zeile ü' ] && [ $server_rc = 0 ]; then
    echo "embedded: aarch64 serve + dial under qemu echoed 2 lines and stopped with status 0"
  else
    echo "embedded: FAILED: aarch64 echo under qemu (got '$got', server status $server_rc)"; status=1
  fi

  if qemu-aarch64 "$bin" serve --help 2>&1 | grep -q -- --tls-cert; then
    tls_echo "$bin" || status=1
  else
    echo "embedded: SKIPPED the aarch64 wss:// check: this wsecho's serve has no --tls-cert"
  fi
fi
exit $status
