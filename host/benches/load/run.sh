#!/usr/bin/env bash
# Load benchmark of the router, end to end, on loopback (BENCHMARKS.md):
#   bash host/benches/load/run.sh [seconds]
# Needs nginx and wrk (apt-get install -y nginx wrk). Measures in one run:
#   0. the receiver's raw rate: wrk → nginx answering 204 (the denominator);
#   1. durable ingest: wrk → switchyard, 64 connections, 1 KB Keygen events,
#      throughput and latency percentiles (every 202 is flushed to disk),
#      alone (no endpoint subscribed) and with delivery running;
#   2. end-to-end deliveries/s to nginx, without plugins and with the
#      event-filter plugin: events ingested during the run, delivered and
#      acknowledged by nginx, divided by the time from start to fully drained.
# Optional: PACED_RATE=20000 also measures ingest latency at that fixed rate
# (host/benches/ingest_paced.rs; wrk's own latency is at saturation),
# PACED_TRIALS times (default 1), then probes the disk's own write stalls;
# ONLY_PACED=1 skips ingest at saturation and end to end.
# SWITCHYARD_BIN=path runs another build (an A/B in one sitting).
# The router runs on the shipped delivery defaults; DELIVERY_EXTRA adds lines
# to its [delivery] table (e.g. DELIVERY_EXTRA="max_in_flight = 128") for a
# tuned figure, which BENCHMARKS.md then reports beside the default one.
# Optional: DASHBOARD=1 runs only the no-plugins scenario, alternately
# without and with the dashboard's overview page fetched every second by a
# signed-in session (DASHBOARD_TRIALS pairs, default 3): the dashboard's
# cost on ingest and end to end, in one sitting.
# Optional: PENDING=1000000 also measures peak RSS with that many deliveries
# pending (receiver down); ONLY_PENDING=1 skips the other steps.
# Optional: POLYGLOT=1 runs only the Python/JS plugin figures (issue 15),
# in one sitting: end to end with the same event filter in Rust, Python and
# JavaScript on one endpoint; Python and JS on two endpoints (peak RSS);
# ingest latency while a Python plugin lands in the plugins folder and
# compiles (hot reload), against the same run without; and how long a
# Python / JS file takes to serve from the compiled-artifact cache. Builds
# the examples (examples/plugins/{python,js}/event-filter) if missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
secs=${1:-10}
conns=${CONNS:-64}
bin="${SWITCHYARD_BIN:-$repo/target/release/switchyard}"  # SWITCHYARD_BIN: another build, for an A/B in one sitting
work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-load.XXXXXX")
nginx_port=18204
router_port=18686
export EVENT_FILE="$here/event.json" BENCH_TOKEN="bench-token-0123456789"

if [[ -z "${SWITCHYARD_BIN:-}" ]]; then
    (cd "$repo" && cargo build --release -p switchyard >/dev/null 2>&1) || { echo "build failed" >&2; exit 1; }
fi
paced_bin=
if [[ -n "${PACED_RATE:-}" ]]; then
    paced_bin=$(cd "$repo" && cargo bench -p switchyard --bench ingest_paced --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="ingest_paced" and m.get("executable"): print(m["executable"])')
fi
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "needs nginx and wrk: apt-get install -y nginx wrk" >&2; exit 1; }

cleanup() {
    [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    [[ -n "${router_pid:-}" ]] && kill "$router_pid" 2>/dev/null || true
    [[ -n "${poller_pid:-}" ]] && kill "$poller_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

sed -e "s#__DIR__#$work#g" -e "s#__PORT__#$nginx_port#g" "$here/nginx.conf" > "$work/nginx.conf"
nginx -c "$work/nginx.conf"
sleep 0.5

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "event: $(wc -c < "$EVENT_FILE") bytes, $conns connections, ${secs}s per run"
echo

wrk_rate() { awk '/Requests\/sec/{print $2}'; }

raw=1
if [[ -z "${ONLY_PENDING:-}" ]]; then
echo "== 0. receiver raw rate (wrk -> nginx 204)"
raw=$(wrk -t2 -c"$conns" -d"${secs}s" "http://127.0.0.1:$nginx_port/" | tee "$work/raw.txt" | wrk_rate)
echo "nginx: $raw req/s"
fi

config() { # $1 = plugins line
    cat <<EOF
[server]
listen = "127.0.0.1:$router_port"
data_dir = "$work/data"
cache_size = "${CACHE_SIZE:-8MiB}"
[plugins]
dir = "${PLUGINS_DIR:-$repo/plugins/dist}"
${PLUGINS_EXTRA:-}
[delivery]
allow_http = true
allow_private_networks = true
${DELIVERY_EXTRA:-}
[[accounts]]
id = "bench"
token = "$BENCH_TOKEN"
[[endpoints]]
id = "nginx"
account = "bench"
url = "http://127.0.0.1:$nginx_port/hook"
secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
$1
EOF
}

start_router() {
    # The compiled-artifact cache survives (POLYGLOT: an 18 MB component
    # compiles for tens of seconds; each scenario loads it from the cache).
    [[ -d "$work/data/plugin-cache" ]] && mv "$work/data/plugin-cache" "$work/plugin-cache"
    rm -rf "$work/data"
    if [[ -n "${KEEP_PLUGIN_CACHE:-}" && -d "$work/plugin-cache" ]]; then
        mkdir -p "$work/data" && mv "$work/plugin-cache" "$work/data/plugin-cache"
    fi
    rm -rf "$work/plugin-cache"
    config "$1" > "$work/router.toml"
    RUST_LOG=warn "$bin" serve -c "$work/router.toml" > "$work/router.out" 2> "$work/router.err" &
    router_pid=$!
    # (The plugins folder loads before the listener: POLYGLOT's first start
    # compiles 30 MB of components.)
    for _ in $(seq "${START_WAIT:-100}"); do grep -q "listening on" "$work/router.out" 2>/dev/null && return; sleep 0.1; done
    echo "router did not start:"; cat "$work/router.err"; exit 1
}

poller_pid=
start_poller() { # a signed-in browser refreshing the overview every second
    local jar="$work/cookies"
    rm -f "$jar" "$work/polls"
    curl -s -o /dev/null -c "$jar" --data-urlencode "token=$BENCH_TOKEN" "http://127.0.0.1:$router_port/ui/login"
    ( while :; do
        curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -b "$jar" "http://127.0.0.1:$router_port/ui/a/bench" >> "$work/polls"
        sleep 1
      done ) &
    poller_pid=$!
}
stop_poller() {
    [[ -n "$poller_pid" ]] || return 0
    kill "$poller_pid" 2>/dev/null || true; wait "$poller_pid" 2>/dev/null || true; poller_pid=
    echo "  overview fetched $(grep -c '^200 ' "$work/polls") times (HTTP 200), $(grep -vc '^200 ' "$work/polls") other answers; page time median $(awk '{print $2*1000}' "$work/polls" | sort -n | awk '{a[NR]=$1} END{printf "%.1f ms, max %.1f ms", a[int((NR+1)/2)], a[NR]}')"
}

metric() { # sum of a metric's samples matching a filter
    curl -s "http://127.0.0.1:$router_port/metrics" | awk -v m="$1" -v f="$2" '$1 ~ "^"m && $1 ~ f {s+=$2} END{printf "%d", s}'
}

run_scenario() { # $1 = name, $2 = plugins line
    start_router "$2"
    [[ -n "${POLL_UI:-}" ]] && start_poller
    local t0 t1 out ingested delivered filtered
    t0=$(date +%s.%N)
    out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$here/post.lua" "http://127.0.0.1:$router_port/v1/accounts/bench/events")
    echo "$out" > "$work/$1.txt"
    ingested=$(metric switchyard_events_ingested_total '')
    # wait until every delivery is final (FANOUT: endpoints per event)
    for _ in $(seq 600); do
        delivered=$(metric switchyard_deliveries_total 'outcome="(delivered|filtered)"')
        [[ "$delivered" -ge $(( ingested * ${FANOUT:-1} )) ]] && break
        sleep 0.1
    done
    t1=$(date +%s.%N)
    stop_poller
    local rss
    rss=$(awk '/VmHWM/{print $2}' "/proc/$router_pid/status")
    kill "$router_pid"; wait "$router_pid" 2>/dev/null || true; router_pid=
    local rate p50 p99 errors
    rate=$(echo "$out" | wrk_rate)
    p50=$(echo "$out" | awk '$1=="50%"{print $2}')
    p99=$(echo "$out" | awk '$1=="99%"{print $2}')
    errors=$(echo "$out" | awk '/Non-2xx/{print $5}')
    local e2e
    e2e=$(awk -v d="$delivered" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", d/(b-a)}')
    echo "$1: ingest $rate req/s (p50 $p50, p99 $p99, non-2xx ${errors:-0}); $ingested events, $delivered deliveries final in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s => $e2e deliveries/s end to end; peak RSS $((rss/1024)) MiB"
    echo "$1 ingest/raw: $(awk -v r="$rate" -v n="$raw" 'BEGIN{printf "%.3f", r/n}')  e2e/raw: $(awk -v r="$e2e" -v n="$raw" 'BEGIN{printf "%.3f", r/n}')"
}

wait_plugins() { # $1 = how many plugins must be loaded
    for _ in $(seq 3000); do
        [[ "$(metric switchyard_plugins_loaded '')" -ge "$1" ]] && return 0
        sleep 0.1
    done
    echo "plugins did not load"; tail -5 "$work/router.err"; exit 1
}

if [[ -n "${POLYGLOT:-}" ]]; then
    for lang in python js; do
        ex="$repo/examples/plugins/$lang/event-filter"
        if [[ ! -f "$ex/event-filter.wasm" ]]; then
            echo "building $ex (first shell block of its README)"
            (cd "$ex" && bash -euo pipefail -c "$(awk '/^```sh/{f=1;next} /^```/{if(f)exit} f' README.md)")
        fi
    done
    pdir="$work/plugins"; mkdir -p "$pdir"
    cp "$repo/plugins/dist/event-filter.wasm" "$pdir/rs-filter.wasm"
    cp "$repo/examples/plugins/python/event-filter/event-filter.wasm" "$pdir/py-filter.wasm"
    cp "$repo/examples/plugins/js/event-filter/event-filter.wasm" "$pdir/js-filter.wasm"
    export PLUGINS_DIR="$pdir" KEEP_PLUGIN_CACHE=1 START_WAIT=6000
    # The limits docs/PLUGINS.md suggests for CPython / SpiderMonkey.
    # POLYGLOT_POOL=n sets their pool_size (default: the router's).
    pool_line=${POLYGLOT_POOL:+pool_size = $POLYGLOT_POOL}
    export PLUGINS_EXTRA="[plugins.limits.py-filter]
memory = \"64MiB\"
deadline = \"100ms\"
$pool_line
[plugins.limits.js-filter]
memory = \"64MiB\"
deadline = \"100ms\"
$pool_line"
    filter='config = { include = ["license.*"], conditions = [ { pointer = "/meta/valid", equals = true } ] }'
    echo
    step() { [[ -z "${POLYGLOT_STEPS:-}" || " $POLYGLOT_STEPS " == *" $1 "* ]]; } # e.g. POLYGLOT_STEPS="compile two"
    if step compile; then
    echo "== polyglot: compile the three plugins once (fills the artifact cache)"
    t0=$(date +%s.%N)
    start_router 'subscriptions = ["nothing.matches"]'
    wait_plugins 3
    echo "first start, 3 plugins compiled and loaded in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
    kill "$router_pid"; wait "$router_pid" 2>/dev/null || true; router_pid=
    t0=$(date +%s.%N)
    start_router 'subscriptions = ["nothing.matches"]'
    wait_plugins 3
    echo "restart, 3 plugins loaded from the cache in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s (router start included)"
    kill "$router_pid"; wait "$router_pid" 2>/dev/null || true; router_pid=
    fi
    if step e2e; then
    echo
    echo "== polyglot: end to end, the same filter in Rust, Python and JavaScript (interleaved, ${POLYGLOT_TRIALS:-2} rounds)"
    for t in $(seq "${POLYGLOT_TRIALS:-2}"); do
        run_scenario "rust-filter-$t" "plugins = [ { name = \"rs-filter\", $filter } ]"
        run_scenario "python-filter-$t" "plugins = [ { name = \"py-filter\", $filter } ]"
        run_scenario "js-filter-$t" "plugins = [ { name = \"js-filter\", $filter } ]"
    done
    fi
    if step two; then
    echo
    echo "== polyglot: Python and JS filters on two endpoints (peak RSS)"
    FANOUT=2 run_scenario "python+js" "plugins = [ { name = \"py-filter\", $filter } ]
[[endpoints]]
id = \"nginx-js\"
account = \"bench\"
url = \"http://127.0.0.1:$nginx_port/hook\"
secret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"
plugins = [ { name = \"js-filter\", $filter } ]"
    fi
    if step reload; then
    echo
    echo "== polyglot: ingest while a Python plugin compiles (hot reload), against without"
    rdir="$work/plugins-reload"
    reload_run() { # $1 = name, $2 = file to drop into the folder 1 s in (or "")
        rm -rf "$rdir"; mkdir -p "$rdir"; cp "$pdir/rs-filter.wasm" "$rdir/"
        rm -rf "$work/data" "$work/plugin-cache"
        PLUGINS_DIR="$rdir" KEEP_PLUGIN_CACHE= start_router "plugins = [ { name = \"rs-filter\", $filter } ]"
        wait_plugins 1
        local rsecs=$(( secs * 2 )) out t0 loaded=""
        wrk -t2 -c"$conns" -d"${rsecs}s" --latency -s "$here/post.lua" "http://127.0.0.1:$router_port/v1/accounts/bench/events" > "$work/$1.txt" &
        local wrk_pid=$!
        sleep 1
        if [[ -n "$2" ]]; then
            t0=$(date +%s.%N)
            cp "$2" "$rdir/.late.tmp" && mv "$rdir/.late.tmp" "$rdir/late.wasm"
            for _ in $(seq $(( rsecs * 10 ))); do
                if [[ "$(metric switchyard_plugins_loaded '')" -ge 2 ]]; then
                    loaded=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'); break
                fi
                sleep 0.1
            done
        fi
        wait "$wrk_pid"
        out=$(cat "$work/$1.txt")
        echo "$1: ingest $(echo "$out" | wrk_rate) req/s, p50 $(echo "$out" | awk '$1=="50%"{print $2}'), p99 $(echo "$out" | awk '$1=="99%"{print $2}'), max $(echo "$out" | awk '/Latency/{print $4; exit}'), non-2xx $(echo "$out" | awk '/Non-2xx/{print $5}')${2:+; the plugin compiled and was serving ${loaded:-NOT within the run} s after the file landed}"
        kill "$router_pid"; wait "$router_pid" 2>/dev/null || true; router_pid=
    }
    reload_run "no-reload" ""
    reload_run "python-compiling" "$pdir/py-filter.wasm"
    reload_run "js-compiling" "$pdir/js-filter.wasm"
    fi
    if step cache; then
    echo
    echo "== polyglot: a Python / JS file landing in the folder, served from the artifact cache"
    rm -rf "$rdir"; mkdir -p "$rdir"
    cp "$pdir/py-filter.wasm" "$pdir/js-filter.wasm" "$rdir/"
    PLUGINS_DIR="$rdir" start_router 'subscriptions = ["nothing.matches"]'
    wait_plugins 2
    for f in py-filter js-filter; do
        n=$(( $(metric switchyard_plugins_loaded '') + 1 ))
        t0=$(date +%s.%N)
        cp "$rdir/$f.wasm" "$rdir/.c.tmp" && mv "$rdir/.c.tmp" "$rdir/$f-copy.wasm"
        wait_plugins "$n"
        echo "$f (cached, same bytes under a new name): serving $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s after the file landed (metric polled every 0.1 s; the watcher debounces)"
    done
    kill "$router_pid"; wait "$router_pid" 2>/dev/null || true; router_pid=
    fi
    exit 0
fi

if [[ -n "${DASHBOARD:-}" ]]; then
    echo
    echo "== dashboard cost: no-plugins scenario without / with the overview fetched every second"
    for t in $(seq "${DASHBOARD_TRIALS:-3}"); do
        run_scenario "no-ui-$t" ""
        POLL_UI=1 run_scenario "overview-1s-$t" ""
    done
    exit 0
fi

if [[ -z "${ONLY_PENDING:-}" ]]; then
echo
echo "== 1+2. durable ingest and end-to-end delivery"
ingest_only() {
    start_router 'subscriptions = ["nothing.matches"]'
    local out
    out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$here/post.lua" "http://127.0.0.1:$router_port/v1/accounts/bench/events")
    kill "$router_pid"; wait "$router_pid" 2>/dev/null || true; router_pid=
    local rate
    rate=$(echo "$out" | wrk_rate)
    echo "ingest-only: $rate req/s (p50 $(echo "$out" | awk '$1=="50%"{print $2}'), p99 $(echo "$out" | awk '$1=="99%"{print $2}'), non-2xx $(echo "$out" | awk '/Non-2xx/{print $5}')); durable, no deliveries"
    echo "ingest-only/raw: $(awk -v r="$rate" -v n="$raw" 'BEGIN{printf "%.3f", r/n}')"
}
[[ -z "${ONLY_PACED:-}" ]] && ingest_only
if [[ -n "${PACED_RATE:-}" ]]; then
    # One paced run is at the mercy of a disk stall (see the device probe
    # below): PACED_TRIALS runs it that many times, each on a fresh router.
    trials=${PACED_TRIALS:-1}
    for t in $(seq "$trials"); do
        start_router 'subscriptions = ["nothing.matches"]'
        URL="http://127.0.0.1:$router_port/v1/accounts/bench/events" TOKEN="$BENCH_TOKEN" RATE="$PACED_RATE" SECS="$secs" CONNS="$conns" \
            "$paced_bin" | grep -E "paced ingest|generator:" | tee -a "$work/paced.txt"
        # The router's own view of the disk in that trial: group flushes
        # that took over 5 ms and over 25 ms (a stalled disk).
        flushes=$(metric switchyard_store_flush_duration_seconds_count '')
        echo "store: $flushes group flushes, $((flushes - $(metric switchyard_store_flush_duration_seconds_bucket 'le="0.005"'))) over 5 ms, $((flushes - $(metric switchyard_store_flush_duration_seconds_bucket 'le="0.025"'))) over 25 ms"
        kill "$router_pid"; wait "$router_pid" 2>/dev/null || true; router_pid=
    done
    if [[ "$trials" -gt 1 ]]; then
        grep "paced ingest" "$work/paced.txt" | sed -n 's/.* p99 \([0-9.]*\)\(µs\|ms\|s\) .*/\1 \2/p' \
            | awk '{v=$1; if ($2=="s") v*=1000; if ($2=="µs") v/=1000; print v}' | sort -n \
            | awk '{a[NR]=$1} END{printf "paced p99 over %d trials: median %.1f ms, best %.1f ms, worst %.1f ms\n", NR, a[int((NR+1)/2)], a[1], a[NR]}'
    fi
    # The baseline for the latency tail: the disk's own stalls, probed in
    # the same run (a 32 KB write + sync_file_range every ms for 10 s, the
    # way sled makes a group durable).
    python3 "$here/disk_probe.py" "$work/probe.bin"
fi
[[ -n "${ONLY_PACED:-}" ]] && exit 0
run_scenario "no-plugins" ""
run_scenario "event-filter" 'plugins = [ { name = "event-filter", config = { include = ["license.*"], conditions = [ { pointer = "/meta/valid", equals = true } ] } } ]'
fi

if [[ -n "${PENDING:-}" ]]; then
    echo
    echo "== 3. peak RSS with $PENDING deliveries pending (receiver down)"
    kill "$(cat "$work/nginx.pid")"; rm -f "$work/nginx.pid"; sleep 0.3
    start_router 'retry_schedule = ["1h"]'
    t0=$(date +%s)
    while [[ "$(metric switchyard_events_ingested_total '')" -lt "$PENDING" ]]; do
        wrk -t2 -c"$conns" -d10s -s "$here/post.lua" "http://127.0.0.1:$router_port/v1/accounts/bench/events" > /dev/null
    done
    echo "ingested $(metric switchyard_events_ingested_total '') events in $(( $(date +%s) - t0 )) s with the receiver down"
    echo "peak RSS with $PENDING pending: $(( $(awk '/VmHWM/{print $2}' "/proc/$router_pid/status") / 1024 )) MiB; store $(du -sh "$work/data" | cut -f1)"
fi
