#!/usr/bin/env bash
# Server CPU per echo for two servers in interleaved pairs (the order alternates each round):
# `perf stat` over the server's process (software events: they work in VMs without hardware
# counters), its user/system split from /proc, and loadgen's MB/s.
#
#   cargo build --release --workspace
#   bash bench/cpu-pairs.sh [--rounds 6] [--conns 16] [--size 65536] [--count 1000] \
#       "wsecho=target/release/wsecho serve --quiet --addr ADDR" \
#       "reference=target/release/reference_server ADDR"
#
# ADDR is replaced by a fresh loopback address per run; every run starts a fresh server.
# Binary messages; `--count` is per connection. Prints one line per run, then per server the
# median and range of CPU µs per echo, user-space µs per echo and MB/s. Page faults and
# context switches per echo include start-up: compare them between counts, not absolutely.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
loadgen="$root/target/release/loadgen"
rounds=6 conns=16 size=65536 count=1000
while (($#)); do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --conns) conns=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --count) count=$2; shift 2 ;;
        *=*) break ;;
        *) echo "usage: $0 [--rounds N] [--conns N] [--size B] [--count N] NAME=CMD NAME=CMD" >&2; exit 2 ;;
    esac
done
(($# == 2)) || { echo "need two NAME=CMD servers" >&2; exit 2; }
[ -x "$loadgen" ] || { echo "missing $loadgen: cargo build --release --workspace" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
port=$((20000 + RANDOM % 10000))

# run NAME CMD: one fresh server, one pingpong run under perf stat; appends a line to $out/NAME
run() {
    local name=$1 cmd=$2 spid ppid u0 s0 u1 s1 log mbs
    port=$((port + 1))
    local addr="127.0.0.1:$port"
    # shellcheck disable=SC2086  # the command is split on purpose
    ${cmd//ADDR/$addr} >/dev/null 2>&1 &
    spid=$!
    "$loadgen" wait "$port"
    sleep 0.3 # wsecho serve re-executes itself once at start (same pid)
    perf stat -x, -e task-clock,page-faults,context-switches -p "$spid" -o "$out/perf" &
    ppid=$!
    sleep 0.2
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$spid/stat")
    log=$("$loadgen" pingpong --conns "$conns" --size "$size" --binary --count "$count" "ws://$addr/echo")
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$spid/stat")
    kill -INT "$ppid"
    wait "$ppid" || true
    kill -TERM "$spid"
    wait "$spid" || true
    mbs=$(sed -n 's/.* \([0-9.]*\) MB\/s each way.*/\1/p' <<<"$log")
    awk -F, -v ops=$((conns * count)) -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v mbs="$mbs" '
        $3 == "task-clock" {tc = $1} $3 == "page-faults" {pf = $1} $3 == "context-switches" {cs = $1}
        END {cpu = tc * 1000 / ops; user = (u + s) ? u / (u + s) : 0
             printf "%.2f %.2f %.4f %.2f %s\n", cpu, cpu * user, pf / ops, cs / ops, mbs}' \
        "$out/perf" | tee -a "$out/$name" | sed "s/^/$name cpu_us user_us faults cs MB\/s: /" >&2
}

a=${1%%=*} acmd=${1#*=} b=${2%%=*} bcmd=${2#*=}
for ((i = 1; i <= rounds; i++)); do
    if ((i % 2)); then run "$a" "$acmd"; run "$b" "$bcmd"; else run "$b" "$bcmd"; run "$a" "$acmd"; fi
done
echo "$conns x $size B, $count echoes per connection, $rounds interleaved rounds: median [min-max]"
for name in "$a" "$b"; do
    printf '%-12s' "$name"
    for spec in 1:cpu_us/echo 2:user_us/echo 5:MB/s; do
        col=${spec%%:*} label=${spec#*:}
        sort -n -k"$col","$col" "$out/$name" | awk -v c="$col" -v l="$label" '
            {v[NR] = $c} END {m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                              printf "  %s %.1f [%.1f-%.1f]", l, m, v[1], v[NR]}'
    done
    echo
done
