#!/usr/bin/env bash
# The deterministic benchmark figures: syscalls and user-space instructions per echo and per
# handshake, over the SERVER only, for wsecho serve --quiet, the reference (default and 4 KiB
# read buffer), Go gorilla and raw TCP.
#
#   cargo build --release --workspace && bash bench/syscalls.sh [--wsecho PATH] [--only NAME]
#
# Each figure is (run with N operations - baseline with the same connections and 0 operations)
# / N, so start-up, accepts, upgrades and closes cancel out. Syscalls: `strace -f -c` around
# the server. Instructions: valgrind's callgrind around the server (not for Go: valgrind
# serializes its runtime's threads; not for raw TCP). Counts are fixed, not time-based, so
# two runs agree closely; the whole script takes a few minutes. Scenarios: 64 connections x
# 32 B text, 16 x 64 KiB binary, handshakes (connect, upgrade, Close handshake) 16 at a time.
# Raw strace/callgrind files, per-syscall breakdowns and callgrind_annotate tops go to $OUT.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-/tmp/wsecho-syscalls}"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
loadgen="$bin/loadgen"
reference="$bin/reference_server"
wsecho="$bin/wsecho"
go="$root/target/peers/go-echo-server"
only=""
while (($#)); do
    case "$1" in
        --wsecho) wsecho="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        *) echo "usage: $0 [--wsecho PATH] [--only wsecho|reference|ref4k|go|raw]" >&2; exit 2 ;;
    esac
done
for f in "$loadgen" "$reference" "$wsecho"; do
    [ -x "$f" ] || { echo "missing $f: cargo build --release --workspace" >&2; exit 1; }
done
missing=()
command -v strace >/dev/null || missing+=(strace)
command -v valgrind >/dev/null || missing+=(valgrind)
if ((${#missing[@]})); then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
mkdir -p "$OUT"
rm -f "$OUT"/*

# name | tools | server command (ADDR is replaced) ; raw TCP has no handshake scenario.
servers=(
    "wsecho|strace callgrind|$wsecho serve --quiet --addr ADDR"
    "reference|strace callgrind|$reference ADDR"
    "ref4k|strace callgrind|$reference ADDR 4096"
    "go|strace|$go -addr ADDR"
    "raw|strace|$reference --raw ADDR"
)
# scenario | loadgen arguments | operations for strace | for callgrind (per connection for
# ping-pong, total for handshakes) | connections
scenarios=(
    "small|pingpong --conns 64 --size 32|100|40|64"
    "large|pingpong --conns 16 --size 65536 --binary|50|20|16"
    "handshake|handshakes --concurrency 16|1000|300|1"
)

# Below Linux's ephemeral range (32768 and up), where our own clients' ports could take it.
port=$((20000 + RANDOM % 10000))
threads() { awk '/^Threads:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# run TOOL SERVER_CMD LOADGEN_ARGS COUNT URL_SCHEME -> writes $out.{strace,callgrind}
run() {
    local tool=$1 cmd=$2 args=$3 count=$4 scheme=$5 out=$6
    port=$((port + 1))
    local addr="127.0.0.1:$port" tracer pid
    # shellcheck disable=SC2086  # the command is split on purpose
    set -- ${cmd//ADDR/$addr}
    case $tool in
        strace) strace -f -c -o "$out" -- "$@" >/dev/null 2>&1 & tracer=$! ;;
        callgrind) valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>"$out.log" & tracer=$! ;;
    esac
    "$loadgen" wait "$port"
    pid=$tracer
    [ "$tool" = strace ] && pid=$(pgrep -P "$tracer")
    local idle_threads
    idle_threads=$(threads "$pid")
    # shellcheck disable=SC2086
    timeout 120 "$loadgen" $args --count "$count" "$scheme://$addr/echo" >/dev/null
    # Let connection threads finish before the server is stopped (at most 5 s).
    for _ in $(seq 100); do (($(threads "$pid") <= idle_threads)) && break; sleep 0.05; done
    kill -TERM "$pid"
    wait "$tracer" || true
}

# Per-syscall counts of one strace -c file: "name calls" lines, and "total calls".
calls() { awk '!/^(%|-)/ && NF >= 5 {print $NF, $4}' "$1"; }
instructions() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

declare -A result
for s in "${servers[@]}"; do
    IFS='|' read -r name tools cmd <<<"$s"
    [ -n "$only" ] && [ "$only" != "$name" ] && continue
    if [ "$name" = go ] && [ ! -x "$go" ]; then
        echo "skipping go: no $go (run tests/peers/setup.sh)" >&2
        continue
    fi
    scheme=ws
    [ "$name" = raw ] && scheme=tcp
    # Each server runs with glibc's defaults, as a user starts it.
    unset GLIBC_TUNABLES
    for sc in "${scenarios[@]}"; do
        IFS='|' read -r scen args n_strace n_grind conns <<<"$sc"
        [ "$name" = raw ] && [ "$scen" = handshake ] && continue
        for tool in $tools; do
            n=$n_strace
            [ "$tool" = callgrind ] && n=$n_grind
            ops=$((n * conns))
            base="$OUT/$name.$scen.$tool"
            echo "$name $scen $tool: $ops operations" >&2
            run "$tool" "$cmd" "$args" 0 "$scheme" "$base.0"
            run "$tool" "$cmd" "$args" "$n" "$scheme" "$base.$ops"
            if [ "$tool" = strace ]; then
                # Breakdown per operation, largest first.
                join -a1 -a2 -e 0 -o 0,1.2,2.2 <(calls "$base.$ops" | sort) <(calls "$base.0" | sort) |
                    awk -v ops="$ops" '{d = ($2 - $3) / ops; if (d > 0.005 || d < -0.005) printf "%-16s %8.2f\n", $1, d}' |
                    sort -k2 -nr >"$base.per-op.txt"
                result["$name,$scen,syscalls"]=$(awk '$1 == "total" {print $2}' "$base.per-op.txt")
            else
                a=$(instructions "$base.$ops") b=$(instructions "$base.0")
                result["$name,$scen,instructions"]=$(((a - b) / ops))
                callgrind_annotate --inclusive=no "$base.$ops" 2>/dev/null | head -40 >"$base.annotate.txt" || true
            fi
        done
    done
done

printf '\n%-34s' "per echo / per handshake"
for s in "${servers[@]}"; do printf '%12s' "${s%%|*}"; done
echo
for scen in small large handshake; do
    for what in syscalls instructions; do
        case $scen in
            small) label="64 x 32 B" ;; large) label="16 x 64 KiB" ;; handshake) label="handshake" ;;
        esac
        printf '%-34s' "$label: $what"
        for s in "${servers[@]}"; do printf '%12s' "${result[${s%%|*},$scen,$what]:-—}"; done
        echo
    done
done
echo "per-syscall breakdowns: $OUT/*.per-op.txt; callgrind tops: $OUT/*.annotate.txt"
