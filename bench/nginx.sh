#!/usr/bin/env bash
# Two wsecho instances behind nginx (deploy/nginx.conf) against one wsecho alone, at the
# benchmark's usual loads: 64 connections × 32 B echoes, 16 × 64 KiB binary echoes, handshakes
# from 16 threads. Interleaved rounds (the order rotates each round), medians, and an A/A
# column (a second lone instance of the same binary).
#
#   cargo build --release --workspace
#   bash bench/nginx.sh [--rounds 5] [--secs 3] [--plain]
#   (LOADGEN=PATH: another loadgen build than target/release/loadgen)
#
# Default: TLS everywhere the client goes, as users run it: loadgen speaks wss:// (TLS 1.3,
# AES-128-GCM, a full handshake each time) to nginx, which ends TLS and speaks plain HTTP to
# the instances; the lone instance serves wss:// itself (--tls-cert/--tls-key). --plain: the same without TLS, with nginx's `listen … ssl` made a
# plain `listen` in a bench-only copy of the file (the proxying alone).
#
# Server CPU per operation is `perf stat -e task-clock` over every server process of the
# setup: the instance alone; nginx's master and workers and both instances behind nginx.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wsecho="$root/target/release/wsecho"
loadgen="${LOADGEN:-$root/target/release/loadgen}"
rounds=5 secs=3 tls=1
while (($#)); do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --secs) secs=$2; shift 2 ;;
        --plain) tls=0; shift ;;
        *) echo "usage: $0 [--rounds N] [--secs S] [--plain]" >&2; exit 2 ;;
    esac
done
for bin in "$wsecho" "$loadgen"; do
    [ -x "$bin" ] || { echo "missing $bin: cargo build --release --workspace" >&2; exit 1; }
done
command -v nginx >/dev/null || { echo "nginx missing: apt-get install nginx" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf missing: apt-get install linux-perf" >&2; exit 1; }

work=$(mktemp -d /tmp/wsecho-nginx-bench.XXXXXX)
pids=()
nginx_pid=
cleanup() {
    # nginx first (SIGTERM: fast shutdown; the master waits for its workers), then wsecho.
    if [ -n "$nginx_pid" ]; then kill -TERM "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; fi
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if ((tls)); then
    # A test CA and an ECDSA P-256 server certificate for 127.0.0.1 (ca.pem, server.pem/.key).
    "$loadgen" certs "$work" >/dev/null
    scheme=wss
    ca_args=(--ca "$work/ca.pem")
    tls_args=(--tls-cert "$work/server.pem" --tls-key "$work/server.key")
else
    scheme=ws
    ca_args=()
    tls_args=()
fi
export GLIBC_TUNABLES=glibc.malloc.tcache_count=0

# serve PORT ARGS...: a wsecho instance, in the background; its pid in $started.
serve() {
    local port=$1
    shift
    "$wsecho" serve --quiet --addr "127.0.0.1:$port" "$@" 2>>"$work/wsecho.log" &
    started=$!
    pids+=("$started")
    "$loadgen" wait "$port"
}

direct_port=$(free_port); serve "$direct_port" "${tls_args[@]}"; direct_pids=$started
aa_port=$(free_port); serve "$aa_port" "${tls_args[@]}"; aa_pids=$started
a_port=$(free_port); serve "$a_port" --trust-proxy 127.0.0.1; behind_pids=$started
b_port=$(free_port); serve "$b_port" --trust-proxy 127.0.0.1; behind_pids+=",$started"

nginx_port=$(free_port)
listen="listen 127.0.0.1:$nginx_port ssl;"
((tls)) || listen="listen 127.0.0.1:$nginx_port;"
mkdir -p "$work/nginx/temp"
sed -e "s|listen 443 ssl;|$listen|" \
    -e "s|127.0.0.1:8081|127.0.0.1:$a_port|" -e "s|127.0.0.1:8082|127.0.0.1:$b_port|" \
    -e "s|/etc/wsecho/fullchain.pem|$work/server.pem|" -e "s|/etc/wsecho/privkey.pem|$work/server.key|" \
    -e "s|/var/log/nginx/wsecho.access.log|$work/nginx/access.log|" \
    -e "s|/var/lib/nginx/|$work/nginx/temp/|" \
    "$root/deploy/nginx.conf" >"$work/nginx/nginx.conf"
((tls)) || sed -i -e '/ssl_/d' "$work/nginx/nginx.conf"
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx/" \
    -g "daemon off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;" &
nginx_pid=$!
"$loadgen" wait "$nginx_port"
sleep 0.5
nginx_pids=$(pgrep -d, -P "$nginx_pid" || true)
nginx_pids="$nginx_pid${nginx_pids:+,$nginx_pids},$behind_pids"

setups=(direct aa nginx)
declare -A url pidlist
url[direct]="$scheme://127.0.0.1:$direct_port/echo"; pidlist[direct]=$direct_pids
url[aa]="$scheme://127.0.0.1:$aa_port/echo"; pidlist[aa]=$aa_pids
url[nginx]="$scheme://127.0.0.1:$nginx_port/echo"; pidlist[nginx]=$nginx_pids
scenarios=(small large handshake)
declare -A load=(
    [small]="pingpong --conns 64 --size 32"
    [large]="pingpong --conns 16 --size 65536 --binary"
    [handshake]="handshakes --concurrency 16"
)

# measure SETUP SCENARIO: one run; appends "RATE CPU_US_PER_OP" to $work/SETUP.SCENARIO
measure() {
    local setup=$1 scenario=$2 out ops rate
    perf stat -x, -e task-clock -p "${pidlist[$setup]}" -o "$work/perf" &
    local perf_pid=$!
    sleep 0.2
    # shellcheck disable=SC2086  # the load's words are split on purpose
    out=$("$loadgen" ${load[$scenario]} --secs "$secs" "${ca_args[@]}" "${url[$setup]}")
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    echo "  $setup: $out" >&2
    case $scenario in
        handshake) ops=$(sed -n 's/.*: \([0-9]*\) in .*/\1/p' <<<"$out")
                   rate=$(sed -n 's/.* = \([0-9.]*\)\/s.*/\1/p' <<<"$out") ;;
        *) ops=$(sed -n 's/.*: \([0-9]*\) echoes in .*/\1/p' <<<"$out")
           rate=$(sed -n 's/.* = \([0-9.]*\) echoes\/s.*/\1/p' <<<"$out") ;;
    esac
    awk -F, -v ops="$ops" -v rate="$rate" '$3 == "task-clock" {printf "%s %.1f\n", rate, $1 * 1000 / ops}' \
        "$work/perf" >>"$work/$setup.$scenario"
}

for ((r = 0; r < rounds; r++)); do
    echo "round $((r + 1))/$rounds" >&2
    for scenario in "${scenarios[@]}"; do
        for ((i = 0; i < ${#setups[@]}; i++)); do
            measure "${setups[$(((i + r) % ${#setups[@]}))]}" "$scenario"
        done
    done
done

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
range() { sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s–%s", lo, hi}'; }
cell() { awk -v c="$2" '{print $c}' "$work/$1" | median; }

echo
echo "$rounds interleaved rounds of $secs s, $scheme://, medians (range of the rate):"
echo
echo "| | wsecho alone | A/A | 2 instances behind nginx |"
echo "|---|---|---|---|"
for scenario in "${scenarios[@]}"; do
    case $scenario in
        small) what="64 conns × 32 B, echoes/s"; cpu="server CPU per echo, µs" ;;
        large) what="16 conns × 64 KiB, echoes/s"; cpu="server CPU per echo, µs" ;;
        handshake) what="handshakes/s at 16 concurrent"; cpu="server CPU per handshake, µs" ;;
    esac
    row="| $what |" cpurow="| $cpu |"
    for setup in "${setups[@]}"; do
        row+=" $(cell "$setup.$scenario" 1) ($(awk '{print $1}' "$work/$setup.$scenario" | range)) |"
        cpurow+=" $(cell "$setup.$scenario" 2) |"
    done
    echo "$row"
    echo "$cpurow"
done
