#!/usr/bin/env bash
# Does a deep pile of scheduled events slow ingest or delivery of due work?
# (issue #12; BENCHMARKS.md "Scheduled events"):
#   bash host/benches/load/scheduled.sh [seconds] 
# Needs nginx and wrk. Two routers, the same config (one endpoint on nginx
# answering 204, no plugins, max_in_flight 128): B gets SCHEDULED (default
# 1,000,000) events scheduled a day ahead (`deliver_in: "24h"`, the same
# 1 KB Keygen payload), A nothing. Then, alternately on A and B (ROUNDS
# times, default 3, so the shared machine's load hits both alike), durable
# ingest with delivery running (wrk, 64 connections) and end-to-end
# deliveries/s; nginx's raw rate is measured first as the denominator.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
secs=${1:-10}
conns=${CONNS:-64}
scheduled=${SCHEDULED:-1000000}
bin="${SWITCHYARD_BIN:-$repo/target/release/switchyard}"
work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-sched.XXXXXX")
nginx_port=18204
export BENCH_TOKEN="bench-token-0123456789"
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "needs nginx and wrk: apt-get install -y nginx wrk" >&2; exit 1; }
cleanup() {
    [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    [[ -n "${router_pid:-}" ]] && kill $router_pid 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
python3 - "$here/event.json" "$work/scheduled.json" <<'PY'
import json, sys
ev = json.load(open(sys.argv[1]))
ev["deliver_in"] = "24h"
json.dump(ev, open(sys.argv[2], "w"))
PY
sed -e "s#__DIR__#$work#g" -e "s#__PORT__#$nginx_port#g" "$here/nginx.conf" > "$work/nginx.conf"
nginx -c "$work/nginx.conf"
sleep 0.5
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
raw=$(wrk -t2 -c"$conns" -d"${secs}s" "http://127.0.0.1:$nginx_port/" | awk '/Requests\/sec/{print $2}')
echo "nginx raw: $raw req/s"

start_router() { # $1 = name, $2 = port
    mkdir -p "$work/$1"
    cat > "$work/$1/router.toml" <<TOML
[server]
listen = "127.0.0.1:$2"
data_dir = "$work/$1/data"
[plugins]
dir = "$repo/plugins/dist"
[delivery]
allow_http = true
allow_private_networks = true
max_in_flight = 128
[[accounts]]
id = "bench"
token = "$BENCH_TOKEN"
[[endpoints]]
id = "nginx"
account = "bench"
url = "http://127.0.0.1:$nginx_port/hook"
secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
TOML
    RUST_LOG=warn "$bin" serve -c "$work/$1/router.toml" > "$work/$1/router.out" 2> "$work/$1/router.err" &
    echo $! > "$work/$1/pid"
    for _ in $(seq 600); do grep -q "listening on" "$work/$1/router.out" 2>/dev/null && return; sleep 0.1; done
    echo "router $1 did not start"; cat "$work/$1/router.err"; exit 1
}
start_router a 18686
start_router b 18687
router_pid="$(cat "$work/a/pid") $(cat "$work/b/pid")"

metric() { curl -s "http://127.0.0.1:$router_port/metrics" | awk -v m="$1" -v f="$2" '$1 ~ "^"m && $1 ~ f {s+=$2} END{printf "%d", s}'; }

measure() { # $1 = label
    local before_i before_d t0 out ingested delivered t1 rate
    before_i=$(metric switchyard_events_ingested_total '')
    before_s=$(metric switchyard_events_scheduled_total '')
    before_d=$(metric switchyard_deliveries_total 'outcome="delivered"')
    t0=$(date +%s.%N)
    out=$(EVENT_FILE="$here/event.json" wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$here/post.lua" "http://127.0.0.1:$router_port/v1/accounts/bench/events")
    ingested=$(( $(metric switchyard_events_ingested_total '') - before_i - ($(metric switchyard_events_scheduled_total '') - before_s) ))
    for _ in $(seq 1200); do
        delivered=$(( $(metric switchyard_deliveries_total 'outcome="delivered"') - before_d ))
        [[ "$delivered" -ge "$ingested" ]] && break
        sleep 0.25
    done
    t1=$(date +%s.%N)
    rate=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    local e2e
    e2e=$(awk -v d="$delivered" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", d/(b-a)}')
    echo "$1: ingest $rate req/s (p50 $(echo "$out" | awk '$1=="50%"{print $2}'), p99 $(echo "$out" | awk '$1=="99%"{print $2}'), non-2xx $(echo "$out" | awk '/Non-2xx/{print $5}')); $delivered deliveries in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s => $e2e/s end to end"
    echo "$1 ingest/raw $(awk -v r="$rate" -v n="$raw" 'BEGIN{printf "%.3f", r/n}')  e2e/raw $(awk -v r="$e2e" -v n="$raw" 'BEGIN{printf "%.3f", r/n}')"
}

router_port=18687
t0=$(date +%s)
while [[ "$(metric switchyard_events_scheduled_total '')" -lt "$scheduled" ]]; do
    EVENT_FILE="$work/scheduled.json" wrk -t2 -c"$conns" -d10s -s "$here/post.lua" "http://127.0.0.1:$router_port/v1/accounts/bench/events" > /dev/null
done
echo "scheduled $(metric switchyard_events_scheduled_total '') events a day ahead in $(( $(date +%s) - t0 )) s; store $(du -sh "$work/b/data" | cut -f1); deliveries due now (switchyard_due_deliveries) $(metric switchyard_due_deliveries '')"
for r in $(seq "${ROUNDS:-3}"); do
    router_port=18686 measure "round $r, A, nothing scheduled"
    router_port=18687 measure "round $r, B, $scheduled scheduled"
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
